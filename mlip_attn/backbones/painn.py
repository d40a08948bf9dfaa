"""PaiNN (Schütt, Unke, Gastegger, ICML 2021): scalar and vector features, sinc basis × cosine
cutoff."""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import nn

from ..attention.base import NoGlobalBlock
from ..nn import AtomEmbedding, CosineCutoff, SincRadialBasis, mlp
from ..nn.graph import Features, Graph, with_atom_inputs
from ..nn.painn_message import message_in_chunks, painn_message
from ..registry import BACKBONES, PositiveFloat, PositiveInt
from .base import Backbone


class PaiNNLayer(nn.Module):
    """One PaiNN interaction (message + update), plus an optional global block in parallel.

    s (N, F) scalars, v (N, 3, F) vectors. Edge inputs are computed once per forward:
    ``rho`` (E, n_basis + 1) = [basis(r) · cutoff(r), cutoff(r)] and ``unit`` (E, 3) =
    r_ij / |r_ij|. The filter is (Linear(basis) · cutoff), evaluated as one matmul of ``rho``
    with [weight | bias], so a message vanishes smoothly at the cutoff and no (E, 3F) product
    with the envelope is formed. ``first`` marks the layer that sees v = 0, whose vector
    message therefore has no v_j term (skipped, not computed as zeros).
    """

    def __init__(self, width: int, num_basis: int, global_block: Optional[nn.Module] = None,
                 first: bool = False):
        super().__init__()
        self.width = width
        self.first = first
        self.message_scalar = mlp([width, width, 3 * width])
        self.message_radial = nn.Linear(num_basis, 3 * width)
        self.update_uv = nn.Linear(width, 2 * width, bias=False)
        self.update_mlp = mlp([2 * width, width, 3 * width])
        self.has_global = global_block is not None
        self.global_block = global_block if global_block is not None else NoGlobalBlock()

    def forward(self, s: torch.Tensor, v: torch.Tensor, rho: torch.Tensor, unit: torch.Tensor,
                graph: Graph) -> Tuple[torch.Tensor, torch.Tensor]:
        F = self.width
        i, j = graph.edge_index[0], graph.edge_index[1]
        # message: filter the neighbour's features by the radial function, sum over neighbours
        radial = self.message_radial
        weight = torch.cat([radial.weight, radial.bias[:, None]], dim=1)       # (3F, K)
        phi = self.message_scalar(s)                                          # (N, 3F)
        if torch.jit.is_scripting():
            ds, dv = message_in_chunks(phi, v, rho, unit, weight, i, j, self.first)
        else:
            ds, dv = self._chunked_message(phi, v, rho, unit, weight, i, j)
        s_msg = s + ds
        v_msg = v + dv
        # update: mix channels, couple scalars and vector norms
        uv = self.update_uv(v_msg)                                           # (N, 3, 2F)
        u, w = torch.split(uv, F, dim=2)
        w_norm = torch.sqrt((w * w).sum(dim=1) + 1e-8)
        a = self.update_mlp(torch.cat([s_msg, w_norm], dim=1))
        a_vv, a_sv, a_ss = torch.split(a, F, dim=1)
        s_local = s_msg + a_ss + a_sv * (u * w).sum(dim=1)
        v_local = v_msg + a_vv[:, None, :] * u
        if self.has_global:
            g = self.global_block(Features(s, v, s.new_zeros((s.shape[0], 5, 0))), graph)
            return s_local + g.scalars, v_local + g.vectors
        return s_local, v_local

    @torch.jit.unused
    def _chunked_message(self, phi: torch.Tensor, v: torch.Tensor, rho: torch.Tensor,
                         unit: torch.Tensor, weight: torch.Tensor, i: torch.Tensor,
                         j: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Eager path: same maths, edge chunks, no stored edge tensors (see painn_message)."""
        return painn_message(phi, v, rho, unit, weight, i, j, self.first)


@BACKBONES.register("painn", summary="PaiNN: scalar and vector (ℓ ≤ 1) features, "
                    "equivariant message passing (Schütt et al. 2021)")
class PaiNN(Backbone):
    """PaiNN feature extractor: (species, graph) -> scalars (N, F) and vectors (N, 3, F).

    Options (``model:`` keys): ``width`` F, ``layers``, ``cutoff`` Å, ``num_basis`` sinc radial
    functions; defaults follow the paper. ``global_blocks``: one block (or None) per layer.
    """

    order = 1

    def __init__(self, num_elements: int, global_blocks: Optional[List[Optional[nn.Module]]] = None,
                 width: PositiveInt = 128, layers: PositiveInt = 3, cutoff: PositiveFloat = 5.0,
                 num_basis: PositiveInt = 20):
        super().__init__()
        global_blocks = global_blocks or [None] * layers
        self.width = width
        self.embedding = AtomEmbedding(num_elements, width)
        self.basis = SincRadialBasis(num_basis, cutoff)
        self.cutoff_fn = CosineCutoff(cutoff)
        self.layers = nn.ModuleList([PaiNNLayer(width, num_basis, g, first=k == 0)
                                     for k, g in enumerate(global_blocks)])

    def forward(self, species: torch.Tensor, graph: Graph) -> Features:
        r = graph.lengths
        envelope = self.cutoff_fn(r)[:, None]
        rho = torch.cat([self.basis(r) * envelope, envelope], dim=1)       # (E, n_basis + 1)
        unit = graph.vectors / r[:, None]
        s = with_atom_inputs(self.embedding(species, graph.batch, graph.charge, graph.spin), graph)
        v = s.new_zeros((s.shape[0], 3, self.width))
        for layer in self.layers:
            s, v = layer(s, v, rho, unit, graph)
        return Features(s, v, s.new_zeros((s.shape[0], 5, 0)))
