"""Per-atom input embeddings: element type and the structure's total charge and spin."""
from __future__ import annotations

import torch
from torch import nn


class ElementIndex(nn.Module):
    """Maps atomic numbers to rows 0..len(elements)-1 of per-element tables; unknown → -1."""

    def __init__(self, elements: list[int]):
        super().__init__()
        table = torch.full((119,), -1, dtype=torch.long)
        table[torch.tensor(elements, dtype=torch.long)] = torch.arange(len(elements))
        self.register_buffer("table", table)

    def forward(self, numbers: torch.Tensor) -> torch.Tensor:
        return self.table[numbers]


class AtomEmbedding(nn.Module):
    """s_i = E[type_i] + W [Q_b, S_b] for atom i of structure b: (N,) -> (N, width).

    The total charge Q and spin S of the structure enter every atom's initial features, so
    a cation and the neutral molecule at the same geometry get different energies.
    """

    def __init__(self, num_elements: int, width: int):
        super().__init__()
        self.element = nn.Embedding(num_elements, width)
        self.charge_spin = nn.Linear(2, width, bias=False)

    def forward(self, species: torch.Tensor, batch: torch.Tensor, charge: torch.Tensor,
                spin: torch.Tensor) -> torch.Tensor:
        global_state = torch.stack([charge, spin], dim=1)            # (B, 2)
        return self.element(species) + self.charge_spin(global_state)[batch]
