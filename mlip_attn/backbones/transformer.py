"""Graph-free transformer backbone (seed 001): atom tokens, all-pairs attention, no neighbour list.

Tokens: element embedding + total charge/spin (`mlip_attn.nn.AtomEmbedding`). Geometry enters
only through the attention bias (power law or Gaussian kernels of r_ij), so the energy is
rotation, translation and permutation invariant and forces −dE/dr are conservative. Blocks are
pre-LN: x ← x + MHA(LN(x)); x ← x + MLP(LN(x)) (MLP ratio 4, GELU), final LayerNorm. The
neighbour list the `Potential` passes in is ignored.

Options from the paper, NOT the default:

- ``coordinate_embedding=True``: raw Cartesian coordinates (centred on each structure's
  centroid, so translation invariant) are embedded linearly and added to the tokens. The model
  is then **NOT rotation invariant**; train it with random-rotation augmentation
  (`random_rotation`, applied to every training batch).
- ``direct_forces`` (a `Potential` option, set by the builder): forces from a per-atom 3-vector
  head instead of −dE/dr — **NOT conservative** (and NOT equivariant). The builder requires
  ``coordinate_embedding`` with it: a head on rotation-invariant features could not turn its
  forces with the structure.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import nn

from ..attention.biases import BIAS_TYPES, make_bias, pair_distances
from ..attention.transformer import (LAYOUTS, BiasedSelfAttention, pack, pair_masks,
                                     structure_layout)


class TransformerLayer(nn.Module):
    """Pre-LN transformer block on packed atoms (G, n, F)."""

    def __init__(self, width: int, heads: int, bias: nn.Module, fixed: bool = False,
                 mlp_ratio: int = 4):
        super().__init__()
        self.norm_attention = nn.LayerNorm(width)
        self.attention = BiasedSelfAttention(width, heads, bias, fixed)
        self.norm_mlp = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, mlp_ratio * width), nn.GELU(),
                                 nn.Linear(mlp_ratio * width, width))

    def forward(self, x: torch.Tensor, r: torch.Tensor, allowed: torch.Tensor,
                types: torch.Tensor, has_partner: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.norm_attention(x), r, allowed, types) * has_partner
        return x + self.mlp(self.norm_mlp(x))

    @torch.jit.unused
    def attention_weights(self, x: torch.Tensor, r: torch.Tensor, allowed: torch.Tensor,
                          types: torch.Tensor, has_partner: torch.Tensor
                          ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(weights (G, H, n, n), r (G, n, n), pairs (G, n, n)) for this layer's inputs."""
        n = allowed.shape[1]
        eye = torch.eye(n, dtype=torch.bool, device=allowed.device)
        pairs = allowed & ~eye
        return self.attention.weights(self.norm_attention(x), r, allowed, types), r, pairs

    @torch.jit.unused
    def exponents(self) -> Optional[torch.Tensor]:
        b = self.attention.bias
        return b.exponents() if hasattr(b, "exponents") else None


class TransformerBackbone(nn.Module):
    """Graph-free transformer: (species, positions, batch, ...) -> per-atom features (N, F).

    Same forward signature as `PaiNN`/`EGNN`; ``edge_index`` and ``vectors`` are ignored.
    Config keys (``model:``) mirror the arguments: width, layers, heads, bias, fixed, exponent,
    num_kernels, mlp_ratio, coordinate_embedding, layout.
    """

    def __init__(self, num_elements: int, width: int = 128, layers: int = 3, heads: int = 4,
                 bias: str = "power_law_negative", fixed: bool = False,
                 exponent: Optional[float] = None, num_kernels: int = 32, mlp_ratio: int = 4,
                 coordinate_embedding: bool = False, layout: str = "auto"):
        super().__init__()
        from ..nn import AtomEmbedding
        if bias not in BIAS_TYPES:
            raise ValueError(f"bias: {bias!r} is not one of {list(BIAS_TYPES)}")
        if layout not in LAYOUTS:
            raise ValueError(f"layout: {layout!r} is not one of {list(LAYOUTS)}")
        self.width = width
        self.num_elements = num_elements
        self.layout = layout
        self.coordinate_embedding = bool(coordinate_embedding)
        self.embedding = AtomEmbedding(num_elements, width)
        self.coordinates = nn.Linear(3, width, bias=False) if self.coordinate_embedding else nn.Identity()
        self.layers = nn.ModuleList([
            TransformerLayer(width, heads, make_bias(bias, heads, num_elements, exponent, num_kernels),
                             fixed, mlp_ratio) for _ in range(layers)])
        self.norm = nn.LayerNorm(width)

    def forward(self, species: torch.Tensor, positions: torch.Tensor, batch: torch.Tensor,
                edge_index: torch.Tensor, vectors: torch.Tensor, charge: torch.Tensor,
                spin: torch.Tensor, num_graphs: int) -> torch.Tensor:
        x = self.embedding(species, batch, charge, spin)
        if self.coordinate_embedding:
            sums = positions.new_zeros((num_graphs, 3)).index_add(0, batch, positions)
            counts = positions.new_zeros((num_graphs,)).index_add(
                0, batch, torch.ones_like(positions[:, 0]))
            centred = positions - (sums / counts.clamp(min=1.0)[:, None])[batch]
            x = x + self.coordinates(centred)
        group, slot, sid = structure_layout(batch, num_graphs, self.layout)
        pairs, allowed, has_partner = pair_masks(sid)
        r = pair_distances(pack(positions, group, slot, sid), pairs)
        onehot = torch.nn.functional.one_hot(species, self.num_elements).to(x.dtype)
        types = pack(onehot, group, slot, sid)
        partner = has_partner[:, :, None].to(x.dtype)
        h = pack(x, group, slot, sid)
        for layer in self.layers:
            h = layer(h, r, allowed, types, partner)
        return self.norm(h)[group, slot]


def random_rotations(num: int, generator: Optional[torch.Generator] = None,
                     dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``num`` rotation matrices (num, 3, 3), uniform on SO(3) (normalised Gaussian quaternions)."""
    q = torch.randn(num, 4, generator=generator, dtype=torch.float64)
    q = q / torch.linalg.norm(q, dim=1, keepdim=True)
    w, x, y, z = q.unbind(1)
    rot = torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
        2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
        2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], dim=1)
    return rot.reshape(num, 3, 3).to(dtype)


def rotate_batch(batch, rotations: torch.Tensor):
    """A copy of a `mlip_attn.data.Batch` with structure b rotated by ``rotations[b]`` (B, 3, 3).

    Rotates positions, cell (rows are lattice vectors), periodic shifts, and the labels forces
    (F → R F) and stress (σ → R σ Rᵀ). Energies, charges, the neighbour list and scalar targets
    are unchanged (distances are).
    """
    import dataclasses
    R = rotations.to(device=batch.positions.device, dtype=batch.positions.dtype)

    def turn(vectors: torch.Tensor, index: torch.Tensor) -> torch.Tensor:  # row vectors: v Rᵀ
        return torch.einsum("nj,nij->ni", vectors, R[index])

    changes = {
        "positions": turn(batch.positions, batch.batch),
        "cell": torch.einsum("bkj,bij->bki", batch.cell, R),
        "shifts": turn(batch.shifts, batch.batch[batch.edge_index[0]]),
    }
    if batch.forces is not None:
        changes["forces"] = turn(batch.forces, batch.batch)
    if batch.stress is not None:
        changes["stress"] = R @ batch.stress @ R.transpose(1, 2)
    return dataclasses.replace(batch, **changes)


def random_rotation(batch, generator: Optional[torch.Generator] = None):
    """Rotation augmentation for models that are not rotation invariant
    (``coordinate_embedding: true``): every structure of the `Batch` gets its own uniformly
    random rotation (see `rotate_batch`). Call it on each training batch before the forward."""
    return rotate_batch(batch, random_rotations(batch.cell.shape[0], generator))


__all__: List[str] = ["TransformerBackbone", "TransformerLayer", "random_rotation",
                      "random_rotations", "rotate_batch"]
