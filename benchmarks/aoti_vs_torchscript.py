"""``python benchmarks/aoti_vs_torchscript.py``: the AOTInductor route (``.pt2``) against the
TorchScript + compiled-ops route (``.pt``) of the LAMMPS export, on the CPU, side by side.

For each model and dtype the same model file is exported both ways (`export_lammps`, routes
``aoti`` and ``torchscript+ops``; the compile time of the package is printed), then, in one
process, interleaved call by call (median of ``steps`` after warm-up):

* ``call``: each export called from Python as the pair style calls it, energy + forces on a
  prebuilt neighbour list (the package always returns the virial too; the TorchScript call
  is timed without and with it);
* ``lammps``: one MD step of ``pair_style mlip_attn`` in the ``lammps`` module, each export
  in its own LAMMPS instance (no pressure output, so no virial asked of TorchScript).

Models: PaiNN (width × layers, random weights) on rattled periodic fcc copper, and PaiNN +
EFA (``efa-l1``) on a copper cube in vacuum. ``--threads`` sets torch's threads (1 by
default: the machine is shared). Forces of the two routes are compared (max |ΔF|, eV/Å).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from mlip_attn.apps.lammps_bench import (EFA_PRESET, _copper, _lammps_stepper, _save_model,
                                         _side_by_side)
from mlip_attn.data import AtomicData, Batch
from mlip_attn.lammps.aoti import load_aoti, split_inputs
from mlip_attn.lammps.export import export_lammps, load_torchscript
from mlip_attn.ops import load_ops

MODELS = {"painn": (None, True), "painn+efa-l1": ({**EFA_PRESET, "r_max": 40.0}, False)}


def _write_data(path: Path, atoms) -> None:
    from ase.io import write
    write(path, atoms, format="lammps-data", specorder=["Cu"], masses=True)


def run(sizes=(1000,), width: int = 64, layers: int = 2, cutoff: float = 5.0, steps: int = 10,
        dtypes=("float64", "float32"), models=tuple(MODELS), threads: int = 1,
        lammps: bool = True) -> list[dict]:
    """Print and return one row per model, dtype and size (ms, see the module docstring)."""
    torch.set_num_threads(threads)
    load_ops()
    rows = []
    print(f"AOTInductor (.pt2) vs TorchScript + ops (.pt), CPU, {threads} thread(s), PaiNN "
          f"{width} × {layers}, cutoff {cutoff} Å; ms, median of {steps} interleaved after "
          f"warm-up")
    head = ["model", "dtype", "atoms", "compile s", "call pt2", "call ts", "call ts+vir",
            "ratio", "md pt2", "md ts", "ratio", "max |ΔF|"]
    widths = [14, 9, 7, 10, 10, 9, 12, 7, 9, 8, 7, 10]
    print("".join(f"{h:>{w}}" for h, w in zip(head, widths)), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name in models:
            attention, periodic = MODELS[name]
            model_path = work / f"{name}.pt"
            _save_model(model_path, width, layers, cutoff, attention)
            for dtype in dtypes:
                t = time.perf_counter()
                package = export_lammps(model_path, work / f"{name}-{dtype}.pt2", dtype=dtype,
                                        route="aoti")
                compile_s = time.perf_counter() - t
                script = export_lammps(model_path, work / f"{name}-{dtype}.pt", dtype=dtype,
                                       route="torchscript+ops")
                compiled, scripted = load_aoti(package), load_torchscript(script)
                for n in sizes:
                    atoms = _copper(n, periodic)
                    batch = Batch.collate([AtomicData.from_atoms(atoms).with_graph(cutoff)]).to(
                        dtype=torch.float64)
                    zero = torch.zeros(1, dtype=torch.float64)
                    box = batch.cell[0].double()
                    args = (batch.positions, batch.numbers, batch.edge_index, batch.shifts)
                    package_args = split_inputs(*args, len(atoms), zero, zero)
                    timers = {
                        "call_pt2": lambda: compiled(*package_args),
                        "call_ts": lambda: scripted(*args, len(atoms), zero, zero, False, box),
                        "call_ts_virial": lambda: scripted(*args, len(atoms), zero, zero, True, box)}
                    opened = []
                    if lammps:
                        data = work / f"data-{n}.lmp"
                        _write_data(data, atoms)
                        timers["md_pt2"] = _lammps_stepper(package, data, periodic, threads,
                                                           opened)
                        timers["md_ts"] = _lammps_stepper(script, data, periodic, threads,
                                                          opened)
                    try:
                        times = _side_by_side(timers, steps)
                    finally:
                        for lmp in opened:
                            lmp.close()
                    force_diff = float((compiled(*package_args)[2]
                                        - scripted(*args, len(atoms), zero, zero, False, box)[2]
                                        ).abs().max())
                    row = {"model": name, "dtype": dtype, "atoms": len(atoms),
                           "compile_s": compile_s, "aoti_call_ms": times["call_pt2"],
                           "script_call_ms": times["call_ts"],
                           "script_virial_call_ms": times["call_ts_virial"],
                           "aoti_md_ms": times.get("md_pt2", float("nan")),
                           "script_md_ms": times.get("md_ts", float("nan")),
                           "force_diff": force_diff}
                    rows.append(row)
                    cells = [name, dtype, row["atoms"], f"{compile_s:.0f}",
                             f"{row['aoti_call_ms']:.1f}", f"{row['script_call_ms']:.1f}",
                             f"{row['script_virial_call_ms']:.1f}",
                             f"{row['aoti_call_ms'] / row['script_call_ms']:.2f}",
                             f"{row['aoti_md_ms']:.1f}", f"{row['script_md_ms']:.1f}",
                             f"{row['aoti_md_ms'] / row['script_md_ms']:.2f}",
                             f"{force_diff:.1e}"]
                    print("".join(f"{c:>{w}}" for c, w in zip(cells, widths)), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000])
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dtypes", nargs="+", default=["float64", "float32"])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--no-lammps", action="store_true", help="only the calls from Python")
    args = parser.parse_args()
    run(sizes=tuple(args.sizes), width=args.width, layers=args.layers, steps=args.steps,
        dtypes=tuple(args.dtypes), models=tuple(args.models), threads=args.threads,
        lammps=not args.no_lammps)


if __name__ == "__main__":
    main()
