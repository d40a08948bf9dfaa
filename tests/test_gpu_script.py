"""``benchmarks/gpu/run_gpu_checks.py``, the prepared GPU run: its CPU dry run works end to end
(probe, the Triton kernels in the interpreter against the ATen forms, the bench with its JSON
and markdown table), and asked for CUDA on a machine without it, it stops at once, saying so."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu" / "run_gpu_checks.py"


def run_script(*args, timeout=240):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=ROOT)


def test_the_cpu_dry_run_checks_the_kernels_and_writes_the_bench_table(tmp_path):
    pytest.importorskip("triton", reason="the dry run's kernel step needs Triton")
    out = run_script("--device", "cpu", "--dry-run", "--out", str(tmp_path), "--tests", "none",
                     "--models", "painn", "--sizes", "20")
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    kernels = json.loads((tmp_path / "kernels.json").read_text())
    assert kernels["passed"] and kernels["painn_backward"] <= 1e-10
    bench = json.loads((tmp_path / "bench.json").read_text())
    assert [r["model"] for r in bench["rows"]] == ["painn"]
    assert bench["rows"][0]["us_per_atom_step"] > 0 and bench["rows"][0]["peak_mb"] > 0
    table = (tmp_path / "bench.md").read_text()
    assert "| painn | 20 |" in table and "µs/atom/step" in table
    summary = (tmp_path / "summary.md").read_text()
    assert "dry run" in summary and "| painn | 20 |" in summary
    assert json.loads((tmp_path / "env.json").read_text())["modules"]["ase"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_cuda_on_a_machine_without_it_stops_with_a_clear_error(tmp_path):
    out = run_script("--out", str(tmp_path), timeout=120)
    assert out.returncode == 2
    assert "CUDA not available" in out.stderr
    assert "CUDA not available" in (tmp_path / "summary.md").read_text()
    assert run_script("--device", "cpu").returncode == 2   # the CPU is the dry run's only


def test_wheels_for_this_python_are_unpacked_without_pip(tmp_path):
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        from run_gpu_checks import unpack_wheels
    finally:
        sys.path.pop(0)
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    for name in ("fakepure-1.0-py3-none-any.whl", f"fakebin-1.0-{tag}-{tag}-linux.whl",
                 "fakebin-1.0-cp20-cp20-linux.whl"):
        with zipfile.ZipFile(tmp_path / name, "w") as archive:
            archive.writestr(f"{name.split('-')[0]}/__init__.py", f"WHEEL = {name!r}\n")
    target = tmp_path / "site"
    assert unpack_wheels(tmp_path, target, ["fakepure", "fakebin"]) == 0
    assert tag in (target / "fakebin" / "__init__.py").read_text()
    assert unpack_wheels(tmp_path, target, ["missing"]) == 1


def test_bench_time_cap_json_and_the_lebedev_form(tmp_path, capsys):
    """The GPU bench's knobs: a point over ``time_cap`` is ended, a size predicted over it is
    skipped, the rows go to JSON with the device and versions, and ``:lebedev`` picks EFA's
    linear-cost form."""
    from mlip_attn.apps.bench import measure, model_config, run_bench, write_bench_json
    assert model_config("painn+efa-l1:lebedev", 8, 1, 5.0, 10.0)["attention"]["switch"] is False
    assert "switch" not in model_config("painn+efa-l1", 8, 1, 5.0, 10.0)["attention"]
    with pytest.raises(ValueError, match="only form suffix"):
        model_config("painn+efa-l1:dense", 8, 1, 5.0, 10.0)
    assert "time cap" in measure("painn", 20, repeats=1, width=8, layers=1, time_cap=0.05)["error"]
    # 10⁷ atoms: predicted from the 20-atom time (≥ 0.1 ms) at ≥ 1,000 s, far over the cap
    rows = run_bench(sizes=[20, 10_000_000], models=["painn"], repeats=1, width=8, layers=1,
                     neighbour_list=False, time_cap=60.0)
    assert rows[0]["median_s"] > 0 and "estimated over the time cap" in rows[1]["error"]
    document = write_bench_json(tmp_path / "b.json", rows, device="cpu", width=8)
    saved = json.loads((tmp_path / "b.json").read_text())
    assert saved == json.loads(json.dumps(document)) and saved["rows"][1]["median_s"] is None
    assert saved["settings"]["torch"] == torch.__version__ and saved["settings"]["width"] == 8
