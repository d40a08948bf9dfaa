"""Through-bond propagation: smooth bond weights, and walk sums whose sign counts bonds."""
from __future__ import annotations

import pytest
import torch

from mlip_attn.attention.bond_graph import (BRANCH_SOFTENING, BondGraphPropagation,
                                            continuing_bonds, smooth_bond_weights)
from mlip_attn.data import AtomicData
from mlip_attn.nn.graph import Features, Graph

F64 = torch.float64


def _chain_graph(n_carbons: int, spacing: float = 1.3) -> Graph:
    """A straight carbon chain with its 4 Å neighbour list."""
    from ase import Atoms
    atoms = Atoms(f"C{n_carbons}", positions=[[0, 0, spacing * k] for k in range(n_carbons)])
    d = AtomicData.from_atoms(atoms).with_graph(4.0)
    pos, (i, j) = d.positions, d.edge_index
    vectors = pos[j] - pos[i]
    return Graph(pos, d.numbers, torch.zeros(n_carbons, dtype=torch.long), d.edge_index, vectors,
                 vectors.norm(dim=1), torch.zeros_like(vectors), torch.zeros(1, 3, 3, dtype=F64),
                 torch.zeros(1, dtype=F64), torch.zeros(1, dtype=F64),
                 torch.zeros(n_carbons, 0, dtype=F64), 1)


def test_bond_weights_are_one_for_bonds_zero_beyond_and_smooth_between():
    radii = torch.full((119,), 0.76, dtype=F64)                    # C–C reference 1.52 Å
    r = torch.tensor([1.3, 1.52 * 1.15, 1.52 * 1.25, 1.52 * 1.35, 2.6], dtype=F64,
                     requires_grad=True)
    pairs = torch.zeros(2, 5, dtype=torch.long)
    w = smooth_bond_weights(r, torch.full((1,), 6), pairs, radii, 1.15, 1.35)
    assert w[0] == 1 and w[1] == 1 and w[3] == 0 and w[4] == 0 and 0.4 < w[2] < 0.6
    (g,) = torch.autograd.grad(w.sum(), r)
    assert g[1] == 0 and g[3] == 0 and g[2] < 0                       # C¹ at both ends


@pytest.mark.parametrize("physics", [1, 2])
def test_a_negative_walk_weight_gives_the_sign_of_the_bond_count_at_any_length(physics):
    """One scalar channel with γ < 0, started at the first carbon: the last carbon receives it
    along the one non-backtracking walk, γ^(bonds) — the sign of the bond count and no decay
    beyond |γ| per bond, for short and long chains alike (nearest-neighbour bonds only; the
    2.6 Å next neighbours are not bonds)."""
    block = BondGraphPropagation((1,), channels=1, steps=40, physics=physics).double()
    with torch.no_grad():
        block.theta.fill_(float(torch.atanh(torch.tensor(-0.8))))
        block.project[0].weight.fill_(1.0)
        block.back[0].weight.fill_(1.0)          # the output is the propagated channel itself
    for n in range(3, 17):
        graph = _chain_graph(n)
        assert len(block.bonds(graph)[0]) == 2 * (n - 1)   # bonds only
        s = torch.zeros(n, 1, dtype=F64)
        s[0] = 1.0
        x = Features(s, torch.zeros(n, 3, 0, dtype=F64), torch.zeros(n, 5, 0, dtype=F64))
        far_end = block(x, graph).scalars[-1, 0]
        # physics 1: every bond after the first passes an interior atom, × 1 / (1 + ε) there;
        # physics 2 divides by 1 + (other continuing bonds) = 1 on a chain
        softening = BRANCH_SOFTENING if physics == 1 else 0.0
        expected = (-0.8) ** (n - 1) / (1 + softening) ** (n - 2)
        torch.testing.assert_close(far_end, torch.tensor(expected, dtype=F64))


def test_dense_and_pairwise_propagation_agree():
    """Molecules propagate with dense matrices per structure, large structures over the list
    of bond pairs: the same sums (a batch of two chains, float64)."""
    torch.manual_seed(0)
    block = BondGraphPropagation((4, 4), channels=3, steps=12).double()
    graphs = [_chain_graph(5), _chain_graph(7)]
    # one batch of both chains: concatenate atoms and offset edges
    g0, g1 = graphs
    graph = Graph(torch.cat([g0.positions, g1.positions + 50.0]),
                  torch.cat([g0.numbers, g1.numbers]),
                  torch.cat([g0.batch, g1.batch + 1]),
                  torch.cat([g0.edge_index, g1.edge_index + 5], dim=1),
                  torch.cat([g0.vectors, g1.vectors]), torch.cat([g0.lengths, g1.lengths]),
                  torch.cat([g0.shifts, g1.shifts]), torch.zeros(2, 3, 3, dtype=F64),
                  torch.zeros(2, dtype=F64), torch.zeros(2, dtype=F64),
                  torch.zeros(12, 0, dtype=F64), 2)
    start = torch.randn(12, 4, 3, dtype=F64)
    gamma = torch.tanh(torch.randn(4, 3, dtype=F64))
    dense = block.propagate(start, gamma, graph)
    block.dense_below = 0
    pairwise = block.propagate(start, gamma, graph)
    torch.testing.assert_close(dense, pairwise, rtol=1e-12, atol=1e-12)
    assert (dense[:5] - start[:5]).abs().max() > 1e-3   # something propagated


def test_continuing_bonds_never_go_back():
    """A star (atom 0 bonded to 1, 2, 3): from each outer atom into 0, on to the other two
    outer atoms, never back where it came from."""
    receivers = torch.tensor([0, 1, 0, 2, 0, 3])
    senders = torch.tensor([1, 0, 2, 0, 3, 0])
    out, into = continuing_bonds(receivers, senders, 4)
    walks = sorted((int(senders[e2]), int(receivers[e2]), int(receivers[e1]))
                   for e1, e2 in zip(out.tolist(), into.tolist()))
    assert walks == [(1, 0, 2), (1, 0, 3), (2, 0, 1), (2, 0, 3), (3, 0, 1), (3, 0, 2)]
