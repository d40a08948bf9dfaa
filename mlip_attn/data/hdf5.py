"""HDF5 structure files: chunked, appendable, one flat array per quantity.

Schema (format ``mlip-attn-hdf5``, version 1)::

    /                 attrs: format="mlip-attn-hdf5", format_version=1, plus free metadata
    /n_atoms   (B,)   int64       atoms per structure; structure b owns rows
                                  offsets[b]:offsets[b]+n_atoms[b] of the per-atom arrays
    /numbers   (N,)   int16       atomic numbers
    /positions (N,3)  float64 Å
    /forces    (N,3)  float64 eV/Å   (NaN where a structure has no forces)
    /cell      (B,3,3) float64 Å, /pbc (B,3) bool, /charge (B,) e, /spin (B,)
    /energy    (B,)   float64 eV     (NaN = missing)
    /stress    (B,3,3) float64 eV/Å³ (NaN = missing)

All datasets are chunked with unlimited first dimension, so `write_hdf5(..., append=True)` grows
them in place.
"""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import torch

from .atomic_data import AtomicData, DataFileError

FORMAT = "mlip-attn-hdf5"
VERSION = 1
_PER_ATOM = {"numbers": ((), np.int16), "positions": ((3,), np.float64), "forces": ((3,), np.float64)}
_PER_STRUCTURE = {"n_atoms": ((), np.int64), "cell": ((3, 3), np.float64), "pbc": ((3,), bool),
                  "charge": ((), np.float64), "spin": ((), np.float64),
                  "energy": ((), np.float64), "stress": ((3, 3), np.float64)}


def _columns(structures: list[AtomicData]) -> dict[str, np.ndarray]:
    nan3 = lambda n: np.full((n, 3), np.nan)
    return {
        "numbers": np.concatenate([d.numbers.numpy() for d in structures]).astype(np.int16),
        "positions": np.concatenate([d.positions.numpy() for d in structures]),
        "forces": np.concatenate([d.forces.numpy() if d.forces is not None else nan3(d.num_atoms)
                                  for d in structures]),
        "n_atoms": np.array([d.num_atoms for d in structures], dtype=np.int64),
        "cell": np.stack([d.cell.numpy() for d in structures]),
        "pbc": np.stack([d.pbc.numpy() for d in structures]),
        "charge": np.array([d.charge for d in structures], dtype=np.float64),
        "spin": np.array([d.spin for d in structures], dtype=np.float64),
        "energy": np.array([np.nan if d.energy is None else d.energy for d in structures]),
        "stress": np.stack([d.stress.numpy() if d.stress is not None else np.full((3, 3), np.nan)
                            for d in structures]),
    }


def write_hdf5(path: str | Path, structures: list[AtomicData], append: bool = False,
               metadata: dict | None = None) -> None:
    """Write (or append) structures; ``metadata`` goes into the root attributes."""
    path = Path(path)
    columns = _columns(structures)
    mode = "a" if append and path.exists() else "w"
    with h5py.File(path, mode) as f:
        if mode == "w":
            f.attrs["format"] = FORMAT
            f.attrs["format_version"] = VERSION
            for name, (shape, dtype) in {**_PER_ATOM, **_PER_STRUCTURE}.items():
                f.create_dataset(name, shape=(0, *shape), maxshape=(None, *shape), dtype=dtype,
                                 chunks=(4096 if name in _PER_ATOM else 256, *shape))
        else:
            _check_format(f, path)
        for key, value in (metadata or {}).items():
            f.attrs[key] = value
        for name, values in columns.items():
            ds = f[name]
            start = ds.shape[0]
            ds.resize(start + len(values), axis=0)
            ds[start:] = values


def _check_format(f: h5py.File, path: Path) -> None:
    if f.attrs.get("format") != FORMAT:
        raise DataFileError(f"{path}: not an mlip-attn HDF5 file (root attribute format="
                            f"{f.attrs.get('format')!r}, expected {FORMAT!r})")
    if int(f.attrs.get("format_version", -1)) > VERSION:
        raise DataFileError(f"{path}: HDF5 format version {f.attrs['format_version']} is newer "
                            f"than this mlip-attn understands ({VERSION}); upgrade mlip-attn")


def _dataset(f: h5py.File, name: str, path: Path) -> np.ndarray:
    if name not in f:
        raise DataFileError(f"{path}: dataset '{name}' is missing (an mlip-attn HDF5 file has "
                            f"{sorted({**_PER_ATOM, **_PER_STRUCTURE})})")
    values = f[name][()]
    if not (np.issubdtype(values.dtype, np.number) or values.dtype == bool):
        raise DataFileError(f"{path}: dataset '{name}' holds {values.dtype}, not numbers")
    return values


def _check_shapes(cols: dict[str, np.ndarray], path: Path) -> None:
    """Every dataset has the schema's shape for the atom and structure counts of ``n_atoms``."""
    n_atoms = cols["n_atoms"]
    if n_atoms.ndim != 1 or (n_atoms < 0).any():
        raise DataFileError(f"{path}: dataset 'n_atoms' must be one count >= 0 per structure")
    counts = {**{k: int(n_atoms.sum()) for k in _PER_ATOM},
              **{k: len(n_atoms) for k in _PER_STRUCTURE}}
    for name, (shape, _) in {**_PER_ATOM, **_PER_STRUCTURE}.items():
        expected = (counts[name], *shape)
        if cols[name].shape != expected:
            raise DataFileError(f"{path}: dataset '{name}' has shape {cols[name].shape}, "
                                f"expected {expected} ({len(n_atoms)} structures of "
                                f"{int(n_atoms.sum())} atoms in all, by 'n_atoms')")


def read_hdf5_metadata(path: str | Path) -> dict:
    with h5py.File(path, "r") as f:
        return {k: v for k, v in f.attrs.items()}


def read_hdf5(path: str | Path) -> list[AtomicData]:
    """All structures of an mlip-attn HDF5 file."""
    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            _check_format(f, path)
            cols = {name: _dataset(f, name, path) for name in {**_PER_ATOM, **_PER_STRUCTURE}}
    except DataFileError:
        raise
    except Exception as exc:  # h5py raises OSError, KeyError, RuntimeError... for damaged files
        raise DataFileError(f"{path}: not a readable HDF5 file, or a damaged one "
                            f"({type(exc).__name__}: {exc})") from exc
    _check_shapes(cols, path)
    offsets = np.concatenate([[0], np.cumsum(cols["n_atoms"])])
    out = []
    for b in range(len(cols["n_atoms"])):
        lo, hi = offsets[b], offsets[b + 1]
        forces = cols["forces"][lo:hi]
        stress = cols["stress"][b]
        energy = cols["energy"][b]
        out.append(AtomicData(
            positions=torch.from_numpy(cols["positions"][lo:hi].copy()),
            numbers=torch.from_numpy(cols["numbers"][lo:hi].astype(np.int64)),
            cell=torch.from_numpy(cols["cell"][b].copy()),
            pbc=torch.from_numpy(cols["pbc"][b].copy()),
            charge=float(cols["charge"][b]), spin=float(cols["spin"][b]),
            energy=None if np.isnan(energy) else float(energy),
            forces=None if np.isnan(forces).any() else torch.from_numpy(forces.copy()),
            stress=None if np.isnan(stress).any() else torch.from_numpy(stress.copy()),
            name=f"{path}#{b}",
        ))
    return out
