"""Read and write structure files: extxyz (``REF_*`` keys), HDF5 (our schema), ASE db.

`read_structures(path)` picks the format from the extension: ``.xyz``/``.extxyz`` → extxyz,
``.h5``/``.hdf5`` → HDF5, ``.db`` → ASE database. Every error names the file.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .atomic_data import AtomicData, DataFileError
from .labels import LabelKeys

EXTXYZ_SUFFIXES = {".xyz", ".extxyz"}
HDF5_SUFFIXES = {".h5", ".hdf5"}
DB_SUFFIXES = {".db"}


def file_format(path: str | os.PathLike) -> str:
    suffix = Path(path).suffix.lower()
    if suffix in EXTXYZ_SUFFIXES:
        return "extxyz"
    if suffix in HDF5_SUFFIXES:
        return "hdf5"
    if suffix in DB_SUFFIXES:
        return "db"
    raise DataFileError(f"{path}: unknown data file type '{suffix}' "
                        f"(use .xyz/.extxyz, .h5/.hdf5 or .db)")


def read_structures(path: str | os.PathLike, keys: LabelKeys | None = None,
                    targets: tuple[str, ...] = ()) -> list[AtomicData]:
    """All structures in ``path`` as validated `AtomicData` (labels read with ``keys``)."""
    path = Path(path)
    keys = keys or LabelKeys()
    if not path.exists():
        raise DataFileError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise DataFileError(f"{path}: the file is empty")
    fmt = file_format(path)
    if fmt == "hdf5":
        from .hdf5 import read_hdf5
        structures = read_hdf5(path)
    else:
        structures = [AtomicData.from_atoms(atoms, keys, name=f"{path}#{k}", targets=targets)
                      for k, atoms in enumerate(_read_ase(path, fmt, keys))]
    if not structures:
        raise DataFileError(f"{path}: contains no structures")
    for data in structures:
        data.validate()
    return structures


def _read_ase(path: Path, fmt: str, keys: LabelKeys) -> list:
    import ase.io
    if fmt == "db":
        return _read_db(path, keys)
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) not in (b"\n", b"\r"):   # a number cut short would still parse
            raise DataFileError(f"{path}: the last line has no line end, so the file looks "
                                f"truncated (cut within a line); if it is complete, end it "
                                f"with a newline")
    try:
        return ase.io.read(path, index=":", format="extxyz")
    except Exception as exc:  # ase raises many types for malformed files
        raise DataFileError(f"{path}: malformed extxyz file ({type(exc).__name__}: {exc})") from exc


def _read_db(path: Path, keys: LabelKeys) -> list:
    import ase.db
    out = []
    try:
        with ase.db.connect(str(path)) as db:
            for row in db.select():
                atoms = row.toatoms()
                for k, v in row.key_value_pairs.items():
                    atoms.info[k] = v
                for k, v in row.data.items():
                    per_atom = k == keys.forces or (np.ndim(v) == 2 and len(v) == len(atoms))
                    (atoms.arrays if per_atom else atoms.info)[k] = np.asarray(v)  # shapes: validate()
                # results stored by a calculator count as labels when no REF_* keys are present
                if keys.energy not in atoms.info and row.get("energy") is not None:
                    atoms.info[keys.energy] = row.energy
                if keys.forces not in atoms.arrays and row.get("forces") is not None:
                    atoms.arrays[keys.forces] = np.asarray(row.forces)
                if keys.stress not in atoms.info and row.get("stress") is not None:
                    atoms.info[keys.stress] = np.asarray(row.stress)
                out.append(atoms)
    except Exception as exc:
        raise DataFileError(f"{path}: not a readable ASE database ({type(exc).__name__}: {exc})") from exc
    return out


def write_structures(path: str | os.PathLike, structures: list[AtomicData],
                     keys: LabelKeys | None = None, append: bool = False) -> None:
    """Write structures with their labels to extxyz (``REF_*`` keys), HDF5 or ASE db.

    A new file is written atomically (`mlip_attn.atomic`): an interrupted write leaves the old
    file, if any, as it was. ``append`` adds to an existing file in place."""
    path = Path(path)
    fmt = file_format(path)
    if append and path.exists():
        _write(path, fmt, structures, keys or LabelKeys(), append=True)
        return
    from ..atomic import atomic_path
    with atomic_path(path) as tmp:
        _write(tmp, fmt, structures, keys or LabelKeys(), append=False)


def _write(path: Path, fmt: str, structures: list[AtomicData], keys: LabelKeys,
           append: bool) -> None:
    if fmt == "hdf5":
        from .hdf5 import write_hdf5
        write_hdf5(path, structures, append=append)
        return
    atoms_list = [structure_to_labelled_atoms(d, keys) for d in structures]
    if fmt == "extxyz":
        import ase.io
        ase.io.write(path, atoms_list, format="extxyz", append=append)
    else:
        import ase.db
        with ase.db.connect(str(path), type="db") as db:
            for atoms in atoms_list:
                kv = {k: v for k, v in atoms.info.items() if np.isscalar(v)}
                data = {k: v for k, v in atoms.info.items() if not np.isscalar(v)}
                if keys.forces in atoms.arrays:
                    data[keys.forces] = atoms.arrays.pop(keys.forces)
                atoms.info = {}
                db.write(atoms, key_value_pairs=kv, data=data)


def structure_to_labelled_atoms(data: AtomicData, keys: LabelKeys):
    """`ase.Atoms` carrying the labels under ``keys`` (no calculator attached)."""
    from ase import Atoms
    atoms = Atoms(numbers=data.numbers.numpy(), positions=data.positions.numpy(),
                  cell=data.cell.numpy(), pbc=data.pbc.numpy())
    if data.energy is not None:
        atoms.info[keys.energy] = float(data.energy)
    if data.forces is not None:
        atoms.arrays[keys.forces] = data.forces.numpy()
    if data.stress is not None:
        atoms.info[keys.stress] = data.stress.numpy().reshape(9)
    atoms.info[keys.charge] = float(data.charge)
    if data.spin:
        atoms.info[keys.spin] = float(data.spin)
    for k, v in data.targets.items():
        atoms.info[k] = float(v)
    return atoms
