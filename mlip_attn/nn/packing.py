"""Packing the atoms of a batch into groups for all-pairs attention, and the pair masks.

Layouts (``layout:`` of the transformer block and backbone):

- ``padded``: one group per structure, n = largest structure, empty slots are padding
  (cost ∝ B·n_max²);
- ``block_diagonal``: one group with all N atoms and a mask that forbids pairs of different
  structures (cost ∝ N²);
- ``auto`` (default): per batch, whichever has fewer pairs — padded for batches of
  similar-sized structures (always when they are equal), block-diagonal when one large
  structure sits with many small ones (`time_layouts` in
  `mlip_attn.attention.transformer_attention` measures both). One structure: a single group,
  no padding, no mask.

Pairs of different structures, padding and the diagonal (r = 0) are excluded, so nothing leaks
between structures. An atom alone in its structure (or a padding slot) would have no key at
all; it attends to itself instead and its output is set to zero by the caller.
"""
from __future__ import annotations

from typing import Tuple

import torch

from ..nn.graph import rank_in_segment

LAYOUTS = ("auto", "padded", "block_diagonal")


def structure_layout(batch: torch.Tensor, num_graphs: int, layout: str = "auto"
                     ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where each atom goes in the packed (G, n) layout.

    Returns ``group`` (N,), ``slot`` (N,) and ``sid`` (G, n): the structure index of each
    slot, −1 for padding. ``layout`` is one of `LAYOUTS` (see the module docstring).
    """
    n_atoms = batch.shape[0]
    arange = torch.arange(n_atoms, device=batch.device)
    if num_graphs == 1:
        return torch.zeros_like(batch), arange, batch[None, :]
    counts = torch.bincount(batch, minlength=num_graphs)
    n_max = int(counts.max())
    padded = layout == "padded" or (layout == "auto" and num_graphs * n_max * n_max <= n_atoms * n_atoms)
    if padded:
        rank = rank_in_segment(batch, counts)
        sid = torch.full((num_graphs, n_max), -1, dtype=batch.dtype, device=batch.device)
        sid = sid.index_put((batch, rank), batch)
        return batch, rank, sid
    return torch.zeros_like(batch), arange, batch[None, :]


def pair_masks(sid: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """From ``sid`` (G, n): ``pairs`` (G, n, n) True for two different atoms of one structure,
    ``allowed`` = pairs plus the diagonal of atoms without a partner, ``has_partner`` (G, n)."""
    n = sid.shape[1]
    valid = sid >= 0
    eye = torch.eye(n, dtype=torch.bool, device=sid.device)[None, :, :]
    pairs = (sid[:, :, None] == sid[:, None, :]) & valid[:, :, None] & ~eye
    has_partner = pairs.any(dim=-1)
    allowed = pairs | (eye & ~has_partner[:, :, None])
    return pairs, allowed, has_partner


def pack(x: torch.Tensor, group: torch.Tensor, slot: torch.Tensor, sid: torch.Tensor) -> torch.Tensor:
    """(N, ...) -> (G, n, ...), zeros in padding slots."""
    shape = [sid.shape[0], sid.shape[1]] + list(x.shape[1:])
    return x.new_zeros(shape).index_put((group, slot), x)
