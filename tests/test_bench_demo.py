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
    # one size: no log-log slope is printed (a slope needs two sizes)
    assert "atom·steps/s" in text and text.count("log-log slope") == 0
    assert all(r["us_per_atom_step"] == pytest.approx(1e6 * r["median_s"] / 30) for r in rows)


def test_bench_device_cpu_explicit_and_cuda_refused_without_a_gpu(capsys):
    """``--device cpu`` runs the same path with the device named; ``--device cuda`` on a torch
    that sees no GPU is refused before anything runs, naming the torch build."""
    import torch
    rows = run_bench(sizes=[20], models=["painn+efa-l1"], repeats=1, width=8, layers=1,
                     neighbour_list=False, device="cpu")
    assert rows[0]["device"] == "cpu" and math.isfinite(rows[0]["median_s"])
    assert "µs/atom/step" in capsys.readouterr().out
    with pytest.raises(ValueError, match="not a device name"):
        run_bench(sizes=[20], models=["painn"], device="gpu0")
    assert main(["bench", "--device", "cuda", "--lammps"]) == 2
    assert "only the plain" in capsys.readouterr().err
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="sees no CUDA device"):
            run_bench(sizes=[20], models=["painn"], device="cuda")
        assert main(["bench", "--device", "cuda", "--sizes", "20"]) == 2
        assert "sees no CUDA device" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path, capsys):
    import json
    assert main(["demo", "--quick", "--out", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert (tmp_path / "model.pt").exists()
    assert "NVE" in text and "barrier" in text
    for name in ("local", "global"):   # progress while the two models train
        assert f"{name:<7}epoch   10" in text and f"{name:<7}training painn" in text
    results = json.loads((tmp_path / "results.json").read_text())
    for name in ("local", "global"):
        assert math.isfinite(results[name]["energy_mae_meV"])
        assert math.isfinite(results[name]["forces_mae_meV_A"])
    assert results["seconds"] > 0 and math.isfinite(results["energy_mae_ratio"])
    assert results["local"]["barrier_eV"] < 0.01   # no atom of the local model sees both ends


def test_demo_progress_shows_the_header_every_tenth_epoch_and_the_end():
    from mlip_attn.apps.demo import _progress_line
    assert _progress_line("local", "training painn (local) (1 parameters)").endswith("(local) "
                                                                                    "(1 parameters)")
    assert _progress_line("local", "epoch    1  lr 1e-3") is not None
    assert _progress_line("local", "epoch    7  lr 1e-3") is None
    assert _progress_line("global", "epoch   20  lr 1e-3") == "      global epoch   20  lr 1e-3"
    assert _progress_line("local", "model written to x") is not None


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
    rows = run_peers(sizes=(20,), models=("painn", "painn-ase", "painn-python", "egnn",
                                          "schnetpack-painn"),
                     repeats=1, width=8, layers=1, num_basis=4, memory=False, log=lines.append)
    names = {r["model"] for r in rows}
    assert {"painn", "painn-ase", "painn-python", "egnn"} <= names
    assert all(r["median_s"] > 0 and r["pairs"] > 0 for r in rows
               if r["model"] != "schnetpack-painn")
    if importlib.util.find_spec("schnetpack") is None:
        assert any("not installed" in line for line in lines)
    assert any("AttnCalculator adds" in line for line in lines)
    assert any("as fast as with the Python message" in line for line in lines)
    assert any("PaiNN's message: " in line for line in lines)
    # the ratio column: their time / ours
    fake = [{"model": "painn", "atoms": 10, "pairs": 5, "parameters": 1, "median_s": 0.5,
             "memory": None},
            {"model": "schnetpack-painn", "atoms": 10, "pairs": 5, "parameters": 1,
             "median_s": 2.0, "memory": {"call_peak_mb": 3.0}}]
    table = format_table(fake)
    assert "| 4.00× | 4.00× (SchNetPack PaiNN) |" in table and "| 1.00× | - | 3 |" in table


def test_peers_quick_mode_skips_absent_peers_with_a_clear_line(monkeypatch):
    """Without the peer packages (simulated) the run goes on: one line per absent peer with
    its install command, a skipped row at every size; our ℓ = 2 PaiNN sits in the ℓ = 2 group."""
    from mlip_attn.apps import peers

    def absent(*args, **kwargs):
        raise ModuleNotFoundError("No module named 'schnetpack'", name="schnetpack")
    monkeypatch.setitem(peers.MODELS, "schnetpack-painn",
                        (absent,) + peers.MODELS["schnetpack-painn"][1:])
    monkeypatch.setitem(peers.QUICK, "sizes", (20, 30))
    lines = []
    rows = peers.run_peers(models=("painn-l2", "schnetpack-painn"), quick=True,
                           log=lines.append)
    missing = [r for r in rows if r["model"] == "schnetpack-painn"]
    assert [r["atoms"] for r in missing] == [20, 30]
    assert all(r["skipped"].startswith("not installed (no module schnetpack): pip install") for r in missing)
    assert sum(line.startswith("  SchNetPack PaiNN, ") and "not installed" in line
               for line in lines) == 2
    assert {r["atoms"] for r in rows if r["model"] == "painn-l2" and r["median_s"] > 0} == {20, 30}
    assert peers.MODELS["painn-l2"][2] == 2
    assert "| mlip-attn PaiNN ℓ ≤ 2 | 2 | 20 |" in lines[-1]
    with pytest.raises(ValueError, match="unknown"):
        peers.run_peers(models=("painn-l3",), quick=True, log=lines.append)


def test_peers_table_compares_within_an_order_and_guards_large_sizes(monkeypatch):
    from mlip_attn.apps import peers
    rows = [{"model": "painn-l2", "atoms": 100, "pairs": 9, "parameters": 1, "median_s": 0.1,
             "memory": {"call_peak_mb": 10.0, "process_peak_mb": 400.0}},
            {"model": "tensornet", "atoms": 100, "pairs": 9, "parameters": 1, "median_s": 0.3,
             "memory": {"call_peak_mb": 50.0, "process_peak_mb": 900.0}},
            {"model": "painn", "atoms": 100, "pairs": 9, "parameters": 1, "median_s": 0.05,
             "memory": None}]
    table = peers.format_table(rows)
    assert "| 3.00× (TorchMD-Net TensorNet), 5.0× |" in table   # ours vs the same order only
    assert "| mlip-attn PaiNN | 1 | 100 | 9 | 1 | 50.0 | 2,000 | - | - | - |" in table
    monkeypatch.setattr(peers, "available_mb", lambda: 5000.0)
    assert "would need ~6 GB" in peers._skip_reason("tensornet", 10000, rows, 3, 1e9)
    assert "s per call, over the 10 s budget" in peers._skip_reason("painn-l2", 10000, rows, 3, 10)
    assert peers._skip_reason("painn-l2", 1000, rows, 3, 1e9) is None
    assert peers._skip_reason("egnn", 1000, rows, 3, 1e9) is None      # never run: no guess


def test_roofline_counts_flops_and_reports_the_ratio():
    import torch
    from mlip_attn.apps.roofline import call_flops, recomputed_filter_flops, run_roofline
    a, b = torch.randn(4, 5), torch.randn(5, 6)
    assert call_flops(lambda: torch.mm(a, b)) == 2 * 4 * 5 * 6
    assert recomputed_filter_flops(10, 20, 384, 3) == 2 * 10 * 21 * 384 * 3
    lines = []
    rows = run_roofline(sizes=(20,), width=8, layers=1, num_basis=4, repeats=1, peak_n=128,
                        log=lines.append)
    assert rows[0]["flops"] > rows[0]["minimal_flops"] > 0 and rows[0]["ratio"] > 0
    assert "GFLOP/s" in lines[1] and "time / FLOP-limited" in lines[2]
    by_kind = rows[0]["time_by_kind"]
    assert by_kind["matrix products"] > 0
    from mlip_attn.nn.policy import compiled_message_available
    if compiled_message_available():     # the message's gathers and scatters are in its loops
        assert by_kind["fused message"] > 0
    else:
        assert by_kind["gathers"] > 0 and by_kind["scatters"] > 0
    assert rows[0]["flops"] > rows[0]["message_flops"] > 0
    assert lines[-1].startswith("| 20 | ") and "% of peak" in lines[-1]


def test_load_bench_runs_each_policy_in_a_fresh_process():
    from mlip_attn.apps.load_bench import competing_jobs, run_load_bench
    with competing_jobs(1):
        pass
    lines = []
    rows = run_load_bench(policies=("1 thread",), competing=(0,), md_steps=2, fit_structures=8,
                          large_atoms=30, large_steps=2, log=lines.append)
    assert rows[0]["threads"].startswith("1 thread,")
    assert rows[0]["md_step_ms"] > 0 and rows[0]["md_large_step_ms"] > 0
    assert rows[0]["fit_epoch_s"] > 0
    assert lines[-1].startswith("| 1 thread | 1 thread,")


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


def test_loglog_slope_needs_two_sizes():
    from mlip_attn.apps.bench import loglog_slope
    assert math.isnan(loglog_slope([1000, 1000], [0.4, 0.5]))   # one size measured twice
    assert loglog_slope([100, 1000], [0.01, 0.1]) == pytest.approx(1.0)
