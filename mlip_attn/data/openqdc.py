"""Read openQDC preprocessed datasets (memmaps + ``props.pkl``) without installing openQDC.

openQDC (github.com/valence-labs/openQDC) caches each dataset it has preprocessed as
``<cache>/<dataset>/preprocessed/``:

* ``atomic_inputs.mmap``      float32 (N_atoms_total, 5): [atomic number, formal charge, x, y, z]
* ``position_idx_range.mmap`` int32   (N_structures, 2): [start, end) rows of atomic_inputs
* ``energies.mmap``           (N_structures, n_energy_methods): float64 for current openQDC
                              potential datasets, float32 for older releases and for the classes
                              that override ``data_types`` (interaction datasets, PubChemQC)
* ``forces.mmap``             float32 (N_atoms_total, 3, n_force_methods), only when the dataset
                              has force methods
* ``props.pkl``               pickled dict: ``name`` and ``subset`` as ``np.unique(...,
                              return_inverse=True)`` pairs, ``n_atoms`` (int32 per structure),
                              ``n_atoms_ptr`` for interaction datasets, plus any extra keys

The memmaps are raw bytes with no header: openQDC's dataset *class* supplies the dtypes, the
shapes (``len(energy_methods)``, ``len(force_methods)``) and the units (``__energy_unit__``,
``__distance_unit__``, ``__forces_unit__``). None of that is on disk, so this reader infers the
shapes from the file sizes, infers the energies dtype (see `read_openqdc`), and takes the units
from the caller, or from `KNOWN_DATASETS` for the few datasets whose class it knows.

``props.pkl`` is unpickled with a restricted unpickler that only rebuilds builtin containers and
numpy arrays; any other global in the pickle is refused before it is called.
"""
from __future__ import annotations

import builtins
import collections
import io
import math
import os
import pickle
import warnings
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch

from .atomic_data import AtomicData
from .io import DataFileError

__all__ = ["OpenQDCError", "KNOWN_DATASETS", "read_openqdc", "openqdc_to_file",
           "load_props", "HARTREE_TO_EV", "BOHR_TO_ANGSTROM", "KCAL_MOL_TO_EV"]

HARTREE_TO_EV = 27.211386246
BOHR_TO_ANGSTROM = 0.529177210903
KCAL_MOL_TO_EV = 0.0433641
KJ_MOL_TO_EV = 0.0103642688
RYDBERG_TO_EV = HARTREE_TO_EV / 2.0

# unit name (lower case, as openQDC spells them, plus common aliases) -> factor to eV / Å
ENERGY_UNITS = {
    "hartree": HARTREE_TO_EV, "ha": HARTREE_TO_EV, "eh": HARTREE_TO_EV, "au": HARTREE_TO_EV,
    "ev": 1.0, "mev": 1e-3, "kcal/mol": KCAL_MOL_TO_EV, "kj/mol": KJ_MOL_TO_EV,
    "ryd": RYDBERG_TO_EV, "rydberg": RYDBERG_TO_EV,
}
DISTANCE_UNITS = {
    "ang": 1.0, "angstrom": 1.0, "a": 1.0, "å": 1.0, "bohr": BOHR_TO_ANGSTROM, "nm": 10.0,
}

DATA_FILES = ("atomic_inputs.mmap", "position_idx_range.mmap", "energies.mmap", "props.pkl")
NB_ATOMIC_FEATURES = 5

# Datasets whose openQDC class this reader knows (directory name -> what the class declares).
# force_unit None means "energy_unit/distance_unit" (what every SN2RXN class version declares).
# SN2RXN: openqdc/datasets/potential/sn2_rxn.py (commit 863914a8) declares ev / ang / ev/ang, one
# method, force mask [True]; some older versions declared bohr with the same data source, so the
# geometry check in `read_openqdc` refuses coordinates that look like bohr read as Å.
# Its preprocessing writes zeros in the formal-charge column (the source's total charge Q is
# dropped), so the charge read back is 0 for every structure.
# PubChemQC (pcqm.py) writes core-electron counts, not formal charges, in that column.
KNOWN_DATASETS: dict[str, dict] = {
    "sn2_rxn": {
        "energy_unit": "ev", "distance_unit": "ang", "force_unit": None,
        "energy_methods": ("dsd-blyp-d3(bj)/def2-tzvp",), "force_mask": (True,),
        "charge_note": "openQDC's SN2RXN preprocessing stores no charges (the formal-charge "
                       "column is all zero, the source's total charge is dropped), so every "
                       "structure gets charge 0",
    },
    "pubchemqc_pm6": {"charge_column": False},
    "pubchemqc_b3lyp": {"charge_column": False},
}

PathLike = Union[str, os.PathLike]


class OpenQDCError(DataFileError):
    """An openQDC dataset directory that cannot be read; the message names the path."""


# ----------------------------------------------------------------------------- safe unpickling

def _numpy_globals() -> dict:
    """The numpy callables an ndarray / dtype / scalar pickle needs, taken from numpy itself."""
    arr = np.arange(2)
    reconstruct = arr.__reduce__()[0]
    scalar = np.int32(1).__reduce__()[0]
    frombuffer = arr.__reduce_ex__(5)[0]
    found = {}
    for prefix in ("numpy.core", "numpy._core"):     # numpy 1.x and 2.x module names
        found[(f"{prefix}.multiarray", "_reconstruct")] = reconstruct
        found[(f"{prefix}.multiarray", "scalar")] = scalar
        found[(f"{prefix}.numeric", "_frombuffer")] = frombuffer
    found[("numpy", "ndarray")] = np.ndarray
    found[("numpy", "dtype")] = np.dtype
    return found


_SAFE_BUILTINS = {name: getattr(builtins, name) for name in
                  ("list", "dict", "tuple", "set", "frozenset", "str", "bytes",
                   "int", "float", "complex", "bool")}


def _latin1_bytes(text, encoding="latin1"):
    """What protocol-0/2 pickles call (``_codecs.encode``) to rebuild bytes; latin-1 only."""
    if str(encoding).lower().replace("-", "").replace("_", "") != "latin1":
        raise pickle.UnpicklingError(f"refusing _codecs.encode with encoding {encoding!r}")
    return str(text).encode("latin1")


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that only rebuilds builtin containers, numpy arrays, dtypes and scalars
    (numpy 1.x ``numpy.core`` and 2.x ``numpy._core`` names, pickle protocols 2-5).

    Every other global (``os.system``, ``builtins.eval``, arbitrary classes) raises
    `pickle.UnpicklingError` naming it, before anything is called.
    """

    _allowed = None

    def find_class(self, module, name):
        if RestrictedUnpickler._allowed is None:
            allowed = _numpy_globals()
            for key, obj in _SAFE_BUILTINS.items():
                allowed[("builtins", key)] = obj
                allowed[("__builtin__", key)] = obj
            allowed[("collections", "OrderedDict")] = collections.OrderedDict
            allowed[("_codecs", "encode")] = _latin1_bytes
            RestrictedUnpickler._allowed = allowed
        obj = RestrictedUnpickler._allowed.get((module, name))
        if obj is None:
            raise pickle.UnpicklingError(
                f"refusing to load global '{module}.{name}': only builtin containers and numpy "
                f"arrays are allowed in an openQDC props.pkl")
        return obj


def load_props(path: PathLike) -> dict:
    """Load an openQDC ``props.pkl`` with `RestrictedUnpickler`; raise `OpenQDCError` on failure."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise OpenQDCError(f"{path}: cannot read props.pkl ({exc})") from exc
    try:
        props = RestrictedUnpickler(io.BytesIO(raw)).load()
    except pickle.UnpicklingError as exc:
        raise OpenQDCError(f"{path}: unsafe or unreadable pickle: {exc}") from exc
    except Exception as exc:  # truncated / garbage pickles raise many types
        raise OpenQDCError(f"{path}: unreadable pickle ({type(exc).__name__}: {exc})") from exc
    if not isinstance(props, dict):
        raise OpenQDCError(f"{path}: expected a dict in props.pkl, found {type(props).__name__}")
    return props


def _decode_prop(value):
    """openQDC stores string props as ``np.unique(x, return_inverse=True)``; undo that."""
    if (isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], np.ndarray)
            and value[1].dtype.kind in "iu"):
        uniques = np.asarray(value[0])
        return uniques[value[1].reshape(-1)]
    return np.asarray(value)


# ----------------------------------------------------------------------------- units

def _norm_unit(unit) -> str:
    text = str(unit).strip().lower().replace(" ", "")
    return text.replace("/particle", "")   # pre-release openQDC wrote "eV/particle"


def _unit_factor(table: dict, kind: str, unit, where: str) -> float:
    key = _norm_unit(unit)
    if key not in table:
        raise OpenQDCError(f"{where}: unknown {kind} unit '{unit}' (known: {sorted(set(table))})")
    return table[key]


def _energy_factor(unit, where: str) -> float:
    return _unit_factor(ENERGY_UNITS, "energy", unit, where)


def _distance_factor(unit, where: str) -> float:
    return _unit_factor(DISTANCE_UNITS, "distance", unit, where)


def _force_factor(unit, where: str) -> float:
    """``'hartree/bohr'``, ``'kcal/mol/ang'``, ``('ev', 'ang')`` ... -> factor to eV/Å."""
    if isinstance(unit, (tuple, list)) and len(unit) == 2:
        energy, distance = unit
    else:
        text = _norm_unit(unit)
        if "/" not in text:
            raise OpenQDCError(f"{where}: unknown force unit '{unit}' "
                               f"(use '<energy unit>/<distance unit>', e.g. 'hartree/bohr')")
        energy, distance = text.rsplit("/", 1)
    try:
        return _energy_factor(energy, where) / _distance_factor(distance, where)
    except OpenQDCError as exc:
        raise OpenQDCError(f"{where}: unknown force unit '{unit}' ({exc})") from exc


# ----------------------------------------------------------------------------- layout

def _resolve_dir(path: PathLike) -> Path:
    path = Path(path)
    if not path.exists():
        raise OpenQDCError(f"{path}: no such openQDC dataset directory")
    if not path.is_dir():
        raise OpenQDCError(f"{path}: expected an openQDC dataset directory "
                           f"(<cache>/<name> or its preprocessed/ folder), found a file")
    if not (path / "atomic_inputs.mmap").exists() and (path / "preprocessed").is_dir():
        path = path / "preprocessed"
    if (path / "atom_data_and_positions.mmap").exists():
        raise OpenQDCError(f"{path}: pre-release openQDC layout (atom_data_and_positions.mmap, "
                           f"smiles.npz) is not supported; re-preprocess with a released openQDC")
    if not (path / "atomic_inputs.mmap").exists() and (path / "atomic_inputs.zip").exists():
        raise OpenQDCError(f"{path}: openQDC zarr layout (*.zip, metadata.zip) is not supported; "
                           f"only the memmap layout (*.mmap + props.pkl) is read")
    missing = [f for f in DATA_FILES if not (path / f).is_file()]
    if missing:
        raise OpenQDCError(f"{path}: not an openQDC preprocessed dataset: missing "
                           f"{', '.join(missing)} (expected {', '.join(DATA_FILES)}"
                           f" and optionally forces.mmap)")
    return path


def _dataset_name(prep: Path) -> str:
    return prep.parent.name if prep.name == "preprocessed" else prep.name


def _memmap(path: Path, dtype, row_shape: tuple, what: str) -> np.ndarray:
    itemsize = np.dtype(dtype).itemsize * int(np.prod(row_shape))
    size = path.stat().st_size
    if size == 0:
        return np.zeros((0, *row_shape), dtype=dtype)
    if size % itemsize:
        raise OpenQDCError(f"{path}: shape mismatch: {size} bytes is not a whole number of "
                           f"{what} rows of shape {row_shape} {np.dtype(dtype).name}")
    return np.memmap(path, mode="r", dtype=dtype).reshape(-1, *row_shape)


def _typical_fraction(values: np.ndarray) -> float:
    """Fraction of values that look like energies: 0, NaN (openQDC's "missing") or
    1e-6 <= |x| < 1e9. Bytes of the other float width read this way mostly are not."""
    with np.errstate(invalid="ignore", over="ignore"):   # junk bytes may be signalling NaNs
        values = np.asarray(values, dtype=np.float64).ravel()
        if values.size == 0:
            return 0.0
        mag = np.abs(values)
        typical = np.isnan(values) | (mag == 0) | ((mag >= 1e-6) & (mag < 1e9))
    return float(typical.mean())


def _energies_dtype(path: Path, n_structures: int, props: dict, known: dict, energy_dtype):
    """Pick float32/float64 for the headerless energies.mmap; return (dtype, n_methods)."""
    size = path.stat().st_size
    if n_structures == 0 or size % n_structures:
        raise OpenQDCError(f"{path}: shape mismatch: {size} bytes for {n_structures} structures")
    per_structure = size // n_structures
    if energy_dtype is not None:
        dtype = np.dtype(energy_dtype)
        if dtype not in (np.float32, np.float64) or per_structure % dtype.itemsize:
            raise OpenQDCError(f"{path}: energy_dtype={energy_dtype!r} does not fit "
                               f"{per_structure} bytes per structure")
        return dtype, per_structure // dtype.itemsize
    if "n_atoms_ptr" in props:      # openQDC interaction datasets keep float32 energies
        if per_structure % 4 == 0:
            return np.dtype(np.float32), per_structure // 4
    methods = known.get("energy_methods")
    if methods:
        itemsize = per_structure / len(methods)
        if itemsize in (4, 8):
            return np.dtype(f"f{int(itemsize)}"), len(methods)
        raise OpenQDCError(f"{path}: shape mismatch: {per_structure} bytes per structure, "
                           f"expected {len(methods)} float32 or float64 energies")
    if per_structure % 4:
        raise OpenQDCError(f"{path}: shape mismatch: {per_structure} bytes per structure is "
                           f"not a whole number of float32/float64 energies")
    if per_structure % 8:
        return np.dtype(np.float32), per_structure // 4
    # ambiguous: k float64 values or 2k float32 values; look at the numbers
    sample = min(n_structures, 20000)
    raw = np.fromfile(path, dtype=np.uint8, count=sample * per_structure)
    as64 = raw.view(np.float64)
    as32 = raw.view(np.float32)
    frac64 = _typical_fraction(as64)
    pairs = as32.reshape(-1, 2)
    # float64 values upcast from float32 have all-zero low words (little endian: column 0)
    upcast = bool((pairs[:, 0] == 0).all() and (pairs[:, 1] != 0).any())
    frac32 = 0.0 if upcast else _typical_fraction(as32)
    if frac64 == 1.0 and frac32 < 0.9 and not np.isnan(as64).all():
        return np.dtype(np.float64), per_structure // 8
    if frac32 == 1.0 and frac64 < 0.9 and not np.isnan(as32).all():
        return np.dtype(np.float32), per_structure // 4
    raise OpenQDCError(
        f"{path}: cannot tell whether energies.mmap holds {per_structure // 8} float64 or "
        f"{per_structure // 4} float32 energies per structure (openQDC writes no header; current "
        f"potential datasets use float64, older releases and interaction datasets float32); "
        f"pass energy_dtype='float64' or 'float32'")


def _median_shortest_distance(positions: np.ndarray, ranges: np.ndarray, limit: int = 200):
    """Median over (up to ``limit``) multi-atom structures of the shortest interatomic distance."""
    shortest = []
    for start, end in ranges:
        if end - start < 2:
            continue
        pos = np.asarray(positions[start:end], dtype=np.float64)
        d = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
        d[np.diag_indices_from(d)] = np.inf
        shortest.append(d.min())
        if len(shortest) >= limit:
            break
    return float(np.median(shortest)) if shortest else None


# ----------------------------------------------------------------------------- reader

def read_openqdc(path: PathLike, energy_method: Union[int, str] = 0,
                 energy_unit: Optional[str] = None, distance_unit: Optional[str] = None,
                 force_unit=None, max_structures: Optional[int] = None, *,
                 energy_dtype: Optional[str] = None, force_method: Optional[int] = None,
                 read_forces: bool = True, dataset: Optional[str] = None) -> list[AtomicData]:
    """Structures of an openQDC preprocessed dataset as validated `AtomicData` (eV, Å, eV/Å).

    Parameters
    ----------
    path:
        ``<cache>/<dataset>`` or its ``preprocessed/`` folder (memmap layout).
    energy_method:
        Column of ``energies.mmap`` (openQDC's ``__energy_methods__`` order), or the method name
        for datasets in `KNOWN_DATASETS`.
    energy_unit, distance_unit, force_unit:
        The dataset's native units (openQDC's ``__energy_unit__``, ``__distance_unit__``,
        ``__forces_unit__``): energy ``hartree``/``ev``/``mev``/``kcal/mol``/``kj/mol``/``ryd``,
        distance ``ang``/``bohr``/``nm``, forces ``<energy>/<distance>`` (e.g.
        ``'hartree/bohr'``). openQDC does not store units on disk: they are required unless the
        dataset is in `KNOWN_DATASETS`; explicit values override the table.
    max_structures:
        Return at most this many structures (the first ones, in file order).
    energy_dtype:
        ``'float32'`` or ``'float64'`` for ``energies.mmap``; inferred when omitted (from the
        known method count, ``n_atoms_ptr`` in props.pkl, the file size, or by checking which
        reading gives plausible numbers; an error asks for it when that is still ambiguous).
    force_method:
        Column of ``forces.mmap`` to use. By default the column matching ``energy_method``:
        the same index when there are as many force as energy columns, or the position among
        the ``force_mask`` methods for known datasets; otherwise an error asks for it.
    read_forces:
        False ignores ``forces.mmap`` (then ``force_unit`` is not needed).
    dataset:
        Name for the `KNOWN_DATASETS` lookup; defaults to the directory name (the openQDC
        dataset's ``__name__``).

    Conventions: total charge per structure = sum of the formal-charge column of
    ``atomic_inputs`` (many openQDC datasets write zeros there, so 0 then means "not recorded");
    spin is not stored by openQDC and is left 0 ("not given"); structures are isolated (pbc
    False, zero cell). Structures whose selected energy is NaN (openQDC's "missing") are
    skipped; NaN forces give ``forces=None`` for that structure. Energies are whatever openQDC
    stored (total energies for most datasets), converted to eV without any shift.
    """
    prep = _resolve_dir(path)
    name = dataset or _dataset_name(prep)
    known = KNOWN_DATASETS.get(name.lower(), {})
    props = load_props(prep / "props.pkl")

    atomic = _memmap(prep / "atomic_inputs.mmap", np.float32, (NB_ATOMIC_FEATURES,),
                     "atomic_inputs")
    ranges = _memmap(prep / "position_idx_range.mmap", np.int32, (2,), "position_idx_range")
    n_atoms_total, n_structures = atomic.shape[0], ranges.shape[0]
    if n_structures == 0:
        raise OpenQDCError(f"{prep}: the dataset contains no structures "
                           f"(position_idx_range.mmap is empty)")
    ranges_np = np.asarray(ranges, dtype=np.int64)
    starts, ends = ranges_np[:, 0], ranges_np[:, 1]
    if (starts < 0).any() or (ends > n_atoms_total).any() or (ends <= starts).any():
        bad = int(np.nonzero((starts < 0) | (ends > n_atoms_total) | (ends <= starts))[0][0])
        raise OpenQDCError(f"{prep / 'position_idx_range.mmap'}: shape mismatch: structure {bad} "
                           f"has atom range [{starts[bad]}, {ends[bad]}) outside the "
                           f"{n_atoms_total} rows of atomic_inputs.mmap")
    if ends[-1] != n_atoms_total:
        raise OpenQDCError(f"{prep}: shape mismatch: position_idx_range ends at atom {ends[-1]} "
                           f"but atomic_inputs.mmap has {n_atoms_total} atoms")

    decoded = {}
    for key in ("name", "subset", "n_atoms", "n_atoms_ptr"):
        if key in props:
            decoded[key] = _decode_prop(props[key]).reshape(-1)
            if decoded[key].shape[0] != n_structures:
                raise OpenQDCError(f"{prep / 'props.pkl'}: shape mismatch: '{key}' has "
                                   f"{decoded[key].shape[0]} entries for {n_structures} structures")
    counts = ends - starts
    if "n_atoms" in decoded and not np.array_equal(decoded["n_atoms"].astype(np.int64), counts):
        bad = int(np.nonzero(decoded["n_atoms"].astype(np.int64) != counts)[0][0])
        raise OpenQDCError(f"{prep}: shape mismatch: props.pkl n_atoms[{bad}] = "
                           f"{decoded['n_atoms'][bad]} but position_idx_range gives "
                           f"{ends[bad] - starts[bad]} atoms")

    e_dtype, n_methods = _energies_dtype(prep / "energies.mmap", n_structures, props, known,
                                         energy_dtype)
    energies = np.memmap(prep / "energies.mmap", mode="r", dtype=e_dtype).reshape(n_structures,
                                                                                 n_methods)

    # energy method
    methods = known.get("energy_methods")
    if isinstance(energy_method, str):
        if not methods:
            raise OpenQDCError(f"{prep}: energy method names are not stored on disk and "
                               f"'{name}' is not a known dataset; pass energy_method as a column "
                               f"index (0..{n_methods - 1})")
        lowered = [m.lower() for m in methods]
        if energy_method.lower() not in lowered:
            raise OpenQDCError(f"{prep}: unknown energy method '{energy_method}' for {name} "
                               f"(known: {list(methods)})")
        method_index = lowered.index(energy_method.lower())
    else:
        method_index = int(energy_method)
    if not 0 <= method_index < n_methods:
        raise OpenQDCError(f"{prep}: energy_method {energy_method} out of range: energies.mmap "
                           f"has {n_methods} methods (0..{n_methods - 1})")

    # forces
    forces = None
    forces_path = prep / "forces.mmap"
    if read_forces and forces_path.exists():
        size = forces_path.stat().st_size
        per_method = n_atoms_total * 3 * 4
        if size == 0 or size % per_method:
            raise OpenQDCError(f"{forces_path}: shape mismatch: {size} bytes is not "
                               f"({n_atoms_total}, 3, k) float32")
        n_force = size // per_method
        forces = np.memmap(forces_path, mode="r", dtype=np.float32).reshape(n_atoms_total, 3,
                                                                            n_force)
        if force_method is not None:
            force_col = int(force_method)
            if not 0 <= force_col < n_force:
                raise OpenQDCError(f"{forces_path}: force_method {force_method} out of range "
                                   f"(0..{n_force - 1})")
        elif known.get("force_mask") and len(known["force_mask"]) == n_methods \
                and sum(known["force_mask"]) == n_force:
            mask = known["force_mask"]
            force_col = sum(mask[:method_index]) if mask[method_index] else None
        elif n_force == n_methods:
            force_col = method_index
        else:
            raise OpenQDCError(f"{forces_path}: {n_force} force columns for {n_methods} energy "
                               f"methods; openQDC keeps the method-to-column map in the dataset "
                               f"class, so pass force_method=<column> (or read_forces=False)")
        if force_col is None:
            forces = None

    # units
    where = str(prep)
    e_unit = energy_unit if energy_unit is not None else known.get("energy_unit")
    d_unit = distance_unit if distance_unit is not None else known.get("distance_unit")
    if e_unit is None or d_unit is None:
        need = [n for n, u in (("energy_unit", e_unit), ("distance_unit", d_unit)) if u is None]
        raise OpenQDCError(
            f"{prep}: units are not recorded in openQDC's preprocessed files and '{name}' is not "
            f"a known dataset; pass {' and '.join(need)} (the openQDC class's __energy_unit__ / "
            f"__distance_unit__, e.g. energy_unit='hartree', distance_unit='ang')")
    e_factor = _energy_factor(e_unit, where)
    d_factor = _distance_factor(d_unit, where)
    f_factor = None
    if forces is not None:
        f_unit = force_unit
        if f_unit is None and known.get("energy_unit"):   # class units known: use its forces
            f_unit = known.get("force_unit") or f"{_norm_unit(e_unit)}/{_norm_unit(d_unit)}"
        if f_unit is None:
            raise OpenQDCError(
                f"{prep}: forces.mmap is present but its unit is not recorded on disk; pass "
                f"force_unit (the openQDC class's __forces_unit__, e.g. 'hartree/bohr' or "
                f"'hartree/ang'), or read_forces=False")
        f_factor = _force_factor(f_unit, where)

    # geometry sanity check: bohr coordinates read as Å give ~2 Å shortest bonds, and vice versa
    shortest = _median_shortest_distance(atomic[:, 2:], ranges_np)
    if shortest is not None:
        shortest *= d_factor
        if not 0.5 <= shortest <= 1.8:
            hint = ("coordinates look like bohr" if shortest > 1.8 else
                    "coordinates look like Å read as bohr or nm")
            message = (f"{prep}: the median shortest interatomic distance is {shortest:.2f} Å "
                       f"with distance_unit='{d_unit}': {hint}; check distance_unit")
            if distance_unit is None:   # the unit came from KNOWN_DATASETS, not the caller
                raise OpenQDCError(message + " (pass distance_unit explicitly to override)")
            warnings.warn(message, stacklevel=2)

    use_charge_column = known.get("charge_column", True)
    if not use_charge_column:
        warnings.warn(f"{prep}: openQDC's {name} stores core-electron counts, not formal "
                      f"charges, in atomic_inputs column 1; total charges are set to 0",
                      stacklevel=2)
    elif known.get("charge_note"):
        warnings.warn(f"{prep}: {known['charge_note']}", stacklevel=2)

    names = decoded.get("name")
    limit = n_structures if max_structures is None else max(0, int(max_structures))
    out: list[AtomicData] = []
    for i in range(n_structures):
        if len(out) >= limit:
            break
        energy = float(energies[i, method_index])
        if math.isnan(energy):
            continue
        start, end = int(starts[i]), int(ends[i])
        block = np.asarray(atomic[start:end], dtype=np.float64)
        z = block[:, 0]
        if not np.array_equal(z, np.round(z)):
            raise OpenQDCError(f"{prep / 'atomic_inputs.mmap'}: structure {i} has non-integer "
                               f"atomic numbers {z.tolist()[:10]}: not the [Z, charge, x, y, z] "
                               f"layout")
        charge = float(np.round(block[:, 1].sum())) if use_charge_column else 0.0
        f = None
        if forces is not None:
            fi = np.asarray(forces[start:end, :, force_col], dtype=np.float64)
            if np.isfinite(fi).all():
                f = torch.from_numpy(fi * f_factor)
        label = f"{prep}#{i}"
        if names is not None:
            label += f" ({names[i]})"
        data = AtomicData(
            positions=torch.from_numpy(block[:, 2:] * d_factor),
            numbers=torch.from_numpy(z.astype(np.int64)),
            cell=torch.zeros(3, 3, dtype=torch.float64),
            pbc=torch.zeros(3, dtype=torch.bool),
            charge=charge, spin=0.0,
            energy=energy * e_factor,
            forces=f,
            name=label,
        )
        out.append(data.validate())
    return out


def openqdc_to_file(path: PathLike, out_path: PathLike, overwrite: bool = False,
                    **kwargs) -> int:
    """Convert an openQDC dataset to extxyz / HDF5 (by ``out_path`` suffix) for ``mlip-attn fit``.

    ``kwargs`` go to `read_openqdc`. Returns the number of structures written. An existing
    ``out_path`` is refused unless ``overwrite``; missing folders are created; the file is
    written atomically (an interrupted run leaves no partial file).
    """
    from .io import file_format, write_structures
    file_format(out_path)
    if Path(out_path).exists() and not overwrite:
        raise OpenQDCError(f"{out_path}: already exists; pass --overwrite to replace it "
                           f"(nothing was written)")
    structures = read_openqdc(path, **kwargs)
    if not structures:
        raise OpenQDCError(f"{path}: no structures to write (all selected energies are missing?)")
    write_structures(out_path, structures)
    return len(structures)
