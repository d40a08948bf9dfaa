"""The analytic reference method ``rigid-ion-ewald``: periodic Na⁺/Cl⁻ point charges with the
full Ewald sum (tin-foil, neutralising background) plus a Tosi–Fumi Born–Mayer repulsion,
exact energies (eV), forces (eV/Å) and stress (eV/Å³). `mlip_attn.qm.methods` labels with it;
`mlip_attn.qm.systems.rigid_ion_salt` makes the cells.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ..data.neighbours import neighbour_list
from ..nn.coulomb import Coulomb

K_E = 14.399645        # eV Å / e²
TF_B = 0.2110          # eV   (Tosi–Fumi b = 0.338e-19 J)
TF_RHO = 0.317         # Å
TF_SIGMA = {11: 1.170, 17: 1.585}                  # Å
TF_C = {(11, 11): 1.25, (11, 17): 1.0, (17, 17): 0.75}
CUTOFF = 8.0           # Å, repulsion and Ewald real space
CHARGE = {11: 1.0, 17: -1.0}

REF_METHOD = "rigid-ion Ewald + Born-Mayer"
REF_SETTINGS = (f"Ewald point charges q(Na)=+1 q(Cl)=-1 (tin-foil, background), accuracy 1e-12; "
                f"k_e={K_E}; Tosi-Fumi Born-Mayer b={TF_B} eV rho={TF_RHO} A sigma(Na)=1.170 "
                f"sigma(Cl)=1.585 A c=1.25/1/0.75, no dispersion, shifted-force cutoff {CUTOFF} A")


def _per_atom(numbers, table):
    numbers = np.asarray(numbers)
    bad = ~np.isin(numbers, list(table))
    if bad.any():
        raise ValueError(f"rigid-ion salt: only Na (11) and Cl (17), got {sorted(set(numbers[bad]))}")
    return np.array([table[int(z)] for z in numbers])


def salt_energy_forces_stress(positions: np.ndarray, numbers: np.ndarray, cell: np.ndarray
                              ) -> tuple[float, np.ndarray, np.ndarray]:
    """Energy (eV), forces (N, 3) eV/Å and stress (3, 3) eV/Å³ of a periodic rigid-ion cell."""
    cell = np.asarray(cell, dtype=float)
    if abs(np.linalg.det(cell)) < 1e-6:
        raise ValueError("rigid-ion salt: a periodic cell is required")
    q = torch.tensor(_per_atom(numbers, CHARGE))
    z = np.asarray(numbers)
    edge_index, shifts = neighbour_list(np.asarray(positions, float), cell, np.array([True] * 3),
                                        CUTOFF)
    edge_index, shifts = torch.from_numpy(edge_index), torch.from_numpy(shifts)
    pos0, cell0 = torch.tensor(positions, dtype=torch.float64), torch.tensor(cell)
    pos0.requires_grad_(True)
    strain = torch.zeros(3, 3, dtype=torch.float64, requires_grad=True)
    sym = 0.5 * (strain + strain.T)
    pos, strained_cell, sh = pos0 + pos0 @ sym, cell0 + cell0 @ sym, shifts + shifts @ sym
    i, j = edge_index
    r = (pos[j] - pos[i] + sh).norm(dim=1)
    coulomb = Coulomb(CUTOFF, accuracy=1e-12, method="ewald")
    batch = torch.zeros(len(q), dtype=torch.long)
    phi = coulomb(q, pos, strained_cell[None], batch, edge_index, r, 1)
    zi, zj = z[i.numpy()], z[j.numpy()]
    pair_c = np.array([TF_C[(min(a, b), max(a, b))] for a, b in zip(zi.tolist(), zj.tolist())])
    sigma = np.array([TF_SIGMA[int(a)] for a in zi]) + np.array([TF_SIGMA[int(b)] for b in zj])
    c = torch.tensor(TF_B * pair_c * np.exp(sigma / TF_RHO))
    rho = TF_RHO
    rep = c * (torch.exp(-r / rho) - math.exp(-CUTOFF / rho) * (1.0 + (CUTOFF - r) / rho))
    energy = 0.5 * K_E * (q * phi).sum() + 0.5 * rep.sum()      # full list: each pair twice
    g_pos, g_strain = torch.autograd.grad(energy, [pos0, strain])
    volume = abs(float(np.linalg.det(cell)))
    return float(energy.detach()), (-g_pos).numpy(), (g_strain / volume).numpy()
