"""``mlip-attn demo``: the whole pipeline on a built-in problem, with nothing to download.

1. Cumulenes H2C=(C=)k=CH2 with 3–9 carbons, one end rotated and rattled, labelled with GFN2-xTB
   (tblite); 80/10/10 split.
2. `fit` trains a local PaiNN and, when EFA is available, PaiNN + Euclidean fast attention
   (same width, layers and cutoff; EFA with vector and rank-2 tensor channels, which carry
   the orientation of a CH2 end along the chain).
3. Test-set errors, and the rigid torsion barrier of a C8 chain (ends ~10 Å apart, beyond the
   local model's receptive field of layers × cutoff) from xTB and from each model.
4. 0.3 ps of NVE molecular dynamics with `AttnCalculator`: the total-energy drift.

Writes ``OUT/cumulene.xyz``, ``OUT/<model>/`` run directories and ``OUT/model.pt`` (the
attention model when there is one, else the local one). Re-running resumes every step.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np

TRAIN_LENGTHS = (3, 4, 5, 6, 7, 8, 9)
BARRIER_LENGTH = 8
KCAL_PER_EV = 23.0605


def _model_configs(r_max: float, quick: bool) -> dict[str, dict]:
    base = {"backbone": "painn", "width": 48 if quick else 64, "layers": 2, "cutoff": 4.0,
            "num_basis": 16}
    efa = {"type": "efa", "r_max": r_max, "grid": 50, "d_qk": 16, "d_v": 16, "vectors": True,
           "tensors": True}
    return {"local": {**base, "attention": None}, "efa": {**base, "attention": efa}}


def _barrier(energies: np.ndarray) -> float:
    """Rigid torsion barrier (eV): max − min over the 0–90° scan."""
    return float(energies.max() - energies.min())


def run_demo(out: str | Path = "demo_run", quick: bool = False, log=print) -> dict:
    """Run the demo; returns the numbers it printed (errors in eV units, drift in eV/atom)."""
    import ase.io
    import torch
    from ase import units
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
    from ase.md.verlet import VelocityVerlet

    from ..calculators import AttnCalculator
    from ..data import AtomicData
    from ..qm.labelling import label_structures
    from ..qm import cumulene_structures, cumulene_torsion_scan
    from ..training import fit, load_config

    t0 = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    n_per_length = 20 if quick else 30
    epochs = 20 if quick else 40

    log(f"[1/4] cumulene data: {len(TRAIN_LENGTHS)} chain lengths x {n_per_length} structures, "
        f"GFN2-xTB (tblite)")
    structures = cumulene_structures(TRAIN_LENGTHS, n_per_length, seed=0)
    data_path = out / "cumulene.xyz"
    report = label_structures(structures, str(data_path), workers=1, progress=True)
    if report.n_failed:
        log(f"      {report.n_failed} structures failed in xTB and were skipped")
    extents = [AtomicData.from_atoms(a).extent for a in structures]
    r_max = float(np.ceil(max(extents))) + 2.0  # covers every training structure

    scan = cumulene_torsion_scan(BARRIER_LENGTH, np.linspace(0.0, 90.0, 7))
    scan_path = out / f"c{BARRIER_LENGTH}_torsion_scan.xyz"
    label_structures(scan, str(scan_path), progress=False)
    scan = ase.io.read(scan_path, ":")
    scan.sort(key=lambda a: int(a.info["index"]))
    ref_profile = np.array([a.info["REF_energy"] for a in scan])

    results: dict = {"reference_barrier_eV": _barrier(ref_profile), "models": {}}
    configs = _model_configs(r_max, quick)
    for k, (name, model_cfg) in enumerate(configs.items()):
        log(f"[2/4] training '{name}' ({k + 1}/{len(configs)})")
        run_dir = out / name
        overrides = {
            "model": model_cfg,
            "data": {"train": str(data_path), "valid": 0.1, "test": 0.1, "split_seed": 0},
            "training": {"epochs": epochs, "batch_size": 8, "lr": 2e-3, "scheduler": "cosine",
                         # the torsion is an energy effect with small forces
                         "lr_min": 1e-5, "energy_weight": 100.0, "forces_weight": 1.0,
                         "ema_decay": 0.99, "seed": 0},
            "output": str(run_dir),
        }
        config = load_config(None, overrides)
        resume = (run_dir / "checkpoint.pt").exists()
        # per-epoch lines stay in the progress bar and metrics.csv; the summary lines are shown
        result = fit(config, resume=resume,
                     log=lambda s: None if s.startswith("epoch") else log("      " + s))
        calc = AttnCalculator(run_dir / "model.pt", range_check="raise")
        profile = []
        for atoms in scan:
            a = atoms.copy()
            a.calc = calc
            profile.append(a.get_potential_energy())
        profile = np.array(profile)
        results["models"][name] = {"test": result.test, "barrier_eV": _barrier(profile),
                                   "profile_eV": (profile - profile.min()).tolist(),
                                   "train_seconds": result.seconds}

    best = "efa" if "efa" in configs else "local"
    shutil.copyfile(out / best / "model.pt", out / "model.pt")

    log(f"[3/4] NVE molecular dynamics, C{BARRIER_LENGTH}H4, '{best}' model, 300 K, 0.5 fs")
    md_atoms = scan[0].copy()
    md_atoms.calc = AttnCalculator(out / "model.pt", default_dtype="float64")
    MaxwellBoltzmannDistribution(md_atoms, temperature_K=300, rng=np.random.default_rng(0))
    dyn = VelocityVerlet(md_atoms, timestep=0.5 * units.fs)
    energies = []
    dyn.attach(lambda: energies.append(md_atoms.get_total_energy()), interval=5)
    steps = 300 if quick else 600
    dyn.run(steps)
    energies = np.array(energies)
    drift = float(abs(energies[-1] - energies[0]) / len(md_atoms))
    spread = float((energies.max() - energies.min()) / len(md_atoms))
    results["md"] = {"steps": steps, "drift_eV_per_atom": drift, "spread_eV_per_atom": spread}

    log("[4/4] results")
    log(f"      held-out test set ({len(TRAIN_LENGTHS)} chain lengths, xTB reference):")
    log(f"      {'model':<8}{'E MAE meV/atom':>16}{'E MAE meV':>12}{'F MAE meV/Å':>14}"
        f"{'C' + str(BARRIER_LENGTH) + ' barrier kcal/mol':>22}")
    log(f"      {'xTB':<8}{'':>16}{'':>12}{'':>14}{results['reference_barrier_eV'] * KCAL_PER_EV:>22.1f}")
    for name, r in results["models"].items():
        t = r["test"]
        log(f"      {name:<8}{1e3 * t['energy_per_atom_mae']:>16.2f}{1e3 * t['energy_mae']:>12.1f}"
            f"{1e3 * t['forces_mae']:>14.1f}{r['barrier_eV'] * KCAL_PER_EV:>22.1f}")
    log(f"      NVE: {steps} steps, total-energy drift {1e3 * drift:.3f} meV/atom "
        f"(max-min {1e3 * spread:.3f} meV/atom)")
    log(f"      model written to {out / 'model.pt'}; total {time.perf_counter() - t0:.0f} s")
    results["seconds"] = time.perf_counter() - t0
    return results
