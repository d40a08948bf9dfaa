"""Read openQDC preprocessed datasets (memmaps + ``props.pkl``) without installing openQDC.

openQDC (github.com/OpenDrugDiscovery/openQDC) caches each dataset it has preprocessed as
``<cache>/<dataset>/preprocessed/`` (ANI, QMX, PubChemQC, QM1B and ProteinFragments nest one
more level, e.g. ``<cache>/ani/preprocessed/ani1x/``):

* ``atomic_inputs.mmap``      float32 (N_atoms_total, 5): [atomic number, charge column, x, y, z]
* ``position_idx_range.mmap`` int32   (N_structures, 2): [start, end) rows of atomic_inputs
* ``energies.mmap``           (N_structures, n_energy_methods) float64, or float32 for the
                              classes that say so (interaction datasets, NablaDFT, PubChemQC)
* ``forces.mmap``             float32 (N_atoms_total, 3, n_force_methods) when the class has
                              force methods (its ``__force_mask__``)
* ``props.pkl``               ``name`` and ``subset`` as ``np.unique(..., return_inverse=True)``,
                              ``n_atoms``, ``n_atoms_ptr`` for interaction datasets

The memmaps have no header and no units: openQDC's dataset class supplies dtypes, shapes, units,
the force sign and what the charge column means. `openqdc_conventions.DATASETS` holds that for
every class openQDC ships; a folder whose name is not there is refused unless the caller gives
the units (and, if the file holds gradients, ``forces_are_gradients=True``).

What is written: energies in eV (``energy_type="total"``: the stored total energies;
``"formation"``: minus openQDC's isolated-atom energies of the method, as its default
``energy_type="formation"`` does), positions in Å, forces = -dE/dR in eV/Å, the total charge
in e, ``subset`` as ``config_type``.
"""
from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch

from .atomic_data import AtomicData
from .openqdc_conventions import DATASETS, UNIT_FACTORS, Conventions, atom_energies, \
    conventions_for
from .openqdc_layout import PathLike, dataset_name, energies_dtype, median_shortest_distance, \
    memmap, resolve_dir
from .openqdc_pickle import OpenQDCError, decode_prop, load_props
from .openqdc_write import openqdc_summary, write_with_info

__all__ = ["OpenQDCError", "DATASETS", "read_openqdc", "openqdc_to_file", "openqdc_summary",
           "load_props",
           "HARTREE_TO_EV", "BOHR_TO_ANGSTROM", "KCAL_MOL_TO_EV"]

# openQDC's own factors (openqdc/utils/units.py) for the units its datasets use
HARTREE_TO_EV = UNIT_FACTORS["energy_to_ev"]["hartree"]            # 27.211386246
KCAL_MOL_TO_EV = UNIT_FACTORS["energy_to_ev"]["kcal/mol"]          # 0.0433641
BOHR_TO_ANGSTROM = UNIT_FACTORS["distance_to_ang"]["bohr"]         # 0.52917721092
ENERGY_UNITS = {  # unit name (lower case, openQDC spelling + aliases) -> eV
    "hartree": HARTREE_TO_EV, "ha": HARTREE_TO_EV, "eh": HARTREE_TO_EV, "au": HARTREE_TO_EV,
    "ev": 1.0, "mev": 1e-3,            # openQDC's own mev->ev factor is 1e-4 (a typo); no
    "kcal/mol": KCAL_MOL_TO_EV,        # dataset uses mev
    "kj/mol": UNIT_FACTORS["energy_to_ev"]["kj/mol"],
    "ryd": UNIT_FACTORS["energy_to_ev"]["ryd"], "rydberg": UNIT_FACTORS["energy_to_ev"]["ryd"],
}
DISTANCE_UNITS = {"ang": 1.0, "angstrom": 1.0, "a": 1.0, "å": 1.0, "bohr": BOHR_TO_ANGSTROM,
                  "nm": 10.0}
ENERGY_TYPES = ("total", "formation")
MAX_CHARGE = 10   # openQDC's isolated-atom tables cover formal charges -10..10


def _norm_unit(unit) -> str:
    return str(unit).strip().lower().replace(" ", "").replace("/particle", "")


def _factor(table: dict, kind: str, unit, where: str) -> float:
    key = _norm_unit(unit)
    if key not in table:
        raise OpenQDCError(f"{where}: unknown {kind} unit '{unit}' (known: {sorted(set(table))})")
    return table[key]


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
        return (_factor(ENERGY_UNITS, "energy", energy, where)
                / _factor(DISTANCE_UNITS, "distance", distance, where))
    except OpenQDCError as exc:
        raise OpenQDCError(f"{where}: unknown force unit '{unit}' ({exc})") from exc


def _conventions(prep: Path, name: str, energy_unit, distance_unit, force_unit,
                 forces_are_gradients) -> Conventions:
    """The dataset's conventions; for an unknown name, the caller's units or a refusal."""
    known = conventions_for(name)
    if known is not None:
        if forces_are_gradients is not None and (known.force_sign < 0) != forces_are_gradients:
            raise OpenQDCError(f"{prep}: openQDC's {known.openqdc_class} stores "
                               f"{'gradients' if known.force_sign < 0 else 'forces'}; "
                               f"forces_are_gradients={forces_are_gradients} contradicts it")
        return known
    if energy_unit is None or distance_unit is None:
        need = [n for n, u in (("energy_unit", energy_unit), ("distance_unit", distance_unit))
                if u is None]
        raise OpenQDCError(
            f"{prep}: '{name}' is not an openQDC dataset whose conventions are known (known: "
            f"{', '.join(sorted(DATASETS))}); units are not recorded on disk, so pass "
            f"{' and '.join(need)} (the class's __energy_unit__ / __distance_unit__), or "
            f"dataset=<known name> if the folder was renamed")
    return Conventions(name=name, openqdc_class="unknown", energy_unit=energy_unit,
                       distance_unit=distance_unit, force_unit=force_unit or "",
                       energy_methods=(), force_mask=(), energies_dtype="",
                       force_sign=-1.0 if forces_are_gradients else 1.0, known=False)


def _formation_table(conv: Conventions, method: str, prep: Path) -> dict:
    if conv.interaction:
        raise OpenQDCError(f"{prep}: {conv.openqdc_class} holds interaction energies; "
                           f"energy_type='formation' does not apply (use 'total')")
    if conv.charge_column == "core_electrons":
        raise OpenQDCError(f"{prep}: {conv.openqdc_class} stores core-electron counts, not "
                           f"charges, so isolated-atom energies cannot be matched; use 'total'")
    table = atom_energies(method) if conv.known else None
    if table is None:
        raise OpenQDCError(f"{prep}: openQDC has no isolated-atom energies for '{method}' "
                           f"(it would subtract zeros); use energy_type='total'")
    return table


def _name_of(raw, converter) -> str:
    text = raw.decode("ascii", "replace") if isinstance(raw, bytes) else str(raw)
    if converter is None or converter[0] == "decode":
        return text
    split_on, join_with = converter
    return join_with.join(text.split(split_on)[:-1])


def read_openqdc(path: PathLike, energy_method: Union[int, str] = 0,
                 energy_unit: Optional[str] = None, distance_unit: Optional[str] = None,
                 force_unit=None, max_structures: Optional[int] = None, *,
                 energy_dtype: Optional[str] = None, force_method: Union[int, str, None] = None,
                 read_forces: bool = True, dataset: Optional[str] = None,
                 energy_type: str = "total", forces_are_gradients: Optional[bool] = None,
                 return_info: bool = False):
    """Structures of an openQDC preprocessed dataset as validated `AtomicData` (eV, Å, eV/Å).

    Parameters
    ----------
    path: ``<cache>/<dataset>``, its ``preprocessed/`` folder, or a nested one
        (``<cache>/ani/preprocessed/ani1x``).
    energy_method: the energy method, by name (``'wb97x/6-31g*'``, case-insensitive) or column
        index (an int, or a string of digits, in openQDC's ``energy_methods`` order).
    energy_unit, distance_unit, force_unit: only for a dataset whose conventions are unknown
        (they override the table otherwise, e.g. ``distance_unit='bohr'`` for an older SN2RXN).
    max_structures: at most this many structures (the first ones, in file order).
    energy_dtype: ``'float32'``/``'float64'`` for ``energies.mmap``; from the class, or guessed
        for unknown datasets.
    force_method: for an unknown dataset, the ``forces.mmap`` column (required when there are
        not as many force as energy columns); for a known one, it must name the energy
        method's own forces (energies and forces of two methods are never mixed).
    read_forces: False writes no forces.
    dataset: the openQDC dataset name (``__name__``) when the folder was renamed.
    energy_type: ``'total'`` (stored energies) or ``'formation'`` (minus openQDC's isolated-atom
        energies of the method, per atom and formal charge).
    forces_are_gradients: for an unknown dataset, True if ``forces.mmap`` holds dE/dR.
    return_info: also return, per structure, ``{"config_type": subset, "openqdc_name": name,
        "openqdc_index": i}``.

    Total charge: the sum of the formal-charge column (interaction datasets: monomer A's plus
    monomer B's charge); datasets that record no charges give 0. Spin is not stored by openQDC
    (0 = not given). Structures are isolated. Structures whose energy is NaN (openQDC's
    "missing") are skipped; NaN forces give ``forces=None`` for that structure.
    """
    if energy_type not in ENERGY_TYPES:
        raise OpenQDCError(f"energy_type must be one of {ENERGY_TYPES}, got {energy_type!r}")
    prep = resolve_dir(path)
    name = (dataset or dataset_name(prep)).lower()
    conv = _conventions(prep, name, energy_unit, distance_unit, force_unit, forces_are_gradients)
    props = load_props(prep / "props.pkl")

    atomic = memmap(prep / "atomic_inputs.mmap", np.float32, (5,), "atomic_inputs")
    ranges = memmap(prep / "position_idx_range.mmap", np.int32, (2,), "position_idx_range")
    n_atoms_total, n_structures = atomic.shape[0], ranges.shape[0]
    if n_structures == 0:
        raise OpenQDCError(f"{prep}: the dataset contains no structures "
                           f"(position_idx_range.mmap is empty)")
    ranges_np = np.asarray(ranges, dtype=np.int64)
    starts, ends = ranges_np[:, 0], ranges_np[:, 1]
    bad = (starts < 0) | (ends > n_atoms_total) | (ends <= starts)
    if bad.any():
        b = int(np.nonzero(bad)[0][0])
        raise OpenQDCError(f"{prep / 'position_idx_range.mmap'}: shape mismatch: structure {b} "
                           f"has atom range [{starts[b]}, {ends[b]}) outside the "
                           f"{n_atoms_total} rows of atomic_inputs.mmap")
    if ends[-1] != n_atoms_total:
        raise OpenQDCError(f"{prep}: shape mismatch: position_idx_range ends at atom {ends[-1]} "
                           f"but atomic_inputs.mmap has {n_atoms_total} atoms")
    decoded = {}
    for key in ("name", "subset", "n_atoms", "n_atoms_ptr"):
        if key in props:
            decoded[key] = decode_prop(props[key]).reshape(-1)
            if decoded[key].shape[0] != n_structures:
                raise OpenQDCError(f"{prep / 'props.pkl'}: shape mismatch: '{key}' has "
                                   f"{decoded[key].shape[0]} entries for {n_structures} structures")
    if "n_atoms" in decoded and not np.array_equal(decoded["n_atoms"].astype(np.int64),
                                                   ends - starts):
        b = int(np.nonzero(decoded["n_atoms"].astype(np.int64) != ends - starts)[0][0])
        raise OpenQDCError(f"{prep}: shape mismatch: props.pkl n_atoms[{b}] = "
                           f"{decoded['n_atoms'][b]} but position_idx_range gives "
                           f"{ends[b] - starts[b]} atoms")

    e_dtype, n_methods = energies_dtype(prep / "energies.mmap", n_structures, props,
                                        conv if conv.known else None, energy_dtype)
    energies = np.memmap(prep / "energies.mmap", mode="r", dtype=e_dtype).reshape(n_structures,
                                                                                 n_methods)
    method_names = conv.energy_methods or tuple(f"column {i}" for i in range(n_methods))
    if isinstance(energy_method, str) and not energy_method.strip().isdigit() and not conv.known:
        raise OpenQDCError(f"{prep}: energy method names are not stored on disk and '{name}' is "
                           f"not a known dataset; pass energy_method as a column index "
                           f"(0..{n_methods - 1})")
    try:
        method_index = conv.method_index(energy_method) if conv.known else int(energy_method)
    except KeyError as exc:
        raise OpenQDCError(f"{prep}: {exc.args[0]}") from None
    if not 0 <= method_index < n_methods:
        raise OpenQDCError(f"{prep}: energy_method {energy_method} out of range: energies.mmap "
                           f"has {n_methods} methods (0..{n_methods - 1})")
    method = method_names[method_index]

    forces, force_col = _select_forces(prep, conv, method_index, n_methods, n_atoms_total,
                                       force_method, read_forces)
    where = str(prep)
    e_unit = energy_unit if energy_unit is not None else conv.energy_unit
    d_unit = distance_unit if distance_unit is not None else conv.distance_unit
    e_factor = _factor(ENERGY_UNITS, "energy", e_unit, where)
    d_factor = _factor(DISTANCE_UNITS, "distance", d_unit, where)
    f_factor = None
    if forces is not None:
        f_unit = force_unit if force_unit is not None else conv.force_unit
        if conv.known and force_unit is None and (energy_unit or distance_unit):
            f_unit = f"{_norm_unit(e_unit)}/{_norm_unit(d_unit)}"   # overridden class units
        if not f_unit:
            raise OpenQDCError(
                f"{prep}: forces.mmap is present but its unit is not recorded on disk; pass "
                f"force_unit (the openQDC class's __forces_unit__, e.g. 'hartree/bohr' or "
                f"'hartree/ang'), or read_forces=False")
        f_factor = _force_factor(f_unit, where) * conv.force_sign * conv.force_factor

    shortest = median_shortest_distance(atomic[:, 2:], ranges_np)
    if shortest is not None and not 0.5 <= shortest * d_factor <= 1.8:
        hint = ("coordinates look like bohr" if shortest * d_factor > 1.8 else
                "coordinates look like Å read as bohr or nm")
        message = (f"{prep}: the median shortest interatomic distance is "
                   f"{shortest * d_factor:.2f} Å with distance_unit='{d_unit}': {hint}; check "
                   f"distance_unit")
        if distance_unit is None:
            raise OpenQDCError(message + " (pass distance_unit explicitly to override)")
        warnings.warn(message, stacklevel=2)
    if conv.note and (conv.charge_column != "formal" or forces is not None):
        warnings.warn(f"{prep}: {conv.note}", stacklevel=2)

    e0 = _formation_table(conv, method, prep) if energy_type == "formation" else None
    names, subsets, ptr = decoded.get("name"), decoded.get("subset"), decoded.get("n_atoms_ptr")
    limit = n_structures if max_structures is None else max(0, int(max_structures))
    out, info = [], []
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
        column = block[:, 1].astype(np.int64)    # openQDC reads it as int32 too
        if conv.charge_column == "monomer":
            split = int(ptr[i]) if ptr is not None else len(z)
            charge = float(column[0] + (column[split] if split < len(z) else 0))
        elif conv.charge_column == "core_electrons":
            charge = 0.0
        else:
            charge = float(column.sum())
        energy *= e_factor
        if e0 is not None:
            energy -= _isolated_sum(e0, z.astype(np.int64), column, method, prep, i)
        f = None
        if forces is not None:
            fi = np.asarray(forces[start:end, :, force_col], dtype=np.float64)
            if np.isfinite(fi).all():
                f = torch.from_numpy(fi * f_factor)
        label = _name_of(names[i], conv.name_converter) if names is not None else ""
        out.append(AtomicData(
            positions=torch.from_numpy(block[:, 2:] * d_factor),
            numbers=torch.from_numpy(z.astype(np.int64)),
            cell=torch.zeros(3, 3, dtype=torch.float64), pbc=torch.zeros(3, dtype=torch.bool),
            charge=charge, spin=0.0, energy=energy, forces=f,
            name=f"{prep}#{i}" + (f" ({label})" if label else "")).validate())
        info.append({"config_type": _name_of(subsets[i], None) if subsets is not None else "",
                     "openqdc_name": label, "openqdc_index": i})
    return (out, info) if return_info else out


def _select_forces(prep, conv, method_index, n_methods, n_atoms_total, force_method, read):
    """(forces memmap (N, 3, k) or None, column) for the chosen energy method."""
    path = prep / "forces.mmap"
    if not read or not path.exists():
        return None, None
    size, per_method = path.stat().st_size, n_atoms_total * 3 * 4
    if size == 0 or size % per_method:
        raise OpenQDCError(f"{path}: shape mismatch: {size} bytes is not "
                           f"({n_atoms_total}, 3, k) float32")
    n_force = size // per_method
    forces = np.memmap(path, mode="r", dtype=np.float32).reshape(n_atoms_total, 3, n_force)
    if conv.known:
        if len(conv.force_methods) != n_force:
            raise OpenQDCError(f"{path}: {n_force} force columns, but openQDC's "
                               f"{conv.openqdc_class} has {len(conv.force_methods)} force "
                               f"methods {list(conv.force_methods)}")
        column = conv.force_column(method_index)
        if force_method is not None:     # a method name, or a forces.mmap column index
            if isinstance(force_method, str) and not force_method.strip().isdigit():
                try:
                    asked = conv.force_column(conv.method_index(force_method))
                except KeyError as exc:
                    raise OpenQDCError(f"{path}: {exc.args[0]}") from None
            else:
                asked = int(force_method)
            if asked != column:
                have = (f"its forces are column {column}" if column is not None else
                        f"it has no forces (force methods: {list(conv.force_methods)})")
                raise OpenQDCError(
                    f"{path}: force_method {force_method!r} is not the forces of energy method "
                    f"'{conv.energy_methods[method_index]}' ({have}); energies and forces of "
                    f"different methods are not consistent: pick the energy method instead, "
                    f"or read_forces=False")
        return (forces, column) if column is not None else (None, None)
    if force_method is not None:
        column = int(force_method)
        if not 0 <= column < n_force:
            raise OpenQDCError(f"{path}: force_method {force_method} out of range "
                               f"(0..{n_force - 1})")
        return forces, column
    if n_force == n_methods:
        return forces, method_index
    raise OpenQDCError(f"{path}: {n_force} force columns for {n_methods} energy methods; "
                       f"openQDC keeps the method-to-column map in the dataset class, so pass "
                       f"force_method=<column> (or read_forces=False)")


def _isolated_sum(table: dict, numbers, charges, method, prep, index) -> float:
    """Σ over atoms of openQDC's isolated-atom energy (eV) for (Z, formal charge)."""
    total = 0.0
    for z, q in zip(numbers.tolist(), charges.tolist()):
        value = table.get((z, q))
        if value is None:
            raise OpenQDCError(f"{prep}: structure {index}: openQDC has no isolated-atom energy "
                               f"for Z={z} with charge {q:+d} for '{method}' (it would "
                               f"subtract 0); use energy_type='total'")
        total += value
    return total * HARTREE_TO_EV


def openqdc_to_file(path: PathLike, out_path: PathLike, overwrite: bool = False,
                    **kwargs) -> int:
    """Convert an openQDC dataset to extxyz / HDF5 (by ``out_path`` suffix) for ``mlip-attn fit``.

    ``kwargs`` go to `read_openqdc`. extxyz frames carry ``config_type`` (openQDC's ``subset``),
    ``openqdc_name`` and ``openqdc_index`` in ``info``; HDF5 files get them as the string
    datasets ``/config_type`` and ``/openqdc_name``. Returns the number of structures written.
    An existing ``out_path`` is refused unless ``overwrite``; missing folders are created; the
    file is written atomically (an interrupted run leaves no partial file).
    """
    from .io import file_format
    fmt = file_format(out_path)
    if Path(out_path).exists() and not overwrite:
        raise OpenQDCError(f"{out_path}: already exists; pass --overwrite to replace it "
                           f"(nothing was written)")
    structures, info = read_openqdc(path, return_info=True, **kwargs)
    if not structures:
        raise OpenQDCError(f"{path}: no structures to write (all selected energies are missing?)")
    write_with_info(out_path, fmt, structures, info)
    return len(structures)

