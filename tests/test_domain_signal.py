"""The recorded training domain (`mlip_attn.models.domain`): bonded environments and feature
novelty, their round trip through model files, `AttnCalculator`'s warnings and ``uncertainty``,
``mlip-attn analyze domain`` and the trainer's automatic record."""
from __future__ import annotations

import warnings

import ase.io
import numpy as np
import pytest
import torch
from ase.build import molecule

from mlip_attn.calculators.ase_calculator import AttnCalculator, DomainWarning
from mlip_attn.cli import main
from mlip_attn.data import AtomicData
from mlip_attn.models import ModelFileError, load_model, save_model
from mlip_attn.models.domain import (atom_environments, domain_statistics, environments_seen,
                                     novelty_scores, unseen_environments)
from mlip_attn.training import fit, load_config

from conftest import LEGACY_SN2_CHARGES, domain_warnings, make_model

CH = (1, 6)


def rattled(name: str, count: int, seed: int, amplitude: float = 0.03) -> list:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        atoms = molecule(name)
        atoms.positions += rng.normal(0.0, amplitude, atoms.positions.shape)
        atoms.rotate(rng.uniform(0, 360), rng.normal(size=3), center="COM")
        out.append(atoms)
    return out


@pytest.fixture(scope="module")
def training():
    """Ethylene and allene (sp2 CH2 ends, an sp carbon): a cumulene-like chemistry."""
    return rattled("C2H4", 40, 0) + rattled("C3H4_D2d", 40, 1)


@pytest.fixture(scope="module")
def model(training):
    model = make_model("painn", elements=CH)
    model.metadata = domain_statistics(model, [AtomicData.from_atoms(a) for a in training])
    return model


def test_environments_of_radius_one_and_two():
    propene = molecule("C3H6_Cs")
    first = atom_environments(propene.numbers, propene.positions, radius=1)
    assert sorted(set(first)) == ["C(C,C,H)", "C(C,H,H)", "C(C,H,H,H)", "H(C)"]
    second = set(atom_environments(propene.numbers, propene.positions))
    assert "C[C(C,C,H);H(C);H(C);H(C)]" in second and "H[C(C,H,H,H)]" in second
    with pytest.raises(ValueError, match="radius must be 1 or 2"):
        atom_environments(propene.numbers, propene.positions, radius=3)


def test_records_round_trip_through_the_model_file(model, tmp_path):
    record = model.metadata["training_environments"]
    assert record["radius"] == 2 and "C[C(C,H,H);C(C,H,H)]" in record["environments"]
    save_model(model, tmp_path / "m.pt", model.metadata)
    loaded = load_model(tmp_path / "m.pt")
    assert loaded.metadata["training_environments"] == record
    assert loaded.metadata["feature_novelty"] == model.metadata["feature_novelty"]


def test_unseen_environment_warns_and_seen_ones_do_not(model):
    calc = AttnCalculator(model, default_dtype="float64")
    for atoms in rattled("C2H4", 10, 7) + rattled("C3H4_D2d", 10, 8):   # fresh draws: no warning
        assert domain_warnings(calc, atoms) == []
        assert calc.results["uncertainty"] <= 1.0
    propene = molecule("C3H6_Cs")       # a methyl group: sp3 carbon never seen
    texts = domain_warnings(calc, propene)
    unseen = unseen_environments(AtomicData.from_atoms(propene),
                                 model.metadata["training_environments"])
    methyl = [k for k, env in enumerate(atom_environments(propene.numbers, propene.positions))
              if env.startswith("C[C(C,C,H);H(C)")]
    assert any("never seen in training" in t and "C[C(C,C,H);H(C);H(C);H(C)]" in t
               and f"atoms {methyl[0]}" in t for t in texts)
    assert set(unseen) >= {"C[C(C,C,H);H(C);H(C);H(C)]", "H[C(C,H,H,H)]"}


def test_environments_that_do_not_saturate_are_not_checked(model):
    """Rattled rock salt: bonds by covalent radii (Na–Na below 4.15 Å) cut through the 4.06 Å
    second shell, so fresh cells have second-shell environments no training cell had. The
    record measures that on its calibration cells and switches the check off; the molecules'
    record stays on, and a model whose record is off does not flag a methyl group by its
    environment."""
    from mlip_attn.qm.systems.rigid_ion_salt import salt_structures
    cells = [AtomicData.from_atoms(a) for a in salt_structures(12, seed=3)]
    salt = environments_seen(cells[:9], calibration=cells[9:])
    assert salt["unseen_fraction"] > 0.1 and not salt["usable"]
    assert set(salt["environments"]) >= set(environments_seen(cells[9:])["environments"])
    ethylene = [AtomicData.from_atoms(a) for a in rattled("C2H4", 12, 5)]
    molecules = environments_seen(ethylene[:9], calibration=ethylene[9:])
    assert molecules["unseen_fraction"] == 0.0 and molecules["usable"]
    assert model.metadata["training_environments"]["usable"]
    off = make_model("painn", elements=CH)
    off.load_state_dict(model.state_dict())
    off.metadata = {**model.metadata, "training_environments": {
        **model.metadata["training_environments"], "usable": False}}
    texts = domain_warnings(AttnCalculator(off, default_dtype="float64"), molecule("C3H6_Cs"))
    assert not any("never seen in training" in t for t in texts)
    assert any("never seen in training" in t for t in
               domain_warnings(AttnCalculator(model, default_dtype="float64"),
                               molecule("C3H6_Cs")))


def test_novelty_is_invariant_to_rotation_and_permutation(model):
    calc = AttnCalculator(model, default_dtype="float64")
    atoms = molecule("C3H6_Cs")
    atoms.calc = calc
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DomainWarning)
        u = atoms.calc.get_property("energy", atoms) and calc.results["atom_uncertainty"].copy()
        moved = atoms.copy()
        moved.rotate(73.0, (1.0, 2.0, 0.5), center=(0.3, -1.0, 2.0))
        order = np.random.default_rng(3).permutation(len(atoms))
        moved = moved[order]
        moved.calc = calc
        moved.get_potential_energy()
    assert u.max() > 1.0                          # the methyl atoms are novel
    np.testing.assert_allclose(calc.results["atom_uncertainty"], u[order], rtol=1e-7, atol=1e-10)


def test_novelty_refuses_statistics_of_another_width(model):
    record = model.metadata["feature_novelty"]
    with pytest.raises(ValueError, match="belong to another model"):
        novelty_scores(record, [6, 1], np.zeros((2, 5)))


def test_old_files_without_records_give_no_spurious_warnings():
    calc = AttnCalculator(str(LEGACY_SN2_CHARGES), default_dtype="float64")
    assert "feature_novelty" not in calc.models[0].metadata
    for atoms in ase.io.read("potentials/held_out/sn2-scan.xyz", ":10"):
        assert domain_warnings(calc, atoms) == []
        assert "uncertainty" not in calc.results


def test_reshipped_file_with_records_is_quiet_on_its_held_out_lengths():
    """cumulene-efa, re-shipped with the training-domain records of its run: held-out chain
    lengths it never saw (C11) are inside its domain (no warning, novelty below 1)."""
    calc = AttnCalculator("potentials/cumulene-efa.pt", default_dtype="float64")
    assert "feature_novelty" in calc.models[0].metadata
    for atoms in ase.io.read("potentials/held_out/cumulene-C11.xyz", ":10"):
        assert domain_warnings(calc, atoms) == []
        assert calc.results["uncertainty"] < 1.0


def test_analyze_domain_writes_a_valid_file_and_keeps_the_weights(training, tmp_path, capsys):
    path = tmp_path / "m.pt"
    save_model(make_model("painn", elements=CH), path)
    data = tmp_path / "train.xyz"
    ase.io.write(data, training)
    before = torch.load(path, weights_only=True)
    assert main(["analyze", "domain", str(path), str(data)]) == 0
    assert "bonded environments" in capsys.readouterr().out
    after = torch.load(path, weights_only=True)
    assert all(torch.equal(after["state_dict"][k], v) for k, v in before["state_dict"].items())
    assert after["model_config"] == before["model_config"]
    assert {"training_environments", "feature_novelty", "training_charge",
            "training_min_distance"} <= set(after["metadata"])
    assert torch.load(tmp_path / "m.pt.bak", weights_only=True)["metadata"] == before["metadata"]
    calc = AttnCalculator(path, default_dtype="float64")
    assert domain_warnings(calc, molecule("C3H6_Cs"))
    # --write-to leaves the original alone
    main(["analyze", "domain", str(tmp_path / "m.pt.bak"), str(data), "--write-to",
          str(tmp_path / "copy.pt")])
    assert "feature_novelty" in load_model(tmp_path / "copy.pt").metadata
    assert "feature_novelty" not in load_model_raw(tmp_path / "m.pt.bak")


def load_model_raw(path):
    return torch.load(path, weights_only=True)["metadata"]


@pytest.mark.parametrize("case, message", [
    ("water", "elements ['O'] are unknown to the model"),
    ("no data", "no data file given and no"),
    ("xyz out", "must be a .pt model file"),
    ("foreign", "not an mlip-attn model file"),
    ("three paths", "give a model file, then its training data file"),
])
def test_analyze_domain_refuses_bad_input_with_clear_errors(case, message, tmp_path, capsys):
    path = tmp_path / "m.pt"
    save_model(make_model("painn", elements=CH), path)
    water, ethylene = tmp_path / "water.xyz", tmp_path / "ethylene.xyz"
    ase.io.write(water, [molecule("H2O")])
    ase.io.write(ethylene, [molecule("C2H4")])
    torch.save({"a": torch.zeros(1)}, tmp_path / "foreign.pt")
    args = {"water": [path, water], "no data": [path],
            "xyz out": [path, ethylene, "--write-to", tmp_path / "x.xyz"],
            "foreign": [tmp_path / "foreign.pt", ethylene],
            "three paths": [path, ethylene, ethylene]}[case]
    assert main(["analyze", "domain", *map(str, args)]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "m.pt.bak").exists()       # nothing was written on refusal
    assert "feature_novelty" not in load_model(path).metadata


def test_fit_records_the_domain_and_analyze_domain_reads_the_run_folder(tmp_path):
    frames = rattled("C2H4", 12, 4) + rattled("C3H4_D2d", 12, 5)
    for atoms in frames:
        atoms.info["REF_energy"] = float(-10.0 * len(atoms))
        atoms.arrays["REF_forces"] = np.zeros((len(atoms), 3))
    data = tmp_path / "data.xyz"
    ase.io.write(data, frames)
    out = tmp_path / "run"
    fit(load_config(None, ["--data.train", str(data), "--output", str(out), "--model.width", "8",
                           "--model.layers", "1", "--training.epochs", "1",
                           "--training.batch_size", "4", "--training.progress", "false"]))
    metadata = load_model(out / "model.pt").metadata
    assert "C[C(C,H,H);C(C,H,H)]" in metadata["training_environments"]["environments"]
    n_valid = metadata["feature_novelty"]["calibration_structures"]
    assert n_valid == round(0.1 * len(frames))                  # the run's validation split
    content = torch.load(out / "model.pt", weights_only=True)
    del content["metadata"]["feature_novelty"], content["metadata"]["training_environments"]
    torch.save(content, out / "model.pt")
    main(["analyze", "domain", str(out / "model.pt")])
    again = load_model(out / "model.pt").metadata
    assert again["training_environments"] == metadata["training_environments"]
    assert again["feature_novelty"]["calibration_structures"] == n_valid
