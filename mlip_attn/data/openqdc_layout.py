"""openQDC's on-disk layout: finding the ``preprocessed`` folder, headerless memmaps, the
float32/float64 guess for ``energies.mmap`` of datasets whose class is unknown, and a geometry
check that catches bohr read as Å."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Union

import numpy as np

from .openqdc_pickle import OpenQDCError

PathLike = Union[str, os.PathLike]
DATA_FILES = ("atomic_inputs.mmap", "position_idx_range.mmap", "energies.mmap", "props.pkl")


def resolve_dir(path: PathLike) -> Path:
    """``<cache>/<name>``, ``<cache>/<name>/preprocessed`` or a nested layout such as ANI's
    ``<cache>/ani/preprocessed/ani1x`` -> the folder holding the memmaps."""
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
    if not (path / "atomic_inputs.mmap").exists():
        nested = sorted(p.name for p in path.iterdir() if (p / "atomic_inputs.mmap").exists())
        if nested:   # ANI, QMX, PubChemQC, QM1B, ProteinFragments keep one folder per dataset
            raise OpenQDCError(f"{path}: holds several openQDC datasets ({', '.join(nested)}); "
                               f"pass one of them, e.g. {path / nested[0]}")
    missing = [f for f in DATA_FILES if not (path / f).is_file()]
    if missing:
        raise OpenQDCError(f"{path}: not an openQDC preprocessed dataset: missing "
                           f"{', '.join(missing)} (expected {', '.join(DATA_FILES)}"
                           f" and optionally forces.mmap)")
    return path


def dataset_name(prep: Path) -> str:
    return prep.parent.name if prep.name == "preprocessed" else prep.name


def memmap(path: Path, dtype, row_shape: tuple, what: str) -> np.ndarray:
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


def energies_dtype(path: Path, n_structures: int, props: dict, known, energy_dtype):
    """Pick float32/float64 for the headerless energies.mmap; return (dtype, n_methods).

    ``known``: the dataset's `Conventions` (its class's dtype and method count), or None."""
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
    if known is not None:
        methods, dtype = known.energy_methods, np.dtype(known.energies_dtype)
        if per_structure == len(methods) * dtype.itemsize:
            return dtype, len(methods)
        raise OpenQDCError(f"{path}: shape mismatch: {per_structure} bytes per structure, but "
                           f"openQDC's {known.openqdc_class} writes {len(methods)} {dtype.name} "
                           f"energies ({per_structure / dtype.itemsize:g} here); is this folder "
                           f"another dataset or another openQDC version? pass dataset=<name> or "
                           f"energy_dtype")
    if "n_atoms_ptr" in props:      # openQDC interaction datasets keep float32 energies
        if per_structure % 4 == 0:
            return np.dtype(np.float32), per_structure // 4
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


def median_shortest_distance(positions: np.ndarray, ranges: np.ndarray, limit: int = 200):
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
