"""The electrostatics block's settings are stored in model files as numbers: a later change of a
default (charge width, PME mesh, spline order, Ewald/PME switch) never changes what an
existing file computes; files written before the settings were stored keep their old rules."""
import math
from pathlib import Path

import pytest
import torch
from ase.build import bulk

from mlip_attn import build_model
from mlip_attn.attention import electrostatics
from mlip_attn.attention.electrostatics import default_smearing, legacy_smearing
from mlip_attn.models import load_model, save_model
from mlip_attn.nn.coulomb import legacy_mesh_factor

from conftest import predict

CONFIG = {"backbone": "painn", "elements": [11, 17], "width": 8, "layers": 2, "cutoff": 5.0,
          "attention": {"type": "electrostatics", "accuracy": 1e-5}}
SHIPPED = Path(__file__).resolve().parent.parent / "potentials" / \
    "rigid-ion-salt-electrostatics.pt"


def salt(seed=0):
    atoms = bulk("NaCl", "rocksalt", a=5.64, cubic=True).repeat((2, 2, 2))
    atoms.rattle(0.1, seed=seed)
    return atoms


def fresh_model(config=CONFIG):
    torch.manual_seed(0)
    model = build_model(config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def change_the_defaults(monkeypatch):
    """What a later version might do: every default rule moves."""
    monkeypatch.setattr(electrostatics, "SMEARING_TAIL", 1e-2)
    monkeypatch.setattr(electrostatics, "SPLINE_ORDER", 4)
    monkeypatch.setattr(electrostatics, "EWALD_LIMIT", 1.0)
    monkeypatch.setattr(electrostatics, "legacy_mesh_factor", lambda accuracy: 0.2)


def test_a_new_model_stores_every_setting_as_a_number():
    att = build_model(CONFIG).model_config["attention"]
    assert att["smearing"] == pytest.approx(default_smearing(5.0))
    assert att["smearing"] == pytest.approx(5.0 / (2 * 2.7510639), rel=1e-6)  # erfc⁻¹(1e-4)
    assert att["mesh_factor"] == legacy_mesh_factor(1e-5) == 0.35
    assert att["spline_order"] == 6 and att["ewald_limit"] == 2.5e5
    coulomb = build_model(CONFIG).energy_term.coulomb
    assert coulomb.smearing == att["smearing"] and coulomb.order == 6


def test_a_saved_model_computes_the_same_after_the_defaults_change(tmp_path, monkeypatch):
    model = fresh_model().double().eval()
    save_model(model, tmp_path / "m.pt")
    before = predict(load_model(tmp_path / "m.pt", dtype="float64"), [salt()])
    change_the_defaults(monkeypatch)
    after = predict(load_model(tmp_path / "m.pt", dtype="float64"), [salt()])
    assert torch.equal(before["energy"], after["energy"])
    assert torch.equal(before["forces"], after["forces"])
    # the check can fail: the same config built now is another model
    rebuilt = build_model(CONFIG).energy_term.coulomb
    assert rebuilt.smearing != load_model(tmp_path / "m.pt").energy_term.coulomb.smearing
    assert rebuilt.order == 4


def test_files_written_before_the_settings_were_stored_keep_their_rules(tmp_path, monkeypatch):
    """``smearing: null`` and no mesh or spline keys: r_c / (2√(−ln ε)), the table, order 6."""
    model = fresh_model().double().eval()
    save_model(model, tmp_path / "m.pt")
    content = torch.load(tmp_path / "m.pt", weights_only=True)
    att = content["model_config"]["attention"]
    att.update(smearing=None, ewald_limit=None)
    del att["mesh_factor"], att["spline_order"]
    torch.save(content, tmp_path / "old.pt")
    change_the_defaults(monkeypatch)
    coulomb = load_model(tmp_path / "old.pt").energy_term.coulomb
    assert coulomb.smearing == legacy_smearing(5.0, 1e-5)
    assert coulomb.smearing == pytest.approx(5.0 / (2 * math.sqrt(-math.log(1e-5))))
    assert coulomb.order == 6 and coulomb.mesh_factor == 0.35
    assert coulomb.ewald_limit == 2.5e5


@pytest.mark.skipif(not SHIPPED.exists(), reason="no shipped electrostatics potential")
def test_the_shipped_potential_computes_with_the_settings_it_was_trained_with():
    model = load_model(SHIPPED)
    coulomb = model.energy_term.coulomb
    stored = model.model_config["attention"]
    if stored["smearing"] is None:   # written before the settings were stored
        assert coulomb.smearing == legacy_smearing(model.cutoff, stored["accuracy"])
    else:
        assert coulomb.smearing == stored["smearing"]
        assert coulomb.mesh_factor == stored["mesh_factor"]
        assert coulomb.order == stored["spline_order"]


def test_bad_settings_are_clear_errors():
    for key, value, text in (("smearing", -1.0, "smearing"), ("spline_order", 5, "spline_order"),
                             ("mesh_factor", -0.3, "mesh_factor"), ("ewald_limit", 0.0,
                                                                    "ewald_limit")):
        with pytest.raises(ValueError, match=text):
            build_model({**CONFIG, "attention": {**CONFIG["attention"], key: value}})


def test_without_feedback_the_block_beside_each_layer_is_not_called():
    """Its output is zero by construction; the backbone skips it (same numbers, less work)."""
    model = fresh_model().double().eval()
    layers = [m for m in model.modules() if hasattr(m, "has_global")]
    assert layers and not any(layer.has_global for layer in layers)
    out = predict(model, [salt(1)])
    for layer in layers:
        layer.has_global = True
    called = predict(model, [salt(1)])
    torch.testing.assert_close(out["energy"], called["energy"], rtol=0, atol=0)
    torch.testing.assert_close(out["forces"], called["forces"], rtol=0, atol=0)
    feedback = build_model({**CONFIG, "attention": {**CONFIG["attention"], "feedback": True}})
    assert all(m.has_global for m in feedback.modules() if hasattr(m, "has_global"))
