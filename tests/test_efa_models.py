"""PaiNN/EGNN + EFA as potentials: range safety, periodic refusal, and a learning test where
global attention must beat the local model (two ions beyond the cutoff)."""
from __future__ import annotations

import warnings

import ase.io
import numpy as np
import pytest
from ase import Atoms

from mlip_attn import AttnCalculator, build_model
from mlip_attn.calculators import RangeWarning
from mlip_attn.qm import nacl_energy_forces
from mlip_attn.training import FitError, fit, load_config

from conftest import emt_frames, random_crystal, random_molecule

EFA = {"type": "efa", "r_max": 10.0, "d_qk": 8, "d_v": 8, "vectors": True}


def efa_model(**options):
    return build_model({"backbone": "painn", "elements": [1, 6, 8], "width": 8, "layers": 1,
                        "attention": {**EFA, **options}})


def test_structure_beyond_r_max_warns_or_raises():
    """The linear-cost EFA (Lebedev sums, `switch: false`) aliases beyond its reach: a larger
    structure is warned about or refused; the separable default does not interact there, so
    it is not."""
    atoms = random_molecule(6, seed=1)
    atoms.positions[0] += [12.0, 0, 0]
    atoms.calc = AttnCalculator(efa_model())
    with warnings.catch_warnings():
        warnings.simplefilter("error", RangeWarning)
        atoms.get_potential_energy()
    atoms.calc = AttnCalculator(efa_model(switch=False))
    with pytest.warns(RangeWarning, match=r"exceeds the model's global reach r_max = 10 Å"):
        atoms.get_potential_energy()
    atoms.calc = AttnCalculator(efa_model(switch=False), range_check="raise")
    with pytest.raises(ValueError, match="r_max = 10"):
        atoms.get_potential_energy()


def test_in_range_structure_does_not_warn(recwarn):
    atoms = random_molecule(5, seed=2, spread=1.0)
    atoms.calc = AttnCalculator(efa_model())
    atoms.get_potential_energy()
    assert not [w for w in recwarn if issubclass(w.category, RangeWarning)]


def test_periodic_input_is_refused():
    atoms = random_crystal(seed=3)
    atoms.calc = AttnCalculator(efa_model())
    with pytest.raises(ValueError, match="periodic"):
        atoms.get_potential_energy()


def test_fit_refuses_periodic_data_for_global_models(tmp_path):
    path = tmp_path / "bulk.xyz"
    ase.io.write(path, emt_frames(10, kind="bulk"))
    config = load_config(None, {"data": {"train": str(path)}, "output": str(tmp_path / "run"),
                                "model": {"width": 8, "layers": 1, "attention": EFA}})
    with pytest.raises(FitError, match="periodic"):
        fit(config)
    assert not (tmp_path / "run" / "model.pt").exists()


def ion_pairs(n: int, seed: int = 0) -> list[Atoms]:
    """Two ions (Na+/Cl-) 4–12 Å apart, screened Coulomb energy: nothing within a 3.5 Å cutoff."""
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):
        numbers = rng.choice([11, 17], size=2)
        u = rng.normal(size=3)
        atoms = Atoms(numbers=numbers, positions=[np.zeros(3), rng.uniform(4.0, 12.0) * u / np.linalg.norm(u)])
        energy, forces = nacl_energy_forces(atoms.positions, atoms.numbers)
        atoms.info.update(REF_energy=energy, total_charge=int(np.sum(numbers == 11) - np.sum(numbers == 17)))
        atoms.arrays["REF_forces"] = forces
        frames.append(atoms)
    return frames


def test_efa_learns_what_the_local_model_cannot(tmp_path):
    """Same 1-layer PaiNN, same training: EFA gets a >= 3x lower energy MAE on held-out pairs."""
    path = tmp_path / "pairs.xyz"
    ase.io.write(path, ion_pairs(160))
    errors = {}
    for name, attention in (("local", None),
                            ("efa", {"type": "efa", "r_max": 14.0, "d_qk": 16, "d_v": 16})):
        config = load_config(None, {
            "model": {"backbone": "painn", "width": 16, "layers": 1, "cutoff": 3.5,
                      "attention": attention},
            "data": {"train": str(path), "valid": 0.2, "test": 0.2},
            "training": {"epochs": 40, "batch_size": 16, "lr": 5e-3, "scheduler": "cosine",
                         "lr_min": 1e-4, "forces_weight": 1.0, "ema_decay": None,
                         "progress": False},
            "output": str(tmp_path / name)})
        errors[name] = fit(config, log=lambda s: None).test["energy_mae"]
    print(f"energy MAE (eV): {errors}")
    assert errors["local"] >= 3 * errors["efa"], errors
