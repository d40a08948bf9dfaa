"""Weighted energy/force/stress/target/class loss and error metrics (eV, eV/Å, eV/Å³; class
targets: cross-entropy, accuracy, ROC-AUC)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def loss_terms(pred: dict, batch, weights: dict) -> torch.Tensor:
    """w_E·mean((ΔE/N)²) + w_F·mean(ΔF²) + w_S·mean(Δσ²) + w_T·mean((Δt/σ_t)²) (per-structure
    targets z-scored with the model's target std) + w_C·mean over class targets of their
    cross-entropy; terms with weight 0 are skipped."""
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
    if weights.get("classes", 0) > 0 and "class_logits" in pred:
        terms = [F.cross_entropy(logits, labels) for logits, labels in
                 class_blocks(pred["class_logits"], batch, weights["class_names"],
                              weights["class_counts"])]
        loss = loss + weights["classes"] * torch.stack(terms).mean()
    return loss


def class_blocks(logits: torch.Tensor, batch, names: list[str], counts: list[int]):
    """(logits (B, C), labels (B,) int64) per class target, in ``names`` order."""
    out, start = [], 0
    for name, count in zip(names, counts):
        out.append((logits[:, start:start + count], batch.targets[name].round().long()))
        start += count
    return out


def roc_auc(scores: torch.Tensor, positive: torch.Tensor) -> float:
    """Area under the ROC curve of ``scores`` (n,) for the boolean labels ``positive`` (n,):
    the Mann–Whitney probability that a positive outranks a negative, ties counted half.
    NaN when one class is absent."""
    scores = scores.double()
    n_pos = int(positive.sum())
    n_neg = int(positive.numel()) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = torch.argsort(scores)
    sorted_scores = scores[order]
    ranks = torch.empty_like(scores)
    ranks[order] = torch.arange(1, scores.numel() + 1, dtype=scores.dtype)
    # ties share their average rank
    unique, inverse, tie_counts = torch.unique(sorted_scores, return_inverse=True,
                                               return_counts=True)
    ends = torch.cumsum(tie_counts, 0).double()
    average = ends - (tie_counts.double() - 1) / 2
    ranks[order] = average[inverse]
    u = float(ranks[positive].sum()) - n_pos * (n_pos + 1) / 2
    return u / (n_pos * n_neg)


def macro_roc_auc(probabilities: torch.Tensor, labels: torch.Tensor) -> float:
    """ROC-AUC of a binary (C = 2: class 1's probability) or multi-class (one-vs-rest, macro
    mean over the classes present with both labels) classifier. ``probabilities`` (n, C)."""
    if probabilities.shape[1] == 2:
        return roc_auc(probabilities[:, 1], labels == 1)
    values = [roc_auc(probabilities[:, c], labels == c) for c in range(probabilities.shape[1])]
    values = [v for v in values if not math.isnan(v)]
    return sum(values) / len(values) if values else float("nan")


def target_matrix(batch, names: list[str]) -> torch.Tensor:
    """Reference per-structure targets (B, T) of ``batch`` in ``names`` order."""
    return torch.stack([batch.targets[n] for n in names], dim=1)


class ErrorMetrics:
    """Accumulates absolute and squared errors; `result()` gives MAE/RMSE per quantity.

    Keys: energy (eV per structure), energy_per_atom (eV/atom), forces (eV/Å per component),
    stress (eV/Å³ per component), ``target_<name>`` (its units); class targets give
    ``class_<name>_accuracy``, ``_cross_entropy`` (nats) and ``_roc_auc`` (binary, or
    one-vs-rest macro mean). Accuracy and cross-entropy are sums that add across DDP ranks;
    ROC-AUC is computed from the scores this process saw.
    """

    QUANTITIES = ("energy", "energy_per_atom", "forces", "stress")

    def __init__(self, targets: tuple[str, ...] = (), classes: dict | None = None):
        """``targets``: names of per-structure targets, reported as ``target_<name>_mae``;
        ``classes``: class target name → number of classes."""
        self.targets = tuple(targets)
        self.classes = dict(classes or {})
        self.QUANTITIES = (ErrorMetrics.QUANTITIES + tuple(f"target_{t}" for t in self.targets)
                           + tuple(f"class_{c}" for c in self.classes))
        self.sums = {q: [0.0, 0.0, 0] for q in self.QUANTITIES}  # |err|, err², count
        # class targets: [correct, cross-entropy sum, count], and the scores for ROC-AUC
        self.scores: dict[str, list] = {c: [] for c in self.classes}

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
        if self.classes and "class_logits" in pred and all(c in batch.targets for c in self.classes):
            blocks = class_blocks(pred["class_logits"].detach().double(), batch,
                                  list(self.classes), list(self.classes.values()))
            for name, (logits, labels) in zip(self.classes, blocks):
                s = self.sums[f"class_{name}"]
                s[0] += float((logits.argmax(dim=1) == labels).sum())
                s[1] += float(F.cross_entropy(logits, labels, reduction="sum"))
                s[2] += labels.numel()
                self.scores[name].append((torch.softmax(logits, dim=1), labels))

    def as_vector(self) -> torch.Tensor:
        return torch.tensor([v for q in self.QUANTITIES for v in self.sums[q]], dtype=torch.float64)

    def load_vector(self, vec: torch.Tensor) -> None:
        vals = vec.tolist()
        for k, q in enumerate(self.QUANTITIES):
            self.sums[q] = [vals[3 * k], vals[3 * k + 1], int(vals[3 * k + 2])]

    def result(self) -> dict[str, float]:
        out = {}
        for q, (abs_sum, sq_sum, n) in self.sums.items():
            if n and q.startswith("class_"):
                out[f"{q}_accuracy"] = abs_sum / n
                out[f"{q}_cross_entropy"] = sq_sum / n
            elif n:
                out[f"{q}_mae"] = abs_sum / n
                out[f"{q}_rmse"] = math.sqrt(sq_sum / n)
        for name, chunks in self.scores.items():
            if chunks:
                probabilities = torch.cat([p for p, _ in chunks])
                labels = torch.cat([y for _, y in chunks])
                out[f"class_{name}_roc_auc"] = macro_roc_auc(probabilities, labels)
        return out
