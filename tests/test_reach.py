"""Reach analysis: Jacobian blocks against distance. A local model's sensitivities vanish
exactly beyond layers × cutoff (energies, targets) and 2 × layers × cutoff (forces); a global
model's do not."""
from __future__ import annotations

import json

import ase.io
import numpy as np
import pytest
import torch
from ase import Atoms

from conftest import make_model
from mlip_attn import build_model, save_model
from mlip_attn.analysis.reach import (jacobian_norms, local_bound, pair_sensitivities,
                                      reach_summary)
from mlip_attn.cli import main
from mlip_attn.data import AtomicData


def long_chain(n=12, spacing=1.4, seed=0):
    """A zig-zag C/H chain, ~15 Å long: longer than 2 layers × 2.5 Å."""
    rng = np.random.default_rng(seed)
    pos = [[k * spacing, 0.4 * (k % 2), 0.0] for k in range(n)]
    atoms = Atoms(numbers=rng.choice([1, 6], n), positions=np.array(pos) + rng.normal(0, 0.05, (n, 3)))
    return AtomicData.from_atoms(atoms)


def test_force_jacobian_is_the_hessian():
    model = make_model("painn", elements=(1, 6), width=8, layers=2, cutoff=2.5)
    data = long_chain(6)
    norms = jacobian_norms(model, data, "forces")
    pos = data.positions.clone().requires_grad_(True)
    from mlip_attn.data import Batch
    b = Batch.collate([data.with_graph(model.cutoff)]).to(dtype=torch.float64)

    def energy(p):
        return model.energies_and_features(p, b.numbers, b.batch, b.edge_index, b.shifts,
                                           b.cell, b.charge, b.spin)[0].sum()
    hessian = torch.autograd.functional.hessian(energy, pos).reshape(6, 3, 6, 3)
    expected = torch.sqrt((hessian ** 2).sum(dim=(1, 3))).numpy()
    assert np.allclose(norms, expected, atol=1e-10)


@pytest.mark.parametrize("name", ["painn", "egnn"])
def test_local_model_is_exactly_zero_beyond_layers_times_cutoff(name):
    model = make_model(name, elements=(1, 6), width=8, layers=2, cutoff=2.5)
    structures = [long_chain(12, seed=s) for s in range(2)]
    for quantity, bound in (("energies", 5.0), ("forces", 10.0)):
        assert local_bound(model, quantity) == bound
        r, s = pair_sensitivities(model, structures, quantity)
        assert r.max() > bound + 2.0                # the test sees pairs beyond the bound
        assert np.all(s[r > bound] == 0.0)          # exactly zero, not small
        assert (s[r < 2.0] > 0).all()
        summary = reach_summary(r, s, bound)
        assert summary["share_beyond_bound"] == 0.0 and summary["max_nonzero_distance"] <= bound
        assert 0 < summary["d90"] <= summary["d99"] <= bound


def test_efa_model_sees_beyond_the_local_bound():
    model = make_model("painn+efa-l1", elements=(1, 6), width=8, layers=2, cutoff=2.5)
    r, s = pair_sensitivities(model, [long_chain(12)], "energies")
    beyond = r > local_bound(model, "energies")
    assert beyond.any() and (s[beyond] > 0).all()


def test_analyze_reach_command(tmp_path, capsys):
    torch.manual_seed(0)
    for name, attention in (("local", None), ("efa", {"type": "efa", "r_max": 30.0})):
        model = build_model({"backbone": "painn", "elements": [1, 6], "width": 8, "layers": 2,
                             "cutoff": 2.5, "attention": attention, "targets": ["gap"]})
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.2 * torch.randn_like(p))
        save_model(model, tmp_path / f"{name}.pt")
    ase.io.write(tmp_path / "chains.xyz", [long_chain(12, seed=s).to_atoms() for s in range(3)])
    assert main(["analyze", "reach", str(tmp_path / "local.pt"), str(tmp_path / "efa.pt"),
                 str(tmp_path / "chains.xyz"), "--out", str(tmp_path / "out"),
                 "--max-structures", "2"]) == 0
    result = json.loads((tmp_path / "out" / "reach.json").read_text())
    assert result["local"]["quantity"] == "targets" and result["local"]["structures"] == 2
    assert result["local"]["share_beyond_bound"] == 0.0
    assert result["efa"]["share_beyond_bound"] > 0.0
    assert (tmp_path / "out" / "reach.png").exists()
    assert "d90" in capsys.readouterr().out
    assert main(["analyze", "reach", str(tmp_path / "chains.xyz")]) == 2
