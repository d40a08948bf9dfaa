"""Weighted energy/force/stress loss and error metrics (eV, eV/Å, eV/Å³)."""
from __future__ import annotations

import math

import torch


def loss_terms(pred: dict, batch, weights: dict) -> torch.Tensor:
    """w_E·mean((ΔE/N)²) + w_F·mean(ΔF²) + w_S·mean(Δσ²) + w_T·mean((Δt/σ_t)²) (per-structure
    targets z-scored with the model's target std); terms with weight 0 are skipped."""
    counts = torch.bincount(batch.batch, minlength=batch.num_graphs).to(pred["energy"].dtype)
    loss = pred["energy"].new_zeros(())
    if weights["energy"] > 0:
        loss = loss + weights["energy"] * (((pred["energy"] - batch.energy) / counts) ** 2).mean()
    if weights["forces"] > 0:
        loss = loss + weights["forces"] * ((pred["forces"] - batch.forces) ** 2).mean()
    if weights["stress"] > 0:
        loss = loss + weights["stress"] * ((pred["stress"] - batch.stress) ** 2).mean()
    if weights.get("targets", 0) > 0 and "targets" in pred:
        ref, std = target_matrix(batch, weights["target_names"]), weights["target_std"]
        loss = loss + weights["targets"] * (((pred["targets"] - ref) / std) ** 2).mean()
    return loss


def target_matrix(batch, names: list[str]) -> torch.Tensor:
    """Reference per-structure targets (B, T) of ``batch`` in ``names`` order."""
    return torch.stack([batch.targets[n] for n in names], dim=1)


class ErrorMetrics:
    """Accumulates absolute and squared errors; `result()` gives MAE/RMSE per quantity.

    Keys: energy (eV per structure), energy_per_atom (eV/atom), forces (eV/Å per component),
    stress (eV/Å³ per component).
    """

    QUANTITIES = ("energy", "energy_per_atom", "forces", "stress")

    def __init__(self, targets: tuple[str, ...] = ()):
        """``targets``: names of per-structure targets, reported as ``target_<name>_mae``."""
        self.targets = tuple(targets)
        self.QUANTITIES = ErrorMetrics.QUANTITIES + tuple(f"target_{t}" for t in self.targets)
        self.sums = {q: [0.0, 0.0, 0] for q in self.QUANTITIES}  # |err|, err², count

    def _add(self, name: str, err: torch.Tensor) -> None:
        err = err.detach().double().reshape(-1)
        s = self.sums[name]
        s[0] += float(err.abs().sum())
        s[1] += float((err ** 2).sum())
        s[2] += err.numel()

    def update(self, pred: dict, batch) -> None:
        if batch.energy is not None:
            err = pred["energy"] - batch.energy
            counts = torch.bincount(batch.batch, minlength=batch.num_graphs).to(err.dtype)
            self._add("energy", err)
            self._add("energy_per_atom", err / counts)
        if batch.forces is not None and "forces" in pred:
            self._add("forces", pred["forces"] - batch.forces)
        if batch.stress is not None and "stress" in pred:
            self._add("stress", pred["stress"] - batch.stress)
        for k, name in enumerate(self.targets):
            if "targets" in pred and name in batch.targets:
                self._add(f"target_{name}", pred["targets"][:, k] - batch.targets[name])

    def as_vector(self) -> torch.Tensor:
        return torch.tensor([v for q in self.QUANTITIES for v in self.sums[q]], dtype=torch.float64)

    def load_vector(self, vec: torch.Tensor) -> None:
        vals = vec.tolist()
        for k, q in enumerate(self.QUANTITIES):
            self.sums[q] = [vals[3 * k], vals[3 * k + 1], int(vals[3 * k + 2])]

    def result(self) -> dict[str, float]:
        out = {}
        for q, (abs_sum, sq_sum, n) in self.sums.items():
            if n:
                out[f"{q}_mae"] = abs_sum / n
                out[f"{q}_rmse"] = math.sqrt(sq_sum / n)
        return out
