"""Periodic rigid-ion salt (no QM): rock-salt NaCl supercells with point defects, exact labels.

    E = E_Coulomb + Σ_{i<j, r<r_c} C_ij [e^{−r/λ} − e^{−r_c/λ} (1 + (r_c − r)/λ)]

with C_ij e^{−r/λ}: C_ij = b c_ij e^{(σ_i + σ_j)/ρ} (the Tosi–Fumi Born–Mayer–Huggins
repulsion of NaCl without its dispersion terms: b = 0.2110 eV, ρ = λ = 0.317 Å, σ(Na) = 1.170,
σ(Cl) = 1.585 Å, c(Na–Na) = 1.25, c(Na–Cl) = 1, c(Cl–Cl) = 0.75; its lattice constant is within
a few % of NaCl's 5.64 Å). E_Coulomb: the full Ewald sum (tin-foil boundary, neutralising
background for a net charge) of point charges q(Na) = +1, q(Cl) = −1 e, at relative accuracy
1e-12 (`mlip_attn.nn.coulomb`, checked against the rock-salt Madelung constant and torch-pme).
The repulsion is shifted-force at r_c = 8 Å so energy and forces are continuous. Energy (eV), forces (eV/Å) and
stress (eV/Å³, (1/V) dE/dε) by autograd in float64.

Structures: n₁ × n₂ × n₃ conventional cells (a = 5.74 Å), strained isotropically by up to ±2 %
and rattled (Gaussian, 0.12 Å per component), with one of: a Schottky pair (one Na and one Cl
removed at random: neutral, the two vacancies attract as −k_e / d), a Na vacancy (total charge
−1), a Cl vacancy (+1) or no defect. A vacancy's energy in a periodic cell contains its
interaction with its own images and the background (∝ 1/L, the Makov–Payne term), and the
Schottky pair its 1/d attraction: both reach far beyond a local model's receptive field, so a
local model trained on one box size cannot transfer to larger boxes.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from ase import Atoms
from ase.build import bulk

from ...registry import REFERENCE_SYSTEMS
from ..rigid_ion import salt_energy_forces_stress
from .base import HeldOut, Protocol, ReferenceSystem, make_rng

LATTICE_A = 5.74       # Å, near this potential's minimum (NaCl: 5.64)
DEFECTS = ("schottky", "na-vacancy", "cl-vacancy", "none")


def salt_cell(repeat, rng: np.random.Generator, defect: str, rattle: float = 0.12,
              strain: float = 0.02) -> Atoms:
    """A strained, rattled rock-salt supercell with ``defect`` (one of `DEFECTS`)."""
    if defect not in DEFECTS:
        raise ValueError(f"defect: {defect!r} is not one of {DEFECTS}")
    atoms = bulk("NaCl", "rocksalt", a=LATTICE_A, cubic=True).repeat(tuple(int(k) for k in repeat))
    na = np.flatnonzero(atoms.numbers == 11)
    cl = np.flatnonzero(atoms.numbers == 17)
    remove = {"schottky": [rng.choice(na), rng.choice(cl)], "na-vacancy": [rng.choice(na)],
              "cl-vacancy": [rng.choice(cl)], "none": []}[defect]
    if remove:
        del atoms[sorted(int(k) for k in remove)]
    atoms.set_cell(atoms.cell.array * (1.0 + rng.uniform(-strain, strain)), scale_atoms=True)
    atoms.positions = atoms.positions + rng.normal(0.0, rattle, atoms.positions.shape)
    atoms.wrap()
    atoms.pbc = True
    atoms.info.update({
        "config_type": f"salt_{defect}", "system": "rigid-ion-salt", "defect": defect,
        "repeat": "x".join(str(int(k)) for k in repeat),
        "total_charge": int(np.sum(atoms.numbers == 11) - np.sum(atoms.numbers == 17))})
    return atoms


def salt_structures(n: int, seed=0, repeats=((2, 2, 2),), defects=DEFECTS,
                    rattle: float = 0.12, strain: float = 0.02) -> list[Atoms]:
    """``n`` unlabelled periodic cells: sizes cycle through ``repeats``, defects drawn from
    ``defects``."""
    rng = make_rng(seed)
    return [salt_cell(repeats[k % len(repeats)], rng, str(rng.choice(list(defects))),
                      rattle, strain) for k in range(n)]


_TRAIN = {"repeats": [[1, 2, 2], [2, 2, 2], [2, 2, 3]]}
_TRAIN_LONG = {"repeats": [[1, 2, 2], [2, 2, 2], [2, 2, 3], [2, 3, 3]]}
_HELD_OUT = {"3x3x3": HeldOut(16, {"repeats": [[3, 3, 3]]}, seed=1001),
             "4x4x4": HeldOut(8, {"repeats": [[4, 4, 4]]}, seed=1002)}
_BACKBONE = {"backbone": "painn", "cutoff": 5.0, "layers": 2, "num_basis": 16}
# ε = 1e-5: a training step costs 1.2x the local model's (1e-8: 2x), and Ewald's error at
# 1e-5 is ~1e-7 relative (docs/electrostatics.md)
_BLOCK = {"type": "electrostatics", "accuracy": 1e-5}
# an ionic solid's charges started at its formal ±1: the offsets en_scale × Pauling χ give
# q = en_scale × Δχ / 2 = ±1.0 e on Na/Cl (Δχ = 2.23; the charge MLP's random start adds a
# few tenths); from the default 0.05 the fit stopped at |q| ≈ 0.57 with a −1.4 meV/ion bulk
# bias and ~0.15 eV too much per defect, which drifts with the box size
# (docs/electrostatics.md, "Charges started at their formal values")
_IONIC_BLOCK = {**_BLOCK, "en_scale": 0.9}


@REFERENCE_SYSTEMS.register("rigid-ion-salt", summary="periodic NaCl supercells with point "
                            "defects, exact rigid-ion labels (Ewald + Born–Mayer): box-size "
                            "transfer of long-range electrostatics")
class RigidIonSalt(ReferenceSystem):
    """Options of `structures`: those of `salt_structures` (repeats, defects, rattle, strain)."""

    methods = ("rigid-ion-ewald",)
    default_n = 200
    protocols = {
        "default": Protocol(
            "1x2x2, 2x2x2 and 2x2x3 cells (≤ 96 ions) with defects; tested on 3x3x3 and 4x4x4 "
            "boxes", n=160, data=_TRAIN, held_out=_HELD_OUT, backbone=_BACKBONE,
            variants={"local": None, "electrostatics": _BLOCK},
            reference="electrostatics", width=24, training={"epochs": 40}),
        # the measurements behind the charge model (docs/electrostatics.md): the same data and
        # budget, one factor changed per variant
        "charge-model": Protocol(
            "the default protocol's data and budget; charge rule, φ feedback and per-element "
            "offsets varied one at a time", n=160, data=_TRAIN, held_out=_HELD_OUT,
            backbone=_BACKBONE, variants={
                "local": None, "electrostatics": _BLOCK,
                "no-self-energy": {**_BLOCK, "self_energy": False},
                "uniform": {**_BLOCK, "charges": "uniform"},
                "flow": {**_BLOCK, "charges": "flow"},
                "feedback": {**_BLOCK, "feedback": True},
                "uniform-feedback-no-self-energy": {**_BLOCK, "charges": "uniform",
                                                    "feedback": True, "self_energy": False}},
            reference="electrostatics", width=24, training={"epochs": 40}),
        # the shipped pair: the charge-model protocol's models with a longer budget, more and
        # larger cells (still ≤ 144 ions), the energy and stress weighted up and the charges
        # started at their formal values (docs/electrostatics.md)
        "long": Protocol(
            "1x2x2 to 2x3x3 cells (≤ 144 ions), 50 epochs, energy and stress weighted, charges "
            "started at ±1 e; tested on 3x3x3 and 4x4x4 boxes", n=240, data=_TRAIN_LONG,
            held_out=_HELD_OUT, backbone=_BACKBONE,
            variants={"local": None, "electrostatics": _IONIC_BLOCK},
            reference="electrostatics", width=24,
            training={"epochs": 50, "energy_weight": 100.0, "stress_weight": 100.0})}
    card_description = ("Rock-salt NaCl supercells with Schottky pairs and charged vacancies; "
                        "rigid-ion Ewald + Born–Mayer labels (exact).")
    card_limits = ("Analytic toy: Na and Cl with fixed formal charges, no polarisation.",)

    def structures(self, n: int, seed: int = 0, **options) -> list[Atoms]:
        return salt_structures(n, seed=seed, **options)

    def analysis(self, out: Path, calculators: dict, protocol: str) -> dict:
        """Energy error per defect type on 3x3x3 boxes (trained on 2x2x2)."""
        from .base import energies
        tests = [salt_cell((3, 3, 3), make_rng(2000 + k), d) for k, d in enumerate(DEFECTS * 2)]
        ref = np.array([salt_energy_forces_stress(a.positions, a.numbers, a.cell.array)[0]
                        for a in tests])
        table = {}
        for name, calc in calculators.items():
            err = np.abs(energies(calc, tests) - ref)
            table[name] = {d: float(np.mean(err[[k for k, a in enumerate(tests)
                                                 if a.info["defect"] == d]])) for d in DEFECTS}
        return {"energy_mae_eV_by_defect_3x3x3": table}
