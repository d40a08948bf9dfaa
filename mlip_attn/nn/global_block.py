"""The interface of a global block (attention over all atoms of each structure).

A global block is an ``nn.Module`` whose forward is::

    forward(s: (N, F), v: (N, 3, F) or (N, 3, 0), positions: (N, 3) Å, batch: (N,),
            num_graphs: int) -> (ds: (N, F), dv: same shape as v)

It returns the branch output that the backbone adds to the features; its last layer is
zero-initialised so a fresh model equals the local model. It never mixes structures.
"""
from __future__ import annotations

from typing import Tuple

import torch
from torch import nn


class NoGlobalBlock(nn.Module):
    """Stands in where a layer has no global block (keeps forward TorchScript-typed)."""

    def forward(self, s: torch.Tensor, v: torch.Tensor, positions: torch.Tensor,
                batch: torch.Tensor, num_graphs: int) -> Tuple[torch.Tensor, torch.Tensor]:
        return torch.zeros_like(s), torch.zeros_like(v)
