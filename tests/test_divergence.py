"""A diverging run (`training.nonfinite`): `stop` names the epoch and batch and keeps the last
good checkpoint and model; `skip` skips and counts the bad batches; never a TypeError."""
from __future__ import annotations

import csv

import pytest
import torch

import mlip_attn.training.trainer as trainer
from mlip_attn import load_model
from mlip_attn.training import FitError, fit

from test_training import config

BATCHES = 8   # emt_xyz: 40 structures, 32 for training in batches of 4


def poison(monkeypatch, nan_loss=(), nan_gradient=()):
    """Make the training loss NaN (or its gradient, with a finite loss) at the given training
    batches, counted from 1 across epochs (batch b of epoch e is (e - 1) * BATCHES + b)."""
    real, calls = trainer.loss_terms, []

    def loss_terms(pred, batch, weights):
        loss = real(pred, batch, weights)
        calls.append(1)
        if len(calls) in nan_loss:
            return loss * float("nan")
        if len(calls) in nan_gradient:   # sqrt'(0) = inf: the value stays, gradients are NaN
            return loss + torch.sqrt(0.0 * pred["energy"].sum())
        return loss
    monkeypatch.setattr(trainer, "loss_terms", loss_terms)


def metrics(out):
    with open(out / "metrics.csv") as f:
        return list(csv.DictReader(f))


def test_stop_names_epoch_and_batch_and_keeps_the_last_good_epoch(emt_xyz, tmp_path, monkeypatch):
    out = tmp_path / "run"
    poison(monkeypatch, nan_loss={2 * BATCHES + 4})
    with pytest.raises(FitError, match=r"non-finite loss \(nan\) at epoch 3, batch 4 of 8.*"
                                       r"checkpoint\.pt holds epoch 2.*model\.pt the best model "
                                       r"\(epoch [12]\).*--resume.*nonfinite: skip"):
        fit(config(emt_xyz, out, "--training.epochs", "5"))
    assert torch.load(out / "checkpoint.pt", weights_only=True)["epoch"] + 1 == 2
    model = load_model(out / "model.pt")
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert [r["epoch"] for r in metrics(out)] == ["1", "2"]
    monkeypatch.undo()   # e.g. after lowering the learning rate: the run continues
    result = fit(config(emt_xyz, out, "--training.epochs", "3"), resume=True)
    assert result.epochs_run == 3


def test_stop_on_a_nan_gradient_too(emt_xyz, tmp_path, monkeypatch):
    poison(monkeypatch, nan_gradient={3})
    with pytest.raises(FitError, match=r"non-finite gradient \(nan\) at epoch 1, batch 3 of 8"
                                       r".*no model or checkpoint was written"):
        fit(config(emt_xyz, tmp_path / "run", "--training.epochs", "2"))
    assert not (tmp_path / "run" / "model.pt").exists()


def test_a_huge_learning_rate_stops_with_a_clear_error(emt_xyz, tmp_path):
    """The issue's reproduction: training.lr 1e6 used to end in a TypeError and no model."""
    out = tmp_path / "run"
    with pytest.raises(FitError, match=r"training diverged: non-finite .* at epoch 1, batch \d+ "
                                       r"of 8.*no model or checkpoint was written"):
        fit(config(emt_xyz, out, "--training.lr", "1e6", "--training.epochs", "3"))
    assert not (out / "model.pt").exists() and not (out / "checkpoint.pt").exists()


def test_skip_counts_skipped_batches(emt_xyz, tmp_path, monkeypatch):
    out = tmp_path / "run"
    poison(monkeypatch, nan_loss={2, 5, BATCHES + 3}, nan_gradient={BATCHES + 6})
    result = fit(config(emt_xyz, out, "--training.epochs", "3", "--training.nonfinite", "skip"))
    assert [int(r["skipped_batches"]) for r in metrics(out)] == [2, 2, 0]
    assert all(float(r["train_loss"]) > 0 for r in metrics(out))
    assert result.epochs_run == 3 and load_model(out / "model.pt").metadata["best_epoch"] >= 1


def test_skip_stops_when_a_whole_epoch_is_skipped(emt_xyz, tmp_path, monkeypatch):
    out = tmp_path / "run"
    poison(monkeypatch, nan_loss=set(range(BATCHES + 1, 2 * BATCHES + 1)))
    with pytest.raises(FitError, match=r"all 8 batches of epoch 2 had a non-finite loss or "
                                       r"gradient.*checkpoint\.pt holds epoch 1"):
        fit(config(emt_xyz, out, "--training.epochs", "3", "--training.nonfinite", "skip"))
    assert torch.load(out / "checkpoint.pt", weights_only=True)["epoch"] + 1 == 1


def test_nonfinite_is_validated(emt_xyz, tmp_path):
    from mlip_attn.training import ConfigError
    with pytest.raises(ConfigError, match=r"training\.nonfinite: must be one of 'stop', 'skip', got 'ignore'"):
        config(emt_xyz, tmp_path / "x", "--training.nonfinite", "ignore")
