"""EGNN (Satorras, Hoogeboom, Welling, ICML 2021), invariant variant for potentials.

Messages m_ij = φ_e(h_i, h_j, rbf(r_ij)) · cutoff(r_ij), gated by a learned edge weight
(the paper's "inferred edges"); h_i ← h_i + φ_h(h_i, Σ_j m_ij). Coordinates are not updated
(forces come from autograd of the energy), distances enter through a smooth sinc basis so the
energy is smooth at the cutoff.
"""
# no `from __future__ import annotations`: TorchScript resolves the annotations of the
# @torch.jit.unused methods, which it cannot do from strings
from typing import List, Optional

import torch
from torch import nn

from ..attention.base import NoGlobalBlock
from ..nn import AtomEmbedding, CosineCutoff, SincRadialBasis, mlp
from ..nn.egnn_message import edge_messages
from ..nn.graph import Features, Graph, empty_features, with_atom_inputs
from ..nn.policy import current as message_policy
from ..registry import BACKBONES, PositiveFloat, PositiveInt
from .base import Backbone


class EGNNLayer(nn.Module):
    """One EGNN layer on scalars h (N, F), plus an optional scalar global block in parallel."""

    def __init__(self, width: int, num_basis: int, global_block: Optional[nn.Module] = None):
        super().__init__()
        self.edge_in = nn.Linear(2 * width + num_basis, width)
        self.edge_out = nn.Sequential(nn.SiLU(), nn.Linear(width, width), nn.SiLU())
        self.edge_gate = nn.Linear(width, 1)
        self.node_mlp = mlp([2 * width, width, width])
        # a block whose output is zero by construction (``adds_features`` false: the
        # electrostatics block without φ feedback) is not called
        self.has_global = global_block is not None and bool(
            getattr(global_block, "adds_features", True))
        self.global_block = global_block if global_block is not None else NoGlobalBlock()

    def forward(self, h: torch.Tensor, radial: torch.Tensor, envelope: torch.Tensor,
                graph: Graph) -> torch.Tensor:
        i, j = graph.edge_index[0], graph.edge_index[1]
        # edge_in(cat[h_i, h_j, radial]) with the two node parts projected per atom (N rows)
        # before gathering, instead of per edge (E rows): same maths, far fewer flops
        F = h.shape[1]
        w = self.edge_in.weight                                                    # (F, 2F+K)
        node = torch.mm(h, torch.cat([w[:, :F], w[:, F:2 * F]], dim=0).t())        # (N, 2F)
        if self.training or torch.jit.is_scripting() or not self._large(i):
            pre = torch.addmm(self.edge_in.bias, radial, w[:, 2 * F:].t())         # (E, F)
            pre = (pre + torch.index_select(node[:, :F], 0, i)
                   + torch.index_select(node[:, F:], 0, j))
            m = self.edge_out(pre)                                                 # (E, F)
            m = m * (torch.sigmoid(self.edge_gate(m)) * envelope[:, None])
            agg = torch.zeros_like(h).index_add_(0, i, m)
        else:
            agg = self._chunked_messages(node, radial, envelope, i, j)
        h_local = h + self.node_mlp(torch.cat([h, agg], dim=1))
        if self.has_global:
            return h_local + self.global_block(empty_features(h), graph).scalars
        return h_local

    @torch.jit.unused
    def _large(self, i: torch.Tensor) -> bool:
        """Whether the graph takes the chunked inference path (the message policy's
        ``egnn_chunked_from``, read at call time; outside TorchScript, which never chunks)."""
        return i.shape[0] >= message_policy().egnn_chunked_from

    @torch.jit.unused
    def _chunked_messages(self, node: torch.Tensor, radial: torch.Tensor,
                          envelope: torch.Tensor, i: torch.Tensor, j: torch.Tensor
                          ) -> torch.Tensor:
        """Inference path for large graphs: the same maths in edge chunks with a recomputing
        backward (`mlip_attn.nn.egnn_message`), so no (E, F) tensor is kept for the forces."""
        F = node.shape[1] // 2
        linear = self.edge_out[1]
        return edge_messages(node, radial, envelope, self.edge_in.weight[:, 2 * F:],
                             self.edge_in.bias, linear.weight, linear.bias,
                             self.edge_gate.weight, self.edge_gate.bias, i, j)


@BACKBONES.register("egnn", summary="EGNN: invariant scalar message passing (Satorras et al. "
                    "2021), the cheapest backbone")
class EGNN(Backbone):
    """EGNN feature extractor: (species, graph) -> scalars (N, F).

    Options (``model:`` keys): ``width`` F, ``layers``, ``cutoff`` Å, ``num_basis``.
    """

    order = 0

    def __init__(self, num_elements: int, global_blocks: Optional[List[Optional[nn.Module]]] = None,
                 width: PositiveInt = 128, layers: PositiveInt = 3, cutoff: PositiveFloat = 5.0,
                 num_basis: PositiveInt = 20, physics: int = 2):
        super().__init__()
        global_blocks = global_blocks or [None] * layers
        self.width = width
        self.embedding = AtomEmbedding(num_elements, width, physics)
        self.basis = SincRadialBasis(num_basis, cutoff)
        self.cutoff_fn = CosineCutoff(cutoff)
        self.layers = nn.ModuleList([EGNNLayer(width, num_basis, g) for g in global_blocks])

    def forward(self, species: torch.Tensor, graph: Graph) -> Features:
        r = graph.lengths
        envelope = self.cutoff_fn(r)
        radial = self.basis(r) * envelope[:, None]
        h = with_atom_inputs(self.embedding(species, graph), graph)
        for layer in self.layers:
            h = layer(h, radial, envelope, graph)
        return empty_features(h)
