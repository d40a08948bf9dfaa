"""A structure split over processes (``Graph.owned``): what distributed LAMMPS runs rely on.

The owned nodes come first; the nodes after them are copies (ghosts) of atoms owned
elsewhere. Distributed global blocks (EFA) must add only owned nodes into their per-structure
sums and still give every node, ghosts included, its output. Here everything runs in one
process (the sums hook is the identity); tests/test_lammps.py runs 1, 2 and 4 MPI ranks.
"""
from __future__ import annotations

import pytest
import torch

from conftest import MODEL_CONFIGS, make_model, random_molecule, to_batch

from mlip_attn.attention.base import LocalSums
from mlip_attn.attention.efa import EFA_PRESET, EuclideanFastAttention
from mlip_attn.nn.graph import Features, graph_without_edges

EFA_OPTIONS = {"l0": {}, "l1": {"vectors": True}, "l2": {"vectors": True, "tensors": True}}


def efa_block(options, width=16, seed=0):
    torch.manual_seed(seed)
    block = EuclideanFastAttention(width, r_max=30.0, **{**EFA_PRESET, **options}).double()
    with torch.no_grad():
        for p in block.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return block


def features(n, width=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(n, width, dtype=torch.float64, generator=g)
    v = torch.randn(n, 3, width, dtype=torch.float64, generator=g)
    return Features(s, v, s.new_zeros((n, 5, 0)))


def run(block, x, positions, owned):
    graph = graph_without_edges(positions, torch.zeros(len(positions), dtype=torch.long), 1)
    return block(x, graph._replace(owned=owned))


@pytest.mark.parametrize("kind", EFA_OPTIONS)
def test_efa_with_every_node_owned_equals_the_plain_path(kind):
    block = efa_block(EFA_OPTIONS[kind])
    pos = torch.tensor(random_molecule(12, seed=2).positions)
    x = features(12)
    plain, split = run(block, x, pos, -1), run(block, x, pos, 12)
    torch.testing.assert_close(split.scalars, plain.scalars, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(split.vectors, plain.vectors, rtol=1e-10, atol=1e-10)
    assert plain.scalars.abs().max() > 1e-3


@pytest.mark.parametrize("kind", EFA_OPTIONS)
def test_ghost_copies_do_not_enter_the_sums_but_get_outputs(kind):
    """Appending copies of atoms after the owned ones changes no owned output (ghosts are not
    summed: counted twice they would shift the centroid and S), and each copy gets exactly the
    output of its original."""
    block = efa_block(EFA_OPTIONS[kind])
    n = 12
    pos = torch.tensor(random_molecule(n, seed=3).positions)
    x = features(n)
    ghosts = torch.tensor([7, 2, 2, 11])
    pos_g = torch.cat([pos, pos[ghosts]])
    x_g = Features(*(torch.cat([t, t[ghosts]]) for t in x))
    alone = run(block, x, pos, n)
    split = run(block, x_g, pos_g, n)
    for a, b in ((alone.scalars, split.scalars), (alone.vectors, split.vectors)):
        torch.testing.assert_close(b[:n], a, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(b[n:], a[ghosts], rtol=1e-10, atol=1e-10)
    summed_twice = run(block, x_g, pos_g, -1)   # the plain path counts the copies
    assert (summed_twice.scalars[:n] - alone.scalars).abs().max() > 1e-6


def test_split_path_takes_one_structure():
    block = efa_block({})
    pos = torch.tensor(random_molecule(6, seed=1).positions)
    graph = graph_without_edges(pos, torch.tensor([0, 0, 0, 1, 1, 1]), 2)._replace(owned=6)
    with pytest.raises(ValueError, match="one structure per call"):
        block(features(6), graph)


def test_distributed_blocks_sum_through_their_hook():
    """The contract the LAMMPS export relies on: a distributed block's per-structure sums go
    through ``sums`` (replace it, and the output changes accordingly)."""
    block = efa_block({"vectors": True})
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
    # the same atoms twice, in one process, plain path
    block.sums = LocalSums()
    twice = run(block, Features(*(torch.cat([t, t]) for t in x)), torch.cat([pos, pos]), -1)
    torch.testing.assert_close(after.scalars, twice.scalars[:8], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", MODEL_CONFIGS)
def test_models_with_every_atom_owned_are_unchanged(name):
    """What one LAMMPS rank passes (owned = every node) changes no model (softmax attention
    ignores ``owned``: it never runs split)."""
    model = make_model(name)
    batch = to_batch([random_molecule(9, seed=4)], model.cutoff)
    args = (batch.positions, batch.numbers, batch.batch, batch.edge_index, batch.shifts,
            batch.cell, batch.charge, batch.spin)
    torch.testing.assert_close(model.atomic_energies(*args, owned=9),
                               model.atomic_energies(*args), rtol=1e-10, atol=1e-10)
