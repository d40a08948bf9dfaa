"""`EncoderStack`: the encoders of one model, concatenated, with the bond graph built once.

`Potential` projects the stack's output (N, D) into the backbone's width with a
zero-initialised linear map and adds it to the initial per-atom embedding, so a fresh model
with encoders computes exactly what the same model without them does, and
``model.encoders: []`` builds no stack at all (older model files load unchanged).
"""
from __future__ import annotations

from typing import List

import torch
from torch import nn

from .base import BOND_FACTOR, BondGraph, BondGraphBuilder, Encoder


class EncoderStack(nn.Module):
    """(positions, numbers, species, batch, num_graphs) -> (N, Σ dim) encoder features in the
    default dtype of the model (computed in float64, no gradient)."""

    def __init__(self, encoders: List[Encoder], bond_factor: float = BOND_FACTOR):
        super().__init__()
        self.encoders = nn.ModuleList(encoders)
        self.dim = int(sum(e.dim for e in encoders))
        self.bonds = BondGraphBuilder(bond_factor)
        self.needs_bonds = any(e.needs_bonds for e in encoders)
        self.smooth = all(e.smooth for e in encoders)
        self.exportable = all(e.exportable for e in encoders)

    def forward(self, positions: torch.Tensor, numbers: torch.Tensor, species: torch.Tensor,
                batch: torch.Tensor, num_graphs: int) -> torch.Tensor:
        with torch.no_grad():
            if self.needs_bonds:
                bonds = self.bonds(positions, numbers, batch, num_graphs)
            else:  # per-element encoders only: no bond graph to build
                empty = torch.zeros((0,), dtype=torch.long, device=positions.device)
                bonds = BondGraph(torch.zeros((0, 0, 0), dtype=torch.float64,
                                              device=positions.device),
                                  torch.zeros((0, 0), dtype=torch.bool, device=positions.device),
                                  torch.zeros((0,), dtype=torch.float64, device=positions.device),
                                  empty, empty)
            outs: List[torch.Tensor] = []
            for encoder in self.encoders:
                outs.append(encoder(species, bonds).to(positions.dtype))
            return torch.cat(outs, dim=1)


class NoEncoders(nn.Module):
    """Stands in for a model without encoders (keeps the forward TorchScript-typed)."""

    def forward(self, positions: torch.Tensor, numbers: torch.Tensor, species: torch.Tensor,
                batch: torch.Tensor, num_graphs: int) -> torch.Tensor:
        return positions.new_zeros((positions.shape[0], 0))
