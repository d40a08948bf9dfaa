"""The ``training:`` section of a config as a typed dataclass: its fields are the keys, their
annotations the schema, checked by the same checker as the model's options
(`mlip_attn.registry.check_value`), so an error names the key and what it must be.
"""
from __future__ import annotations

import dataclasses
import typing
from typing import Annotated, Literal, Optional

from ..registry import Check, PositiveFloat, PositiveInt, check_value

NonNegativeFloat = Annotated[float, Check(lambda v: v >= 0, "a number >= 0")]
OpenUnitInterval = Annotated[float, Check(lambda v: 0 < v < 1, "a number in (0, 1)")]


@dataclasses.dataclass(frozen=True)
class TrainingOptions:
    """Keys of ``training:`` (units: energies eV, forces eV/Å, stress eV/Å³).

    epochs, batch_size (structures per step), lr (peak learning rate), weight_decay (AdamW);
    loss weights on squared errors: energy_weight (per-atom energy, eV²), forces_weight (force
    components, (eV/Å)²), stress_weight (stress components, (eV/Å³)²), targets_weight
    (z-scored per-structure targets), classes_weight (cross-entropy of class labels);
    scheduler with warmup_epochs (linear warm-up, may be fractional), lr_min (floor / end
    value), plateau_factor and plateau_patience; grad_clip (max gradient norm, null = off);
    nonfinite: a NaN/inf loss or gradient stops the run keeping the last good epoch (stop) or
    skips the batch (skip); ema_decay (null = no EMA of the weights); early_stopping (epochs
    without validation improvement, null = never); dtype, seed, device, progress (a bar per
    epoch).
    """

    epochs: PositiveInt = 100
    batch_size: PositiveInt = 8
    lr: PositiveFloat = 1.0e-3
    weight_decay: NonNegativeFloat = 0.0
    energy_weight: NonNegativeFloat = 1.0
    forces_weight: NonNegativeFloat = 10.0
    stress_weight: NonNegativeFloat = 0.0
    targets_weight: NonNegativeFloat = 1.0
    classes_weight: NonNegativeFloat = 1.0
    warmup_epochs: NonNegativeFloat = 0.0
    scheduler: Literal["plateau", "cosine", "exponential", "constant"] = "plateau"
    lr_min: NonNegativeFloat = 1.0e-6
    plateau_factor: OpenUnitInterval = 0.5
    plateau_patience: PositiveInt = 5
    grad_clip: Optional[PositiveFloat] = 10.0
    nonfinite: Literal["stop", "skip"] = "stop"
    ema_decay: Optional[OpenUnitInterval] = 0.99
    early_stopping: Optional[PositiveInt] = None
    dtype: Literal["float32", "float64"] = "float32"
    seed: int = 0
    device: str = "cpu"
    progress: bool = True

    @classmethod
    def defaults(cls) -> dict:
        return dataclasses.asdict(cls())

    @classmethod
    def check(cls, section: dict, where: str = "training") -> dict:
        """``section`` with every value checked against its field's annotation (ints become
        floats where a number is expected); raises `ValueError` naming ``where.key``."""
        hints = typing.get_type_hints(cls, include_extras=True)
        unknown = sorted(set(section) - set(hints))
        if unknown:
            raise ValueError(f"{where}.{unknown[0]}: unknown key; allowed: {sorted(hints)}")
        return {key: check_value(value, hints[key], f"{where}.{key}")
                for key, value in section.items()}
