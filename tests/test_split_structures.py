"""A structure split over processes (``Graph.owned``): what distributed LAMMPS runs rely on.

The owned nodes come first; the nodes after them are copies (ghosts) of atoms owned
elsewhere. Distributed global blocks (EFA) must add only owned nodes into their per-structure
sums and still give every node, ghosts included, its output. Here everything runs in one
process (the sums hook is the identity); tests/test_lammps.py runs 1, 2 and 4 MPI ranks.
"""
from __future__ import annotations

import pytest
import torch

from conftest import MODEL_CONFIGS, make_model, random_crystal, random_molecule, to_batch

from mlip_attn.attention.base import LocalSums
from mlip_attn.attention.efa import EFA_PRESET, EuclideanFastAttention
from mlip_attn.nn.graph import Features, graph_without_edges

# EFA options, and the rank-2 channels of the host (0: a PaiNN with lmax 1)
EFA_OPTIONS = {"l0": ({}, 0), "l1": ({"vectors": True}, 0),
               "l2": ({"vectors": True, "tensors": True}, 0),
               "l2-host-tensors": ({"vectors": True, "tensors": True}, 8)}
WIDTH = 16


def efa_block(kind, seed=0):
    options, tensor_channels = EFA_OPTIONS[kind]
    widths = (WIDTH, WIDTH) + ((tensor_channels,) if tensor_channels else ())
    torch.manual_seed(seed)
    # the split (MPI) form is the Lebedev factorisation of physics 1; physics 2 is one-rank
    block = EuclideanFastAttention(widths, r_max=30.0, **{**EFA_PRESET, **options},
                                   physics=1).double()
    with torch.no_grad():
        for p in block.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return block


def features(n, kind="l1", seed=1):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(n, WIDTH, dtype=torch.float64, generator=g)
    v = torch.randn(n, 3, WIDTH, dtype=torch.float64, generator=g)
    t = torch.randn(n, 5, EFA_OPTIONS[kind][1], dtype=torch.float64, generator=g)
    return Features(s, v, t)


def run(block, x, positions, owned):
    graph = graph_without_edges(positions, torch.zeros(len(positions), dtype=torch.long), 1)
    return block(x, graph._replace(owned=owned))


def assert_features_close(a, b, tol=1e-10):
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=tol, atol=tol)


@pytest.mark.parametrize("kind", EFA_OPTIONS)
def test_efa_with_every_node_owned_equals_the_plain_path(kind):
    """Owned = every node: the plain path (the same Lebedev sums) to rounding, and the exact
    form to the quadrature error."""
    block = efa_block(kind)
    pos = torch.tensor(random_molecule(12, seed=2).positions)
    x = features(12, kind)
    split, plain = run(block, x, pos, 12), run(block, x, pos, -1)
    exact = block.exact_pairwise(x, graph_without_edges(pos, torch.zeros(12, dtype=torch.long),
                                                        1))
    assert_features_close(split, plain)
    assert_features_close(split, exact, tol=1e-9)
    assert plain.scalars.abs().max() > 1e-3
    if kind == "l2-host-tensors":
        assert plain.tensors.abs().max() > 1e-3


@pytest.mark.parametrize("kind", EFA_OPTIONS)
def test_a_split_structure_never_takes_the_exact_form(kind, monkeypatch):
    """EFA's exact O(n²) form needs every pair of atoms in one process; a split structure
    (owned ≥ 0) takes the Lebedev factorisation whatever its size, on every rank alike (its
    sums go through ``sums``)."""
    block = efa_block(kind)
    pos = torch.tensor(random_molecule(5, seed=2).positions)
    x = features(5, kind)
    calls = []
    block.sums = type("Counted", (torch.nn.Module,), {
        "forward": lambda self, partial: calls.append(partial.shape) or partial})()
    monkeypatch.setattr(block, "attend_exact", lambda *a: pytest.fail("exact form on a split "
                                                                      "structure"))
    for owned in (5, 2, 0):    # every node, some, none (an empty rank's view of ghosts)
        run(block, x, pos, owned)
    assert len(calls) == 6       # centroid and K̃ᵀV, per call


@pytest.mark.parametrize("kind", EFA_OPTIONS)
def test_ghost_copies_do_not_enter_the_sums_but_get_outputs(kind):
    """Appending copies of atoms after the owned ones changes no owned output (ghosts are not
    summed: counted twice they would shift the centroid and S), and each copy gets exactly the
    output of its original."""
    block = efa_block(kind)
    n = 12
    pos = torch.tensor(random_molecule(n, seed=3).positions)
    x = features(n, kind)
    ghosts = torch.tensor([7, 2, 2, 11])
    pos_g = torch.cat([pos, pos[ghosts]])
    x_g = Features(*(torch.cat([t, t[ghosts]]) for t in x))
    alone = run(block, x, pos, n)
    split = run(block, x_g, pos_g, n)
    for a, b in zip(alone, split):
        torch.testing.assert_close(b[:n], a, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(b[n:], a[ghosts], rtol=1e-10, atol=1e-10)
    summed_twice = run(block, x_g, pos_g, -1)   # the plain path counts the copies
    assert (summed_twice.scalars[:n] - alone.scalars).abs().max() > 1e-6


def test_split_path_takes_one_structure():
    block = efa_block("l0")
    pos = torch.tensor(random_molecule(6, seed=1).positions)
    graph = graph_without_edges(pos, torch.tensor([0, 0, 0, 1, 1, 1]), 2)._replace(owned=6)
    with pytest.raises(ValueError, match="one structure per call"):
        block(features(6, "l0"), graph)


def test_distributed_blocks_sum_through_their_hook():
    """The contract the LAMMPS export relies on: a distributed block's per-structure sums go
    through ``sums`` (replace it, and the output changes accordingly)."""
    block = efa_block("l1")
    assert block.distributed and isinstance(block.sums, LocalSums)

    class Doubled(torch.nn.Module):   # as if a second rank held an identical copy
        def forward(self, partial):
            return 2 * partial

    pos = torch.tensor(random_molecule(8, seed=5).positions)
    x = features(8)
    before = run(block, x, pos, 8)
    block.sums = Doubled()
    after = run(block, x, pos, 8)
    assert (after.scalars - before.scalars).abs().max() > 1e-6
    # the same atoms twice, in one process, plain (Lebedev) path
    block.sums = LocalSums()
    twice = run(block, Features(*(torch.cat([t, t]) for t in x)), torch.cat([pos, pos]), -1)
    torch.testing.assert_close(after.scalars, twice.scalars[:8], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", MODEL_CONFIGS)
def test_models_with_every_atom_owned_are_unchanged(name):
    """A structure split over one process (owned = every node) gives the plain call's
    energies to 1e-10 (EFA takes the same Lebedev sums either way); blocks that never run split (softmax attention, through-bond
    propagation) ignore ``owned``."""
    model = make_model(name)
    # electrostatics splits periodic structures only (an open one is a direct sum)
    box = any(getattr(m, "needs_cell", False) for m in model.modules())
    atoms = random_crystal(4) if box else random_molecule(9, seed=4)
    batch = to_batch([atoms], model.cutoff)
    args = (batch.positions, batch.numbers, batch.batch, batch.edge_index, batch.shifts,
            batch.cell, batch.charge, batch.spin)
    torch.testing.assert_close(model.atomic_energies(*args, owned=len(atoms)),
                               model.atomic_energies(*args), rtol=1e-10, atol=1e-10)
