"""Learning-rate schedule: linear warm-up, then plateau / cosine / exponential decay.

All state is plain numbers, so it goes into the checkpoint and resumes exactly.
"""
from __future__ import annotations

import math


class LRSchedule:
    """lr(step, epoch) = lr · warm-up(step) · decay(epoch), floored at ``lr_min`` for plateau."""

    def __init__(self, *, lr: float, kind: str, epochs: int, steps_per_epoch: int,
                 warmup_epochs: float = 0.0, lr_min: float = 1e-6, plateau_factor: float = 0.5,
                 plateau_patience: int = 5):
        self.lr, self.kind, self.epochs = lr, kind, epochs
        self.warmup_steps = int(round(warmup_epochs * steps_per_epoch))
        self.lr_min, self.factor, self.patience = lr_min, plateau_factor, plateau_patience
        self.plateau_scale = 1.0
        self.best = math.inf
        self.bad_epochs = 0

    @classmethod
    def for_training(cls, options: dict, steps_per_epoch: int) -> "LRSchedule":
        """The schedule a ``training:`` section (`TrainingOptions` keys) asks for."""
        return cls(lr=options["lr"], kind=options["scheduler"], epochs=options["epochs"],
                   steps_per_epoch=steps_per_epoch, warmup_epochs=options["warmup_epochs"],
                   lr_min=options["lr_min"], plateau_factor=options["plateau_factor"],
                   plateau_patience=options["plateau_patience"])

    def lr_at(self, step: int, epoch: int) -> float:
        warm = min(1.0, (step + 1) / self.warmup_steps) if self.warmup_steps else 1.0
        t = min(epoch / max(self.epochs - 1, 1), 1.0)
        if self.kind == "cosine":
            decayed = self.lr_min + 0.5 * (self.lr - self.lr_min) * (1 + math.cos(math.pi * t))
        elif self.kind == "exponential":
            decayed = self.lr * (self.lr_min / self.lr) ** t if self.lr_min > 0 else self.lr
        elif self.kind == "plateau":
            decayed = max(self.lr * self.plateau_scale, self.lr_min)
        else:
            decayed = self.lr
        return decayed * warm

    def end_of_epoch(self, valid_loss: float) -> None:
        """Plateau bookkeeping: shrink the LR after ``patience`` epochs without improvement."""
        if valid_loss < self.best * (1 - 1e-4):
            self.best, self.bad_epochs = valid_loss, 0
        else:
            self.bad_epochs += 1
            if self.kind == "plateau" and self.bad_epochs > self.patience:
                self.plateau_scale *= self.factor
                self.bad_epochs = 0

    def state_dict(self) -> dict:
        return {"plateau_scale": self.plateau_scale, "best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict) -> None:
        self.plateau_scale = state["plateau_scale"]
        self.best = state["best"]
        self.bad_epochs = state["bad_epochs"]
