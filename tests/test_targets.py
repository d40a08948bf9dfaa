"""Per-structure scalar targets (e.g. HOMO/LUMO) beside energy and forces."""
from __future__ import annotations

import ase.io
import numpy as np
import pytest
import torch

from mlip_attn import build_model, load_model, save_model
from mlip_attn.cli import main
from mlip_attn.training import fit, load_config

from conftest import emt_frames, predict, random_molecule
from mlip_attn.lammps.export import script


def frames_with_targets(n: int):
    frames = emt_frames(n)
    for a in frames:  # a composition-dependent "orbital energy" in eV, and a second target
        a.info["homo"] = -6.0 + 3.0 * np.mean(a.numbers == 8)
        a.info["gap"] = 4.0 - 2.0 * np.mean(a.numbers == 1)
    return frames


def config(path, out, *extra):
    return load_config(None, ["--data.train", str(path), "--output", str(out),
                              "--model.targets", "[homo, gap]", "--model.width", "16",
                              "--model.layers", "1", "--training.progress", "false", *extra])


def test_targets_are_learned_and_reported_in_their_units(tmp_path):
    path = tmp_path / "t.xyz"
    frames = frames_with_targets(60)
    ase.io.write(path, frames)
    result = fit(config(path, tmp_path / "run", "--training.epochs", "25", "--training.lr",
                        "5e-3", "--training.forces_weight", "1.0"))
    spread = np.std([a.info["homo"] for a in frames])
    assert result.test["target_homo_mae"] < 0.3 * spread, (result.test, spread)
    assert "target_gap_mae" in result.test
    model = load_model(tmp_path / "run" / "model.pt", dtype=torch.float64)
    assert model.target_names == ["homo", "gap"]
    out = predict(model, [frames[0]])
    assert out["targets"].shape == (1, 2)
    assert abs(float(out["targets"][0, 0]) - frames[0].info["homo"]) < 1.0


def test_eval_prints_target_errors(tmp_path, capsys):
    path = tmp_path / "t.xyz"
    ase.io.write(path, frames_with_targets(20))
    fit(config(path, tmp_path / "run", "--training.epochs", "1"))
    assert main(["eval", str(tmp_path / "run" / "model.pt"), str(path)]) == 0
    assert "homo MAE" in capsys.readouterr().out


def test_missing_target_is_named(tmp_path):
    frames = frames_with_targets(10)
    del frames[4].info["gap"]
    path = tmp_path / "t.xyz"
    ase.io.write(path, frames)
    with pytest.raises(ValueError, match="missing target 'gap'"):
        fit(config(path, tmp_path / "run", "--training.epochs", "1"))


def test_target_head_round_trip_and_script(tmp_path):
    torch.manual_seed(0)
    model = build_model({"backbone": "painn", "elements": [1, 6, 8], "width": 8, "layers": 1,
                         "targets": ["homo"]}).double().eval()
    save_model(model, tmp_path / "m.pt")
    loaded = load_model(tmp_path / "m.pt", dtype=torch.float64)
    atoms = random_molecule(6, seed=1)
    assert torch.equal(predict(model, [atoms])["targets"], predict(loaded, [atoms])["targets"])
    scripted = script(model)
    from conftest import to_batch
    b = to_batch([atoms], model.cutoff)
    out = scripted(b.positions, b.numbers, b.batch, b.edge_index, b.shifts, b.cell, b.charge,
                   b.spin, True, False)
    assert torch.allclose(out["targets"], predict(model, [atoms])["targets"])
    with pytest.raises(ValueError, match="model.targets"):
        build_model({"backbone": "painn", "elements": [1], "targets": "homo"})
