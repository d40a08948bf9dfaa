"""The encoder study runner end to end on a tiny file (in-process), its table, findings and
plot; resuming skips finished runs; the built-in data sets' recipes (RDKit: skipped without)."""
from __future__ import annotations

import json

import ase.io
import numpy as np
import pytest

from conftest import emt_frames
from mlip_attn.apps.study import SCHEMES, StudySettings, format_table, run_study
from mlip_attn.cli import main


def tiny_file(tmp_path, n=24):
    frames = emt_frames(n)
    for a in frames:
        a.info["homo"] = -6.0 + 3.0 * np.mean(a.numbers == 8)
        a.info["polar"] = int(np.sum(a.numbers == 8) >= 2)
    path = tmp_path / "tiny.xyz"
    ase.io.write(path, frames)
    return path


def test_tiny_study_end_to_end(tmp_path):
    path = tiny_file(tmp_path)
    settings = StudySettings(width=8, layers=1, epochs=1, batch_size=8, seeds=(0, 1, 2))
    lines = []
    results = run_study(data=str(path), targets=["homo"], classes={"polar": 2},
                        out=tmp_path / "study", settings=settings, backbones=["egnn"],
                        isolate=False, log=lines.append)
    table = results["table"]["egnn"]
    assert set(table) == set(SCHEMES)
    for scheme, row in table.items():
        assert row["seeds"] == 3 and row["parameters"] > 0
        mean, std = row["target_homo_mae"]
        assert np.isfinite(mean) and std >= 0
        assert 0 <= row["class_polar_accuracy"][0] <= 1
    # S2/S4 carry encoders, S3/S4 attention: more parameters than S1
    assert table["S4"]["parameters"] > table["S3"]["parameters"] > table["S1"]["parameters"]
    assert table["S2"]["parameters"] > table["S1"]["parameters"]
    saved = json.loads((tmp_path / "study" / "results.json").read_text())
    assert saved["findings"]["egnn"]["metrics"]["target_homo_mae"]["s2_rank"] in (1, 2, 3, 4)
    assert "| egnn | S4 GPS + encoders |" in (tmp_path / "study" / "table.md").read_text()
    assert (tmp_path / "study" / "study.png").exists()
    assert format_table(saved).count("\n| egnn") == 4
    # run again: every run is read back, nothing is trained
    again = run_study(data=str(path), targets=["homo"], classes={"polar": 2},
                      out=tmp_path / "study", settings=settings, backbones=["egnn"],
                      isolate=False, log=lambda s: None)
    assert json.dumps(again["runs"], sort_keys=True) == json.dumps(results["runs"], sort_keys=True)
    with pytest.raises(ValueError, match="trained with other settings"):
        run_study(data=str(path), targets=["homo"], classes={"polar": 2},
                  out=tmp_path / "study", settings=StudySettings(width=8, layers=1, epochs=2,
                                                                 batch_size=8, seeds=(0,)),
                  backbones=["egnn"], isolate=False, log=lambda s: None)


def test_study_errors_name_the_problem(tmp_path):
    path = tiny_file(tmp_path, 6)
    with pytest.raises(ValueError, match=r"frame 0: no 'lumo' in atoms.info"):
        run_study(data=str(path), targets=["lumo"], out=tmp_path / "s", isolate=False,
                  settings=StudySettings(epochs=1), log=lambda s: None)
    assert main(["study", "--data", str(path)]) == 2                  # no --target
    assert main(["study", "--dataset", "local", "--data", str(path)]) == 2
    assert main(["study", "--data", str(path), "--target", "homo", "--schemes", "S9"]) == 2


def test_builtin_datasets_recipes():
    pytest.importorskip("rdkit")
    from mlip_attn.qm.datasets import add_derived
    from mlip_attn.qm.datasets.chains import chain_smiles, push_pull_chains
    from mlip_attn.qm.datasets.molecules import small_molecules
    a = small_molecules(5, seed=0)
    b = small_molecules(5, seed=0)
    assert [m.info["smiles"] for m in a] == [m.info["smiles"] for m in b]
    assert len({m.info["smiles"] for m in a}) == 5
    assert all(set(m.numbers) <= {1, 6, 7, 8} for m in a)
    assert np.allclose(a[0].positions, b[0].positions)
    assert chain_smiles("amino", "nitro", 2, "polyene") == "N/C=C/C=C/[N+](=O)[O-]"
    chains = push_pull_chains(0, conformers=1, lengths=(3,))
    assert len(chains) == 2 * 6 * 6 and all(c.info["units"] == 3 for c in chains)
    info = add_derived(chains[0].copy()).info
    assert "polar" not in info  # not labelled yet: nothing to derive


def test_xtb_properties_of_water():
    from ase.build import molecule
    from mlip_attn.qm.properties import xtb_properties
    water = molecule("H2O")
    p = xtb_properties(water.numbers, water.positions)
    assert 10 < p["gap"] < 20 and 1.5 < p["dipole_norm"] < 3.0     # GFN2-xTB: 14.2 eV, 2.29 D
    assert 0.2 < p["polarizability"] < 2.0 and p["atomization_energy"] < 0
    assert p["forces"].shape == (3, 3)
