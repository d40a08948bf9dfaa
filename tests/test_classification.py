"""Graph-level classification (model.classes): cross-entropy training, accuracy and ROC-AUC
against reference computations, data checks, model files and TorchScript."""
from __future__ import annotations

import itertools

import ase.io
import numpy as np
import pytest
import torch

from conftest import emt_frames, predict, random_molecule, to_batch
from mlip_attn import build_model, load_model, save_model
from mlip_attn.training import fit, load_config
from mlip_attn.training.loss import macro_roc_auc, roc_auc
from mlip_attn.lammps.export import script


def pairwise_auc(scores, positive):
    """Reference: the fraction of (positive, negative) pairs ranked right, ties half."""
    pos = [s for s, p in zip(scores, positive) if p]
    neg = [s for s, p in zip(scores, positive) if not p]
    wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def test_roc_auc_matches_pair_counting_with_ties():
    rng = np.random.default_rng(0)
    for trial in range(5):
        scores = rng.integers(0, 6, 40).astype(float)  # many ties
        positive = rng.random(40) < 0.4
        got = roc_auc(torch.tensor(scores), torch.tensor(positive))
        assert got == pytest.approx(pairwise_auc(scores, positive), abs=1e-12)
    assert roc_auc(torch.tensor([0.1, 0.9]), torch.tensor([False, True])) == 1.0
    assert np.isnan(roc_auc(torch.tensor([0.1, 0.9]), torch.tensor([True, True])))


def test_multiclass_auc_is_the_one_vs_rest_macro_mean():
    rng = np.random.default_rng(1)
    probabilities = torch.softmax(torch.tensor(rng.normal(size=(60, 3))), dim=1)
    labels = torch.tensor(rng.integers(0, 3, 60))
    expected = np.mean([pairwise_auc(probabilities[:, c].numpy(), (labels == c).numpy())
                        for c in range(3)])
    assert macro_roc_auc(probabilities, labels) == pytest.approx(expected, abs=1e-12)
    binary = torch.softmax(torch.tensor(rng.normal(size=(30, 2))), dim=1)
    y = torch.tensor(rng.integers(0, 2, 30))
    assert macro_roc_auc(binary, y) == pytest.approx(pairwise_auc(binary[:, 1].numpy(),
                                                                  (y == 1).numpy()))


def labelled_frames(n):
    frames = emt_frames(n)
    for a in frames:  # separable from composition: many oxygens; hydrogen count in 3 bins
        a.info["oxygen_rich"] = int(np.sum(a.numbers == 8) >= 2)
        a.info["hydrogens"] = int(min(np.sum(a.numbers == 1), 2))
    return frames


def config(path, out, *extra):
    return load_config(None, ["--data.train", str(path), "--output", str(out),
                              "--model.classes", "{oxygen_rich: 2, hydrogens: 3}",
                              "--model.width", "16", "--model.layers", "1",
                              "--training.energy_weight", "0", "--training.forces_weight", "0",
                              "--data.e0s", "zero", "--training.progress", "false", *extra])


def test_a_separable_toy_problem_is_learned(tmp_path):
    path = tmp_path / "c.xyz"
    ase.io.write(path, labelled_frames(160))
    result = fit(config(path, tmp_path / "run", "--training.epochs", "40", "--training.lr",
                        "1e-2", "--data.test", "0.25", "--data.valid", "0.15",
                        "--training.batch_size", "16"))
    assert result.test["class_oxygen_rich_accuracy"] >= 0.9, result.test
    assert result.test["class_hydrogens_accuracy"] >= 0.85, result.test
    assert result.test["class_oxygen_rich_roc_auc"] >= 0.95, result.test
    assert "class_hydrogens_cross_entropy" in result.valid
    model = load_model(tmp_path / "run" / "model.pt", dtype=torch.float64)
    assert model.class_names == ["oxygen_rich", "hydrogens"] and model.class_counts == [2, 3]
    assert model.class_slices() == {"oxygen_rich": (0, 2), "hydrogens": (2, 5)}


def test_eval_reports_accuracy(tmp_path, capsys):
    from mlip_attn.cli import main
    path = tmp_path / "c.xyz"
    ase.io.write(path, labelled_frames(20))
    fit(config(path, tmp_path / "run", "--training.epochs", "1"))
    assert main(["eval", str(tmp_path / "run" / "model.pt"), str(path)]) == 0
    assert "oxygen_rich accuracy" in capsys.readouterr().out


def test_bad_class_labels_and_configs_are_named(tmp_path):
    frames = labelled_frames(10)
    frames[3].info["hydrogens"] = 5
    path = tmp_path / "c.xyz"
    ase.io.write(path, frames)
    with pytest.raises(ValueError, match=r"#3.*class label hydrogens = 5.0 is not an integer in 0 … 2"):
        fit(config(path, tmp_path / "run", "--training.epochs", "1"))
    del frames[3].info["hydrogens"]
    ase.io.write(path, frames)
    with pytest.raises(ValueError, match="missing class label 'hydrogens'"):
        fit(config(path, tmp_path / "run2", "--training.epochs", "1"))
    with pytest.raises(ValueError, match="model.classes.polar: the number of classes"):
        build_model({"backbone": "painn", "elements": [1], "classes": {"polar": 1}})
    with pytest.raises(ValueError, match="either a regression target or a class"):
        build_model({"backbone": "painn", "elements": [1], "classes": {"gap": 2},
                     "targets": ["gap"]})


def test_class_head_round_trip_and_script(tmp_path):
    torch.manual_seed(0)
    model = build_model({"backbone": "egnn", "elements": [1, 6, 8], "width": 8, "layers": 1,
                         "classes": {"polar": 2}, "targets": ["gap"]}).double().eval()
    save_model(model, tmp_path / "m.pt")
    loaded = load_model(tmp_path / "m.pt", dtype=torch.float64)
    atoms = [random_molecule(6, seed=1), random_molecule(5, seed=2)]
    ref = predict(model, atoms)["class_logits"]
    assert ref.shape == (2, 2) and torch.equal(predict(loaded, atoms)["class_logits"], ref)
    b = to_batch(atoms, model.cutoff)
    out = script(loaded)(b.positions, b.numbers, b.batch, b.edge_index, b.shifts,
                                   b.cell, b.charge, b.spin, True, False)
    assert torch.allclose(out["class_logits"], ref)
