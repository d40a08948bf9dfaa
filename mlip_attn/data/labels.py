"""Which `ase.Atoms` keys hold reference labels (configurable, MACE-style ``REF_*`` defaults)."""
from __future__ import annotations

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
    config_type: str = "config_type"  # info


def _stress_3x3(value) -> torch.Tensor:
    arr = np.asarray(value, dtype=np.float64).reshape(-1)
    if arr.size == 6:
        from ase.stress import voigt_6_to_full_3x3_stress
        return torch.tensor(voigt_6_to_full_3x3_stress(arr))
    if arr.size == 9:
        return torch.tensor(arr.reshape(3, 3))
    raise ValueError(f"stress must have 6 (Voigt) or 9 components, got {arr.size}")


def read_labels(atoms, keys: LabelKeys, targets: tuple[str, ...] = ()) -> dict:
    """Labels of one `ase.Atoms` as `AtomicData` keyword arguments (missing ones omitted)."""
    info, arrays = atoms.info, atoms.arrays
    out: dict = {}
    if keys.energy in info:
        out["energy"] = float(info[keys.energy])
    if keys.forces in arrays:
        out["forces"] = torch.tensor(np.asarray(arrays[keys.forces]), dtype=torch.float64)
    if keys.stress in info:
        out["stress"] = _stress_3x3(info[keys.stress])
    elif keys.virials in info:
        volume = abs(atoms.get_volume())
        out["stress"] = -_stress_3x3(info[keys.virials]) / volume
    out["charge"] = float(info.get(keys.charge, info.get("charge", 0.0)))
    out["spin"] = float(info.get(keys.spin, info.get("spin", 0.0)))
    found = {t: float(info[t]) for t in targets if t in info}
    if found:
        out["targets"] = found
    return out
