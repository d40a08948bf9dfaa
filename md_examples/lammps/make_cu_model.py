"""Train the small local copper model that in.bulk_cu uses, ship it and export it for LAMMPS.

Reference data: ASE's EMT for copper (rattled and strained fcc cells, 32 atoms), so nothing
needs downloading. About 5 minutes on 2 CPU cores. Writes::

    cu_emt.xyz                          training data (REF_energy, REF_forces, REF_stress)
    runs/cu_emt/                        the training run
    ../../potentials/cu-emt-local.pt    the model file, with its card cu-emt-local.md
    ../../potentials/cu-emt-local.lmp.pt  the float32 TorchScript export for `pair_style mlip_attn`

Usage:  python make_cu_model.py [--epochs 20] [--frames 120]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def emt_frames(n: int, seed: int = 0):
    from ase.build import bulk
    from ase.calculators.emt import EMT
    rng = np.random.default_rng(seed)
    frames = []
    for k in range(n):
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2))
        strain = np.eye(3) + rng.uniform(-0.03, 0.03, (3, 3))
        atoms.set_cell(atoms.cell @ (0.5 * (strain + strain.T)), scale_atoms=True)
        atoms.rattle(rng.uniform(0.02, 0.15), seed=int(rng.integers(1 << 30)))
        atoms.calc = EMT()
        atoms.info["REF_energy"] = atoms.get_potential_energy()
        atoms.arrays["REF_forces"] = atoms.get_forces()
        atoms.info["REF_stress"] = atoms.get_stress()
        atoms.info["ref_method"] = "EMT (ase.calculators.emt)"
        atoms.info["ref_settings"] = "fcc Cu, 32 atoms, ±3% strain, 0.02–0.15 Å rattles"
        atoms.calc = None
        frames.append(atoms)
    return frames


def main():
    import ase.io

    from mlip_attn.lammps import export_lammps
    from mlip_attn.training import fit, load_config

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--frames", type=int, default=120)
    args = parser.parse_args()

    data = HERE / "cu_emt.xyz"
    if not data.exists():
        ase.io.write(data, emt_frames(args.frames), format="extxyz")
    run = HERE / "runs" / "cu_emt"
    if not (run / "model.pt").exists():
        config = load_config(None, {
            "model": {"backbone": "painn", "elements": ["Cu"], "width": 32, "layers": 2,
                      "cutoff": 4.5, "num_basis": 16},
            "data": {"train": str(data), "valid": 0.1, "test": 0.1},
            "training": {"epochs": args.epochs, "batch_size": 8, "lr": 3e-3,
                         "stress_weight": 100.0, "progress": False},
            "output": str(run),
        })
        fit(config)
    import shutil
    from mlip_attn.analysis.model_card import model_card
    potentials = HERE.parent.parent / "potentials"
    shipped = potentials / "cu-emt-local.pt"
    shutil.copyfile(run / "model.pt", shipped)
    shipped.with_suffix(".md").write_text(model_card(
        shipped, run, "cu-emt-local: local PaiNN for bulk copper (EMT)",
        "A small local PaiNN trained on ASE's EMT copper, so that the periodic LAMMPS example "
        "(md_examples/lammps/in.bulk_cu) runs right after installation. It reproduces EMT, "
        "not DFT: a demonstration potential, not one for copper science.",
        ["Copper only; fcc-like environments near the training density (±3% strain).",
         "EMT quality at best; EMT itself is a rough model of copper.",
         "Local (no attention): periodic cells and several MPI ranks are supported."]))
    out = export_lammps(shipped, potentials / "cu-emt-local.lmp.pt", dtype="float32")
    print(f"wrote {shipped}, its card and {out}; run:  lmp -in in.bulk_cu")


if __name__ == "__main__":
    main()
