"""Issue 25's physical targets on the shipped potentials retrained under physics 3.

The model side is computed here (float64, a few seconds per file); the GFN2-xTB side is the
number `potentials/ship.py` cached in ``<name>.physics.json`` when it shipped the file (so no
xTB runs here), and the test first checks that the cached model numbers are what the file
computes now. Potentials still shipped under physics 1 are not listed: their violations are
in docs/longrange-physics.md.
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
# the files retrained under physics 3 (potentials/README.md), and the targets each meets
RETRAINED = ["sn2-local", "sn2-efa"]
# the whole 12–60 Å tail within 50 meV of xTB, both files (sn2-efa's separated limit beyond its
# 22 Å reach is pinned by the isolated CH3Cl and Cl⁻ of the tails recipe since physics 3)
TAIL_TARGET = {"sn2-local": 60.0, "sn2-efa": 60.0}


def _load(name):
    model = load_model(POTENTIALS / f"{name}.pt", dtype="float64")
    cached = json.loads((POTENTIALS / f"{name}.physics.json").read_text())
    return model, cached


@pytest.mark.parametrize("name", RETRAINED)
def test_separable_and_no_charge_leak(name):
    """Neutral fragments beyond the reach: |ΔE| ≤ 1 meV and |ΔF_A| ≤ 1 meV/Å (here: round-off);
    a charged fragment beside a neutral one at 100 Å within 20 meV of E(A, q) + E(B, 0); no
    charge on the neutral fragment 10 Å or more away."""
    model, _ = _load(name)
    assert model.model_config["physics"] == 3
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


@pytest.mark.parametrize("name", RETRAINED)
def test_bond_stretch_within_twice_xtb(name):
    """The probe's bond stretched through dissociation: max |dE/dr| ≤ 2 × xTB's on the path."""
    model, cached = _load(name)
    atoms, i, j, r_range = probes(model.elements)["stretch"]
    s = bond_stretch(model, atoms, i, j, r_range, probes(model.elements)["stretch_charge"])
    assert s["max_abs_dEdr"] == pytest.approx(cached["bond_stretch"]["max_abs_dEdr"], rel=1e-6)
    assert s["max_abs_dEdr"] <= 2.0 * cached["bond_stretch"]["xtb_max_abs_dEdr"]


@pytest.mark.parametrize("name", RETRAINED)
def test_no_energy_step_where_the_ion_bonds(name):
    """Cl⁻ moved onto CH3Cl through the C–Cl bond window (2.40 Å), 0.005 Å steps: no energy
    step beyond the quadrature error (the physics-2 files stepped by 23 and 4 meV)."""
    from mlip_attn.analysis.physics_check import entry_step
    model, cached = _load(name)
    p = probes(model.elements)
    site, direction = p["tail_axis"]
    step = entry_step(model, p["a"], p["b"], p["charge"], site, direction, d_range=(2.3, 2.5))
    assert step["max_step"] < 1e-4 and cached["entry_step"]["max_step"] < 1e-4
