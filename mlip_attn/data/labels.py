"""Which `ase.Atoms` keys hold reference labels (configurable, MACE-style ``REF_*`` defaults)."""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class LabelKeys:
    """Keys in ``atoms.info`` / ``atoms.arrays`` that hold the reference labels."""

    energy: str = "REF_energy"        # info, eV
    forces: str = "REF_forces"        # arrays, eV/Å
    stress: str = "REF_stress"        # info, eV/Å³ (Voigt-6 or 3x3)
    virials: str = "REF_virials"      # info, eV (3x3 or 9); stress = -virials / volume
    charge: str = "total_charge"      # info, e (falls back to info["charge"])
    spin: str = "total_spin"          # info (falls back to info["spin"])
    # the calculator prefers ASE's own keys, charge and spin, and falls back to these
    config_type: str = "config_type"  # info


def _stress_3x3(value) -> torch.Tensor:
    arr = np.asarray(value, dtype=np.float64).reshape(-1)
    if arr.size == 6:
        from ase.stress import voigt_6_to_full_3x3_stress
        return torch.tensor(voigt_6_to_full_3x3_stress(arr))
    if arr.size == 9:
        return torch.tensor(arr.reshape(3, 3))
    raise ValueError(f"stress must have 6 (Voigt) or 9 components, got {arr.size}")


def _number(info: dict, key: str, what: str, finite: bool = False) -> float:
    """``info[key]`` as a float; a `ValueError` naming the key and ``what`` it holds otherwise
    (``finite``: NaN and inf are refused too)."""
    value = info[key]
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"info[{key!r}] must be a number ({what}), got {value!r}") from None
    if finite and not np.isfinite(number):
        raise ValueError(f"info[{key!r}] must be finite, got {number}")
    return number


def _total(info: dict, preferred: str, aliases: tuple[str, ...], what: str) -> float:
    """A structure's total charge or spin: ``info[preferred]``, else the first alias present
    (``charge``/``total_charge``, ``spin``/``total_spin``), else 0. Where two keys hold
    different values, the preferred one is used and a warning names both."""
    present = [k for k in dict.fromkeys((preferred, *aliases)) if k in info]
    if not present:
        return 0.0
    values = {k: _number(info, k, what, finite=True) for k in present}
    used = present[0]
    others = {k: v for k, v in values.items() if v != values[used]}
    if others:
        warnings.warn(f"atoms.info has {used}={values[used]:g} and "
                      + ", ".join(f"{k}={v:g}" for k, v in others.items())
                      + f", which disagree; using {used!r} ({what})", UserWarning, stacklevel=4)
    return values[used]


def read_labels(atoms, keys: LabelKeys, targets: tuple[str, ...] = ()) -> dict:
    """Labels of one `ase.Atoms` as `AtomicData` keyword arguments (missing ones omitted).
    Values that are not numbers raise a `ValueError` naming the key."""
    info, arrays = atoms.info, atoms.arrays
    out: dict = {}
    if keys.energy in info:
        out["energy"] = _number(info, keys.energy, "energy, eV")
    if keys.forces in arrays:
        out["forces"] = torch.tensor(np.asarray(arrays[keys.forces], dtype=np.float64))
    for key, sign in ((keys.stress, 1.0), (keys.virials, -1.0)):
        if key in info:
            try:
                stress = _stress_3x3(info[key])
            except (TypeError, ValueError) as exc:
                raise ValueError(f"info[{key!r}]: {exc}") from None
            out["stress"] = stress if sign > 0 else -stress / abs(atoms.get_volume())
            break
    out["charge"] = _total(info, keys.charge, ("charge", "total_charge"), "total charge, e")
    out["spin"] = _total(info, keys.spin, ("spin", "total_spin"), "spin multiplicity 2S+1")
    found = {t: _number(info, t, f"target {t!r}") for t in targets if t in info}
    if found:
        out["targets"] = found
    return out
