"""Radial bases and cutoff envelopes (distances in Å)."""
from __future__ import annotations

import math

import torch
from torch import nn


class SincRadialBasis(nn.Module):
    """PaiNN's basis sin(n π r / r_c) / r, n = 1..num_basis; (E,) -> (E, num_basis)."""

    def __init__(self, num_basis: int, cutoff: float):
        super().__init__()
        self.register_buffer("frequencies", torch.arange(1, num_basis + 1) * math.pi / cutoff)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        return torch.sin(r[:, None] * self.frequencies) / r[:, None]


class CosineCutoff(nn.Module):
    """0.5 (cos(π r / r_c) + 1) for r < r_c, else 0; (E,) -> (E,). Smooth to first order."""

    def __init__(self, cutoff: float):
        super().__init__()
        self.cutoff = float(cutoff)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        envelope = 0.5 * (torch.cos(r * (math.pi / self.cutoff)) + 1.0)
        return envelope * (r < self.cutoff).to(r.dtype)
