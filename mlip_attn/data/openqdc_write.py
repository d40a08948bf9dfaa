"""Write imported openQDC structures with their per-structure strings (``config_type`` =
openQDC's ``subset``, ``openqdc_name``, ``openqdc_index``) next to the usual labels, and say in
one paragraph what was written."""
from __future__ import annotations

import os

import numpy as np

from ..atomic import atomic_path
from .atomic_data import AtomicData
from .labels import LabelKeys
from .openqdc_conventions import conventions_for
from .openqdc_layout import dataset_name, resolve_dir


def write_with_info(path: str | os.PathLike, fmt: str, structures: list[AtomicData],
                    info: list[dict]) -> None:
    """extxyz: the strings go to each frame's ``info``; ASE db: key-value pairs; HDF5
    (mlip-attn format): string datasets ``/config_type``, ``/openqdc_name`` and the int
    dataset ``/openqdc_index`` beside the standard columns. Written atomically."""
    keys = LabelKeys()
    with atomic_path(path) as tmp:
        if fmt == "hdf5":
            import h5py
            from .hdf5 import write_hdf5
            write_hdf5(tmp, structures)
            with h5py.File(tmp, "a") as f:
                text = h5py.string_dtype()
                f.create_dataset("config_type", data=[d["config_type"] for d in info],
                                 dtype=text)
                f.create_dataset("openqdc_name", data=[d["openqdc_name"] for d in info],
                                 dtype=text)
                f.create_dataset("openqdc_index",
                                 data=np.array([d["openqdc_index"] for d in info], np.int64))
            return
        from .io import structure_to_labelled_atoms
        frames = []
        for data, extra in zip(structures, info):
            atoms = structure_to_labelled_atoms(data, keys)
            for key, value in ((keys.config_type, extra["config_type"]),
                               ("openqdc_name", extra["openqdc_name"])):
                if value:
                    atoms.info[key] = value
            atoms.info["openqdc_index"] = int(extra["openqdc_index"])
            frames.append(atoms)
        if fmt == "extxyz":
            import ase.io
            ase.io.write(tmp, frames, format="extxyz")
        else:
            import ase.db
            with ase.db.connect(str(tmp), type="db") as db:
                for atoms in frames:
                    kv = {k: v for k, v in atoms.info.items() if np.isscalar(v)}
                    data = {}
                    if keys.forces in atoms.arrays:
                        data[keys.forces] = atoms.arrays.pop(keys.forces)
                    atoms.info = {}
                    db.write(atoms, key_value_pairs=kv, data=data)


def openqdc_summary(path, energy_method=0,
                    energy_type: str = "total", read_forces: bool = True,
                    dataset=None, **_) -> str:
    """One paragraph on what `openqdc_to_file` writes for these options (for the CLI)."""
    prep = resolve_dir(path)
    conv = conventions_for(dataset or dataset_name(prep))
    if conv is None:
        return ("conventions: given on the command line (unknown dataset); energies in eV, "
                "positions in Å, forces in eV/Å, subset -> config_type")
    index = conv.method_index(energy_method)
    method = conv.energy_methods[index]
    kind = ("interaction energies" if conv.interaction else
            "formation energies (total minus openQDC's isolated-atom energies)"
            if energy_type == "formation" else "total energies")
    if not read_forces or conv.force_column(index) is None:
        forces = "no forces" + ("" if read_forces else " (--no-forces)")
    else:
        sign = "minus the stored gradient" if conv.force_sign < 0 else "the stored forces"
        forces = f"forces = {sign}, {conv.force_unit} -> eV/Å"
    return (f"{conv.name} (openQDC {conv.openqdc_class}): method '{method}', {kind}, "
            f"{conv.energy_unit} -> eV; positions {conv.distance_unit} -> Å; {forces}; "
            f"charge from the {conv.charge_column} charge column; subset -> config_type")
