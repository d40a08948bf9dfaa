"""``python benchmarks/efa_vs_local.py``: what EFA costs beside the local PaiNN on the CPU, on
the same structure, for both forms of the block:

* ``switched`` (physics 2 default): the exact sinc kernel times the C² switch to zero at r_max;
* ``lebedev`` (``switch: false``): the linear-cost Lebedev factorisation.

Each at ℓ = 0 (``efa-l0``) and ℓ = 1 (``efa-l1``), eager (`Potential.predict`, what
`AttnCalculator` runs), energy + forces. Route ``ops``: EFA on its compiled kernels
(`mlip_attn.attention.efa_ops`); ``python``: EFA as before them (the dense N×N×K switched form,
the ATen rotation); ``--efa-route both`` (default) times both side by side in one run. The PaiNN
message takes its compiled op on every route, so the ratio isolates EFA. ``--aoti`` also times the ``.pt2`` LAMMPS route (compiles ~1 min per model).

Models: PaiNN (width × layers, random weights), alone and with the presets (reach r_max just
beyond the structure, so every pair of atoms attends); structure: ``mlip-attn bench``'s random
C/H/O box as an isolated cluster (global attention refuses periodic cells). Float32 by default,
``--threads`` torch threads (1: the machine is shared); median ms of ``steps`` calls (``--clock
cpu``: the process's CPU time instead of elapsed time),
interleaved model by model, after warm-up; ratio = against the local model of the same size and
route. ``--memory``: peak resident memory (MB) of one call of each model in a fresh process,
above the process's footprint before the call. ``--profile MODEL`` prints the eager profile of
one model (torch.profiler, by op). Models whose dense tensors would exceed ``--dense-max-gb`` are
skipped (python route, switched form).
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from mlip_attn.apps.bench import model_config, random_box
from mlip_attn.data import AtomicData, Batch
from mlip_attn.models import build_model
from mlip_attn.ops import load_ops

FORMS = {"switched": True, "lebedev": False}
MODELS = ("painn", "painn+efa-l0:switched", "painn+efa-l0:lebedev", "painn+efa-l1:switched",
          "painn+efa-l1:lebedev")


def make_model(kind: str, width: int, layers: int, cutoff: float, r_max: float, dtype):
    """A benchmark model: ``painn`` or ``painn+<preset>:<form>`` with random (non-zero) EFA
    weights, in eval mode, ``dtype``."""
    name, _, form = kind.partition(":")
    cfg = model_config(name, width, layers, cutoff, r_max)
    if form:
        cfg["attention"]["switch"] = FORMS[form]
    torch.manual_seed(0)
    model = build_model(cfg)
    with torch.no_grad():   # global blocks start at zero: let them contribute
        for pname, p in model.named_parameters():
            if "global_block" in pname and not p.abs().any():
                p.normal_(0.0, 1e-3)
    return model.to(dtype).eval().requires_grad_(False)


def structure(atoms: int, cutoff: float, dtype):
    data = AtomicData.from_atoms(random_box(atoms, periodic=False))
    return Batch.collate([data.with_graph(cutoff)]).to(dtype=dtype), data.extent + 1.0


def dense_gb(kind: str, atoms: int) -> float:
    """Size (GB, float32) of one N×N×K tensor of the dense switched form."""
    return 0.0 if "switched" not in kind else atoms * atoms * 8 * 4 / 1e9


def efa_route(route: str):
    """The EFA kernels on (``ops``) or off (``python``) within the block (a no-op context on
    a checkout without them, to time the code before them)."""
    try:
        from mlip_attn.attention.efa_ops import efa_kernels
    except ImportError:
        import contextlib
        return contextlib.nullcontext()
    return efa_kernels(route == "ops")


def _call(model, batch, route: str):
    with efa_route(route):
        return model.predict(batch, compute_forces=True)


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def time_models(atoms: int, models, width, layers, cutoff, steps, dtype, route, aoti,
                dense_max_gb, profile=None, clock: str = "wall") -> dict:
    torch_dtype = getattr(torch, dtype)
    batch, r_max = structure(atoms, cutoff, torch_dtype)
    calls = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in models:
            model = make_model(kind, width, layers, cutoff, r_max, torch_dtype)
            routes = ["ops", "python"] if route == "both" and kind != "painn" else [
                "ops" if route == "both" else route]
            for r in routes:   # eager, EFA on its kernels (ops) or as before them (python)
                if r == "python" and dense_gb(kind, atoms) > dense_max_gb:
                    print(f"  skip python {kind} at {atoms} atoms: dense form needs "
                          f"~{dense_gb(kind, atoms):.1f} GB per N×N×K tensor", flush=True)
                    continue
                calls[f"{r} {kind}"] = (lambda m=model, b=batch, r=r: _call(m, b, r))
            if aoti:
                calls[f"aoti {kind}"] = aoti_call(model, batch, atoms, dtype, Path(tmp), kind)
        for f in calls.values():    # warm-up
            f()
        times = {k: [] for k in calls}
        now = CLOCKS[clock]
        for _ in range(steps):
            for k, f in calls.items():
                t = now()
                f()
                times[k].append(1e3 * (now() - t))
        if profile:
            from torch.profiler import ProfilerActivity
            from torch.profiler import profile as torch_profile
            with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
                calls[f"{'ops' if route == 'both' else route} {profile}"]()
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
    print(f"  {atoms} atoms ({batch.edge_index.shape[1]} pairs within {cutoff} Å), "
          f"r_max {r_max:.1f} Å", flush=True)
    return {k: statistics.median(v) for k, v in times.items()}


def aoti_call(model, batch, atoms, dtype, tmp: Path, kind):
    from mlip_attn.lammps.aoti import load_aoti, split_inputs
    from mlip_attn.lammps.export import export_lammps
    from mlip_attn.models import save_model
    path = tmp / f"{kind.replace(':', '-')}.pt"
    save_model(model, path)
    t = time.perf_counter()
    package = load_aoti(export_lammps(path, path.with_suffix(".pt2"), dtype=dtype, route="aoti"))
    print(f"  compiled {kind} in {time.perf_counter() - t:.0f} s", flush=True)
    zero = torch.zeros(1, dtype=torch.float64)
    args = split_inputs(batch.positions.double(), batch.numbers, batch.edge_index,
                        batch.shifts.double(), atoms, zero, zero)
    return lambda p=package, a=args: p(*a)


def peak_memory_child(kind, atoms, width, layers, cutoff, dtype, route) -> None:
    """In a fresh process: peak RSS (MB) of one energy + forces call above the resident
    memory before it (after a warm-up call of the same kind, whose peak is the same); printed
    as JSON."""
    torch_dtype = getattr(torch, dtype)
    load_ops()
    batch, r_max = structure(atoms, cutoff, torch_dtype)
    model = make_model(kind, width, layers, cutoff, r_max, torch_dtype)
    with efa_route(route):
        model.predict(batch, compute_forces=True)
        with open("/proc/self/statm") as statm:   # resident pages now
            before = int(statm.read().split()[1]) * resource.getpagesize() / 2**20
        t = time.perf_counter()
        model.predict(batch, compute_forces=True)
        seconds = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"peak_mb": peak - before, "seconds": seconds}))


def peak_memory(kind, atoms, args, route) -> dict | None:
    if route == "python" and dense_gb(kind, atoms) > args.dense_max_gb:
        return None
    cmd = [sys.executable, __file__, "--child", kind, "--atoms", str(atoms), "--width",
           str(args.width), "--layers", str(args.layers), "--dtype", args.dtype,
           "--efa-route", route]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1][:200]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--atoms", type=int, nargs="+", default=[1000])
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--cutoff", type=float, default=5.0)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--efa-route", default="both", choices=["ops", "python", "both"],
                        help="EFA on its compiled kernels, as before them, or both side by "
                             "side (default)")
    parser.add_argument("--aoti", action="store_true", help="also time the .pt2 route")
    parser.add_argument("--memory", action="store_true", help="peak memory per model")
    parser.add_argument("--dense-max-gb", type=float, default=2.0)
    parser.add_argument("--profile", default=None, choices=MODELS)
    parser.add_argument("--clock", default="wall", choices=sorted(CLOCKS),
                        help="wall: elapsed time; cpu: this process's CPU time (with one "
                             "thread, what a shared, loaded machine inflates least)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        peak_memory_child(args.child, args.atoms[0], args.width, args.layers, args.cutoff,
                          args.dtype, args.efa_route)
        return
    load_ops()
    print(f"energy + forces, random C/H/O cluster, PaiNN {args.width} × {args.layers}, cutoff "
          f"{args.cutoff} Å, {args.dtype}, {args.threads} thread(s), EFA route "
          f"{args.efa_route}, torch {torch.__version__}; median of {args.steps} (ms, {args.clock} "
          f"clock)", flush=True)
    rows = {}
    for atoms in args.atoms:
        ms = time_models(atoms, args.models, args.width, args.layers, args.cutoff, args.steps,
                         args.dtype, args.efa_route, args.aoti, args.dense_max_gb, args.profile,
                         args.clock)
        for key, value in ms.items():
            route, kind = key.split(" ")
            base = ms.get(f"{route} painn", ms.get("ops painn"))
            rows.setdefault((route, kind), {})[atoms] = (value, value / base if base else None)
    head = "".join(f"{f'{a} atoms ms':>16}{'× local':>9}" for a in args.atoms)
    print(f"{'route':<7}{'model':<24}{head}")   # ratio: against the local PaiNN
    for (route, kind), by_size in rows.items():
        cells = ""
        for a in args.atoms:
            v, r = by_size.get(a, (None, None))
            cells += f"{'—':>16}{'':>9}" if v is None else (
                f"{v:>16.1f}{'—' if r is None else f'{r:.2f}':>9}")
        print(f"{route:<7}{kind:<24}{cells}")
    if args.memory:
        print(f"\npeak memory of one call (MB above the footprint before it), fresh process each")
        routes = ["ops", "python"] if args.efa_route == "both" else [args.efa_route]
        for atoms in args.atoms:
            for kind in args.models:
                for route in routes if kind != "painn" else routes[:1]:
                    m = peak_memory(kind, atoms, args, route)
                    print(f"{atoms:>7} {route:<7}{kind:<24} "
                          f"{'skipped' if m is None else json.dumps(m)}", flush=True)


if __name__ == "__main__":
    main()
