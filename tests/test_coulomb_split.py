"""Smooth PME (`mlip_attn.nn.pme`) against Ewald, wide smearing (no real-space part) against a
splitting with one, and the Coulomb sum of a structure split over processes (owned atoms +
ghost copies, sums completed as an all-reduce would) against the whole structure."""
import numpy as np
import pytest
import torch

from mlip_attn.data.neighbours import neighbour_list
from mlip_attn.nn import pme
from mlip_attn.nn.coulomb import Coulomb

from test_coulomb import energy, random_ions, strain_gradient


def test_fft_sizes_and_bspline_partition_of_unity():
    assert [pme.fft_size(n) for n in (1, 7, 11, 13, 17, 31, 49)] == [1, 8, 12, 15, 18, 32, 50]
    w = torch.rand(50, dtype=torch.float64)
    for order in (4, 6, 8):
        weights = pme.bspline_weights(w, order)
        assert torch.allclose(weights.sum(-1), torch.ones_like(w), atol=1e-14)
        assert bool((weights >= 0).all())


@pytest.mark.parametrize("accuracy, smearing", [(1e-5, 0.0), (1e-8, 0.0), (1e-6, 1.0)])
def test_pme_equals_ewald(accuracy, smearing):
    """Energy and forces of our PME (default mesh) against our Ewald, triclinic, net charge."""
    q, positions, cell = random_ions(7, n=60, total=1.0, cell_size=11.0)
    results = []
    for method in ("ewald", "pme"):
        coulomb = Coulomb(5.0, accuracy=accuracy, smearing=smearing, method=method)
        pos = torch.tensor(positions, requires_grad=True)
        c = torch.tensor(cell)
        edge_index, shifts = neighbour_list(positions, cell, np.array([True] * 3), 5.0)
        edge_index, shifts = torch.from_numpy(edge_index), torch.from_numpy(shifts)
        lengths = (pos[edge_index[1]] - pos[edge_index[0]] + shifts).norm(dim=1)
        batch = torch.zeros(len(q), dtype=torch.long)
        e = coulomb.energy(q, coulomb(q, pos, c[None], batch, edge_index, lengths, 1), batch, 1)
        (g,) = torch.autograd.grad(e.sum(), pos)
        results.append((float(e.detach()), g))
    (e_ew, f_ew), (e_pme, f_pme) = results
    tol = max(10 * accuracy, 1e-6)
    assert abs(e_pme - e_ew) < tol * abs(e_ew), (e_pme, e_ew)
    assert float((f_pme - f_ew).abs().max()) < 10 * tol * float(f_ew.abs().max())


def test_pme_stress_is_the_strain_derivative():
    """PME is differentiable in the cell (k vectors, volume, fractional coordinates)."""
    q, positions, cell = random_ions(8, n=30, total=0.5, cell_size=9.0)
    coulomb = Coulomb(4.0, accuracy=1e-6, method="pme")
    grad = strain_gradient(coulomb, q, positions, cell, 4.0)
    h = 1e-5
    for a, b in [(0, 0), (1, 2), (2, 2)]:
        eps = np.zeros((3, 3))
        eps[a, b] = eps[b, a] = h / 2 if a != b else h
        plus = energy(coulomb, q, positions @ (np.eye(3) + eps), cell @ (np.eye(3) + eps), 4.0)
        minus = energy(coulomb, q, positions @ (np.eye(3) - eps), cell @ (np.eye(3) - eps), 4.0)
        fd = (plus - minus) / (2 * h)
        assert abs(fd - float(grad[a, b])) < 1e-6 * max(1.0, abs(fd)), (a, b, fd, grad[a, b])


def test_wide_smearing_takes_no_real_space_and_equals_a_split_with_one():
    """σ = 1 Å at r_c = 4 Å: α = 1/2σ, the real-space part vanishes; the same Gaussian charges
    with r_c = 12 Å take a real-space part (α from the cutoff): one energy."""
    q, positions, cell = random_ions(9, n=20, total=0.0, cell_size=13.0)
    wide = Coulomb(4.0, accuracy=1e-12, smearing=1.0, method="ewald")
    split = Coulomb(12.0, accuracy=1e-12, smearing=1.0, method="ewald")
    assert not wide.real_space and split.real_space and split.alpha < wide.alpha
    e_wide = energy(wide, q, positions, cell, 4.0)
    e_split = energy(split, q, positions, cell, 12.0)
    assert abs(e_wide - e_split) < 1e-8 * abs(e_split), (e_wide, e_split)


class SplitSums(torch.nn.Module):
    """Stands in for the all-reduce: the first pass over the 'ranks' records each partial sum,
    the second returns the sum of all of them."""

    def __init__(self):
        super().__init__()
        self.totals, self.done = {}, False

    def forward(self, partial):   # the sums of one call differ in shape (mesh, net charge)
        if not self.done:
            key = tuple(partial.shape)
            self.totals[key] = self.totals.get(key, 0) + partial.detach()
            return partial
        return self.totals[tuple(partial.shape)]


@pytest.mark.parametrize("method, smearing", [("ewald", 0.0), ("pme", 0.0), ("ewald", 0.8),
                                              ("pme", 0.8)])
def test_split_structure_equals_the_whole(method, smearing):
    """Three 'ranks' own a third of the atoms each and hold the others as ghost copies shifted
    by lattice vectors; their owned potentials equal the whole structure's to 1e-12."""
    q, positions, cell = random_ions(10, n=45, total=1.0, cell_size=10.0)
    coulomb = Coulomb(4.0, accuracy=1e-8, smearing=smearing, method=method)
    whole_edges, whole_shifts = neighbour_list(positions, cell, np.array([True] * 3), 4.0)
    pos, c = torch.tensor(positions), torch.tensor(cell)

    def potential(order, image):
        p = pos[order] + torch.tensor(image, dtype=torch.float64) @ c
        ei, sh = neighbour_list(p.numpy(), cell, np.array([True] * 3), 4.0)
        ei, sh = torch.from_numpy(ei), torch.from_numpy(sh)
        lengths = (p[ei[1]] - p[ei[0]] + sh).norm(dim=1)
        return coulomb(q[order], p, c[None], torch.zeros(len(order), dtype=torch.long), ei,
                       lengths, 1, owned)

    ei, sh = torch.from_numpy(whole_edges), torch.from_numpy(whole_shifts)
    lengths = (pos[ei[1]] - pos[ei[0]] + sh).norm(dim=1)
    whole = coulomb(q, pos, c[None], torch.zeros(len(q), dtype=torch.long), ei, lengths, 1)
    rng = np.random.default_rng(0)
    ranks = np.array_split(rng.permutation(len(q)), 3)
    orders = [torch.tensor(np.concatenate([r, np.setdiff1d(np.arange(len(q)), r)]))
              for r in ranks]
    images = [rng.integers(-1, 2, size=(len(q), 3)) * (np.arange(len(q)) >= len(r))[:, None]
              for r in ranks]
    sums = SplitSums()
    coulomb.sums = sums
    for order, image, r in zip(orders, images, ranks):
        owned = len(r)
        potential(order, image)
    sums.done = True
    for order, image, r in zip(orders, images, ranks):
        owned = len(r)
        phi = potential(order, image)
        assert torch.allclose(phi[:owned], whole[order[:owned]], rtol=0, atol=1e-12)


def test_the_auto_switch_counts_the_atoms_of_every_process():
    """Split over processes, ``auto`` must choose Ewald or PME from the whole structure's atoms
    (its ``sums`` complete the count), not from this process's: 2 ranks once took Ewald where
    1 rank took PME, 3e-7 apart."""
    import torch
    from torch import nn
    from mlip_attn.nn.coulomb import Coulomb

    class TwoEqualRanks(nn.Module):     # an all-reduce over two processes holding the same
        def forward(self, x):
            return 2.0 * x

    coulomb = Coulomb(5.0, accuracy=1e-5, smearing=0.91, method="auto")
    q = torch.zeros(216, dtype=torch.float64)
    assert coulomb.switch_count(q, -1) == 216
    assert coulomb.switch_count(q, 108) == 108        # identity sums: one process
    coulomb.sums = TwoEqualRanks()
    assert coulomb.switch_count(q, 108) == 216
    cell = torch.eye(3, dtype=torch.float64) * 17.22
    assert coulomb.uses_pme(216, cell) and not coulomb.uses_pme(108, cell)
