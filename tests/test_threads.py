"""The process-wide thread policy (`mlip_attn.threads`), each case in a fresh interpreter
(OpenMP reads its wait policy once, when torch is imported)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from mlip_attn import threads


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
          "print(json.dumps({'wait': os.environ.get('OMP_WAIT_POLICY'), 'passive': "
          "threads.passive_wait(), 'threads': n, 'cpus': threads.available_cpus(), "
          "'torch_default': torch.get_num_threads()}))")


def test_importing_mlip_attn_first_makes_openmp_wait_passively():
    r = _child("import mlip_attn\n" + REPORT)
    assert r["wait"] == "PASSIVE" and r["passive"] is True
    assert 1 <= r["threads"] <= r["cpus"]


def test_torch_imported_first_is_detected_and_the_count_leaves_busy_cpus_out():
    r = _child("import torch, mlip_attn\n" + REPORT)
    assert r["passive"] is False      # OpenMP had started: threads spin
    assert 1 <= r["threads"] <= r["cpus"]


def test_a_users_wait_policy_and_thread_count_are_respected():
    r = _child("import mlip_attn\n" + REPORT, OMP_WAIT_POLICY="ACTIVE", OMP_NUM_THREADS="1")
    assert r["wait"] == "ACTIVE" and r["passive"] is False and r["threads"] == 1


def test_policy_off_leaves_the_defaults_alone():
    r = _child("import mlip_attn\n" + REPORT, MLIP_ATTN_THREAD_POLICY="off")
    assert r["wait"] is None and r["threads"] == r["torch_default"]


def test_environment_thread_count():
    r = _child("import mlip_attn\n" + REPORT, MLIP_ATTN_THREADS="1")
    assert r["threads"] == 1


def test_calculator_threads_option_sets_the_process_count():
    code = ("import json, torch, mlip_attn; from mlip_attn import AttnCalculator, build_model\n"
            "m = build_model({'backbone': 'egnn', 'elements': [1, 8], 'width': 8, 'layers': 1})\n"
            "AttnCalculator(m, threads=1)\n"
            "import os; print(json.dumps({'threads': torch.get_num_threads(), "
            "'env': os.environ.get('MLIP_ATTN_THREADS')}))")
    assert _child(code) == {"threads": 1, "env": "1"}


def test_bad_thread_counts_are_refused():
    with pytest.raises(ValueError, match="threads: a thread count must be a positive integer"):
        threads.configure(0)
    with pytest.raises(ValueError, match="MLIP_ATTN_THREADS: a thread count must be"):
        threads._positive("two", "MLIP_ATTN_THREADS")


def test_cpu_counts_are_bounded():
    cpus = threads.available_cpus()
    assert 1 <= cpus <= (os.cpu_count() or 1)
    assert 1 <= threads.idle_cpus(cpus) <= cpus
    assert "OpenMP waiting" in threads.describe()


def test_cli_threads_option(monkeypatch, capsys):
    import torch
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
