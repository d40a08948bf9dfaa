"""``python benchmarks/efa_vs_local.py``: what EFA costs beside the local PaiNN on the CPU, on
the same structure, eager (`Potential.predict`, what `AttnCalculator` runs) and as
AOTInductor packages (the ``aoti`` LAMMPS route, where Inductor fuses EFA's grid rotations).

Models: PaiNN (width × layers, random weights), alone and with the ``efa-l0`` / ``efa-l1``
presets (reach beyond the structure); structure: ``mlip-attn bench``'s random C/H/O box as an
isolated cluster (global attention refuses periodic cells). Energy + forces, float32 by
default, ``--threads`` torch threads (1: the machine is shared); median ms of ``steps`` calls,
interleaved model by model, after warm-up; the ratio is against the local model of the same
route. ``--profile MODEL`` prints the eager profile of one model (torch.profiler, by op).
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from mlip_attn.apps.bench import model_config, random_box
from mlip_attn.data import AtomicData, Batch
from mlip_attn.lammps.aoti import load_aoti, split_inputs
from mlip_attn.lammps.export import export_lammps
from mlip_attn.models import build_model, save_model
from mlip_attn.ops import load_ops

MODELS = ("painn", "painn+efa-l0", "painn+efa-l1")


def run(atoms: int = 1000, width: int = 128, layers: int = 3, cutoff: float = 5.0,
        steps: int = 5, dtype: str = "float32", threads: int = 1, aoti: bool = True,
        profile: str | None = None) -> dict:
    torch.set_num_threads(threads)
    load_ops()
    structure = random_box(atoms, periodic=False)
    data = AtomicData.from_atoms(structure)
    batch = Batch.collate([data.with_graph(cutoff)])
    zero = torch.zeros(1, dtype=torch.float64)
    calls = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in MODELS:
            torch.manual_seed(0)
            model = build_model(model_config(kind, width, layers, cutoff, data.extent + 1.0))
            with torch.no_grad():   # global blocks start at zero: let them contribute
                for name, p in model.named_parameters():
                    if "global_block" in name and not p.abs().any():
                        p.normal_(0.0, 1e-3)
            model = model.to(getattr(torch, dtype)).eval().requires_grad_(False)
            typed = batch.to(dtype=getattr(torch, dtype))
            calls[f"eager {kind}"] = (lambda m=model, b=typed: m.predict(b, compute_forces=True))
            if aoti:
                path = Path(tmp) / f"{kind}.pt"
                save_model(model, path)
                t = time.perf_counter()
                package = load_aoti(export_lammps(path, Path(tmp) / f"{kind}.pt2", dtype=dtype,
                                                  route="aoti"))
                print(f"compiled {kind} in {time.perf_counter() - t:.0f} s", flush=True)
                args = split_inputs(batch.positions.double(), batch.numbers, batch.edge_index,
                                    batch.shifts.double(), atoms, zero, zero)
                calls[f"aoti {kind}"] = (lambda p=package, a=args: p(*a))
        for f in calls.values():    # warm-up
            f()
        times = {k: [] for k in calls}
        for _ in range(steps):
            for k, f in calls.items():
                t = time.perf_counter()
                f()
                times[k].append(1e3 * (time.perf_counter() - t))
    ms = {k: statistics.median(v) for k, v in times.items()}
    print(f"energy + forces, {atoms} atoms (random C/H/O cluster, "
          f"{batch.edge_index.shape[1]} pairs), PaiNN {width} × {layers}, cutoff {cutoff} Å, "
          f"{dtype}, {threads} thread(s), torch {torch.__version__}; median of {steps}")
    print(f"{'route':<7}{'model':<15}{'ms':>9}{'× local':>9}")
    for key, value in ms.items():
        route, kind = key.split(" ")
        print(f"{route:<7}{kind:<15}{value:>9.1f}{value / ms[f'{route} painn']:>9.2f}")
    if profile:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as torch_profile
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            calls[f"eager {profile}"]()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
    return ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--atoms", type=int, default=1000)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-aoti", action="store_true", help="eager only (no compiling)")
    parser.add_argument("--profile", default=None, choices=MODELS)
    args = parser.parse_args()
    run(atoms=args.atoms, width=args.width, layers=args.layers, steps=args.steps,
        dtype=args.dtype, threads=args.threads, aoti=not args.no_aoti, profile=args.profile)


if __name__ == "__main__":
    main()
