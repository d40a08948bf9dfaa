"""`AttnCalculator`'s domain signal (`DomainWarning`): distances shorter than in training,
compositions outside the span the per-element energies were fit on, charged structures whose
atoms form groups beyond the model's reach; and no warning on held-out structures of the
training distribution."""
from __future__ import annotations

import warnings

import ase.io
import numpy as np
import pytest
from ase.build import molecule

from mlip_attn.calculators.ase_calculator import AttnCalculator, DomainWarning
from mlip_attn.data import AtomicData
from mlip_attn.data.statistics import domain_seen, outside_composition_span
from mlip_attn.models import load_model

from conftest import make_model


def calculator(metadata: dict | None = None):
    model = make_model("painn", elements=(1, 6, 8))
    model.metadata = dict(metadata or {})
    return AttnCalculator(model, default_dtype="float64")


def domain_warnings(calc, atoms, charge: float = 0.0) -> list:
    atoms = atoms.copy()
    atoms.info["charge"] = charge
    atoms.calc = calc
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        atoms.get_potential_energy()
    return [w for w in caught if issubclass(w.category, DomainWarning)]


def test_domain_seen_records_shortest_distance_and_composition_span():
    frames = [AtomicData.from_atoms(molecule(m)) for m in ("C2H2", "C6H6")]
    seen = domain_seen(frames)
    assert seen["training_min_distance"] == pytest.approx(
        min(np.sort(molecule(m).get_all_distances().ravel())[len(molecule(m))]
            for m in ("C2H2", "C6H6")), abs=1e-6)
    span = seen["training_composition_span"]
    assert span["elements"] == [1, 6] and len(span["basis"]) == 1   # C_nH_n only: rank 1
    assert not outside_composition_span(molecule("C6H6").numbers, span)
    assert outside_composition_span(molecule("CH4").numbers, span)
    assert outside_composition_span(molecule("H2O").numbers, span)  # an unseen element


def test_short_distances_warn_with_a_margin():
    calc = calculator({"training_min_distance": 1.0})
    close = molecule("H2O")
    close.positions[1] = close.positions[0] + 0.8 * (close.positions[1] - close.positions[0]) \
        / np.linalg.norm(close.positions[1] - close.positions[0])
    assert any("shorter than any in training" in str(w.message) for w in domain_warnings(calc, close))
    ok = molecule("H2O")    # O–H 0.97 Å: within the 5 % margin of 1.0 Å
    assert domain_warnings(calc, ok) == []


def test_composition_outside_the_span_warns():
    span = domain_seen([AtomicData.from_atoms(molecule(m)) for m in ("C2H2", "C6H6")])
    calc = calculator({"training_composition_span": span["training_composition_span"]})
    assert domain_warnings(calc, molecule("C2H2")) == []
    assert any("composition" in str(w.message) for w in domain_warnings(calc, molecule("CH4")))


def test_charged_groups_beyond_the_reach_warn():
    calc = calculator()
    far = molecule("C2H6") + molecule("H2O")
    far.positions[8:] += [60.0, 0, 0]
    assert any("one fragment" in str(w.message) for w in domain_warnings(calc, far, 1.0))
    assert domain_warnings(calc, far, 0.0) == []
    assert domain_warnings(calc, molecule("C2H6"), 1.0) == []


def test_held_out_structures_of_the_training_distribution_do_not_warn():
    """The shipped SN2 model on its held-out scan (charge −1, Cl⁻ within the reach)."""
    model = load_model("potentials/sn2-efa.pt", dtype="float64")
    calc = AttnCalculator(model, default_dtype="float64")
    frames = ase.io.read("potentials/held_out/sn2-scan.xyz", ":20")
    for atoms in frames:
        atoms.info["charge"] = -1.0
        assert domain_warnings(calc, atoms, -1.0) == []
