"""Analytic NaCl-like toy (no QM): screened Coulomb + exponential repulsion.

    E = sum_{i<j} k_e q_i q_j erf(0.5 r_ij) / r_ij + sum_{i<j} C exp(-r_ij / (beta r0_ij))

k_e = 14.3996 eV A / e^2, q(Na) = +1, q(Cl) = -1, C = 30 eV, beta = 0.25,
r0_ij = R_i + R_j with R(Na) = 0.95 A, R(Cl) = 1.81 A. Forces are analytic.
Clusters: rock-salt fragments (a = 5.64 A), randomly shifted and rotated, cut as spheres
of diameter d ~ U[d_min, d_max], rattled by 0.1 A (Gaussian, per component).
"""

from __future__ import annotations

import math

from pathlib import Path

import numpy as np
from ase import Atoms

from ...registry import REFERENCE_SYSTEMS
from ..analytic import K_E, REF_METHOD, REF_SETTINGS, nacl_energy_forces
from .base import Protocol, ReferenceSystem, energies, make_rng, plot

__all__ = ["nacl_energy_forces", "nacl_structures", "nacl_cluster", "K_E", "REF_METHOD",
           "REF_SETTINGS"]

LATTICE_A = 5.64       # A


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    qm, rr = np.linalg.qr(rng.normal(size=(3, 3)))
    qm = qm * np.sign(np.diag(rr))
    if np.linalg.det(qm) < 0:
        qm[:, 0] = -qm[:, 0]
    return qm


def nacl_cluster(diameter: float, rng: np.random.Generator, rattle: float = 0.1,
                 a: float = LATTICE_A) -> Atoms:
    """Rock-salt sphere of the given diameter (random centre and orientation), rattled."""
    h = a / 2.0
    m = int(math.ceil(diameter / 2.0 / h)) + 2
    g = np.arange(-m, m + 1)
    ijk = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)
    numbers = np.where(ijk.sum(1) % 2 == 0, 11, 17)
    pos = ijk * h - rng.uniform(0.0, a, 3)
    keep = np.linalg.norm(pos, axis=1) <= diameter / 2.0
    pos, numbers = pos[keep], numbers[keep]
    pos = pos @ _random_rotation(rng).T
    pos = pos + rng.normal(0.0, rattle, pos.shape)
    return Atoms(numbers=numbers, positions=pos)


def nacl_structures(n: int, seed=0, diameter: tuple[float, float] = (10.0, 30.0),
                    rattle: float = 0.1) -> list[Atoms]:
    """``n`` labelled NaCl-like clusters (REF_energy, REF_forces, total_charge = #Na - #Cl)."""
    rng = make_rng(seed)
    out = []
    for _ in range(n):
        d = float(rng.uniform(*diameter))
        a = nacl_cluster(d, rng, rattle=rattle)
        e, f = nacl_energy_forces(a.positions, a.numbers)
        a.pbc = False
        a.info.update({
            "config_type": "nacl_cluster",
            "system": "nacl",
            "total_charge": int(np.sum(a.numbers == 11) - np.sum(a.numbers == 17)),
            "diameter": d,
            "rattle": float(rattle),
            "REF_energy": float(e),
            "ref_method": REF_METHOD,
            "ref_settings": REF_SETTINGS,
        })
        a.arrays["REF_forces"] = f
        out.append(a)
    return out


@REFERENCE_SYSTEMS.register("nacl", summary="NaCl-like clusters with an analytic screened "
                            "Coulomb energy (no QM): size transfer of long-range models")
class NaCl(ReferenceSystem):
    """Options of `structures`: those of `nacl_structures` (diameter range, rattle)."""

    methods = ("nacl-analytic",)
    default_n = 200
    protocols = {"default": Protocol(
        "clusters of 8–16 Å, tested on 10–30 Å", n=300, data={"diameter": (8.0, 16.0)},
        backbone={"backbone": "painn", "cutoff": 3.5, "layers": 1, "num_basis": 16})}
    card_description = ("NaCl-like clusters (8–16 Å) with an analytic erf-screened Coulomb "
                        "energy and exponential repulsion.")
    card_limits = ("Analytic toy: Na and Cl only, isolated clusters.",)

    def structures(self, n: int, seed: int = 0, **options) -> list[Atoms]:
        return nacl_structures(n, seed=seed, **options)

    def analysis(self, out: Path, calculators: dict, protocol: str) -> dict:
        """Energy error per atom on clusters of 10, 20 and 30 Å (trained on 8–16 Å)."""
        sizes = (10.0, 20.0, 30.0)
        curves, table = {}, {}
        tests = {d: nacl_structures(6, seed=100 + int(d), diameter=(d, d)) for d in sizes}
        for name, calc in calculators.items():
            errs = []
            for d in sizes:
                e = energies(calc, tests[d])
                ref = np.array([a.info["REF_energy"] for a in tests[d]])
                n = np.array([len(a) for a in tests[d]])
                errs.append(float(np.mean(np.abs(e - ref) / n)))
            curves[name] = (np.array(sizes), np.array(errs) * 1e3)
            table[name] = errs
        plot(out / "nacl_size_transfer.png", "cluster diameter (Å)", "energy MAE (meV/atom)",
             curves, "NaCl-like clusters (trained on 8–16 Å)")
        return {"diameters_A": list(sizes), "energy_mae_eV_per_atom": table}
