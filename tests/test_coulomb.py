"""The Coulomb module against independent references: the Madelung constant of rock salt,
independence of the Ewald splitting, finite-difference stress, torch-pme's Ewald and PME, and the
direct sum of isolated charges."""
import math

import numpy as np
import pytest
import torch
from ase.build import bulk

from mlip_attn.data.neighbours import neighbour_list
from mlip_attn.nn.coulomb import COULOMB, Coulomb, direct_potential, reciprocal_vectors

MADELUNG_ROCKSALT = 1.747564594633  # Na–Cl nearest-neighbour distance as the unit


def energy(coulomb, q, positions, cell, cutoff, pbc=True):
    """Coulomb energy (eV) of one structure through the module, with a model-style graph."""
    positions = torch.as_tensor(positions, dtype=torch.float64)
    cell = torch.as_tensor(cell, dtype=torch.float64)
    edge_index, shifts = neighbour_list(positions.numpy(), cell.numpy(), np.array([pbc] * 3),
                                        cutoff)
    edge_index, shifts = torch.from_numpy(edge_index), torch.from_numpy(shifts)
    lengths = (positions[edge_index[1]] - positions[edge_index[0]] + shifts).norm(dim=1)
    batch = torch.zeros(len(q), dtype=torch.long)
    phi = coulomb(q, positions, cell[None] if pbc else torch.zeros(1, 3, 3, dtype=torch.float64),
                  batch, edge_index, lengths, 1)
    return float(coulomb.energy(q, phi, batch, 1)[0])


def salt(cubic=True, repeat=1):
    atoms = bulk("NaCl", "rocksalt", a=5.64, cubic=cubic).repeat(repeat)
    q = torch.tensor([1.0 if z == 11 else -1.0 for z in atoms.numbers], dtype=torch.float64)
    return atoms, q


@pytest.mark.parametrize("cubic", [True, False])
@pytest.mark.parametrize("cutoff", [3.0, 5.0])
def test_madelung_constant_of_rock_salt(cubic, cutoff):
    """Conventional (cubic, 8 ions) and primitive (triclinic, 2 ions) cells."""
    atoms, q = salt(cubic)
    coulomb = Coulomb(cutoff, accuracy=1e-12, method="ewald")
    e = energy(coulomb, q, atoms.positions, atoms.cell.array, cutoff)
    madelung = -e / (len(atoms) / 2) * (5.64 / 2) / COULOMB
    assert abs(madelung - MADELUNG_ROCKSALT) < 1e-9, madelung


def random_ions(seed, n=12, total=0.0, cell_size=7.0):
    rng = np.random.default_rng(seed)
    cell = np.diag([cell_size, cell_size * 1.1, cell_size * 0.9]) + rng.uniform(-0.5, 0.5, (3, 3))
    frac = rng.uniform(0, 1, (n, 3))
    q = rng.normal(size=n)
    q = q - q.mean() + total / n
    return torch.tensor(q), frac @ cell, cell


@pytest.mark.parametrize("total", [0.0, 1.5])
def test_energy_is_independent_of_the_splitting(total):
    """α = √(−ln ε) / r_c from three cutoffs: one energy to 1e-6 eV (with the neutralising
    background for a net charge)."""
    q, positions, cell = random_ions(1, total=total)
    energies = [energy(Coulomb(rc, accuracy=1e-12, method="ewald"), q, positions, cell, rc)
                for rc in (3.5, 5.0, 7.0)]
    assert max(energies) - min(energies) < 1e-6, energies
    assert abs(energies[0]) > 0.1


def test_smeared_charges_are_independent_of_the_splitting():
    q, positions, cell = random_ions(2)
    energies = [energy(Coulomb(rc, accuracy=1e-12, smearing=0.3, method="ewald"), q, positions,
                       cell, rc) for rc in (4.0, 6.0)]
    point = energy(Coulomb(4.0, accuracy=1e-12, method="ewald"), q, positions, cell, 4.0)
    assert abs(energies[0] - energies[1]) < 1e-6, energies
    assert abs(energies[0] - point) > 1e-3


def test_large_box_tends_to_the_direct_sum():
    """A neutral cluster in a 200 Å box: tin-foil periodic + the dipole term 2π k_e |p|² / 3V
    (Ewald's vacuum boundary) = isolated, up to O(L⁻⁵)."""
    rng = np.random.default_rng(3)
    positions = rng.normal(scale=1.5, size=(6, 3))
    q = torch.tensor(rng.normal(size=6))
    q = q - q.mean()
    coulomb = Coulomb(5.0, accuracy=1e-10, smearing=0.4, method="ewald")
    isolated = energy(coulomb, q, positions, np.zeros((3, 3)), 5.0, pbc=False)
    periodic = energy(Coulomb(60.0, accuracy=1e-10, smearing=0.4, method="ewald"), q,
                      positions, 200.0 * np.eye(3), 60.0)
    dipole = (q[:, None] * torch.tensor(positions)).sum(0)
    vacuum = periodic + 2 * math.pi * COULOMB * float(dipole @ dipole) / (3 * 200.0 ** 3)
    assert abs(isolated - vacuum) < 2e-6, (isolated, vacuum)  # was 3.6e-4 without it
    assert abs(isolated - periodic) > 1e-5


def test_direct_sum_equals_explicit_pairs():
    rng = np.random.default_rng(4)
    positions = torch.tensor(rng.normal(scale=2.0, size=(5, 3)))
    q = torch.tensor(rng.normal(size=5))
    for sigma in (0.0, 0.7):
        phi = direct_potential(q, positions, sigma)
        e = 0.0
        for i in range(5):
            for j in range(i + 1, 5):
                r = float((positions[i] - positions[j]).norm())
                e += float(q[i] * q[j]) * (math.erf(r / (2 * sigma)) if sigma else 1.0) / r
        assert abs(0.5 * float((q * phi).sum()) - e) < 1e-12


def strain_gradient(coulomb, q, positions, cell, cutoff):
    """dE/dε (3, 3) eV at ε = 0 by autograd: positions, neighbour-list shifts and cell all
    strained by the symmetric ε."""
    pos, c = torch.tensor(positions), torch.tensor(cell)
    strain = torch.zeros(3, 3, dtype=torch.float64, requires_grad=True)
    edge_index, shifts = neighbour_list(positions, cell, np.array([True] * 3), cutoff)
    edge_index, shifts = torch.from_numpy(edge_index), torch.from_numpy(shifts)
    sym = 0.5 * (strain + strain.T)
    p, s, cc = pos + pos @ sym, shifts + shifts @ sym, c + c @ sym
    lengths = (p[edge_index[1]] - p[edge_index[0]] + s).norm(dim=1)
    batch = torch.zeros(len(q), dtype=torch.long)
    e = coulomb.energy(q, coulomb(q, p, cc[None], batch, edge_index, lengths, 1), batch, 1)
    (grad,) = torch.autograd.grad(e.sum(), strain)
    return grad


def test_stress_is_the_strain_derivative():
    """σ = (1/V) dE/dε by autograd through positions and cell, against central differences."""
    q, positions, cell = random_ions(5, total=0.5)
    coulomb = Coulomb(5.0, accuracy=1e-12, method="ewald")
    grad = strain_gradient(coulomb, q, positions, cell, 5.0)
    volume = abs(np.linalg.det(cell))
    h = 1e-6
    for a in range(3):
        for b in range(3):
            eps = np.zeros((3, 3))
            eps[a, b] = eps[b, a] = h / 2 if a != b else h
            plus = energy(coulomb, q, positions @ (np.eye(3) + eps), cell @ (np.eye(3) + eps), 5.0)
            minus = energy(coulomb, q, positions @ (np.eye(3) - eps), cell @ (np.eye(3) - eps), 5.0)
            fd = (plus - minus) / (2 * h) / volume
            assert abs(fd - float(grad[a, b]) / volume) < 1e-7 * max(1.0, abs(fd)), (a, b)


def test_reciprocal_vectors_are_the_half_sphere():
    cell = torch.tensor([[4.0, 0.3, 0.0], [0.2, 5.0, 0.1], [0.0, -0.4, 4.5]], dtype=torch.float64)
    k = reciprocal_vectors(cell, 3.0)
    assert float((k * k).sum(1).max()) <= 9.0
    # no ±k pair twice, none zero; every lattice point of the ball is k or −k
    both = torch.cat([k, -k])
    assert torch.unique(both.round(decimals=8), dim=0).shape[0] == 2 * k.shape[0]
    n = torch.cartesian_prod(*[torch.arange(-8, 9)] * 3).double()
    ball = n @ (2 * math.pi * torch.linalg.inv(cell).T)
    assert int(((ball * ball).sum(1) <= 9.0).sum()) - 1 == 2 * k.shape[0]


@pytest.mark.parametrize("total", [0.0, 2.0])
def test_agrees_with_torch_pme_ewald_and_pme(total):
    """The reference is torch-pme's own Ewald (its real space from vesin); our Ewald and our
    PME (`mlip_attn.nn.pme`) agree with it."""
    torchpme = pytest.importorskip("torchpme")
    vesin = pytest.importorskip("vesin")
    q, positions, cell = random_ions(6, n=24, total=total, cell_size=9.0)
    i, j, d = vesin.NeighborList(cutoff=8.0, full_list=False).compute(
        points=positions, box=cell, periodic=True, quantities="ijd")
    reference = torchpme.EwaldCalculator(torchpme.CoulombPotential(smearing=1.0),
                                         lr_wavelength=0.25)
    pot = reference(q[:, None], torch.tensor(cell), torch.tensor(positions),
                    torch.tensor(np.stack([i, j], 1).astype(np.int64)), torch.tensor(d))
    ref = COULOMB * float((q[:, None] * pot).sum())
    ewald = energy(Coulomb(5.0, accuracy=1e-12, method="ewald"), q, positions, cell, 5.0)
    pme = energy(Coulomb(5.0, accuracy=1e-12, method="pme"), q, positions, cell, 5.0)
    assert abs(ewald - ref) < 1e-6 * max(1.0, abs(ref)), (ewald, ref)
    assert abs(pme - ewald) < 1e-4 * max(1.0, abs(ewald)), (pme, ewald)


def test_bad_options_are_clear_errors():
    with pytest.raises(ValueError, match="method"):
        Coulomb(5.0, method="p3m-ish")
    with pytest.raises(ValueError, match="interpolation_nodes"):
        Coulomb(4.0, interpolation_nodes=5)
    with pytest.raises(ValueError, match="accuracy"):
        Coulomb(4.0, accuracy=2.0)
