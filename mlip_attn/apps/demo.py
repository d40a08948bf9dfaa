"""``mlip-attn demo``: a long-range effect a local model cannot learn and a global one does,
from nothing (no download), in a few minutes on 2 cores.

1. Cumulenes H2C=(C=)10=CH2 (C12H4, ends ~14 Å apart), one CH2 end turned (0–90°), rattled,
   bent and stretched, labelled with GFN2-xTB (tblite): structures to train and validate on,
   and — generated separately, never trained on — a test set and a rigid torsion scan.
2. `fit` trains two PaiNN models with rank-2 (ℓ = 2) features and the same parameter budget,
   side by side (one process each): a local one (2 layers × 3.5 Å: an atom's energy sees
   7 Å, so no atom sees both ends) and a global one (the same with a through-bond block
   beside each layer, `mlip_attn.attention.bond_graph`, which carries the orientation of one
   end to the other).
3. Errors on the held-out structures and the torsion barrier |E(0°) − E(90°)| against xTB.
4. NVE molecular dynamics with `AttnCalculator` and the global model: the total-energy drift.

Writes ``OUT/*.xyz`` (data), ``OUT/local/`` and ``OUT/global/`` (runs), ``OUT/model.pt``
(the global model) and ``OUT/results.json``. Re-running resumes every step.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import time
from pathlib import Path

import numpy as np

CARBONS = 12
DISTORTIONS = {"rattle": (0.0, 0.05), "bend": 0.1, "stretch": 0.02}
KCAL_PER_EV = 23.0605


def model_configs() -> dict[str, dict]:
    """The two models, matched in parameters (the local one is wider)."""
    from .longrange import count_parameters, matched_width
    from ..models import build_model
    base = {"backbone": "painn", "lmax": 2, "layers": 2, "cutoff": 3.5, "num_basis": 12,
            "elements": [1, 6]}
    glob = {**base, "width": 32, "attention": {"type": "bond-graph", "channels": 8, "steps": 24}}
    width, _ = matched_width({**base, "attention": None}, count_parameters(build_model(glob)))
    return {"local": {**base, "width": width, "attention": None}, "global": glob}


PROGRESS_EVERY = 10   # epochs between progress lines while the models train


def _progress_line(name: str, line: str) -> str | None:
    """The training log ``line`` of model ``name`` as the demo shows it: the header, every
    `PROGRESS_EVERY`-th epoch and the last line; None for the other epochs."""
    if line.startswith("epoch "):
        epoch = int(line.split()[1])
        if epoch != 1 and epoch % PROGRESS_EVERY:
            return None
    return f"      {name:<7}{line}"


def _train(args: tuple) -> dict:
    """One `fit` in a worker process (one thread): returns the test errors and seconds; its
    progress goes to ``queue`` (or is printed, with no queue)."""
    config, resume, name, queue = args
    import torch
    torch.set_num_threads(1)
    from ..training import fit

    def log(line: str) -> None:
        shown = _progress_line(name, line)
        if shown is not None:
            queue.put(shown) if queue is not None else print(shown, flush=True)
    result = fit(config, resume=resume, log=log)
    return {"test": result.test, "seconds": result.seconds, "epochs": result.epochs_run}


def _train_side_by_side(jobs: list[tuple], log) -> list[dict]:
    """`_train` for each job in its own process, their progress lines shown as they come.
    The compiled kernels are built here first, so the workers do not both compile them."""
    from queue import Empty

    from ..nn.policy import prepare
    prepare()
    context = mp.get_context("spawn")
    with context.Manager() as manager:
        queue = manager.Queue()
        with context.Pool(len(jobs)) as pool:
            pending = pool.map_async(_train, [(*job, queue) for job in jobs])
            while not (pending.ready() and queue.empty()):
                try:
                    log(queue.get(timeout=0.5))
                except Empty:
                    pass
            return pending.get()


def _label(path: Path, structures) -> list:
    import ase.io
    from ..qm.labelling import label_structures
    report = label_structures(structures, str(path), progress=False)
    if report.n_failed:
        raise RuntimeError(f"{path}: {report.n_failed} structures failed in xTB: {report}")
    frames = ase.io.read(path, ":")
    frames.sort(key=lambda a: int(a.info["index"]))
    return frames


def run_demo(out: str | Path = "demo_run", quick: bool = False, log=print) -> dict:
    """Run the demo; returns what it wrote to ``OUT/results.json``."""
    from ase import units
    from ase.md.velocitydistribution import thermalize_momenta
    from ase.md.verlet import VelocityVerlet

    from ..calculators import AttnCalculator
    from ..models import build_model
    from ..qm import cumulene_structures, cumulene_torsion_scan
    from ..training import load_config

    t0 = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    n_train, n_test = (300, 50) if quick else (400, 100)
    epochs = 25 if quick else 60

    log(f"[1/4] C{CARBONS}H4 cumulenes, GFN2-xTB (tblite): {n_train} to train and validate on, "
        f"{n_test} held out and a rigid torsion scan")
    _label(out / "train.xyz", cumulene_structures([CARBONS], n_train, seed=0, **DISTORTIONS))
    test = _label(out / "test.xyz", cumulene_structures([CARBONS], n_test, seed=1, **DISTORTIONS))
    angles = np.linspace(0.0, 90.0, 7)
    scan = _label(out / "torsion_scan.xyz", cumulene_torsion_scan(CARBONS, angles))

    configs = model_configs()
    jobs = []
    for name, model_cfg in configs.items():
        config = load_config(None, {
            "model": model_cfg,
            "data": {"train": str(out / "train.xyz"), "valid": 0.1,
                     "test": str(out / "test.xyz")},
            "training": {"epochs": epochs, "batch_size": 16, "lr": 3e-3, "scheduler": "cosine",
                         "lr_min": 1e-5, "energy_weight": 100.0, "forces_weight": 1.0,
                         "seed": 0, "progress": False},
            "output": str(out / name)})
        jobs.append((config, (out / name / "checkpoint.pt").exists(), name))
    sizes = {name: sum(p.numel() for p in build_model(c).parameters())
             for name, c in configs.items()}
    log(f"[2/4] training side by side, {epochs} epochs each: local "
        f"({sizes['local']:,} parameters; sees 7 Å) and global ({sizes['global']:,}; "
        f"through-bond block)")
    if (os.cpu_count() or 1) >= 2:
        trained = dict(zip(configs, _train_side_by_side(jobs, log)))
    else:
        trained = {name: _train((*job, None)) for name, job in zip(configs, jobs)}

    log("[3/4] held-out structures and the torsion barrier")
    ref = np.array([a.info["REF_energy"] for a in scan])
    results: dict = {"system": f"C{CARBONS}H4 cumulene", "held_out_structures": len(test),
                     "reference_barrier_eV": float(abs(ref[0] - ref[-1]))}
    for name in configs:
        calc = AttnCalculator(out / name / "model.pt", default_dtype="float64")
        profile = []
        for atoms in scan:
            a = atoms.copy()
            a.calc = calc
            profile.append(a.get_potential_energy())
        profile = np.array(profile)
        t = trained[name]["test"]
        results[name] = {"parameters": sizes[name],
                         "energy_mae_meV": 1e3 * t["energy_mae"],
                         "energy_rmse_meV": 1e3 * t["energy_rmse"],
                         "forces_mae_meV_A": 1e3 * t["forces_mae"],
                         "barrier_eV": float(abs(profile[0] - profile[-1])),
                         "profile_eV": (profile - profile.min()).tolist(),
                         "train_seconds": trained[name]["seconds"]}
    shutil.copyfile(out / "global" / "model.pt", out / "model.pt")

    log(f"[4/4] NVE molecular dynamics, C{CARBONS}H4, global model, 300 K, 0.5 fs")
    md_atoms = scan[0].copy()
    md_atoms.calc = AttnCalculator(out / "model.pt", default_dtype="float64")
    thermalize_momenta(md_atoms, temperature_K=300, rng=np.random.default_rng(0))
    dyn = VelocityVerlet(md_atoms, timestep=0.5 * units.fs)
    energies = []
    dyn.attach(lambda: energies.append(md_atoms.get_total_energy()), interval=5)
    steps = 200 if quick else 400
    dyn.run(steps)
    energies = np.array(energies)
    results["md"] = {"steps": steps,
                     "drift_eV_per_atom": float(abs(energies[-1] - energies[0]) / len(md_atoms)),
                     "spread_eV_per_atom": float((energies.max() - energies.min()) / len(md_atoms))}
    local, glob = results["local"], results["global"]
    results["energy_mae_ratio"] = local["energy_mae_meV"] / glob["energy_mae_meV"]
    results["barrier_error"] = abs(glob["barrier_eV"] / results["reference_barrier_eV"] - 1.0)
    results["seconds"] = time.perf_counter() - t0
    (out / "results.json").write_text(json.dumps(results, indent=1))

    log(f"      {'':<8}{'E MAE':>10}{'F MAE':>10}{'barrier':>12}   (held-out structures, "
        f"xTB reference)")
    log(f"      {'':<8}{'meV':>10}{'meV/Å':>10}{'kcal/mol':>12}")
    log(f"      {'xTB':<8}{'':>10}{'':>10}{results['reference_barrier_eV'] * KCAL_PER_EV:>12.1f}")
    for name in configs:
        r = results[name]
        log(f"      {name:<8}{r['energy_mae_meV']:>10.1f}{r['forces_mae_meV_A']:>10.1f}"
            f"{r['barrier_eV'] * KCAL_PER_EV:>12.1f}")
    log(f"      local/global energy MAE: {results['energy_mae_ratio']:.1f}×; global barrier "
        f"within {100 * results['barrier_error']:.0f} % of xTB (the local model sees no barrier: "
        f"no atom is within its reach of both ends)")
    log(f"      NVE: {steps} steps, total-energy drift "
        f"{1e3 * results['md']['drift_eV_per_atom']:.3f} meV/atom")
    log(f"      wrote {out / 'results.json'} and {out / 'model.pt'}; total "
        f"{results['seconds']:.0f} s")
    return results
