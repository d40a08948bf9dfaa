"""`mlip-attn bench` prints a complete table; the demo runs end to end (slow)."""
from __future__ import annotations

import math

import pytest

from mlip_attn.apps.bench import random_box, run_bench
from mlip_attn.cli import main


def test_random_box_density_and_spacing():
    atoms = random_box(300, seed=1)
    assert len(atoms) == 300
    assert atoms.get_volume() == pytest.approx(3000.0)
    d = atoms.get_all_distances(mic=True)
    assert d[d > 0].min() > 0.8


def test_bench_prints_a_row_per_point(capsys):
    rows = run_bench(sizes=[30], models=["painn", "egnn"], repeats=1, width=16, layers=1)
    text = capsys.readouterr().out
    assert [r["model"] for r in rows] == ["neighbour-list", "painn", "egnn"]
    assert all(math.isfinite(r["median_s"]) and r["peak_mb"] > 0 for r in rows)
    assert "atom·steps/s" in text and text.count("log-log slope") == 3


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path, capsys):
    import json
    assert main(["demo", "--quick", "--out", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert (tmp_path / "model.pt").exists()
    assert "NVE" in text and "barrier" in text
    results = json.loads((tmp_path / "results.json").read_text())
    for name in ("local", "global"):
        assert math.isfinite(results[name]["energy_mae_meV"])
        assert math.isfinite(results[name]["forces_mae_meV_A"])
    assert results["seconds"] > 0 and math.isfinite(results["energy_mae_ratio"])
    assert results["local"]["barrier_eV"] < 0.01   # no atom of the local model sees both ends


def test_demo_compares_a_local_and_a_global_model_of_the_same_size():
    """Both models always (no fallback that silently drops the global one), matched in
    parameters within 5 %."""
    from mlip_attn import build_model
    from mlip_attn.apps import demo
    configs = demo.model_configs()
    assert set(configs) == {"local", "global"}
    assert configs["local"]["attention"] is None
    assert configs["global"]["attention"]["type"] == "bond-graph"
    sizes = [sum(p.numel() for p in build_model(c).parameters()) for c in configs.values()]
    assert abs(sizes[0] - sizes[1]) <= 0.05 * max(sizes)


def test_peers_benchmark_runs_ours_and_skips_missing_peers():
    """`mlip-attn bench --peers` times every model interleaved; a missing peer is reported."""
    import importlib.util
    from mlip_attn.apps.peers import format_table, run_peers
    lines = []
    rows = run_peers(sizes=(20,), models=("painn", "painn-ase", "egnn", "schnetpack-painn"),
                     repeats=1, width=8, layers=1, num_basis=4, memory=False, log=lines.append)
    names = {r["model"] for r in rows}
    assert {"painn", "painn-ase", "egnn"} <= names
    assert all(r["median_s"] > 0 and r["pairs"] > 0 for r in rows)
    if importlib.util.find_spec("schnetpack") is None:
        assert any("not installed" in line for line in lines)
    assert any("AttnCalculator adds" in line for line in lines)
    # the ratio column: their time / ours
    fake = [{"model": "painn", "atoms": 10, "pairs": 5, "parameters": 1, "median_s": 0.5,
             "memory": None},
            {"model": "schnetpack-painn", "atoms": 10, "pairs": 5, "parameters": 1,
             "median_s": 2.0, "memory": {"call_peak_mb": 3.0}}]
    table = format_table(fake)
    assert "| 4.00× |" in table and "| 1.00× | 3 |" in table


def test_training_bench_reports_throughput():
    from mlip_attn.apps.bench import run_training_bench
    lines = []
    rows = run_training_bench(models=("painn", "egnn"), atoms=8, batch_size=2, steps=1, width=8,
                              layers=1, log=lines.append)
    assert [r["model"] for r in rows] == ["painn", "egnn"]
    assert all(r["median_s"] > 0 and r["peak_mb"] > 0 and r["edges"] > 0 for r in rows)
    assert "structures/s" in lines[1]
    rows = run_training_bench(models=("painn-l2+efa-l1",), batch_size=2, steps=1, width=8,
                              layers=1, structures="cumulene", log=lines.append)
    assert rows[0]["median_s"] > 0 and "C9H4" in lines[-3]


def test_bench_model_names_take_encoders():
    from mlip_attn.apps.bench import model_config
    cfg = model_config("painn+transformer@all", 8, 1, 4.0, 10.0)
    assert cfg["attention"]["type"] == "transformer"
    assert cfg["encoders"] == ["chemical", "laplacian", "topological"]
    assert model_config("egnn@chemical", 8, 1, 4.0, 10.0)["encoders"] == ["chemical"]
    with pytest.raises(ValueError, match="encoder.*'spectral' is not one of"):
        model_config("egnn@spectral", 8, 1, 4.0, 10.0)
