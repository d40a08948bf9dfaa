"""Issue 25's physical targets on the shipped potentials re-shipped under physics ≥ 2.

The model side is computed here (float64, a few seconds per file); the GFN2-xTB side is the
number `potentials/ship.py` (and, for the charge-transfer chains,
`potentials/charge_transfer_stretch.py`) cached when it shipped the file (so no xTB runs
here), and the test first checks that the cached model numbers are what the file computes now.
Every shipped molecular potential is physics ≥ 2 since stop 34 (the physics-1 sn2-charges was
replaced; the old file is a test fixture, tests/data/legacy, its violations in
docs/longrange-physics.md).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mlip_attn.analysis.physics_check import (bond_stretch, charge_leak, probes, separability,
                                              tail)
from mlip_attn.models import load_model

POTENTIALS = Path(__file__).resolve().parents[1] / "potentials"
# the files shipped under physics ≥ 2 (potentials/README.md), and the targets each meets
PHYSICS_2 = ["sn2-local", "sn2-efa", "sn2-charges", "cumulene-local", "cumulene-efa", "charge-transfer-local",
             "charge-transfer-efa"]
# the SN2 files, retrained with continuous charge placement through bond windows (physics ≥ 3)
RETRAINED = ["sn2-local", "sn2-efa", "sn2-charges"]
# the charge-transfer files, fine-tuned under physics 4 on the `bonds` data
CHARGE_TRANSFER = ["charge-transfer-local", "charge-transfer-efa"]
# the whole 12–60 Å tail within 50 meV of xTB, both files (sn2-efa's separated limit beyond its
# 22 Å reach is pinned by the isolated CH3Cl and Cl⁻ of the tails recipe since physics 3)
TAIL_TARGET = {"sn2-local": 60.0, "sn2-efa": 60.0, "sn2-charges": 60.0}


def _load(name):
    model = load_model(POTENTIALS / f"{name}.pt", dtype="float64")
    cached = json.loads((POTENTIALS / f"{name}.physics.json").read_text())
    return model, cached


@pytest.mark.parametrize("name", PHYSICS_2)
def test_separable_and_no_charge_leak(name):
    """Neutral fragments beyond the reach: |ΔE| ≤ 1 meV and |ΔF_A| ≤ 1 meV/Å (here: round-off);
    a charged fragment beside a neutral one at 100 Å within 20 meV of E(A, q) + E(B, 0); no
    charge on the neutral fragment 10 Å or more away."""
    model, _ = _load(name)
    assert model.model_config["physics"] >= 2
    p = probes(model.elements)
    for row in separability(model, p["neutral_a"], p["b"], 0.0):
        assert abs(row["dE"]) < 1e-9 and row["dF_A"] < 1e-9, row
    for row in separability(model, p["a"], p["b"], p["charge"]):
        if row["gap"] >= 100.0:
            assert abs(row["dE"]) <= 0.020, row
    for row in charge_leak(model, p["a"], p["b"], p["charge"]):
        assert row["embedded"] <= 0.01 and (row["block"] or 0.0) <= 0.01, row


@pytest.mark.parametrize("name", sorted(TAIL_TARGET))
def test_ion_tail_follows_xtb(name):
    """Cl⁻ pulled from CH3Cl along the backside axis, 12 Å to `TAIL_TARGET` Å: E(d) − E(12 Å)
    within 50 meV of GFN2-xTB at every point; forces on the molecule change by ≤ 0.5 eV/Å
    beyond 16 Å (out to 60 Å)."""
    model, cached = _load(name)
    p = probes(model.elements)
    site, direction = p["tail_axis"]
    t = tail(model, p["a"], p["b"], p["charge"], site, direction)
    assert t["d"] == cached["tail"]["d"]
    np.testing.assert_allclose(t["model"], cached["tail"]["model"], atol=1e-6)
    error = np.abs(np.array(t["model"]) - np.array(cached["tail"]["xtb"]))
    inside = np.array(t["d"]) <= TAIL_TARGET[name]
    assert error[inside].max() <= 0.050, dict(zip(t["d"], error))
    assert t["max_force_B"] <= 0.5


@pytest.mark.parametrize("name", PHYSICS_2)
def test_bond_stretch_within_twice_xtb(name):
    """The probe's bond stretched through dissociation: max |dE/dr| ≤ 2 × xTB's on the path."""
    model, cached = _load(name)
    atoms, i, j, r_range = probes(model.elements)["stretch"]
    s = bond_stretch(model, atoms, i, j, r_range, probes(model.elements)["stretch_charge"])
    assert s["max_abs_dEdr"] == pytest.approx(cached["bond_stretch"]["max_abs_dEdr"], rel=1e-6)
    assert s["max_abs_dEdr"] <= 2.0 * cached["bond_stretch"]["xtb_max_abs_dEdr"]


@pytest.mark.parametrize("name", RETRAINED + CHARGE_TRANSFER)
def test_no_energy_step_where_the_ion_bonds(name):
    """The charged probe moved onto the neutral one through the bond window, 0.005 Å steps
    (SN2: Cl⁻ onto CH3Cl around 2.40 Å; C/H: C2H4⁺ onto C2H2): no energy step beyond the
    quadrature error (the physics-2 SN2 files stepped by 23 and 4 meV)."""
    from mlip_attn.analysis.physics_check import entry_step
    model, cached = _load(name)
    assert model.model_config["physics"] >= 3
    p = probes(model.elements)
    site, direction = p["tail_axis"]
    window = (2.3, 2.5) if name in RETRAINED else (2.0, 4.0)
    step = entry_step(model, p["a"], p["b"], p["charge"], site, direction, d_range=window)
    assert step["max_step"] < 1e-4 and cached["entry_step"]["max_step"] < 1e-4


def _chains():
    import importlib.util
    spec = importlib.util.spec_from_file_location("ct_chains", POTENTIALS / "charge_transfer_stretch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", CHARGE_TRANSFER)
def test_charge_transfer_chains_separate(name):
    """The issue's chains: C12H3+ beside a neutral C12H2 at 100 and 1,000 Å within 20 meV of
    E(A, +1) + E(B, 0) (physics 1: off by 6.7 eV), and two neutral C12H2 to ≤ 1 meV and 1 meV/Å."""
    module = _chains()
    model = load_model(POTENTIALS / f"{name}.pt", dtype="float64")
    cation, neutral, _, _ = module.chains()
    for row in separability(model, cation, neutral, 1.0):
        if row["gap"] >= 100.0:
            assert abs(row["dE"]) <= 0.020, row
    for row in separability(model, neutral, neutral, 0.0):
        assert abs(row["dE"]) <= 1e-3 and row["dF_A"] <= 1e-3, row


@pytest.mark.parametrize("name", CHARGE_TRANSFER)
def test_charge_transfer_chain_stretch_within_twice_xtb(name):
    """The cation's far C–H stretched 1.0–2.6 Å: max |dE/dr| is what was cached and ≤ 2 ×
    GFN2-xTB's on the same path (cached by potentials/charge_transfer_stretch.py); the
    physics-2 charge-transfer-efa peaked at 26.2 eV/Å (no data in the window, the charge
    handed to the bare H), the physics-4 files follow xTB's 5.78."""
    module = _chains()
    cached = json.loads(module.OUT.read_text())
    model = load_model(POTENTIALS / f"{name}.pt", dtype="float64")
    cation, _, i, j = module.chains()
    s = bond_stretch(model, cation, i, j, module.R_RANGE, 1.0, module.POINTS)
    assert s["max_abs_dEdr"] == pytest.approx(
        cached["models"][name]["stretch"]["max_abs_dEdr"], rel=1e-6)
    assert s["max_abs_dEdr"] <= 2.0 * cached["xtb"]["max_abs_dEdr"]


@pytest.mark.parametrize("name", CHARGE_TRANSFER)
def test_charge_transfer_cation_keeps_its_charge_on_the_chain_when_the_c_h_breaks(name):
    """Physics 4: with the far H pulled to 2.6 Å (its own fragment) the +1 stays on C12H2, as
    in xTB (the electronegativity rule of physics 2 and 3 gave it to the bare H)."""
    import torch
    from mlip_attn.data import AtomicData, Batch
    from mlip_attn.nn.graph import Graph
    module = _chains()
    model = load_model(POTENTIALS / f"{name}.pt", dtype="float64")
    assert model.model_config["physics"] == 4
    cation, _, i, j = module.chains()
    atoms = cation.copy()
    u = atoms.positions[j] - atoms.positions[i]
    atoms.positions[j] = atoms.positions[i] + 2.6 * u / np.linalg.norm(u)
    atoms.info["charge"] = 1.0
    b = Batch.collate([AtomicData.from_atoms(atoms).with_graph(model.cutoff)]).to(
        dtype=torch.float64)
    vectors = b.positions[b.edge_index[1]] - b.positions[b.edge_index[0]] + b.shifts
    g = Graph(b.positions, b.numbers, b.batch, b.edge_index, vectors,
              torch.linalg.norm(vectors, dim=1), b.shifts, b.cell, b.charge, b.spin,
              b.positions.new_zeros((len(atoms), 0)), 1)
    q = model.backbone.embedding.atom_charges(g).numpy()
    assert q[j] == 0.0 and np.all(np.delete(q, j) == 1.0)


def test_remarked_local_file_computes_what_its_physics_1_weights_did():
    """cumulene-local was re-marked physics 2 without retraining (its card says so): on its
    held-out structures the file computes exactly what the same weights under the physics-1
    forms compute (for an ℓ ≤ 2 local PaiNN, a neutral molecule meets none of the changes)."""
    import ase.io
    from mlip_attn.analysis.physics_check import evaluate, load_as_physics
    from mlip_attn.models.model_file import read_model_file
    path = POTENTIALS / "cumulene-local.pt"
    assert read_model_file(path)["metadata"]["initialised_from"]["fine_tuning_epochs"] == 0
    model, _ = _load("cumulene-local")
    old, missing, unexpected = load_as_physics(path, 1)
    assert missing == [] and unexpected == ["tail_alpha"]
    for frame in ase.io.read(POTENTIALS / "held_out" / "cumulene-C15.xyz", ":5"):
        e, f = evaluate(model, frame)
        e1, f1 = evaluate(old, frame)
        assert e == pytest.approx(e1, abs=1e-10)
        np.testing.assert_allclose(f, f1, atol=1e-10)
