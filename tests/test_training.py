"""`fit` and the CLI: outputs, resume, interruption, DDP, config errors, bad data."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import ase.io
import pytest
import torch

from mlip_attn import load_model
from mlip_attn.cli import main
from mlip_attn.training import ConfigError, FitError, fit, load_config

from conftest import emt_frames

FAST = ["--model.width", "8", "--model.layers", "1", "--model.cutoff", "3.5",
        "--training.batch_size", "4", "--training.progress", "false"]


def config(train, out, *extra):
    return load_config(None, ["--data.train", str(train), "--output", str(out), *FAST, *extra])


def test_fit_writes_run_directory_and_learns(emt_xyz, tmp_path):
    out = tmp_path / "run"
    result = fit(config(emt_xyz, out, "--training.epochs", "6", "--training.lr", "5e-3"))
    for name in ("model.pt", "checkpoint.pt", "config.yaml", "metrics.csv"):
        assert (out / name).exists(), name
    assert any((out / "tensorboard").iterdir())
    rows = (out / "metrics.csv").read_text().splitlines()
    assert len(rows) == 7 and rows[0].startswith("epoch,lr,train_loss")
    model = load_model(out / "model.pt")
    assert model.metadata["test"]["forces_mae"] == pytest.approx(result.test["forces_mae"])
    assert model.elements == [1, 6, 8]
    assert model.metadata["training_charge"] == {"values": [0.0]}   # what AttnCalculator checks
    assert model.metadata["training_spin"] == {"values": [0.0]}
    first = float(rows[1].split(",")[3])
    best = min(float(r.split(",")[3]) for r in rows[1:])
    assert best < first  # validation loss went down


def test_resume_reaches_the_same_result(emt_xyz, tmp_path):
    straight = fit(config(emt_xyz, tmp_path / "a", "--training.epochs", "4"))
    fit(config(emt_xyz, tmp_path / "b", "--training.epochs", "2"))
    resumed = fit(config(emt_xyz, tmp_path / "b", "--training.epochs", "4"), resume=True)
    a = load_model(tmp_path / "a" / "model.pt").state_dict()
    b = load_model(tmp_path / "b" / "model.pt").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)   # bit-identical
    assert resumed.valid["forces_mae"] == pytest.approx(straight.valid["forces_mae"], rel=1e-4)
    assert len((tmp_path / "b" / "metrics.csv").read_text().splitlines()) == 5


def test_existing_run_is_never_overwritten(emt_xyz, tmp_path):
    out = tmp_path / "run"
    fit(config(emt_xyz, out, "--training.epochs", "1"))
    before = (out / "model.pt").read_bytes()
    with pytest.raises(FitError, match="--resume"):
        fit(config(emt_xyz, out, "--training.epochs", "1"))
    assert (out / "model.pt").read_bytes() == before
    with pytest.raises(FitError, match="no checkpoint"):
        fit(config(emt_xyz, tmp_path / "fresh", "--training.epochs", "1"), resume=True)
    with pytest.raises(FitError, match="differs"):
        fit(config(emt_xyz, out, "--training.epochs", "2", "--model.width", "12"), resume=True)


def test_corrupt_checkpoint_is_reported_and_kept(emt_xyz, tmp_path):
    out = tmp_path / "run"
    fit(config(emt_xyz, out, "--training.epochs", "1"))
    ckpt = out / "checkpoint.pt"
    damaged = ckpt.read_bytes()[:1000]
    ckpt.write_bytes(damaged)
    with pytest.raises(FitError, match="truncated or corrupt"):
        fit(config(emt_xyz, out, "--training.epochs", "2"), resume=True)
    assert ckpt.read_bytes() == damaged


def _cli(*args, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "mlip_attn.cli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def test_killed_run_resumes_from_last_epoch(emt_xyz, tmp_path):
    out = tmp_path / "run"
    proc = _cli("fit", "--data.train", str(emt_xyz), "--output", str(out), *FAST,
                "--training.epochs", "400")
    ckpt = out / "checkpoint.pt"
    deadline = time.time() + 120
    while not (out / "metrics.csv").exists() or len((out / "metrics.csv").read_text().splitlines()) < 3:
        assert time.time() < deadline and proc.poll() is None, proc.stdout.read() if proc.poll() else "slow"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # no chance to clean up
    proc.wait()
    logged = len((out / "metrics.csv").read_text().splitlines()) - 1
    saved = torch.load(ckpt, weights_only=True)["epoch"] + 1
    assert saved >= max(1, logged - 1)  # at most the epoch in progress is lost
    code = main(["fit", "--data.train", str(emt_xyz), "--output", str(out), *FAST,
                 "--training.epochs", str(saved + 1), "--resume"])
    assert code == 0
    assert torch.load(ckpt, weights_only=True)["epoch"] + 1 == saved + 1
    epochs = [int(r.split(",")[0]) for r in (out / "metrics.csv").read_text().splitlines()[1:]]
    assert epochs == list(range(1, saved + 2))  # rows after the checkpoint were dropped
    assert 1 <= load_model(out / "model.pt").metadata["best_epoch"] <= saved + 1


def test_two_process_ddp_run_trains(emt_xyz, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--master_port", "29533", "-m", "mlip_attn.cli", "fit", "--data.train", str(emt_xyz),
         "--output", str(out), *FAST, "--training.epochs", "2"],
        env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "2 processes" in run.stdout
    model = load_model(out / "model.pt")
    assert model.metadata["test"]["forces_mae"] > 0


def test_cli_eval_prints_errors(emt_xyz, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["fit", "--data.train", str(emt_xyz), "--output", str(out), *FAST,
                 "--training.epochs", "1"]) == 0
    assert f"model written to {out / 'model.pt'} (best epoch 1 of 1)" in capsys.readouterr().out
    assert main(["eval", str(out / "model.pt"), str(emt_xyz)]) == 0
    text = capsys.readouterr().out
    assert "40 structures" in text and "F MAE" in text


@pytest.mark.parametrize("override, key", [
    (["--training.scheduler", "linear"], "training.scheduler"),
    (["--training.lr", "-1"], "training.lr"),
    (["--training.epochs", "2.5"], "training.epochs"),
    (["--training.dtype", "float16"], "training.dtype"),
    (["--training.ema_decay", "1.5"], "training.ema_decay"),
    (["--training.bogus", "1"], "training.bogus"),
    (["--data.valid", "1.5"], "data.valid"),
    (["--data.e0s", "magic"], "data.e0s"),
    (["--model.backbone", "mace"], "model.backbone"),
    (["--model.width", "-3"], "model.width"),
    (["--optimizer.lr", "1"], "optimizer"),
    (["--model.attention", "{type: efa, r_max: 9.0, heads: 4}"], "model.attention.heads: unknown key"),
    (["--model.attention", "{type: efa}"], "model.attention.r_max: required"),
])
def test_config_errors_name_the_key(emt_xyz, tmp_path, override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        config(emt_xyz, tmp_path / "x", *override)
    assert not (tmp_path / "x").exists()


def test_config_file_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="data.train"):
        load_config(None)


def test_missing_labels_and_unknown_elements_are_named(tmp_path):
    frames = emt_frames(10)
    del frames[3].arrays["REF_forces"]
    path = tmp_path / "partial.xyz"
    ase.io.write(path, frames)
    with pytest.raises(ValueError, match="missing label 'REF_forces'"):
        fit(config(path, tmp_path / "r1", "--training.epochs", "1", "--data.valid", "0.2",
                   "--data.test", "0.0"))
    with pytest.raises(ValueError, match=r"elements \['O'\] are unknown to the model"):
        fit(config(path, tmp_path / "r2", "--model.elements", "[H, C]", "--training.forces_weight", "0"))
    assert main(["fit", "--data.train", str(path), "--output", str(tmp_path / "r3"), *FAST]) == 2


@pytest.mark.parametrize("command", ["fit", "data", "eval"])
def test_help_describes_every_option_and_its_default(command, capsys, monkeypatch):
    import argparse
    from mlip_attn.cli import build_parser
    monkeypatch.setenv("COLUMNS", "400")   # one line per option: defaults are not wrapped
    sub = next(a for a in build_parser()._actions
               if isinstance(a, argparse._SubParsersAction)).choices[command]
    with pytest.raises(SystemExit, match="0"):
        main([command, "--help"])
    text = capsys.readouterr().out
    for action in sub._actions:
        if action.dest == "help":
            continue
        assert action.help and action.help in text, (command, action.dest)
        if action.default is not None and action.default is not False:
            assert f"(default: {action.default})" in text, (command, action.dest)
    if command == "fit":
        assert "docs/guide/config.md" in " ".join(text.split())
