"""The loss's weights and the validation loss that picks the best model.

Energy, forces and stress errors are squared and weighted (``training.*_weight``); per-structure
targets are z-scored by their training-set spread first, class labels enter as cross-entropy.
"""
from __future__ import annotations

import torch


def target_statistics(structures, names: tuple[str, ...]) -> dict:
    """Initial affine map of the target heads: mean and std of each target on the train set."""
    if not names:
        return {}
    values = torch.tensor([[d.targets[n] for n in names] for d in structures],
                          dtype=torch.float64)
    std = values.std(dim=0) if len(structures) > 1 else torch.ones(len(names))
    return {"target_mean": values.mean(dim=0).tolist(),
            "target_std": torch.where(std > 1e-12, std, torch.ones_like(std)).tolist()}


def loss_weights(options: dict, model=None, model_config: dict | None = None) -> dict:
    """The weights `mlip_attn.training.loss.loss_terms` and `valid_loss` read: energy, forces,
    stress; with a built ``model`` and its config also the targets' (names, weight, the
    model's target std) and the classes' (names, counts, weight)."""
    weights = {"energy": options["energy_weight"], "forces": options["forces_weight"],
               "stress": options["stress_weight"]}
    targets = tuple((model_config or {}).get("targets") or ())
    classes = dict((model_config or {}).get("classes") or {})
    if targets:
        weights.update(targets=options["targets_weight"], target_names=list(targets),
                       target_std=model.target_std)
    if classes:
        weights.update(classes=options["classes_weight"], class_names=list(classes),
                       class_counts=list(classes.values()))
    return weights


def valid_loss(metrics: dict, weights: dict) -> float:
    """The validation loss (lower is better): the training loss's weights on the validation
    errors (per-atom energy, force and stress RMSE squared, z-scored target RMSE squared,
    mean class cross-entropy)."""
    total = 0.0
    names = weights.get("class_names", [])
    for name in names:
        total += weights["classes"] * metrics[f"class_{name}_cross_entropy"] / len(names)
    for k, name in enumerate(weights.get("target_names", [])):
        std = float(weights["target_std"][k])
        total += weights["targets"] * (metrics[f"target_{name}_rmse"] / std) ** 2
    for name, key in (("energy", "energy_per_atom_rmse"), ("forces", "forces_rmse"),
                      ("stress", "stress_rmse")):
        if weights[name] > 0 and key in metrics:
            total += weights[name] * metrics[key] ** 2
    return total
