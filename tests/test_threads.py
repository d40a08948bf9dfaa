"""The thread policy (`mlip_attn.threads`): the cap and the overrides, each in a fresh
interpreter (torch's thread count is process-wide), and the per-call choice."""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import subprocess
import sys
import time

import pytest
import torch

from mlip_attn.nn.policy import current

from mlip_attn import threads

from conftest import emt_frames


def _child(code: str, **env) -> dict:
    """Run ``code`` (which prints one JSON line) in a fresh interpreter with ``env`` on top of
    this environment less the policy's own variables."""
    base = {k: v for k, v in os.environ.items()
            if k not in ("OMP_WAIT_POLICY", "MLIP_ATTN_THREADS", "MLIP_ATTN_THREAD_POLICY",
                         "OMP_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", code], env={**base, **env}, check=True,
                         capture_output=True, text=True, timeout=300)
    return json.loads(out.stdout.strip().splitlines()[-1])


REPORT = ("import json, os, torch; from mlip_attn import threads; n = threads.configure(); "
          "print(json.dumps({'wait': os.environ.get('OMP_WAIT_POLICY'), 'adaptive': "
          "threads.adaptive(), 'threads': n, 'cpus': threads.available_cpus(), "
          "'torch_default': torch.get_num_threads()}))")


def test_default_is_a_per_call_choice_under_the_cap_with_openmps_own_waiting():
    r = _child("import mlip_attn\n" + REPORT)
    assert r["adaptive"] is True and r["wait"] is None   # no wait policy is forced
    assert 1 <= r["threads"] <= r["cpus"]


def test_a_users_thread_count_is_respected_and_fixed():
    r = _child("import mlip_attn\n" + REPORT, OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS="1")
    assert r["wait"] == "PASSIVE" and r["adaptive"] is False and r["threads"] == 1
    r = _child("import mlip_attn\n" + REPORT, MLIP_ATTN_THREADS="1")
    assert r["adaptive"] is False and r["threads"] == 1


def test_policy_off_leaves_the_defaults_alone():
    r = _child("import mlip_attn\n" + REPORT, MLIP_ATTN_THREAD_POLICY="off")
    assert r["adaptive"] is False and r["threads"] == r["torch_default"]


def test_calculator_threads_option_fixes_the_process_count():
    code = ("import json, torch, mlip_attn; from mlip_attn import AttnCalculator, build_model\n"
            "m = build_model({'backbone': 'egnn', 'elements': [1, 8], 'width': 8, 'layers': 1})\n"
            "AttnCalculator(m, threads=1)\n"
            "import os; print(json.dumps({'threads': torch.get_num_threads(), "
            "'env': os.environ.get('MLIP_ATTN_THREADS')}))")
    assert _child(code) == {"threads": 1, "env": "1"}


def test_the_calculator_runs_a_small_molecule_on_one_thread():
    code = ("import json, torch; from ase.build import molecule\n"
            "from mlip_attn import AttnCalculator, build_model, threads\n"
            "m = build_model({'backbone': 'painn', 'elements': [1, 6], 'width': 8, "
            "'layers': 1})\n"
            "torch.set_num_threads(2); a = molecule('C6H6'); a.calc = AttnCalculator(m)\n"
            "cap = torch.get_num_threads(); a.get_potential_energy()\n"
            "print(json.dumps({'cap': cap, 'call': torch.get_num_threads(), "
            "'adaptive': threads.adaptive()}))")
    r = _child(code)
    assert r["call"] == 1 and r["adaptive"] is True and 1 <= r["cap"] <= 2


@pytest.fixture
def cap_of_two(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setitem(threads._state, "cap", 2)
    yield
    torch.set_num_threads(before)


def test_per_call_count_follows_size_and_the_cpus_busy_elsewhere(monkeypatch, cap_of_two):
    busy = {"n": 0}
    monkeypatch.setattr(threads, "busy_elsewhere", lambda: busy["n"])
    small = current().one_thread_below
    assert threads.threads_for_call(small - 1) == 1 == torch.get_num_threads()
    assert threads.threads_for_call(small) == 2 == torch.get_num_threads()
    busy["n"] = 1
    assert threads.threads_for_call(10 ** 6) == 1
    busy["n"] = 5
    assert threads.threads_for_call(10 ** 6) == 1
    busy["n"] = None          # the kernel's counts cannot be used here: the cap
    assert threads.threads_for_call(10 ** 6) == 2
    assert "up to 2 threads, chosen per call" in threads.describe()


def test_a_fixed_count_is_left_alone(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setitem(threads._state, "cap", None)
    assert threads.threads_for_call(1) == before == torch.get_num_threads()


def test_kernel_counts_are_read_and_refused_when_they_cover_other_cpus(tmp_path, monkeypatch):
    loadavg = tmp_path / "loadavg"
    loadavg.write_text("0.92 0.94 0.45 3/80 10881\n")
    assert threads._running_tasks_and_cpus(str(loadavg)) == (3, os.cpu_count())
    assert threads._running_tasks_and_cpus(str(tmp_path / "missing")) is None
    loadavg.write_text("garbage\n")
    assert threads._running_tasks_and_cpus(str(loadavg)) is None
    task = tmp_path / "task"
    for tid, state in (("1", "R"), ("2", "S"), ("3", "R")):
        (task / tid).mkdir(parents=True)
        (task / tid / "stat").write_text(f"{tid} (a (weird) name) {state} 1 2 3\n")
    assert threads._own_running_threads(str(task)) == 2
    monkeypatch.setattr(threads, "_running_tasks_and_cpus", lambda: (40, 64))
    monkeypatch.setattr(threads, "available_cpus", lambda: 2)
    assert threads.busy_elsewhere() is None       # a container on a 64-CPU host


def _spin():  # pragma: no cover - runs in a child process until terminated
    while True:
        pass


def test_a_busy_process_is_seen():
    if threads.busy_elsewhere() is None:
        pytest.skip("the kernel's counts do not describe this process's CPUs")
    proc = mp.get_context("spawn").Process(target=_spin, daemon=True)
    proc.start()
    try:
        time.sleep(1.0)
        assert max(threads.busy_elsewhere() for _ in range(20)) >= 1
    finally:
        proc.terminate()
        proc.join()


def test_fit_chooses_threads_for_every_step(tmp_path, monkeypatch):
    import ase.io
    from mlip_attn.training import fit, load_config, trainer
    seen = []
    monkeypatch.setattr(trainer, "threads_for_call", seen.append)
    ase.io.write(tmp_path / "train.xyz", emt_frames(12), format="extxyz")
    fit(load_config(None, ["--data.train", str(tmp_path / "train.xyz"), "--output",
                           str(tmp_path / "run"), "--model.width", "8", "--model.layers", "1",
                           "--training.batch_size", "4", "--training.epochs", "2",
                           "--training.progress", "false"]), log=lambda s: None)
    assert len(seen) >= 4 and all(isinstance(p, int) and p > 0 for p in seen)


def test_bad_thread_counts_are_refused():
    with pytest.raises(ValueError, match="threads: a thread count must be a positive integer"):
        threads.configure(0)
    with pytest.raises(ValueError, match="MLIP_ATTN_THREADS: a thread count must be"):
        threads._positive("two", "MLIP_ATTN_THREADS")


def test_cpu_counts_are_bounded():
    assert 1 <= threads.available_cpus() <= (os.cpu_count() or 1)
    assert "waiting" in threads.describe()


def test_cli_threads_option(monkeypatch, capsys):
    from mlip_attn.cli import main
    before = torch.get_num_threads()
    monkeypatch.setenv("MLIP_ATTN_THREADS", str(before))   # restored after the test
    try:
        assert main(["bench", "--sizes", "20", "--models", "egnn", "--width", "8", "--layers",
                     "1", "--repeats", "1", "--threads", "1"]) == 0
        assert torch.get_num_threads() == 1 and os.environ["MLIP_ATTN_THREADS"] == "1"
        assert "1 thread," in capsys.readouterr().out
    finally:
        torch.set_num_threads(before)
