"""The analytic reference method ``nacl-analytic``: erf-screened Coulomb between formal charges
(Na +1, Cl −1) plus a Born–Mayer repulsion, exact energies (eV) and forces (eV/Å) of isolated
NaCl-like clusters. `mlip_attn.qm.methods` labels with it; `mlip_attn.qm.systems.nacl` makes
the clusters.
"""
from __future__ import annotations

import math

import numpy as np

K_E = 14.3996          # eV A / e^2
C_REP = 30.0           # eV
BETA = 0.25
ALPHA = 0.5            # erf(ALPHA r) screening, 1/A
CHARGE = {11: 1.0, 17: -1.0}
RADIUS = {11: 0.95, 17: 1.81}

REF_METHOD = "analytic erf-Coulomb + exp repulsion"
REF_SETTINGS = (f"k_e={K_E} eV*A/e^2; erf({ALPHA}*r)/r; q(Na)=+1 q(Cl)=-1; "
                f"C={C_REP} eV; beta={BETA}; r0=R_i+R_j (Na 0.95, Cl 1.81 A)")


def _per_atom(numbers, table, name):
    numbers = np.asarray(numbers)
    out = np.empty(len(numbers))
    for z, v in table.items():
        out[numbers == z] = v
    bad = ~np.isin(numbers, list(table))
    if bad.any():
        raise ValueError(f"{name}: only Na (11) and Cl (17) are supported, got {set(numbers[bad])}")
    return out


def nacl_energy_forces(positions: np.ndarray, numbers: np.ndarray,
                       block: int | None = None) -> tuple[float, np.ndarray]:
    """Energy (eV) and forces (eV/A) of an isolated NaCl-like cluster.

    Vectorised all-pairs in row blocks (memory ~ block * N), so 10^4 atoms work.
    """
    pos = np.asarray(positions, dtype=float)
    n = len(pos)
    q = _per_atom(numbers, CHARGE, "nacl_energy_forces")
    rad = _per_atom(numbers, RADIUS, "nacl_energy_forces")
    if block is None:
        block = max(1, (1 << 21) // max(n, 1))
    energy = 0.0
    forces = np.zeros_like(pos)
    sqrt_pi = math.sqrt(math.pi)
    from scipy.special import erf

    for s in range(0, n, block):
        e = min(n, s + block)
        d = pos[s:e, None, :] - pos[None, :, :]            # (b, n, 3): r_i - r_j
        r = np.linalg.norm(d, axis=-1)
        rows = np.arange(s, e)
        r[rows - s, rows] = np.inf                        # no self interaction
        qq = K_E * q[s:e, None] * q[None, :]
        ar = ALPHA * r
        erf_ar = erf(ar)
        inv_r = 1.0 / r
        e_c = qq * erf_ar * inv_r
        de_c = qq * ((2.0 * ALPHA / sqrt_pi) * np.exp(-ar * ar) * inv_r - erf_ar * inv_r * inv_r)
        lam = BETA * (rad[s:e, None] + rad[None, :])
        e_r = C_REP * np.exp(-r / lam)
        de_r = -e_r / lam
        energy += 0.5 * float(np.sum(e_c + e_r))
        dedr = de_c + de_r                                  # dE_pair/dr
        forces[s:e] = -np.einsum("ij,ijk->ik", dedr * inv_r, d)
    return energy, forces
