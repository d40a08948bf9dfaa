"""Non-finite training steps (``training.nonfinite``): one verdict per step, the same on every
rank, so that all ranks stop or skip a batch together."""
from __future__ import annotations

import math

import torch

from . import distributed


def nonfinite_loss(loss: torch.Tensor) -> str | None:
    """``"loss (nan)"`` (or inf) when the loss is not finite on this rank or any other."""
    bad = torch.tensor([0.0 if bool(torch.isfinite(loss.detach())) else 1.0])
    if float(distributed.sum_across_ranks(bad)[0]) == 0:
        return None
    return f"loss ({float(loss.detach())})"


def clip_and_check_gradients(model: torch.nn.Module, clip: float | None) -> str | None:
    """Clip the gradients to total norm ``clip`` (if set); ``"gradient (nan)"`` (or inf) when
    their norm is not finite. They are averaged across ranks already, so all ranks agree."""
    if clip:
        norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), clip))
    else:
        norms = [torch.linalg.vector_norm(p.grad) for p in model.parameters() if p.grad is not None]
        norm = float(torch.linalg.vector_norm(torch.stack(norms))) if norms else 0.0
    return None if math.isfinite(norm) else f"gradient ({norm})"
