"""The GPU checks of issue 27 as one script, for a machine with an NVIDIA GPU (H100/H200, the
machine's own torch with CUDA and Triton, no network): about 8 minutes in all.

    python benchmarks/gpu/run_gpu_checks.py --wheels benchmarks/gpu/wheels      # on the GPU
    python benchmarks/gpu/run_gpu_checks.py --device cpu --dry-run              # anywhere

Steps, each written to ``--out`` (default ``$OUT``, else ``gpu-checks/``) as it ends:

1. ``env.json``: Python, torch, CUDA, the device's name, Triton, and which of the modules the
   checks need import. Missing ones (ASE and vesin are absent on the GPU machine; PyYAML,
   pytest may be) are installed from ``--wheels`` (made by ``benchmarks/gpu/fetch_wheels.sh``
   on a machine with network) into a folder outside the repository, ``--no-index --no-deps``.
2. ``kernels.json``: the Triton kernels against their ATen forms in float64 on the device,
   without ASE or vesin (PaiNN message and EFA rotation, values and first derivatives).
3. ``pytest.txt`` / ``pytest.xml``: ``tests/test_triton_kernels.py`` (the real kernels on the
   GPU), ``tests/test_cuda.py`` (every model of the matrix on CUDA against the CPU, float64 to
   1e-10; float32; training's double backward; AttnCalculator) and the other CUDA tests.
4. ``bench.json`` / ``bench.md`` / ``bench.txt``: ``mlip-attn bench --device cuda`` per model
   (µs/atom/step and GPU peak memory, 10³–10⁶ atoms, a time cap per point, float32).
5. ``summary.md``: what passed, what failed, the table.

``--dry-run`` on the CPU runs the same steps with tiny sizes (the kernels in Triton's
interpreter, ``tests/test_cuda.py`` CPU against CPU), to check the script, not the GPU.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# what the checks import (yaml: the CLI's ``main`` imports the training package) and, for the
# pure-Python ones and PyYAML, the wheel that brings each (benchmarks/gpu/fetch_wheels.sh)
WHEEL_NAMES = {"ase": "ase", "vesin": "vesin", "yaml": "pyyaml", "tqdm": "tqdm",
               "pytest": "pytest", "pluggy": "pluggy", "iniconfig": "iniconfig",
               "packaging": "packaging", "pygments": "pygments"}
if sys.version_info < (3, 11):
    WHEEL_NAMES.update(exceptiongroup="exceptiongroup", tomli="tomli")
MODULES = ["numpy", "scipy", "triton", "e3nn", *WHEEL_NAMES]
# ℓ ≤ 1 local first (the target), EFA's linear-cost form (Triton rotation), ℓ ≤ 2, the
# electrostatics block; the switched EFA form is O(pairs within r_max): N² in these boxes
MODELS = ["painn", "painn+efa-l1:lebedev", "painn-l2", "painn+electrostatics"]


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu (with --dry-run)")
    p.add_argument("--out", default=os.environ.get("OUT") or "gpu-checks")
    p.add_argument("--wheels", default=None, help="folder of wheels for missing modules")
    p.add_argument("--dry-run", action="store_true", help="tiny sizes; CPU allowed")
    p.add_argument("--budget", type=float, default=480.0, help="seconds for all steps")
    p.add_argument("--time-cap", type=float, default=75.0, help="seconds per bench point")
    p.add_argument("--sizes", type=int, nargs="+", default=None)
    p.add_argument("--models", nargs="+", default=None)
    p.add_argument("--tests", nargs="*", default=None, help="pytest targets (default: the "
                   "CUDA tests); none: skip pytest")
    p.add_argument("--skip", nargs="*", default=[], choices=["kernels", "pytest", "bench"])
    args = p.parse_args(argv)
    if args.device != "cpu" and not args.device.startswith("cuda"):
        p.error("--device: cuda or cpu")
    if args.device == "cpu" and not args.dry_run:
        p.error("--device cpu is the dry run only: add --dry-run")
    return args


class Run:
    """The output folder, the time left and the environment of the child processes."""

    def __init__(self, args):
        self.args, self.start = args, time.monotonic()
        self.out = Path(args.out).resolve()
        self.out.mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}
        if args.dry_run and args.device == "cpu":
            self.env.update(TRITON_INTERPRET="1", MLIP_ATTN_TEST_DEVICE="cpu",
                            OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
        self.results: dict = {}

    def left(self) -> float:
        return self.args.budget - (time.monotonic() - self.start)

    def write(self, name: str, data) -> None:
        text = data if isinstance(data, str) else json.dumps(data, indent=1, default=str)
        (self.out / name).write_text(text)

    def child(self, cmd: list[str], log: str, limit: float) -> int:
        """Run ``cmd`` (output to ``log`` in the folder) for at most ``limit`` s; 124 when
        ended by the limit."""
        with open(self.out / log, "a") as handle:
            handle.write(f"$ {' '.join(cmd)}\n")
            handle.flush()
            try:
                return subprocess.run(cmd, cwd=ROOT, env=self.env, stdout=handle,
                                      stderr=subprocess.STDOUT, timeout=max(limit, 1)).returncode
            except subprocess.TimeoutExpired:
                handle.write(f"\n[ended after {limit:.0f} s: the script's time budget]\n")
                return 124


def probe(run: Run) -> dict:
    """Step 1: versions, device and modules; missing ones from ``--wheels``."""
    missing = [m for m in MODULES if importlib.util.find_spec(m) is None]
    installed = []
    if run.args.wheels and any(m in WHEEL_NAMES for m in missing):
        target = Path(os.environ.get("TMPDIR", "/tmp")) / "mlip_attn_gpu_site"
        folder = Path(run.args.wheels).resolve()
        # one at a time, so that a wheel missing from the folder costs only its own module;
        # without pip, a wheel (a zip file) made for this Python is unpacked
        for name in [WHEEL_NAMES[m] for m in missing if m in WHEEL_NAMES]:
            cmd = [sys.executable, "-m", "pip", "install", "--no-index", "--no-deps",
                   "--find-links", str(folder), "--target", str(target), name]
            if run.child(cmd, "pip.txt", 60) == 0 or unpack_wheels(folder, target, [name]) == 0:
                installed.append(name)
        if installed:
            run.env["PYTHONPATH"] += os.pathsep + str(target)
            sys.path.append(str(target))
            importlib.invalidate_caches()
    import torch
    info = {"python": sys.version.split()[0], "torch": torch.__version__,
            "cuda_build": torch.version.cuda, "cuda_available": torch.cuda.is_available(),
            "device": (torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"),
            "modules": {m: importlib.util.find_spec(m) is not None for m in MODULES},
            "installed_from_wheels": installed, "dry_run": run.args.dry_run}
    if run.args.device.startswith("cuda") and not torch.cuda.is_available():
        info["error"] = (f"--device {run.args.device}: torch {torch.__version__} sees no CUDA "
                         "device (CUDA not available)")
    run.write("env.json", info)
    return info


def unpack_wheels(folder: Path, target: Path, names: list[str]) -> int:
    """Unzip the wheels of ``names`` that fit this Python (py3-none or its cpXY tag) into
    ``target``; 0 when every name had one."""
    import zipfile
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    found = set()
    for wheel in sorted(folder.glob("*.whl")):
        name = wheel.name.split("-")[0].lower()
        if name in names and ("-py3-none-" in wheel.name or f"-{tag}-" in wheel.name):
            with zipfile.ZipFile(wheel) as archive:
                archive.extractall(target)
            found.add(name)
    return 0 if found == set(names) else 1


KERNEL_CHECK = r'''
import json, os, sys, torch
device = sys.argv[1]
from mlip_attn.ops import gpu
if not gpu.runs_on(torch.empty(0, device=device)):
    print(json.dumps({"error": "the Triton kernels cannot run here: " + (gpu.why_not() or
          "CPU tensors need TRITON_INTERPRET=1")})); sys.exit(0)
from mlip_attn.ops.gpu.painn_triton import painn_message_triton
from mlip_attn.ops.gpu.efa_triton import efa_rotate_triton, rotate_reference
from mlip_attn.nn.painn_message import message_reference
from mlip_attn.attention.efa import lebedev_grid
g = torch.Generator().manual_seed(0)
def rnd(*s):
    return torch.randn(*s, dtype=torch.float64, generator=g).to(device).requires_grad_(True)
def rel(a, b):
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-300))
small = len(sys.argv) > 2 and sys.argv[2] == "small"   # the interpreter: tiny sizes
n, e, f, w1, w2, k = (12, 60, 4, 3, 2, 3) if small else (300, 6000, 32, 16, 8, 8)
phi = rnd(n, f + 2 * w1 + 2 * w2)
feats, geo = [rnd(n, 3, w1), rnd(n, 5, w2)], [rnd(e, 3), rnd(e, 5)]
rho, wt = rnd(e, k), rnd(f + 2 * w1 + 2 * w2, k)
i = torch.sort(torch.randint(0, n, (e,), generator=g)).values.to(device)
j = torch.randint(0, n, (e,), generator=g).to(device)
args = (phi, feats, geo, rho, wt, i, j, False)
got, want = painn_message_triton(*args, reference=message_reference), message_reference(*args)
outs, refs = [got[0], *got[1]], [want[0], *want[1]]
cot = [torch.randn_like(t) for t in outs]
ins = [phi, rho, wt, *feats, *geo]
ga = torch.autograd.grad(outs, ins, cot)
gb = torch.autograd.grad(refs, ins, cot)
res = {"painn_forward": max(rel(a, b) for a, b in zip(outs, refs)),
       "painn_backward": max(rel(a, b) for a, b in zip(ga, gb))}
dirs, lam = lebedev_grid(6 if small else 50)
x, c = rnd(n, 4, 4 if small else 16), rnd(n, 3)
om = (torch.arange(1, 3 if small else 9, dtype=torch.float64) * 0.3).to(device)
dirs, lam = dirs.to(device), lam.to(device)
a, b = efa_rotate_triton(x, c, dirs, om, lam), rotate_reference(x, c, dirs, om, lam)
cot = torch.randn_like(a)
res["rotate_forward"] = rel(a, b)
res["rotate_backward"] = max(rel(p, q) for p, q in zip(torch.autograd.grad(a, [x, c], cot),
                                                     torch.autograd.grad(b, [x, c], cot)))
res["passed"] = all(v <= 1e-10 for v in res.values())
print(json.dumps(res))
'''


def kernels(run: Run) -> dict:
    """Step 2: the Triton kernels against the ATen forms (float64), no ASE/vesin needed."""
    log = run.out / "kernels.txt"
    size = "small" if run.args.dry_run else "full"
    code = run.child([sys.executable, "-c", KERNEL_CHECK, run.args.device, size], "kernels.txt",
                     min(120, run.left()))
    last = log.read_text().strip().splitlines()[-1] if log.exists() else ""
    try:
        result = json.loads(last)
    except json.JSONDecodeError:
        result = {"error": f"exit code {code}; see kernels.txt"}
    run.write("kernels.json", result)
    return result


def pytest_step(run: Run, info: dict) -> dict:
    """Step 3: the CUDA tests (they need ASE and vesin: conftest builds structures)."""
    if not (info["modules"]["ase"] and info["modules"]["vesin"]):
        return {"error": "not run: ASE and vesin are needed (pass --wheels; "
                "benchmarks/gpu/fetch_wheels.sh makes the folder)"}
    targets = run.args.tests if run.args.tests is not None else [
        "tests/test_triton_kernels.py", "tests/test_cuda.py",
        "tests/test_bench_demo.py::test_bench_device_cpu_explicit_and_cuda_refused_without_a_gpu"]
    if not targets or targets == ["none"]:
        return {"skipped": "--tests none"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
           f"--junitxml={run.out / 'pytest.xml'}", *targets]
    code = run.child(cmd, "pytest.txt", min(240, run.left() - 60))
    tail = (run.out / "pytest.txt").read_text().strip().splitlines()[-1:]
    return {"exit_code": code, "passed": code == 0, "last_line": tail[0] if tail else ""}


def bench(run: Run, info: dict) -> dict:
    """Step 4: ``mlip-attn bench --device ...`` per model, each with its JSON; merged."""
    if not (info["modules"]["ase"] and info["modules"]["vesin"]):
        return {"error": "not run: ASE and vesin are needed (pass --wheels)"}
    dry = run.args.dry_run
    sizes = run.args.sizes or ([20, 40] if dry else [1000, 10000, 100000, 1000000])
    models = run.args.models or (["painn", "painn+efa-l1"] if dry else MODELS)
    rows, settings, notes = [], {}, []
    for model in models:
        if run.left() < 20:
            notes.append(f"{model}: not run (the time budget was spent)")
            continue
        path = run.out / f"bench-{model.replace('+', '_').replace(':', '_')}.json"
        cmd = [sys.executable, "-m", "mlip_attn.cli", "bench", "--device", run.args.device,
               "--models", model, "--sizes", *map(str, sizes), "--time-cap",
               str(run.args.time_cap), "--json", str(path), "--repeats", "2" if dry else "5"]
        if dry:
            cmd += ["--width", "16", "--layers", "1"]
        cmd.append("--no-neighbour-list")   # a CPU table; this is the GPU's
        code = run.child(cmd, "bench.txt", run.left() - 10)
        if path.exists():
            document = json.loads(path.read_text())
            settings, rows = document["settings"], rows + document["rows"]
        else:
            notes.append(f"{model}: no result (exit code {code}; see bench.txt)")
    table = bench_markdown(settings, rows, notes)
    run.write("bench.json", {"settings": settings, "rows": rows, "notes": notes})
    run.write("bench.md", table)
    return {"rows": len(rows), "notes": notes}


def bench_markdown(settings: dict, rows: list[dict], notes: list[str]) -> str:
    head = (f"Device: {settings.get('device', '?')}; torch {settings.get('torch', '?')}, "
            f"CUDA {settings.get('cuda')}, Triton: {settings.get('triton')}; message route: "
            f"{settings.get('message_route')}; float32, width {settings.get('width')}, "
            f"{settings.get('layers')} layers, cutoff {settings.get('cutoff')} Å, median of "
            f"{settings.get('repeats')}.\n\n")
    lines = ["| model | atoms | pairs | ms/step | µs/atom/step | peak MB |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        if r.get("error"):
            lines.append(f"| {r['model']} | {r['atoms']:,} | | | {r['error']} | |")
            continue
        pairs = f"{r['edges']:,}" if r["edges"] else "-"
        lines.append(f"| {r['model']} | {r['atoms']:,} | {pairs} | "
                     f"{1e3 * r['median_s']:.2f} | {r['us_per_atom_step']:.3f} | "
                     f"{r['peak_mb']:.0f} |")
    return head + "\n".join(lines) + "\n" + "".join(f"\n- {n}" for n in notes) + "\n"


def main(argv=None) -> int:
    args = parse(argv)
    run = Run(args)
    info = probe(run)
    if "error" in info:
        print(info["error"], file=sys.stderr)
        run.write("summary.md", f"# GPU checks\n\n{info['error']}\n")
        return 2
    steps = {"kernels": lambda: kernels(run), "pytest": lambda: pytest_step(run, info),
             "bench": lambda: bench(run, info)}
    for name, step in steps.items():
        if name not in args.skip:
            run.results[name] = step()
            print(f"{name}: {json.dumps(run.results[name])[:300]}", flush=True)
    summary = [f"# GPU checks ({'dry run, ' if args.dry_run else ''}{info['device']})", "",
               f"torch {info['torch']}, CUDA build {info['cuda_build']}, Python "
               f"{info['python']}; modules: {info['modules']}; "
               f"{time.monotonic() - run.start:.0f} s in all.", ""]
    summary += [f"- **{k}**: {json.dumps(v)}" for k, v in run.results.items()]
    if (run.out / "bench.md").exists() and "bench" in run.results:
        summary += ["", (run.out / "bench.md").read_text()]
    run.write("summary.md", "\n".join(summary) + "\n")
    ok = all(r.get("passed", True) and "error" not in r for r in run.results.values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
