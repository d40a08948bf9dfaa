"""``mlip-attn bench --lammps`` (and ``--lammps --electrostatics`` alone): the cost of the
``electrostatics`` block beside the local model it is built on, in ASE and in LAMMPS.

PaiNN with and without the block (same width, layers and cutoff; the block's ``accuracy``,
``method`` auto, the default charge width unless given) on rattled rock salt (Na⁺/Cl⁻), float64, one thread:

* **ASE** (`AttnCalculator`): ms per energy + forces call, local vs electrostatics and their
  ratio, at 10³ and 10⁴ ions;
* **LAMMPS** (the ``lmp`` binary, ``torchscript+ops`` exports): ms per MD step on 1 and on n
  ranks (1 thread each), the speed-up, the electrostatics/local ratio on one rank, and the
  largest difference of n ranks from one rank (energy, forces) at the first step, at 10⁴
  and 10⁵ ions. A size whose estimated time per step (linear in the atoms, from the smaller
  size) exceeds ``time_limit`` seconds is skipped, and the table says so.
"""
from __future__ import annotations

import math
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from .lammps_bench import WARMUP, _lammps_run, _print_row


def _salt(n: int):
    """Rattled rock salt (Na⁺/Cl⁻, a = 5.64 Å) with about ``n`` ions: 8 k³."""
    from ase.build import bulk
    reps = max(1, round((n / 8) ** (1 / 3)))
    atoms = bulk("NaCl", "rocksalt", a=5.64, cubic=True).repeat((reps, reps, reps))
    atoms.rattle(0.05, seed=1)
    return atoms


def _smearing_text(smearing, cutoff: float) -> str:
    """The charge width the bench's electrostatics model gets, for its table header."""
    from ..attention.electrostatics import default_smearing
    if smearing == "auto":
        return f"default ({default_smearing(cutoff):.2f} Å)"
    return f"{smearing:g} Å"


def _salt_models(work: Path, width: int, layers: int, cutoff: float, accuracy: float,
                 smearing: float | str = "auto"):
    """Local PaiNN and PaiNN + electrostatics (charges, φ feedback randomised) model files."""
    import torch
    from ..models import build_model, save_model
    paths = {}
    for name, attention in (("local", None), ("electrostatics", {
            "type": "electrostatics", "accuracy": accuracy, "method": "auto",
            "smearing": smearing})):
        torch.manual_seed(0)
        model = build_model({"backbone": "painn", "elements": [11, 17], "width": width,
                             "layers": layers, "cutoff": cutoff, "attention": attention})
        with torch.no_grad():
            for key, p in model.named_parameters():
                if "global_block" in key and not p.abs().any():
                    p.normal_(0.0, 1e-3)
        paths[name] = work / f"salt-{name}.pt"
        save_model(model, paths[name])
    return paths


def _ase_call_ms(model_paths, atoms, steps: int) -> list:
    """Median ms of energy + forces by `AttnCalculator` (float64) for each model file,
    interleaved call by call (load drifts of a shared machine hit all alike), positions moved
    before each round."""
    from ..calculators import AttnCalculator
    copies = []
    for path in model_paths:
        a = atoms.copy()
        a.calc = AttnCalculator(path, default_dtype="float64")
        copies.append(a)
    rng = np.random.default_rng(0)
    times = [[] for _ in copies]
    for k in range(WARMUP + steps):
        moved = atoms.positions + rng.normal(scale=1e-3, size=atoms.positions.shape)
        for a, t_list in zip(copies, times):
            a.positions = moved
            t = time.perf_counter()
            a.get_forces()
            if k >= WARMUP:
                t_list.append(1e3 * (time.perf_counter() - t))
    return [statistics.median(t) for t in times]


def run_electrostatics_bench(ase_sizes=(1000, 10000), lammps_sizes=(10000, 100000),
                             width: int = 64, layers: int = 2, cutoff: float = 5.0,
                             accuracy: float = 1e-5, steps: int = 3, time_limit: float = 30.0,
                             ranks=(2,), smearing: float | str = "auto") -> dict:
    """Print and return the electrostatics tables (module docstring, 3.): ``{"ase": rows,
    "scaling": rows}``, ms per energy + forces call (ASE) and per MD step (LAMMPS)."""
    import os

    import ase.io
    import torch
    from ..lammps.build import build_plugin
    from ..lammps.export import export_lammps
    from ..ops import load_ops
    torch.set_num_threads(1)
    build_plugin()
    load_ops()
    cores = os.cpu_count()
    out = {"ase": [], "scaling": []}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        paths = _salt_models(work, width, layers, cutoff, accuracy, smearing)
        print(f"3a. Electrostatics in ASE: PaiNN {width} × {layers}, cutoff {cutoff} Å, "
              f"float64, 1 thread, rattled NaCl; electrostatics accuracy {accuracy:g}, method "
              f"auto, smearing {_smearing_text(smearing, cutoff)}; ms per "
              f"energy + forces (median of {steps})")
        widths = (8, 12, 17, 8)
        _print_row(("atoms", "local", "electrostatics", "ratio"), widths)
        for n in ase_sizes:
            atoms = _salt(n)
            t_local, t_elec = _ase_call_ms([paths["local"], paths["electrostatics"]], atoms,
                                           steps)
            out["ase"].append({"atoms": len(atoms), "local_ms": t_local,
                               "electrostatics_ms": t_elec, "ratio": t_elec / t_local})
            _print_row((len(atoms), f"{t_local:.0f}", f"{t_elec:.0f}",
                        f"{t_elec / t_local:.2f}×"), widths)
        exports = {k: export_lammps(p, work / f"{p.stem}.lmp.pt", dtype="float64",
                                    route="torchscript+ops") for k, p in paths.items()}
        print(f"\n3b. Electrostatics in LAMMPS, strong scaling (lmp binary, float64, 1 thread "
              f"per rank; this machine has {cores} cores): ms per MD step (median of {steps}); "
              f"ΔE/|E|, ΔF: n ranks against 1 rank at the first step")
        widths = (16, 8, 9, 9, 4, 10, 9, 20)
        _print_row(("model", "atoms", "1 rank", "n ranks", "n", "speed-up", "vs local",
                    "ΔE/|E|, ΔF (eV/Å)"), widths)
        estimate = {}
        for n in lammps_sizes:
            atoms = _salt(n)
            data = work / f"salt-{len(atoms)}.data"
            ase.io.write(data, atoms, format="lammps-data", masses=True,
                         specorder=["Na", "Cl"])
            one_local = math.nan
            for name in ("local", "electrostatics"):
                guess = estimate.get(name, 0.0) * len(atoms)
                if guess > 1e3 * time_limit:
                    _print_row((name, len(atoms), "skipped", f" (est. {guess / 1e3:.0f} s/step "
                                f"> --time-limit {time_limit:g} s)"), widths[:4])
                    continue
                for r in ranks:
                    a = _lammps_run(work, exports[name], data, True, steps, 1, 1, "Na Cl")
                    b = _lammps_run(work, exports[name], data, True, steps, 1, r, "Na Cl")
                    one_ms, many_ms = statistics.median(a["ms"]), statistics.median(b["ms"])
                    estimate[name] = one_ms / len(atoms)
                    if name == "local":
                        one_local = one_ms
                    de = abs(b["energy"] - a["energy"]) / abs(a["energy"])
                    df = float(np.abs(b["forces"] - a["forces"]).max())
                    row = {"model": name, "atoms": len(atoms), "one_rank_ms": one_ms,
                           "ranks": r, "ranks_ms": many_ms, "speedup": one_ms / many_ms,
                           "vs_local": one_ms / one_local, "energy_rel_diff": de,
                           "force_diff": df}
                    out["scaling"].append(row)
                    _print_row((name, len(atoms), f"{one_ms:.0f}", f"{many_ms:.0f}", r,
                                f"{row['speedup']:.2f}×", f"{row['vs_local']:.2f}×",
                                f"{de:.1e}, {df:.1e}"), widths)
    return out
