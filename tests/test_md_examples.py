"""The ASE MD examples run end to end (tiny untrained models, a few steps) and write plots."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mlip_attn import build_model, save_model

EXAMPLES = Path(__file__).resolve().parents[1] / "md_examples"


def tiny_models(tmp_path, elements):
    paths = []
    for name, attention in (("local", None), ("efa", {"type": "efa", "r_max": 20.0, "d_qk": 4,
                                                      "d_v": 4, "vectors": True})):
        path = tmp_path / f"{name}.pt"
        save_model(build_model({"backbone": "painn", "elements": elements, "width": 8,
                                "layers": 1, "cutoff": 4.0, "attention": attention}), path)
        paths += [f"--{name}", str(path)]
    return paths


@pytest.mark.parametrize("script, elements, extra", [
    ("cumulene_torsion_md.py", ["H", "C"], ["--steps", "20", "--carbons", "5"]),
    ("sn2_approach_md.py", ["H", "C", "Cl"], ["--steps", "20"]),
    ("charge_transfer_forces.py", ["H", "C"], []),
])
def test_example_runs_and_writes_its_plot(tmp_path, script, elements, extra):
    run = subprocess.run([sys.executable, str(EXAMPLES / script), *tiny_models(tmp_path, elements),
                          *extra, "--out", str(tmp_path / "plots")], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "local" in run.stdout and "efa" in run.stdout
    assert list((tmp_path / "plots").glob("*.png"))
    assert not list(tmp_path.glob("*.png"))     # nothing in the working directory


def test_missing_potential_is_explained(tmp_path):
    run = subprocess.run([sys.executable, str(EXAMPLES / "sn2_approach_md.py"), "--local",
                          str(tmp_path / "nope.pt"), "--efa", str(tmp_path / "nope.pt")],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert run.returncode != 0 and "no such model file" in run.stderr


def test_salt_vacancy_example_runs_with_an_electrostatics_model(tmp_path):
    """The periodic example: vacancy energy vs box size and a few NVE steps, both models."""
    paths = []
    for name, attention in (("local", None), ("efa", {"type": "electrostatics",
                                                      "accuracy": 1e-5})):
        path = tmp_path / f"{name}.pt"
        save_model(build_model({"backbone": "painn", "elements": ["Na", "Cl"], "width": 8,
                                "layers": 1, "cutoff": 4.0, "attention": attention}), path)
        paths += [f"--{name}", str(path)]
    run = subprocess.run([sys.executable, str(EXAMPLES / "salt_vacancy_box_size.py"), *paths,
                          "--max-box", "3", "--nve-ps", "0.004", "--out", str(tmp_path / "plots")],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "6.09" in run.stdout and "6.685" in run.stdout      # the exact vacancy energies
    assert run.stdout.count("NVE ") == 2
    assert list((tmp_path / "plots").glob("*.png"))
