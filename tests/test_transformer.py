"""Transformer attention: biases, masks and layouts, fixed attention, constrained exponents,
the graph-free transformer and its non-invariant / non-conservative options, TorchScript,
rotation augmentation and the attention analysis (float64)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import call_block
from mlip_attn.nn.graph import empty_features, graph_without_edges
from scipy.spatial.transform import Rotation

from mlip_attn import build_model
from mlip_attn.attention.biases import (BIAS_TYPES, GaussianKernelBias, PowerLawBias, make_bias,
                                        pair_distances)
from mlip_attn.nn.packing import pair_masks, structure_layout
from mlip_attn.attention.transformer_attention import TransformerAttention
from mlip_attn.training.augmentation import random_rotation, random_rotations, rotate_batch

from conftest import predict, random_molecule, to_batch
from mlip_attn.lammps.export import script

BASE = {"elements": [1, 6, 8], "width": 16, "layers": 2, "cutoff": 4.0}


def model_from(config: dict, seed: int = 0):
    """Small float64 model with every (also zero-initialised) weight randomised."""
    torch.manual_seed(seed)
    model = build_model({**BASE, **config})
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return model.double().eval()


def global_block(bias: str, layout: str = "auto", fixed: bool = False, seed: int = 0,
                 physics: int = 2, r_max: float = 12.0):
    torch.manual_seed(seed)
    block = TransformerAttention((8,), heads=2, bias=bias, fixed=fixed, layout=layout,
                                 num_kernels=6, physics=physics, r_max=r_max).double().eval()
    with torch.no_grad():
        for p in block.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return block


def rel(a, b):
    return float((a - b).detach().abs().max() / (b.detach().abs().max() + 1e-300))


# ---------------------------------------------------------------- biases


@pytest.mark.parametrize("kind", BIAS_TYPES)
def test_each_bias_is_differentiable_in_positions(kind):
    torch.manual_seed(1)
    n = 5
    pos = (2.0 * torch.randn(1, n, 3, dtype=torch.float64)).requires_grad_(True)
    pairs, allowed, _ = pair_masks(torch.zeros(1, n, dtype=torch.long))
    bias = make_bias(kind, 3, 4, None, 5).double()
    with torch.no_grad():
        for p in bias.parameters():
            p.add_(0.3 * torch.randn_like(p))
    types = torch.randn(1, n, 4, dtype=torch.float64)
    w = torch.randn(1, 3, n, n, dtype=torch.float64)

    def total(x):
        b = bias(pair_distances(x, pairs), allowed, types)
        assert b.shape[-2:] == (n, n)
        assert torch.isinf(b[:, :, torch.arange(n), torch.arange(n)]).all()  # diagonal masked
        assert torch.isfinite(b.expand(1, 3, n, n)[:, :, pairs[0]]).all()
        return (b.expand(1, 3, n, n) * w)[:, :, pairs[0]].sum()

    if kind == "none":  # ignores positions entirely
        assert not total(pos).requires_grad
        return
    torch.autograd.gradcheck(total, (pos,), eps=1e-6, atol=1e-7)
    g, = torch.autograd.grad(total(pos), pos)
    assert g.abs().max() > 1e-6


def test_power_law_bias_values_and_masks():
    bias = PowerLawBias(2, "learned", None).double()
    pos = torch.tensor([[[0, 0, 0], [2.0, 0, 0], [0, 3.0, 0], [9, 9, 9]]], dtype=torch.float64)
    sid = torch.tensor([[0, 0, 0, -1]])                         # last slot is padding
    pairs, allowed, _ = pair_masks(sid)
    b = bias(pair_distances(pos, pairs), allowed, pos)
    p = bias.exponents()
    assert torch.allclose(b[0, :, 0, 1], p * np.log(2.0))
    assert torch.allclose(b[0, :, 1, 2], p * np.log(np.sqrt(13.0)))
    assert torch.isinf(b[0, :, :3, 3]).all() and torch.isinf(b[0, :, 0, 0]).all()
    assert bool(p[0] > p[1])  # default learned init spreads −1 … −3


def test_gaussian_bias_is_pair_type_aware():
    torch.manual_seed(0)
    bias = GaussianKernelBias(2, 2, 4).double()
    with torch.no_grad():
        bias.gamma.copy_(torch.tensor([[0.0, 0.5], [0.5, 0.0]]))
    pos = torch.tensor([[[0, 0, 0], [1.5, 0, 0]]], dtype=torch.float64)
    pairs, allowed, _ = pair_masks(torch.zeros(1, 2, dtype=torch.long))
    r = pair_distances(pos, pairs)
    same = bias(r, allowed, torch.tensor([[[1.0, 0], [1.0, 0]]], dtype=torch.float64))
    mixed = bias(r, allowed, torch.tensor([[[1.0, 0], [0, 1.0]]], dtype=torch.float64))
    assert (same[0, :, 0, 1] - mixed[0, :, 0, 1]).abs().max() > 1e-4


def test_constrained_exponents_stay_negative():
    neg = PowerLawBias(4, "negative").double()
    free = PowerLawBias(4, "learned").double()
    opt = torch.optim.Adam(list(neg.parameters()) + list(free.parameters()), lr=0.5)
    start = neg.exponents().detach().clone()
    for _ in range(30):
        opt.zero_grad()
        loss = -(neg.exponents().sum() + free.exponents().sum())   # pushes every p_h up
        loss.backward()
        opt.step()
    p = neg.exponents().detach()
    assert (p < 0).all() and (p > start).all()
    assert (free.exponents() > 0).all()  # the same push makes unconstrained exponents positive


# ---------------------------------------------------------------- masks and layouts


def test_layouts():
    batch = torch.tensor([0, 0, 1, 1, 1, 2])
    group, slot, sid = structure_layout(batch, 3, "padded")
    assert sid.tolist() == [[0, 0, -1], [1, 1, 1], [2, -1, -1]]
    assert (sid[group, slot] == batch).all()
    group, slot, sid = structure_layout(batch, 3, "block_diagonal")
    assert sid.tolist() == [batch.tolist()] and (group == 0).all()
    big_and_small = torch.tensor([0] * 20 + [1, 2, 3, 4, 5])
    assert structure_layout(big_and_small, 6, "auto")[2].shape == (1, 25)       # block diagonal
    assert structure_layout(torch.tensor([0, 0, 1, 1]), 2, "auto")[2].shape == (2, 2)   # padded
    pairs, allowed, has_partner = pair_masks(structure_layout(batch, 3, "padded")[2])
    assert has_partner.tolist() == [[True, True, False], [True, True, True], [False, False, False]]
    assert allowed.sum(-1).min() == 1          # every row (also padding, lone atoms) has a key
    assert not (allowed & ~pairs)[has_partner].any()


@pytest.mark.parametrize("layout", ["padded", "block_diagonal", "auto"])
@pytest.mark.parametrize("bias", ["power_law_negative", "gaussian"])
def test_padding_never_leaks(layout, bias):
    block = global_block(bias, layout)
    torch.manual_seed(2)
    sizes = [4, 11, 1, 6]
    batch = torch.repeat_interleave(torch.arange(4), torch.tensor(sizes))
    s = torch.randn(len(batch), 8, dtype=torch.float64)
    pos = 2.0 * torch.randn(len(batch), 3, dtype=torch.float64)
    v = s.new_zeros((len(batch), 3, 8))
    together, dv = call_block(block, s, v, pos, batch, 4)
    assert torch.equal(dv, torch.zeros_like(v))
    assert together[batch == 2].abs().max() == 0   # a lone atom has nobody to attend to
    for b in range(4):
        m = batch == b
        alone, _ = call_block(block, s[m], v[m], pos[m], torch.zeros(int(m.sum()), dtype=torch.long), 1)
        assert (together[m] - alone).abs().max() < 1e-12
    # changing structure 1 leaves every other structure's outputs unchanged
    pos2, s2 = pos.clone(), s.clone()
    pos2[batch == 1] += torch.randn_like(pos2[batch == 1])
    s2[batch == 1] *= 1.5
    changed, _ = call_block(block, s2, v, pos2, batch, 4)
    assert (changed[batch != 1] - together[batch != 1]).abs().max() < 1e-12
    assert (changed[batch == 1] - together[batch == 1]).abs().max() > 1e-6


@pytest.mark.parametrize("name", ["painn-transformer", "transformer"])
def test_batch_isolation_and_layouts_in_models(name):
    config = ({"backbone": "painn", "attention": {"type": "transformer", "heads": 2}}
              if name == "painn-transformer" else {"backbone": "transformer", "heads": 2})
    mols = [random_molecule(n, seed=20 + n) for n in (3, 10, 1)]
    results = []
    for layout in ("padded", "block_diagonal"):
        cfg = dict(config)
        if "attention" in cfg:
            cfg["attention"] = {**cfg["attention"], "layout": layout}
        else:
            cfg["layout"] = layout
        model = model_from(cfg)
        results.append(predict(model, mols))
        moved = [mols[0], mols[1].copy(), mols[2]]
        moved[1].positions[0] += 0.3
        changed = predict(model, moved)
        for k in (0, 2):  # structures 0 and 2 do not see the change in structure 1
            assert abs(float(changed["energy"][k] - results[-1]["energy"][k])) < 1e-12
        assert abs(float(changed["energy"][1] - results[-1]["energy"][1])) > 1e-8
        offsets = [0, 3, 13, 14]
        for k in (0, 2):
            sl = slice(offsets[k], offsets[k + 1])
            assert (changed["forces"][sl] - results[-1]["forces"][sl]).abs().max() < 1e-12
    assert rel(results[0]["energy"], results[1]["energy"]) < 1e-12
    assert rel(results[0]["forces"], results[1]["forces"]) < 1e-12


# ---------------------------------------------------------------- attention paths


def block_inputs(s, positions, batch, num_graphs):
    """(features, graph): a global block's forward arguments for scalar features s (N, F)."""
    return empty_features(s), graph_without_edges(positions, batch, num_graphs)


@pytest.mark.parametrize("physics", [1, 2])
def test_fixed_attention_weights_are_softmax_of_bias(physics):
    """Physics 1: softmax_j(b_ij). Physics 2: S(r_ij) e^{b_ij} / (1 + Σ_j S(r_ij) e^{b_ij}), the
    sink softmax with the reach switch S (from r_max/2 = 1.5 Å to r_max = 3 Å here)."""
    block = global_block("power_law", fixed=True, physics=physics, r_max=3.0)
    pos = torch.tensor([[0, 0, 0], [1.0, 0, 0], [0, 2.0, 0], [0, 0, 3.0]], dtype=torch.float64)
    s = torch.randn(4, 8, dtype=torch.float64)
    batch = torch.zeros(4, dtype=torch.long)
    w, r, pairs = block.attention_weights(*block_inputs(s, pos, batch, 1))
    d = torch.cdist(pos, pos)
    expected = torch.where(pairs[0], d, torch.ones_like(d)) ** -2.0 * pairs[0]   # p = −2
    if physics == 1:
        expected = expected / expected.sum(-1, keepdim=True)
    else:
        x = ((d - 1.5) / 1.5).clamp(0, 1)
        expected = expected * (1 - x ** 3 * (10 - 15 * x + 6 * x ** 2))
        expected = expected / (1 + expected.sum(-1, keepdim=True))
        assert expected[0, 3] == 0 and 0 < expected[1, 2] < expected[0, 1]   # 3 Å: beyond
    assert (w[0] - expected).abs().max() < 1e-14        # both heads, no query/key influence
    # and the forward uses exactly these weights: y = W_O concat_h(A^h V^h)
    att = block.attention
    x = block.norm(s)
    vh = att.value(x).reshape(4, 2, 4).transpose(0, 1)
    y = att.out((w[0] @ vh).transpose(0, 1).reshape(4, 8))
    ds, _ = call_block(block, s, s.new_zeros((4, 3, 0)), pos, batch, 1)
    assert (ds - y).abs().max() < 1e-13
    assert not hasattr(att.query_key, "weight")


def test_dynamic_attention_uses_queries_and_keys():
    block = global_block("power_law")
    pos = 2.0 * torch.randn(5, 3, dtype=torch.float64)
    s = torch.randn(5, 8, dtype=torch.float64)
    w, _, pairs = block.attention_weights(*block_inputs(s, pos, torch.zeros(5, dtype=torch.long), 1))
    other = torch.randn(5, 8, dtype=torch.float64)
    w2, _, _ = block.attention_weights(*block_inputs(other, pos, torch.zeros(5, dtype=torch.long), 1))
    assert bool((w.sum(-1) < 1).all())         # the sink takes the rest
    assert (w - w2).abs().max() > 1e-4
    legacy = global_block("power_law", physics=1)
    w1, _, _ = legacy.attention_weights(*block_inputs(s, pos, torch.zeros(5, dtype=torch.long), 1))
    assert torch.allclose(w1.sum(-1), torch.ones(1, 2, 5, dtype=torch.float64))


@pytest.mark.parametrize("config", [
    {"backbone": "painn", "attention": {"type": "transformer", "heads": 2, "fixed": True}},
    {"backbone": "transformer", "heads": 2, "bias": "gaussian", "num_kernels": 6},
])
def test_training_path_equals_fused_eval_path(config):
    model = model_from(config)
    b = to_batch([random_molecule(6, seed=3), random_molecule(4, seed=4)], model.cutoff)
    ev = model.predict(b)
    model.train()
    tr = model.predict(b)
    assert rel(tr["energy"], ev["energy"]) < 1e-12 and rel(tr["forces"], ev["forces"]) < 1e-12
    (tr["forces"] ** 2).sum().backward()  # force loss: double backward through attention
    grads = [p.grad for n, p in model.named_parameters() if ".attention." in n and p.numel()]
    assert grads and all(g is not None for g in grads)
    assert max(float(g.abs().max()) for g in grads) > 0


def test_fresh_transformer_attention_model_equals_local_model():
    torch.manual_seed(0)
    local = build_model({**BASE, "backbone": "egnn"})
    torch.manual_seed(0)
    glob = build_model({**BASE, "backbone": "egnn", "attention": {"type": "transformer", "heads": 2}})
    missing, unexpected = glob.load_state_dict(local.state_dict(), strict=False)
    assert not unexpected and missing
    atoms = random_molecule(6, seed=11)
    a, b = predict(local.double(), [atoms]), predict(glob.double(), [atoms])
    assert torch.allclose(a["energy"], b["energy"], rtol=0, atol=1e-12)
    assert torch.allclose(a["forces"], b["forces"], rtol=0, atol=1e-12)


# ---------------------------------------------------------------- graph-free options


def test_direct_forces_and_coordinate_embedding_are_flagged():
    cons = model_from({"backbone": "transformer", "heads": 2})
    assert cons.conservative and cons.invariant
    coord = model_from({"backbone": "transformer", "heads": 2, "coordinate_embedding": True})
    assert coord.conservative and not coord.invariant
    direct = model_from({"backbone": "transformer", "heads": 2, "coordinate_embedding": True,
                         "direct_forces": True})
    assert not direct.conservative and not direct.invariant
    assert direct.model_config["direct_forces"] and direct.model_config["coordinate_embedding"]
    atoms = random_molecule(6, seed=5)
    # coordinates embedded: energy changes under rotation (not invariant), translation is fine
    R = Rotation.random(random_state=1).as_matrix()
    turned, shifted = atoms.copy(), atoms.copy()
    turned.positions = atoms.positions @ R.T
    shifted.positions = atoms.positions + 3.0
    e0 = float(predict(coord, [atoms])["energy"])
    assert abs(float(predict(coord, [turned])["energy"]) - e0) > 1e-6
    assert abs(float(predict(coord, [shifted])["energy"]) - e0) < 1e-10
    # direct forces come from the head on the features, not from −dE/dr
    b = to_batch([atoms], direct.cutoff)
    out = direct.predict(b)
    _, feats = direct.energies_and_features(b.positions, b.numbers, b.batch, b.edge_index,
                                            b.shifts, b.cell, b.charge, b.spin)
    assert torch.allclose(out["forces"], direct.force_head(feats), rtol=0, atol=1e-14)
    pos = b.positions.clone().requires_grad_(True)
    e = direct.atomic_energies(pos, b.numbers, b.batch, b.edge_index, b.shifts, b.cell, b.charge, b.spin)
    grad_forces = -torch.autograd.grad(e.sum(), pos)[0]
    assert (grad_forces - out["forces"]).abs().max() > 1e-3
    scripted = script(direct)
    so = scripted(b.positions, b.numbers, b.batch, b.edge_index, b.shifts, b.cell, b.charge,
                  b.spin, True, False)
    assert rel(so["forces"], out["forces"]) < 1e-12 and rel(so["energy"], out["energy"]) < 1e-12


@pytest.mark.parametrize("config, key", [
    ({"backbone": "transformer", "direct_forces": True}, "model.direct_forces"),
    ({"backbone": "transformer", "bias": "none"}, "model.bias"),
    ({"backbone": "transformer", "bias": "coulomb"}, "model.bias"),
    ({"backbone": "transformer", "heads": 3}, "model.heads"),
    ({"backbone": "transformer", "exponent": 1.0}, "model.exponent"),
    ({"backbone": "transformer", "attention": {"type": "efa", "r_max": 5.0}}, "model.attention"),
    ({"backbone": "painn", "heads": 2}, "model.heads"),
    ({"backbone": "painn", "attention": {"type": "transformer", "bias": "x"}}, "model.attention"),
    ({"backbone": "painn", "attention": {"type": "transformer", "heads": 5}}, "model.attention"),
    ({"backbone": "painn", "attention": {"type": "transformer", "r_max": -9.0}}, "model.attention"),
    ({"backbone": "egnn", "attention": {"type": "transformer", "size": 9}}, "model.attention"),
])
def test_config_errors_name_the_key(config, key):
    with pytest.raises(ValueError, match=key):
        build_model({**BASE, **config})


def test_resolved_configs_are_explicit():
    att = build_model({**BASE, "attention": {"type": "transformer"}}).model_config["attention"]
    assert att["heads"] == 4 and att["bias"] == "power_law_negative" and att["fixed"] is False
    cfg = build_model({**BASE, "backbone": "transformer"}).model_config
    assert cfg["heads"] == 4 and cfg["direct_forces"] is False and cfg["layout"] == "auto"
    assert "heads" not in build_model({**BASE}).model_config


def test_scripted_fixed_block_diagonal_model_matches_eager():
    model = model_from({"backbone": "transformer", "heads": 2, "fixed": True, "bias": "power_law",
                        "layout": "block_diagonal"})
    b = to_batch([random_molecule(5, seed=1), random_molecule(3, seed=2)], model.cutoff)
    eager = model.predict(b)
    out = script(model)(b.positions, b.numbers, b.batch, b.edge_index, b.shifts,
                                  b.cell, b.charge, b.spin, True, False)
    assert rel(out["energy"], eager["energy"]) < 1e-12 and rel(out["forces"], eager["forces"]) < 1e-12


# ---------------------------------------------------------------- rotation augmentation


def test_random_rotation_of_a_batch():
    rots = random_rotations(50, torch.Generator().manual_seed(0))
    eye = torch.eye(3, dtype=torch.float64).expand(50, 3, 3)
    assert (rots @ rots.transpose(1, 2) - eye).abs().max() < 1e-12
    assert (torch.linalg.det(rots) - 1).abs().max() < 1e-12
    from conftest import random_crystal
    from mlip_attn.data import AtomicData, Batch
    frames = [random_crystal(seed=1), random_molecule(4, seed=2)]
    items = []
    for a in frames:
        d = AtomicData.from_atoms(a).with_graph(4.0)
        d.energy = 1.0
        d.forces = torch.randn(len(a), 3, dtype=d.positions.dtype)
        d.stress = torch.randn(3, 3, dtype=d.positions.dtype)
        items.append(d)
    batch = Batch.collate(items).to(dtype=torch.float64)
    turned = random_rotation(batch, torch.Generator().manual_seed(1))
    R = random_rotations(2, torch.Generator().manual_seed(1))
    assert torch.allclose(turned.positions[:5], batch.positions[:5] @ R[0].T)
    assert torch.allclose(turned.forces[5:], batch.forces[5:] @ R[1].T)
    assert torch.allclose(turned.cell[0], batch.cell[0] @ R[0].T)
    assert torch.allclose(turned.stress[1], R[1] @ batch.stress[1] @ R[1].T)
    # distances incl. periodic shifts are unchanged, so an invariant model agrees
    i, j = batch.edge_index
    d0 = (batch.positions[j] - batch.positions[i] + batch.shifts).norm(dim=1)
    d1 = (turned.positions[j] - turned.positions[i] + turned.shifts).norm(dim=1)
    assert (d0 - d1).abs().max() < 1e-12
    model = model_from({"backbone": "transformer", "heads": 2})
    a, b = model.predict(batch), model.predict(turned)
    assert rel(b["energy"], a["energy"]) < 1e-10
    assert rel(b["forces"][5:], a["forces"][5:] @ R[1].T) < 1e-10
    assert (turned.positions - batch.positions).abs().max() > 0.1
    assert rotate_batch(batch, torch.eye(3).expand(2, 3, 3)).positions.equal(batch.positions)


# ---------------------------------------------------------------- analysis


def test_attention_analysis(tmp_path):
    from mlip_attn.analysis import (attention_maps, attention_vs_distance, exponent_histogram,
                                    learned_exponents, plot_attention_vs_distance, plot_exponents)
    fixed = model_from({"backbone": "transformer", "heads": 2, "layers": 1, "fixed": True,
                        "bias": "power_law"})
    mols = [random_molecule(5, seed=1), random_molecule(7, seed=2)]
    maps = attention_maps(fixed, mols)
    assert len(maps) == 1
    w, r, pairs = maps[0]["weights"], maps[0]["r"], maps[0]["pairs"]
    p = float(fixed.backbone.layers[0].attention.bias.exponents()[0])
    from mlip_attn.nn.switching import reach_switch
    expected = torch.where(pairs, r ** p * reach_switch(r, 12.0), torch.zeros_like(r))
    expected = expected / (1 + expected.sum(-1, keepdim=True))     # physics 2: sink softmax
    assert (w[:, 0][pairs] - expected[pairs]).abs().max() < 1e-12
    prof = attention_vs_distance(fixed, mols, bins=6)
    chunked = attention_vs_distance(fixed, mols + [random_molecule(1, seed=3)], bins=6, batch_size=1)
    assert np.allclose(chunked["mean"], prof["mean"], equal_nan=True)
    assert np.array_equal(chunked["count"], prof["count"])
    assert prof["mean"].shape == (1, 6) and prof["count"].sum() == 5 * 4 + 7 * 6
    ok = np.isfinite(prof["mean"][0])
    # every atom's weights over its partners sum to less than 1 (the sink takes the rest)
    assert 0 < float((prof["mean"][0][ok] * prof["count"][ok]).sum()) < 12
    assert prof["mean"][0][ok][0] > 3 * prof["mean"][0][ok][-1]   # r⁻² attention decays
    glob = model_from({"backbone": "painn", "layers": 3,
                       "attention": {"type": "transformer", "heads": 2,
                                     "bias": "power_law_learned"}})
    assert len(attention_maps(glob, mols)) == 3
    exps = learned_exponents(glob)
    assert len(exps) == 3 and all(e.shape == (2,) for e in exps)
    assert exponent_histogram(glob, bins=5)["counts"].sum() == 6
    assert plot_attention_vs_distance(glob, mols, tmp_path / "a.png").stat().st_size > 1000
    assert plot_exponents(glob, tmp_path / "p.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="no transformer attention"):
        attention_maps(model_from({"backbone": "painn"}), mols)


# ------------------------------------------------ wiring: calculator, trainer, CLI, metadata


def test_calculator_flags_non_conservative_and_periodic_global_models(tmp_path):
    import warnings as _warnings

    from mlip_attn import AttnCalculator, build_model
    from conftest import random_crystal
    model = build_model({"backbone": "transformer", "elements": [1, 6, 8], "width": 16,
                         "layers": 1, "heads": 2, "coordinate_embedding": True,
                         "direct_forces": True, "bias": "power_law"})
    with _warnings.catch_warnings(record=True) as caught:
        _warnings.simplefilter("always")
        calc = AttnCalculator(model)
    messages = " ".join(str(w.message) for w in caught)
    assert "not -dE/dr" in messages and "orientation" in messages
    atoms = random_crystal(seed=1)
    atoms.calc = AttnCalculator(build_model({"backbone": "painn", "elements": [1, 6, 8],
                                             "width": 8, "layers": 1,
                                             "attention": {"type": "transformer", "heads": 2}}))
    with pytest.raises(ValueError, match="periodic"):
        atoms.get_potential_energy()
    del calc


def test_cli_analyze_attention_writes_plots(tmp_path):
    import ase.io

    from mlip_attn import build_model, save_model
    from mlip_attn.cli import main
    from conftest import random_molecule
    model = build_model({"backbone": "painn", "elements": [1, 6, 8], "width": 8, "layers": 2,
                         "attention": {"type": "transformer", "heads": 2,
                                       "bias": "power_law_negative"}})
    save_model(model, tmp_path / "model.pt")
    ase.io.write(tmp_path / "data.xyz", [random_molecule(8, seed=s) for s in range(3)])
    assert main(["analyze", "attention", str(tmp_path / "model.pt"), str(tmp_path / "data.xyz"),
                 "--out", str(tmp_path / "plots")]) == 0
    for name in ("attention_vs_distance.png", "exponents.png"):
        assert (tmp_path / "plots" / name).stat().st_size > 1000


def test_fit_augments_rotations_for_coordinate_embeddings(tmp_path, monkeypatch):
    import ase.io

    import mlip_attn.training.trainer as trainer
    from mlip_attn.training import fit, load_config
    from conftest import emt_frames
    calls = []
    original = trainer.random_rotation
    monkeypatch.setattr(trainer, "random_rotation",
                        lambda batch, gen: calls.append(1) or original(batch, gen))
    ase.io.write(tmp_path / "d.xyz", emt_frames(12))
    base = {"data": {"train": str(tmp_path / "d.xyz")}, "training": {"epochs": 1, "progress": False}}
    fit(load_config(None, {**base, "output": str(tmp_path / "a"), "model": {
        "backbone": "transformer", "width": 8, "layers": 1, "heads": 2,
        "coordinate_embedding": True, "bias": "power_law"}}))
    assert calls
    calls.clear()
    fit(load_config(None, {**base, "output": str(tmp_path / "b"),
                           "model": {"backbone": "painn", "width": 8, "layers": 1}}))
    assert not calls
