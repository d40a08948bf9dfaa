"""Graph-free transformer backbone: atom tokens, all-pairs attention, no neighbour list
(transformers on Cartesian coordinates, arXiv 2510.02259; EScAIP, arXiv 2410.24169).

Tokens: element embedding + total charge/spin (`mlip_attn.nn.AtomEmbedding`). Geometry enters
only through the attention bias (power law or Gaussian kernels of r_ij), so the energy is
rotation, translation and permutation invariant and forces −dE/dr are conservative. Blocks are
pre-LN: x ← x + MHA(LN(x)); x ← x + MLP(LN(x)) (MLP ratio 4, GELU), final LayerNorm. The
neighbour list the `Potential` passes in is ignored.

Options from the paper, NOT the default:

- ``coordinate_embedding=True``: raw Cartesian coordinates (centred on each structure's
  centroid, so translation invariant) are embedded linearly and added to the tokens. The model
  is then **NOT rotation invariant**; train it with random-rotation augmentation
  (`mlip_attn.training.augmentation.random_rotation`, applied to every training batch).
- ``direct_forces=True``: forces from a per-atom 3-vector head instead of −dE/dr — **NOT
  conservative** (and NOT equivariant). Needs ``coordinate_embedding``: a head on
  rotation-invariant features could not turn its forces with the structure.
"""
from __future__ import annotations

import math

from typing import List, Literal, Optional, Tuple

import torch
from torch import nn

from ..attention.biases import BIAS_TYPES, make_bias, pair_distances
from ..attention.multihead import BiasedSelfAttention
from ..nn.packing import LAYOUTS, pack, pair_masks, structure_layout
from ..nn import AtomEmbedding
from ..nn.graph import (Features, Graph, centred_positions, empty_features,
                        with_atom_inputs)
from ..registry import BACKBONES, PositiveFloat, PositiveInt
from .base import Backbone


class TransformerLayer(nn.Module):
    """Pre-LN transformer block on packed atoms (G, n, F)."""

    def __init__(self, width: int, heads: int, bias: nn.Module, fixed: bool = False,
                 mlp_ratio: int = 4, r_max: float = 0.0):
        super().__init__()
        self.norm_attention = nn.LayerNorm(width)
        self.attention = BiasedSelfAttention(width, heads, bias, fixed, r_max=r_max)
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


@BACKBONES.register("transformer", summary="graph-free transformer: element tokens, "
                    "attention over all atom pairs with distance biases, no neighbour list")
class TransformerBackbone(Backbone):
    """Graph-free transformer: (species, graph) -> per-atom scalars (N, F); the neighbour list
    in ``graph`` is ignored. Options (``model:`` keys) mirror the arguments."""

    order = 0
    accepts_global_blocks = False
    is_global = True
    uses_neighbour_list = False
    periodic = False

    def __init__(self, num_elements: int, global_blocks: Optional[List[Optional[nn.Module]]] = None,
                 width: PositiveInt = 128, layers: PositiveInt = 3, heads: PositiveInt = 4,
                 bias: Literal[BIAS_TYPES] = "power_law_negative", fixed: bool = False,
                 exponent: Optional[float] = None, num_kernels: PositiveInt = 32,
                 mlp_ratio: PositiveInt = 4,
                 coordinate_embedding: bool = False, direct_forces: bool = False,
                 layout: Literal[LAYOUTS] = "auto", r_max: Optional[PositiveFloat] = 12.0,
                 physics: int = 2):
        super().__init__()
        if physics >= 2 and r_max is None:
            raise ValueError("r_max: the transformer backbone needs a reach (Å)")
        # coordinate_embedding embeds positions relative to the whole structure's centroid,
        # which couples fragments at any distance: such a model is not separable
        self.separable = physics >= 2 and not coordinate_embedding
        # physics 2: attention switched off between r_max/2 and r_max, with a sink (separable)
        self.reach = float(r_max) if physics >= 2 and r_max is not None else math.inf
        if any(g is not None for g in global_blocks or []):
            raise ValueError("attention: the transformer backbone is already global; leave "
                             "attention null")
        if bias == "none" and not coordinate_embedding:
            raise ValueError("bias: none sees no positions at all; use a distance bias or "
                             "coordinate_embedding: true")
        if direct_forces and not coordinate_embedding:
            raise ValueError("direct_forces: needs coordinate_embedding: true (a force head on "
                             "rotation-invariant features cannot turn with the structure)")
        self.width = width
        self.num_elements = num_elements
        self.layout = layout
        self.coordinate_embedding = bool(coordinate_embedding)
        self.invariant = not self.coordinate_embedding
        self.direct_forces = bool(direct_forces)
        self.embedding = AtomEmbedding(num_elements, width, physics)
        self.coordinates = nn.Linear(3, width, bias=False) if self.coordinate_embedding else nn.Identity()
        self.layers = nn.ModuleList([
            TransformerLayer(width, heads, make_bias(bias, heads, num_elements, exponent, num_kernels),
                             fixed, mlp_ratio, self.reach if math.isfinite(self.reach) else 0.0)
            for _ in range(layers)])
        self.norm = nn.LayerNorm(width)

    def forward(self, species: torch.Tensor, graph: Graph) -> Features:
        batch, num_graphs = graph.batch, graph.num_graphs
        x = with_atom_inputs(self.embedding(species, graph), graph)
        if self.coordinate_embedding:
            x = x + self.coordinates(centred_positions(graph.positions, batch, num_graphs))
        group, slot, sid = structure_layout(batch, num_graphs, self.layout)
        pairs, allowed, has_partner = pair_masks(sid)
        r = pair_distances(pack(graph.positions, group, slot, sid), pairs)
        onehot = torch.nn.functional.one_hot(species, self.num_elements).to(x.dtype)
        types = pack(onehot, group, slot, sid)
        partner = has_partner[:, :, None].to(x.dtype)
        h = pack(x, group, slot, sid)
        for layer in self.layers:
            h = layer(h, r, allowed, types, partner)
        return empty_features(self.norm(h)[group, slot])


__all__: List[str] = ["TransformerBackbone", "TransformerLayer"]
