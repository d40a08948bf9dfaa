"""`mlip-attn import-openqdc` options on openQDC-written golden folders, and an end-to-end run:
import an openQDC folder, then train on it with `mlip-attn fit`."""
from __future__ import annotations

from pathlib import Path

import ase.io
import h5py
import numpy as np
import pytest

from mlip_attn import load_model
from mlip_attn.cli import main
from mlip_attn.data import read_structures
from mlip_attn.data.openqdc import read_openqdc
from mlip_attn.data.openqdc_conventions import DATASETS

NOTES = "openQDC multiplies ANI-1x|SN2RXN preprocessing|holds interaction energies"
pytestmark = pytest.mark.filterwarnings(f"ignore:.*({NOTES}):UserWarning")   # dataset notes
CACHE = Path(__file__).parent / "data" / "openqdc" / "cache"
ANI1X = CACHE / DATASETS["ani1x"].layout
SPICE = CACHE / "spice"


def test_energy_method_by_name_or_index(tmp_path, capsys):
    by_name, by_index = tmp_path / "name.xyz", tmp_path / "index.xyz"
    assert main(["import-openqdc", str(ANI1X), "--out", str(by_name),
                 "--energy-method", "wb97x/cc-pvtz"]) == 0
    assert main(["import-openqdc", str(ANI1X), "--out", str(by_index),
                 "--energy-method", "7"]) == 0
    a, b = ase.io.read(by_name, ":"), ase.io.read(by_index, ":")
    assert [x.info["REF_energy"] for x in a] == [x.info["REF_energy"] for x in b]
    assert all("REF_forces" in x.arrays for x in a)
    out = capsys.readouterr().out
    assert "method 'wb97x/cc-pvtz', total energies, hartree -> eV" in out
    # index 0 on a one-method dataset (the old CLI refused it)
    assert main(["import-openqdc", str(CACHE / "sn2_rxn"), "--out", str(tmp_path / "s.xyz"),
                 "--energy-method", "0"]) == 0


def test_methods_without_forces_force_method_and_no_forces(tmp_path, capsys):
    hf = tmp_path / "hf.xyz"
    assert main(["import-openqdc", str(ANI1X), "--out", str(hf),
                 "--energy-method", "hf/cc-pvdz"]) == 0
    assert not any("REF_forces" in x.arrays for x in ase.io.read(hf, ":"))
    assert "no forces" in capsys.readouterr().out
    assert main(["import-openqdc", str(ANI1X), "--out", str(tmp_path / "x.xyz"),
                 "--energy-method", "hf/cc-pvdz", "--force-method", "wb97x/6-31g*"]) == 2
    assert "not consistent" in capsys.readouterr().err
    ok = tmp_path / "ok.xyz"
    assert main(["import-openqdc", str(ANI1X), "--out", str(ok), "--energy-method",
                 "wb97x/6-31g*", "--force-method", "wb97x/6-31g*"]) == 0
    assert all("REF_forces" in x.arrays for x in ase.io.read(ok, ":"))
    none = tmp_path / "none.xyz"
    assert main(["import-openqdc", str(SPICE), "--out", str(none), "--no-forces"]) == 0
    assert not any("REF_forces" in x.arrays for x in ase.io.read(none, ":"))
    assert "no forces (--no-forces)" in capsys.readouterr().out


def test_energy_type_and_config_type(tmp_path, capsys):
    total, formation = tmp_path / "t.h5", tmp_path / "f.xyz"
    assert main(["import-openqdc", str(SPICE), "--out", str(total)]) == 0
    assert main(["import-openqdc", str(SPICE), "--out", str(formation),
                 "--energy-type", "formation"]) == 0
    assert "formation energies (total minus openQDC's isolated-atom energies)" in \
        capsys.readouterr().out
    t, f = read_structures(total), ase.io.read(formation, ":")
    expected = read_openqdc(SPICE, energy_type="formation")
    assert [x.info["REF_energy"] for x in f] == pytest.approx([d.energy for d in expected],
                                                               abs=1e-9)
    assert all(a.energy < b.info["REF_energy"] for a, b in zip(t, f))
    assert {x.info["config_type"] for x in f} == {"PubChem", "DES370K Dimers"}
    assert f[-1].info["openqdc_name"] == "[H:3][C:1]#[C:2][H:4].[Na+:5]"
    assert f[-1].info["total_charge"] == 1.0
    with h5py.File(total) as h:
        assert [s.decode() for s in h["config_type"][:2]] == ["PubChem", "PubChem"]
        assert h["openqdc_index"][:].tolist() == list(range(len(t)))
    db = tmp_path / "t.db"
    assert main(["import-openqdc", str(SPICE), "--out", str(db)]) == 0
    from ase.db import connect
    with connect(str(db)) as rows:
        assert [r.config_type for r in rows.select()][:2] == ["PubChem", "PubChem"]
    assert [d.energy for d in read_structures(db)] == pytest.approx([d.energy for d in t])
    assert main(["import-openqdc", str(CACHE / "des370k_interaction"), "--out",
                 str(tmp_path / "d.xyz"), "--energy-type", "formation"]) == 2
    assert "interaction energies" in capsys.readouterr().err


def test_unknown_dataset_refused_unless_conventions_given(tmp_path, capsys):
    import shutil
    renamed = tmp_path / "mine"
    shutil.copytree(CACHE / "qm7x" / "preprocessed", renamed)
    out = tmp_path / "o.xyz"
    assert main(["import-openqdc", str(renamed), "--out", str(out)]) == 2
    assert "'mine' is not an openQDC dataset whose conventions are known" in \
        capsys.readouterr().err
    assert main(["import-openqdc", str(renamed), "--out", str(out), "--dataset", "qm7x"]) == 0
    explicit = tmp_path / "e.xyz"
    assert main(["import-openqdc", str(renamed), "--out", str(explicit), "--energy-unit", "ev",
                 "--distance-unit", "ang", "--force-unit", "ev/ang", "--force-method", "0",
                 "--energy-dtype", "float64"]) == 0
    a, b = ase.io.read(out, ":"), ase.io.read(explicit, ":")
    np.testing.assert_allclose(a[0].arrays["REF_forces"], b[0].arrays["REF_forces"])


def test_import_then_fit_end_to_end(tmp_path):
    data = tmp_path / "spice.xyz"
    assert main(["import-openqdc", str(SPICE), "--out", str(data)]) == 0
    run = tmp_path / "run"
    # 7 structures: validate on the training file itself, so every element is seen in training
    assert main(["fit", "--data.train", str(data), "--data.valid", str(data), "--data.test",
                 "null", "--output", str(run),
                 "--model.width", "8", "--model.layers", "1", "--model.cutoff", "4.0",
                 "--training.batch_size", "4", "--training.progress", "false",
                 "--training.epochs", "2"]) == 0
    rows = (run / "metrics.csv").read_text().splitlines()
    assert len(rows) == 3
    model = load_model(run / "model.pt")
    assert set(model.elements) == {1, 6, 7, 11}      # a PubChem cation (N+) and Na+ / acetylene
