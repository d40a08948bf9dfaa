"""The charge-equilibration block: charges sum to each structure's total charge, the batched
solve equals the bordered Lagrangian system, a proton-like site moves charge along a chain,
a fresh block changes nothing. (Symmetry, forces, batching and TorchScript: tests/test_models.py
runs every model with the block through its preset.)"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mlip_attn import build_model
from mlip_attn.attention.charge_equilibration import (ChargeEquilibration, equilibrate,
                                                      equilibrate_reference, gaussian_coulomb,
                                                      pad_structures)
from mlip_attn.nn.graph import Features, graph_without_edges

from conftest import predict, random_molecule, to_batch


def _graph(positions, batch, charge):
    return graph_without_edges(positions, batch, int(batch.max()) + 1)._replace(charge=charge)


@pytest.mark.parametrize("mode", ["qeq", "shift"])
def test_charges_sum_to_each_structures_total_charge(mode):
    torch.manual_seed(0)
    block = ChargeEquilibration((8,), channels=3, mode=mode).double()
    sizes, totals = [5, 1, 9, 3], [1.0, -1.0, 2.0, 0.0]
    batch = torch.cat([torch.full((n,), k) for k, n in enumerate(sizes)])
    positions = torch.randn(sum(sizes), 3, dtype=torch.float64) * 2.0
    x = Features(torch.randn(sum(sizes), 8, dtype=torch.float64), torch.zeros(sum(sizes), 3, 8,
                 dtype=torch.float64), torch.zeros(sum(sizes), 5, 0, dtype=torch.float64))
    q, phi = block.charges(x, _graph(positions, batch, torch.tensor(totals, dtype=torch.float64)))
    sums = torch.zeros(len(sizes), 3, dtype=torch.float64).index_add(0, batch, q)
    torch.testing.assert_close(sums, torch.tensor(totals, dtype=torch.float64)[:, None].expand(-1, 3),
                               rtol=0, atol=1e-12)
    assert torch.all(phi[batch == 1] == 0)     # a lone atom feels no other charge


def test_batched_solve_equals_the_bordered_lagrangian_system():
    torch.manual_seed(1)
    sizes, totals = [6, 4], [1.0, -2.0]
    batch = torch.cat([torch.full((n,), k) for k, n in enumerate(sizes)])
    positions = torch.randn(10, 3, dtype=torch.float64) * 1.5
    chi = torch.randn(10, 2, dtype=torch.float64) * 3.0
    hardness = torch.rand(10, dtype=torch.float64) * 5 + 0.5
    sigma = torch.tensor(0.8, dtype=torch.float64)
    pos, valid, rank = pad_structures(positions, batch, 2)
    q = equilibrate(pad_structures(chi, batch, 2)[0], pad_structures(hardness, batch, 2)[0],
                    gaussian_coulomb(pos, valid, sigma), valid,
                    torch.tensor(totals, dtype=torch.float64), sigma)[batch, rank]
    for k in range(2):
        m = batch == k
        ref = equilibrate_reference(chi[m], hardness[m], positions[m], totals[k], 0.8)
        torch.testing.assert_close(q[m], ref, rtol=0, atol=1e-11)


def _chain_charges(n_carbons: int, proton_at: int) -> np.ndarray:
    """QEq charges (+1 in total) of a straight C_n chain with a proton-like site (an H with a
    low electronegativity) 1.1 Å beside carbon ``proton_at``."""
    pos = [[0.0, 0.0, 1.3 * i] for i in range(n_carbons)] + [[1.1, 0.0, 1.3 * proton_at]]
    positions = torch.tensor(pos, dtype=torch.float64)
    chi = torch.zeros(n_carbons + 1, 1, dtype=torch.float64)
    chi[-1] = -8.0                                   # eV/e: gives its electron away
    hardness = torch.full((n_carbons + 1,), 6.0, dtype=torch.float64)
    return equilibrate_reference(chi, hardness, positions, 1.0, 1.0)[:, 0].numpy()


def test_a_proton_like_site_moves_charge_to_the_far_end():
    """A local model cannot see either change: the far carbon's surroundings are the same."""
    near, moved = _chain_charges(14, 0), _chain_charges(14, 4)
    assert abs(near.sum() - 1.0) < 1e-12
    assert near[13] > 0.01                                      # the hole reaches 17 Å
    assert abs(moved[13] - near[13]) > 1e-3                     # and depends on the site
    longer = _chain_charges(18, 0)
    assert longer[17] < near[13] - 1e-3                         # and on the chain length


def test_a_fresh_block_leaves_the_local_model_unchanged():
    torch.manual_seed(0)
    local = build_model({"backbone": "painn", "elements": [1, 6, 8], "width": 16, "layers": 2})
    torch.manual_seed(0)
    glob = build_model({"backbone": "painn", "elements": [1, 6, 8], "width": 16, "layers": 2,
                        "attention": {"type": "charges"}})
    glob.load_state_dict(local.state_dict(), strict=False)
    # the physical tails between charged fragments switch on at each model's own separation
    # (4 Å local, 10 Å with the block): polarisabilities → 0 leave the learned parts compared
    with torch.no_grad():
        local.tail_alpha.fill_(-60.0)
        glob.tail_alpha.fill_(-60.0)
    atoms = random_molecule(6, seed=11)
    atoms.info["charge"] = 1.0
    assert torch.allclose(predict(local.double(), [atoms])["energy"],
                          predict(glob.double(), [atoms])["energy"], rtol=0, atol=1e-12)


def test_sigma_is_learned_and_positive_or_fixed():
    learned = ChargeEquilibration((4,), sigma=0.7)
    assert any(p is learned.log_sigma for p in learned.parameters())
    assert math.isclose(float(torch.exp(learned.log_sigma.detach())), 0.7, rel_tol=1e-6)
    fixed = ChargeEquilibration((4,), sigma=0.7, learn_sigma=False)
    assert all(p is not fixed.log_sigma for p in fixed.parameters())
    with pytest.raises(ValueError, match=r"model.attention.mode: must be one of 'qeq', 'shift'"):
        build_model({"backbone": "painn", "elements": [1], "attention": {"type": "charges",
                                                                         "mode": "ewald"}})


def test_charges_follow_the_total_charge_in_a_batch_of_molecules():
    """Through a whole model: the block reads each structure's charge from the batch."""
    torch.manual_seed(2)
    model = build_model({"backbone": "painn", "elements": [1, 6, 8], "width": 8, "layers": 1,
                         "attention": {"type": "charges", "channels": 2}}).double()
    molecules = [random_molecule(5, seed=1), random_molecule(7, seed=2)]
    molecules[0].info["charge"], molecules[1].info["charge"] = 2.0, -1.0
    b = to_batch(molecules, model.cutoff)
    block = model.backbone.layers[0].global_block
    graph = _graph(b.positions, b.batch, b.charge)
    s = model.backbone.embedding(model.species_of(b.numbers), graph)
    x = Features(s, s.new_zeros((len(s), 3, 8)), s.new_zeros((len(s), 5, 0)))
    q, _ = block.charges(x, graph)
    sums = torch.zeros(2, 2, dtype=torch.float64).index_add(0, b.batch, q)
    torch.testing.assert_close(sums[:, 0], torch.tensor([2.0, -1.0], dtype=torch.float64))
