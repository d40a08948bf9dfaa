"""Evaluate a potential on labelled structures: MAE/RMSE of energy, forces, stress."""
from __future__ import annotations

from typing import Iterator

import torch

from ..data import AtomicData, Batch
from .loss import ErrorMetrics


def batches(structures: list[AtomicData], batch_size: int, order: list[int] | None = None
            ) -> Iterator[Batch]:
    order = order if order is not None else list(range(len(structures)))
    for k in range(0, len(order), batch_size):
        yield Batch.collate([structures[i] for i in order[k:k + batch_size]])


def model_dtype(model: torch.nn.Module) -> torch.dtype:
    return next(model.parameters()).dtype


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def evaluate(model, structures: list[AtomicData], batch_size: int = 16,
             metrics: ErrorMetrics | None = None) -> dict[str, float]:
    """Errors of ``model`` (eval mode) on graph-carrying ``structures``; see `ErrorMetrics`."""
    metrics = metrics or ErrorMetrics(tuple(getattr(model, "target_names", ())),
                                       dict(zip(getattr(model, "class_names", []),
                                                getattr(model, "class_counts", []))))
    dtype, device = model_dtype(model), model_device(model)
    was_training = model.training
    model.eval()
    for batch in batches(structures, batch_size):
        batch = batch.to(device, dtype)
        stress = batch.stress is not None and bool(batch.pbc.any())
        pred = model.predict(batch, compute_forces=batch.forces is not None, compute_stress=stress)
        metrics.update(pred, batch)
    model.train(was_training)
    return metrics.result()


def evaluate_file(model, path, batch_size: int = 16) -> dict[str, float]:
    """Errors of ``model`` on the labelled structures of a data file (any format
    `mlip_attn.data.read_structures` reads, default label keys, plus the model's targets and
    classes), and their number (``structures``); elements the model does not know are refused
    with a message naming the structure."""
    from ..data import LabelKeys, read_structures
    from ..data.atomic_data import check_elements
    labels = tuple(model.target_names) + tuple(model.class_names)
    structures = read_structures(path, LabelKeys(), labels)
    for d in structures:
        check_elements(d.numbers.tolist(), model.elements, f"{d.name} ({path})")
    errors = evaluate(model, [d.with_graph(model.cutoff) for d in structures], batch_size)
    return {**errors, "structures": len(structures)}
