"""Periodic ions in water, labelled with tblite's periodic GFN1-xTB: Na⁺ and Cl⁻ with 5–8 water
molecules in small cubic cells (≤ 26 atoms, a few seconds each), tested on larger boxes.

Structures: a cubic cell at liquid density (the volume of n_w waters plus two ions, 29.9 Å³
each, scaled by 1 ± 3 %), the two ions at random positions at least ``ion_gap`` Å apart (under
the minimum image), then waters at random positions and orientations, accepted when every
new O is ≥ 2.3 Å from the ions and ≥ 2.5 Å from other O, and every atom ≥ 1.5 Å from every
atom of the others (minimum image). No relaxation: the cells sample a hot, disordered liquid
(forces up to a few eV/Å). Total charge 0; xTB's Mulliken charges on the ions are about
+0.6 / −0.75 e.

Why long range: the two ions and the water dipoles interact by Coulomb in every periodic
image; the charge each ion carries and the field it feels depend on the whole cell. How far the
effect reaches, from the data (`analysis`, also ``benchmarks/ion_water_reach.py``): the force
response |ΔF_j| / δ of every atom j to a displacement δ of the Na⁺, binned by distance
r(Na, j), for xTB and each model.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from ase import Atoms
from ase.build import molecule
from ase.geometry import get_distances

from ...registry import REFERENCE_SYSTEMS
from .base import HeldOut, Protocol, ReferenceSystem, make_rng

VOLUME_PER_MOLECULE = 29.9   # Å³ per water (and per ion) at 1 g/cm³


def ion_water_cell(n_water: int, rng: np.random.Generator, ion_gap: float = 2.8,
                   density_jitter: float = 0.03, max_tries: int = 20000) -> Atoms:
    """One cubic cell with Na⁺, Cl⁻ and ``n_water`` waters (see the module docstring)."""
    if n_water < 1:
        raise ValueError(f"n_water: need at least 1 water, got {n_water}")
    volume = (n_water + 2) * VOLUME_PER_MOLECULE * (1 + rng.uniform(-density_jitter,
                                                                      density_jitter))
    length = volume ** (1 / 3)
    atoms = Atoms(cell=[length] * 3, pbc=True)
    atoms += Atoms("Na", positions=[rng.uniform(0, length, 3)])
    for _ in range(max_tries):
        cl = Atoms("Cl", positions=[rng.uniform(0, length, 3)], cell=atoms.cell, pbc=True)
        if (atoms + cl).get_distance(0, 1, mic=True) >= ion_gap:
            atoms += cl
            break
    else:
        raise RuntimeError("ion_water_cell: could not place the Cl⁻")
    tries = 0
    while int(np.sum(atoms.numbers == 8)) < n_water:
        tries += 1
        if tries > max_tries:
            raise RuntimeError(f"ion_water_cell: could not place {n_water} waters in "
                               f"{length:.2f} Å (got {int(np.sum(atoms.numbers == 8))})")
        w = molecule("H2O")
        w.rotate(rng.uniform(0, 360), rng.normal(size=3), center="COM")
        w.translate(rng.uniform(0, length, 3) - w.get_center_of_mass())
        _, d = get_distances(w.positions, atoms.positions, atoms.cell, True)
        ions = d[0, :2]    # row 0: the new oxygen (H2O from ase.build: O first)
        others = d[0, atoms.numbers == 8]
        if d.min() >= 1.5 and ions.min() >= 2.3 and (others.size == 0 or others.min() >= 2.5):
            atoms = atoms + w
    atoms.wrap()
    atoms.info.update({"config_type": f"ion_water_{n_water}", "system": "ion-water",
                       "n_water": int(n_water), "total_charge": 0,
                       "ion_distance": float(atoms.get_distance(0, 1, mic=True))})
    return atoms


def ion_water_structures(n: int, seed=0, waters=(6, 7, 8), ion_gap: float = 2.8) -> list[Atoms]:
    """``n`` cells, water counts cycling through ``waters``."""
    rng = make_rng(seed)
    return [ion_water_cell(int(waters[k % len(waters)]), rng, ion_gap) for k in range(n)]


_BLOCK = {"type": "electrostatics", "accuracy": 1e-5}


@REFERENCE_SYSTEMS.register("ion-water", summary="periodic Na⁺ + Cl⁻ in 5–8 waters, tblite "
                            "periodic GFN1-xTB labels; tested on larger boxes")
class IonWater(ReferenceSystem):
    """Options of `structures`: those of `ion_water_structures` (waters, ion_gap)."""

    methods = ("gfn1-xtb-pbc", "gfn2-xtb-pbc")
    default_n = 160
    protocols = {"default": Protocol(
        "Na⁺ + Cl⁻ with 6, 7 and 8 waters (≤ 26 atoms, GFN1-xTB, periodic); tested on 14-water "
        "boxes (44 atoms, 1.3× the edge)", n=160, data={"waters": [6, 7, 8]},
        held_out={"14 waters": HeldOut(8, {"waters": [14]}, seed=1001)},
        backbone={"backbone": "painn", "cutoff": 4.0, "layers": 2, "num_basis": 16},
        variants={"local": None, "electrostatics": _BLOCK},
        reference="electrostatics", width=24, training={"epochs": 40})}
    card_description = ("Na⁺ and Cl⁻ in 6–8 water molecules, cubic periodic cells at liquid "
                        "density, random (unrelaxed) placements; periodic GFN1-xTB labels "
                        "(tblite, Γ point).")
    card_limits = ("Tiny cells (≤ 26 atoms): strong finite-size effects, hot disordered "
                   "liquid; GFN1-xTB, not DFT.",
                   "Γ-point labels are not size-consistent: a 2×2×1 supercell of the same cell "
                   "is 0.15–0.24 eV lower per cell (docs/electrostatics.md), so energies do "
                   "not transfer between box sizes.")

    def structures(self, n: int, seed: int = 0, **options) -> list[Atoms]:
        return ion_water_structures(n, seed=seed, **options)

    def analysis(self, out: Path, calculators: dict, protocol: str) -> dict:
        """The reach of the Na⁺'s influence: |ΔF_j|/δ binned by r(Na, j), xTB and models, on a
        14-water cell (`force_response`)."""
        atoms = ion_water_cell(14, make_rng(3001))
        table = {"xtb": force_response(atoms, None)}
        for name, calc in calculators.items():
            table[name] = force_response(atoms, calc)
        return {"force_response_eV_per_A2_by_distance": table}


def force_response(atoms: Atoms, calc, delta: float = 0.02,
                   bins=(0, 3, 4, 5, 6, 7, 8, 10)) -> dict:
    """Mean |F_j(Na + δx) − F_j(Na − δx)| / 2δ (eV/Å²) over atoms j in distance bins from the
    Na⁺ (atom 0) under the minimum image; ``calc`` None: periodic GFN1-xTB."""
    from ..methods import xtb_periodic_label
    forces = []
    for sign in (1, -1):
        moved = atoms.copy()
        moved.positions[0, 0] += sign * delta
        if calc is None:
            forces.append(xtb_periodic_label(moved.numbers, moved.positions, moved.cell.array)[1])
        else:
            moved.calc = calc
            forces.append(moved.get_forces())
    response = np.linalg.norm(forces[0] - forces[1], axis=1) / (2 * delta)
    r = atoms.get_distances(0, range(len(atoms)), mic=True)
    out = {}
    for lo, hi in zip(bins[:-1], bins[1:]):
        sel = (r >= lo) & (r < hi) & (np.arange(len(atoms)) > 0)
        if sel.any():
            out[f"{lo}-{hi} Å"] = float(response[sel].mean())
    return out
