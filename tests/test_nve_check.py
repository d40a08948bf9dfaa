"""`mlip_attn.analysis.nve_check`: short NVE runs and the card section they write."""
from __future__ import annotations

import numpy as np
import torch
from ase.build import molecule

from mlip_attn import build_model
from mlip_attn.analysis.nve_check import card_lines, nve_run, with_section
from mlip_attn.models import save_model


def _model_file(tmp_path):
    torch.manual_seed(0)
    model = build_model({"backbone": "painn", "elements": [1, 6], "width": 8, "layers": 1,
                         "cutoff": 3.0})
    path = tmp_path / "m.pt"
    save_model(model, path)
    return path


def test_short_run_conserves_energy_and_reports_every_number(tmp_path):
    """40 steps of ethane at 0.25 fs in float64: a smooth model conserves the total energy to
    far below what the card calls blown up; every reported number is there and finite."""
    run = nve_run(_model_file(tmp_path), molecule("C2H6"), 300.0, ps=0.01, dt_fs=0.25,
                  dtype="float64", every=5)
    assert run["ps"] == 0.01 and run["atoms"] == 8 and not run["blew_up"]
    assert run["max_excursion_meV_per_atom"] < 1.0
    assert np.isfinite(run["drift_meV_per_atom_ps"]) and run["mean_temperature"] > 0
    assert 0.5 < run["shortest_distance"] < 1.5 and run["domain_warnings"] == []


def test_a_run_past_the_threshold_stops_and_says_it_blew_up(tmp_path, monkeypatch):
    """With the blow-up threshold at 0 eV/atom, the first sample that moves the total energy
    at all ends the run early, and the run says so."""
    import mlip_attn.analysis.nve_check as N
    monkeypatch.setattr(N, "BLOW_UP", 0.0)
    run = N.nve_run(_model_file(tmp_path), molecule("C2H6"), 600.0, ps=0.01, dt_fs=0.5,
                    dtype="float64", every=2)
    assert run["blew_up"] and run["ps"] < 0.01


def test_card_section_replaces_an_older_one_before_the_limits():
    runs = [{"temperature": 300.0, "ps": 2.0, "dt_fs": 0.5, "dtype": "float32",
             "drift_meV_per_atom_ps": 0.1, "max_excursion_meV_per_atom": 0.2,
             "mean_temperature": 150.0, "shortest_distance": 1.0, "blew_up": False,
             "domain_warnings": ["far"]}]
    lines = card_lines(runs, "python potentials/nve_check.py x", "frame 0")
    card = "# x\n\n## Errors\ntext\n\n## Limits\n- one\n"
    once = with_section(card, lines)
    assert once.index("## NVE check") < once.index("## Limits") and "| 300 | 2 |" in once
    assert "Domain warnings" in once and "- far" in once
    twice = with_section(once, card_lines([{**runs[0], "blew_up": True}], "c", "s"))
    assert twice.count("## NVE check") == 1 and "| yes |" in twice and "## Limits" in twice


def test_repeated_novelty_warnings_merge_into_one_line():
    from mlip_attn.analysis.nve_check import summarise_warnings
    tail = ("have features unlike any atom of their element in training (novelty up to {}, "
            "threshold 1): the prediction there is an extrapolation")
    lines = summarise_warnings([f"atoms 4 {tail.format('1.01')}", f"atoms 2, 4 {tail.format('1.48')}",
                                "a fragment beyond the reach"])
    assert lines == ["a fragment beyond the reach", f"atoms 2, 4 {tail.format('1.48')}"]
