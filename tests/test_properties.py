"""Property-based tests (hypothesis) of the readers (extxyz, HDF5, ASE db) and of
`AttnCalculator`'s input checks: random structures and random corruptions (truncation, NaN,
wrong shapes, unknown keys) give either the correct result or one of the documented errors —
`DataFileError` (the file) or `StructureError` (a structure), both naming the file — never a
raw TypeError/KeyError/OSError."""
from __future__ import annotations

import contextlib
import re
import tempfile
import warnings
from pathlib import Path

import ase.io
import h5py
import numpy as np
import pytest
from ase import Atoms
from ase.calculators.calculator import CalculationFailed
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from mlip_attn import AttnCalculator
from mlip_attn.data import DataFileError, StructureError, read_structures, write_structures
from mlip_attn.data.atomic_data import AtomicData

from conftest import make_model

SETTINGS = settings(max_examples=50, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
DB_SETTINGS = settings(SETTINGS, max_examples=25)   # every sqlite commit syncs to disk
ELEMENTS = (1, 6, 8, 29)
FINITE = st.floats(-50.0, 50.0, allow_nan=False, allow_infinity=False)


@st.composite
def labelled_atoms(draw, max_atoms: int = 5) -> Atoms:
    """A labelled structure (REF_energy, REF_forces, total_charge; stress when periodic) whose
    atoms sit on a 1.5 Å grid, jittered."""
    n = draw(st.integers(1, max_atoms))
    sites = draw(st.lists(st.tuples(*[st.integers(0, 3)] * 3), min_size=n, max_size=n,
                          unique=True))
    jitter = draw(arrays(np.float64, (n, 3), elements=st.floats(-0.25, 0.25, width=32)))
    atoms = Atoms(numbers=draw(st.lists(st.sampled_from(ELEMENTS), min_size=n, max_size=n)),
                  positions=np.array(sites) * 1.5 + jitter)
    if draw(st.booleans()):
        atoms.cell = np.diag([6.5, 7.0, 7.5])
        atoms.pbc = True
        atoms.info["REF_stress"] = draw(arrays(np.float64, (6,), elements=FINITE))
    atoms.info["REF_energy"] = draw(FINITE)
    atoms.arrays["REF_forces"] = draw(arrays(np.float64, (n, 3), elements=FINITE))
    atoms.info["total_charge"] = draw(st.integers(-2, 2))
    return atoms


FRAMES = st.lists(labelled_atoms(), min_size=1, max_size=4)


@contextlib.contextmanager
def workdir():
    with tempfile.TemporaryDirectory() as d:
        yield Path(d)


def assert_same(read: list[AtomicData], frames: list[Atoms]) -> None:
    assert len(read) == len(frames)
    for d, a in zip(read, frames):
        assert d.numbers.tolist() == a.numbers.tolist()
        np.testing.assert_allclose(d.positions.numpy(), a.positions, atol=1e-6)
        assert d.energy == pytest.approx(a.info["REF_energy"], rel=1e-7, abs=1e-7)
        np.testing.assert_allclose(d.forces.numpy(), a.arrays["REF_forces"], atol=1e-6)
        assert d.charge == a.info["total_charge"]
        assert d.is_periodic == bool(a.pbc.any())
        if a.pbc.any():
            assert d.stress is not None


def documented_error(path: Path, call):
    """Run ``call``: its result, or None after a documented error naming ``path``."""
    try:
        return call()
    except (DataFileError, StructureError) as exc:
        assert str(path) in str(exc), str(exc)
        return None


# ----------------------------------------------------------------------------- extxyz

@SETTINGS
@given(frames=FRAMES, extra=st.dictionaries(
    st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True).filter(
        lambda k: k not in {"charge", "spin", "pbc", "energy", "forces", "stress"}),
    st.one_of(st.integers(-5, 5), st.text("abcxyz", min_size=1, max_size=5), FINITE),
    max_size=3))
def test_extxyz_round_trip_ignores_unknown_keys(frames, extra):
    with workdir() as d:
        path = d / "data.xyz"
        for a in frames:
            a.info.update(extra)
            a.arrays["unknown_per_atom"] = np.arange(len(a), dtype=float)
        ase.io.write(path, frames, format="extxyz")
        assert_same(read_structures(path), frames)


@SETTINGS
@given(frames=FRAMES, cut=st.floats(0.0, 1.0, exclude_max=True))
def test_extxyz_truncated_anywhere(frames, cut):
    """A truncated file reads as its complete leading frames, or is refused."""
    with workdir() as d:
        path = d / "data.xyz"
        ase.io.write(path, frames, format="extxyz")
        text = path.read_bytes()
        path.write_bytes(text[:max(1, int(cut * len(text)))])
        read = documented_error(path, lambda: read_structures(path))
        if read is not None:
            assert_same(read, frames[:len(read)])


@SETTINGS
@given(frames=FRAMES, which=st.sampled_from(["positions", "REF_forces", "REF_energy"]),
       frame=st.integers(0, 3), value=st.sampled_from([np.nan, np.inf, -np.inf]))
def test_extxyz_non_finite_values_are_named(frames, which, frame, value):
    frame = frame % len(frames)
    a = frames[frame]
    if which == "REF_energy":
        a.info[which] = value
    else:
        a.arrays[which][len(a) - 1, 0] = value
    with workdir() as d:
        path = d / "data.xyz"
        ase.io.write(path, frames, format="extxyz")
        with pytest.raises(StructureError, match=rf"non-finite .*{path}#{frame}"):
            read_structures(path)


@SETTINGS
@given(frames=FRAMES, frame=st.integers(0, 3),
       bad=st.sampled_from(["forces_2_columns", "stress_5", "energy_text", "charge_text"]))
def test_extxyz_wrong_shapes_and_types_are_named(frames, frame, bad):
    frame = frame % len(frames)
    a = frames[frame]
    if bad == "forces_2_columns":
        a.arrays["REF_forces"] = a.arrays["REF_forces"][:, :2].copy()
    elif bad == "stress_5":
        a.info["REF_stress"] = np.arange(5.0)
    elif bad == "energy_text":
        a.info["REF_energy"] = "lots"
    else:
        a.info["total_charge"] = "minus"
    with workdir() as d:
        path = d / "data.xyz"
        ase.io.write(path, frames, format="extxyz")
        with pytest.raises(StructureError, match=rf"{path}#{frame}"):
            read_structures(path)


# ----------------------------------------------------------------------------- HDF5

def _as_data(frames):
    return [AtomicData.from_atoms(a, name=str(k)) for k, a in enumerate(frames)]


@SETTINGS
@given(frames=FRAMES)
def test_hdf5_round_trip(frames):
    with workdir() as d:
        path = d / "data.h5"
        write_structures(path, _as_data(frames))
        with h5py.File(path, "a") as f:      # unknown datasets and attributes are ignored
            f.create_dataset("unknown", data=np.arange(3))
            f.attrs["note"] = "from elsewhere"
        assert_same(read_structures(path), frames)


@SETTINGS
@given(frames=FRAMES, cut=st.floats(0.0, 1.0, exclude_max=True))
def test_hdf5_truncated_anywhere(frames, cut):
    with workdir() as d:
        path = d / "data.h5"
        write_structures(path, _as_data(frames))
        data = path.read_bytes()
        path.write_bytes(data[:max(1, int(cut * len(data)))])
        with pytest.raises(DataFileError, match=str(path)):
            read_structures(path)


@SETTINGS
@given(frames=FRAMES, change=st.sampled_from([
    "drop:positions", "drop:n_atoms", "drop:energy", "columns:positions", "columns:forces",
    "rows:numbers", "rows:charge", "more:n_atoms", "fewer:n_atoms", "nan:positions",
    "nan:cell", "text:energy"]))
def test_hdf5_damaged_datasets_are_named(frames, change):
    kind, name = change.split(":")
    with workdir() as d:
        path = d / "data.h5"
        write_structures(path, _as_data(frames))
        with h5py.File(path, "a") as f:
            old = f[name][()] if name in f else None
            if kind in ("drop", "columns", "rows", "text"):
                del f[name]
            if kind == "columns":
                f.create_dataset(name, data=old[:, :2])
            elif kind == "rows":
                f.create_dataset(name, data=old[:-1] if len(old) > 1 else np.concatenate([old, old]))
            elif kind == "text":
                f.create_dataset(name, data=np.array([b"x"] * len(old)))
            elif kind in ("more", "fewer"):
                f[name][0] = old[0] + (1 if kind == "more" else -1)
            elif kind == "nan":
                f[name][0] = np.nan
        expected = StructureError if kind == "nan" else DataFileError
        with pytest.raises(expected, match=str(path)):
            read_structures(path)


# ----------------------------------------------------------------------------- ASE db

@DB_SETTINGS
@given(frames=FRAMES, extra=st.dictionaries(st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True)
                                            .filter(lambda k: k not in {"charge", "spin", "id"}),
                                            st.integers(-5, 5), max_size=3))
def test_db_round_trip_ignores_unknown_keys(frames, extra):
    import ase.db
    with workdir() as d:
        path = d / "data.db"
        write_structures(path, _as_data(frames))
        with ase.db.connect(str(path)) as db:
            for row in db.select():
                db.update(row.id, **extra)
        assert_same(read_structures(path), frames)


@DB_SETTINGS
@given(frames=FRAMES, cut=st.floats(0.0, 1.0, exclude_max=True))
def test_db_truncated_anywhere(frames, cut):
    with workdir() as d:
        path = d / "data.db"
        write_structures(path, _as_data(frames))
        data = path.read_bytes()
        path.write_bytes(data[:max(1, int(cut * len(data)))])
        read = documented_error(path, lambda: read_structures(path))
        if read is not None:
            assert_same(read, frames[:len(read)])


@DB_SETTINGS
@given(frames=FRAMES, frame=st.integers(0, 3), bad=st.sampled_from(["nan_energy", "forces_shape"]))
def test_db_bad_labels_are_named(frames, frame, bad):
    import ase.db
    frame = frame % len(frames)
    with workdir() as d:
        path = d / "data.db"
        write_structures(path, _as_data(frames))
        with ase.db.connect(str(path)) as db:
            row = list(db.select())[frame]
            if bad == "nan_energy":
                db.update(row.id, REF_energy=float("nan"))
            else:
                db.update(row.id, data={"REF_forces": np.zeros((len(frames[frame]) + 1, 2))})
        with pytest.raises(StructureError, match=rf"{path}#{frame}"):
            read_structures(path)


# ----------------------------------------------------------------------------- calculator

CALCULATORS = {name: AttnCalculator(make_model(name, elements=(1, 6, 8)), default_dtype="float64")
               for name in ("painn", "painn+efa-l1")}


HOSTILE = ("none", "unknown_element", "nan", "inf", "huge", "overlap", "empty", "periodic",
           "charge")


@st.composite
def hostile_atoms(draw) -> tuple[str, Atoms]:
    """A valid small molecule, or one spoiled in one of the ways a user might: unknown
    elements, NaN/inf/huge coordinates, overlapping atoms, no atoms, a periodic cell, a charge
    that is not a finite number."""
    kind = draw(st.sampled_from(HOSTILE))
    if kind == "empty":
        return kind, Atoms()
    n = draw(st.integers(2, 6))
    sites = draw(st.lists(st.tuples(*[st.integers(0, 2)] * 3), min_size=n, max_size=n,
                          unique=True))
    jitter = draw(arrays(np.float64, (n, 3), elements=st.floats(-0.2, 0.2)))
    numbers = draw(st.lists(st.sampled_from((1, 6, 8)), min_size=n, max_size=n))
    atoms = Atoms(numbers=numbers, positions=np.array(sites) * 1.2 + jitter)
    atom, axis = draw(st.integers(0, n - 1)), draw(st.integers(0, 2))
    if kind == "unknown_element":
        atoms.numbers[atom] = draw(st.sampled_from((26, 92)))
    elif kind in ("nan", "inf", "huge"):
        atoms.positions[atom, axis] = {"nan": np.nan, "inf": -np.inf, "huge": 1e9}[kind]
    elif kind == "overlap":
        atoms.positions[atom] = atoms.positions[(atom + 1) % n] + 0.01
    elif kind == "periodic":
        atoms.cell = np.diag(draw(st.lists(st.floats(2.5, 9.0), min_size=3, max_size=3)))
        atoms.pbc = [True, draw(st.booleans()), draw(st.booleans())]
    elif kind == "charge":
        atoms.info["charge"] = draw(st.one_of(st.integers(-3, 3), st.floats(-5, 5), st.floats(),
                                              st.none(), st.text(max_size=4),
                                              st.lists(st.integers(), max_size=2)))
    return kind, atoms


def _allowed_errors(kind: str, atoms: Atoms, global_model: bool) -> str | None:
    """The message (regex) of the documented error ``kind`` may raise, None if it must work."""
    charge = atoms.info.get("charge")
    return {
        "none": None,
        "huge": None,
        "unknown_element": r"atoms: elements \['(Fe|U)'\] are unknown to the model",
        "nan": "non-finite .*positions in atoms",
        "inf": "non-finite .*positions in atoms",
        "overlap": r"atoms \d+ and \d+ overlap in atoms",
        "empty": "empty structure in atoms",
        "periodic": ("global attention, which does not support periodic" if global_model
                     else r"overlap in atoms"),
        "charge": (None if isinstance(charge, (int, float)) and np.isfinite(charge) else
                   r"atoms: info\['charge'\] must be (a number|finite)"),
    }[kind]


def _overflow_allowed(kind: str, atoms: Atoms) -> bool:
    """An absurd but finite charge (1e300 e) may overflow the model: `CalculationFailed`."""
    charge = atoms.info.get("charge")
    return kind == "charge" and isinstance(charge, float) and abs(charge) > 1e3


@SETTINGS
@given(case=hostile_atoms(), name=st.sampled_from(sorted(CALCULATORS)))
def test_calculator_gives_finite_results_or_a_clear_error(case, name):
    kind, atoms = case
    calc = CALCULATORS[name]
    calc.reset()
    atoms.calc = calc
    allowed = _allowed_errors(kind, atoms, calc.is_global)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")      # range and charge warnings are allowed
        try:
            energy = atoms.get_potential_energy()
            forces = atoms.get_forces()
        except ValueError as exc:
            assert allowed is not None and re.search(allowed, str(exc)), (kind, str(exc))
            return
        except CalculationFailed as exc:
            assert _overflow_allowed(kind, atoms) and "non-finite" in str(exc), str(exc)
            return
    assert np.isfinite(energy) and np.isfinite(forces).all() and forces.shape == (len(atoms), 3)
