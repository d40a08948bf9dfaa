"""PaiNN (Schütt, Unke, Gastegger, ICML 2021): scalar and vector features, sinc basis × cosine
cutoff; with ``lmax: 2`` also symmetric traceless rank-2 (ℓ = 2) features.

The ℓ = 2 extension follows PaiNN's pattern order by order. Messages: a neighbour's tensor
filtered by the radial function, plus the rank-2 part of the bond direction û ûᵀ − I/3
(`mlip_attn.nn.rank2`), as PaiNN does with v_j and û for vectors. Updates mix channels within
each order and couple the orders on the atom: the invariants |W_t t| (a smooth norm, see
`_soft_norm`) and ⟨U_t t, W_t t⟩ feed the scalars, M(U_t t) · W v turns tensors into vectors, and the rank-2 part of U v ⊗ W v turns vectors
into tensors. All products are per channel, so the cost grows with the number of components
(1 + 3 + 5 against 1 + 3), not with Clebsch–Gordan tensor products.
"""

from typing import Final, List, Literal, Optional, Tuple

import torch
from torch import nn

from ..attention.base import NoGlobalBlock
from ..nn import AtomEmbedding, CosineCutoff, SincRadialBasis, mlp
from ..nn.graph import Features, Graph, with_atom_inputs
from ..nn.painn_message import message_in_chunks, painn_message
from ..nn.policy import current as message_policy
from ..nn.rank2 import matrix_vector, outer_of_unit, symmetric_product
from ..registry import BACKBONES, PositiveFloat, PositiveInt
from .base import Backbone


def _soft_norm(x: torch.Tensor) -> torch.Tensor:
    """√(|x|² + 1) − 1 over the components (dim 1): ≈ |x|²/2 near zero, ≈ |x| far from it,
    and smooth everywhere (curvature ≤ 1). In near-linear molecules every equivariant feature
    is parallel to the axis, so a channel's norm is the absolute value of one scalar function,
    which crosses zero; √(|x|² + 1e-8) (PaiNN's choice, kept for ℓ ≤ 1 models) puts a kink of
    width 1e-4 there, this does not."""
    return torch.sqrt((x * x).sum(dim=1) + 1.0) - 1.0


class PaiNNLayer(nn.Module):
    """One PaiNN interaction (message + update), plus an optional global block in parallel.

    s (N, F) scalars, v (N, 3, F) vectors, t (N, 5, F) rank-2 tensors (N, 5, 0 when
    ``lmax`` = 1). Edge inputs are computed once per forward: ``rho`` (E, n_basis + 1) =
    [basis(r) · cutoff(r), cutoff(r)] and ``geometry`` = [û (E, 3)] (+ [rank-2 part of û ûᵀ
    (E, 5)] when ``lmax`` = 2). The filter is (Linear(basis) · cutoff), evaluated as one matmul of
    ``rho`` with [weight | bias], so a message vanishes smoothly at the cutoff and no (E, 3F)
    product with the envelope is formed. ``first`` marks the layer that sees v = t = 0, whose
    messages therefore have no neighbour-feature terms (skipped, not computed as zeros).

    Under TorchScript the message runs as ``torch.ops.mlip_attn.painn_message_orders`` (the compiled
    twin of the eager custom-backward function, every order) when ``compiled_message`` is set
    (the LAMMPS export sets it where the compiled ops are available), else as plain autograd
    over chunks.
    """

    lmax: Final[int]
    soft_norm: Final[bool]
    __constants__ = ["compiled_message", "chunk"]   # TorchScript compiles one branch only

    def __init__(self, width: int, num_basis: int, lmax: int = 1, tensor_channels: int = 0,
                 global_block: Optional[nn.Module] = None, first: bool = False,
                 soft_norm: bool = False):
        super().__init__()
        self.soft_norm = bool(soft_norm)
        self.width = width
        self.lmax = lmax
        self.tensor_channels = tensor_channels if lmax >= 2 else 0
        self.first = first
        self.compiled_message = False
        self.chunk = message_policy().script_chunk
        T = self.tensor_channels
        channels = 3 * width + 2 * T
        self.message_scalar = mlp([width, width, channels])
        self.message_radial = nn.Linear(num_basis, channels)
        self.update_uv = nn.Linear(width, 2 * width, bias=False)
        self.update_tensor = nn.Linear(T, 2 * T, bias=False) if lmax >= 2 else nn.Identity()
        self.update_mlp = mlp([2 * width + T, width, 3 * width + 4 * T])
        # a block whose output is zero by construction (``adds_features`` false: the
        # electrostatics block without φ feedback) is not called
        self.has_global = global_block is not None and bool(
            getattr(global_block, "adds_features", True))
        self.global_block = global_block if global_block is not None else NoGlobalBlock()

    def forward(self, s: torch.Tensor, v: torch.Tensor, t: torch.Tensor, rho: torch.Tensor,
                geometry: List[torch.Tensor], graph: Graph
                ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        F, T = self.width, self.tensor_channels
        i, j = graph.edge_index[0], graph.edge_index[1]
        # message: filter the neighbour's features by the radial function, sum over neighbours
        radial = self.message_radial
        weight = torch.cat([radial.weight, radial.bias[:, None]], dim=1)   # (3F + 2T, K)
        phi = self.message_scalar(s)                                      # (N, 3F + 2T)
        features = [v, t] if self.lmax >= 2 else [v]
        if torch.jit.is_scripting():
            if self.compiled_message:
                ds, d = torch.ops.mlip_attn.painn_message_orders(
                    phi, features, geometry, rho, weight, i, j, self.first, self.chunk)
            else:
                ds, d = message_in_chunks(phi, features, geometry, rho, weight, i, j, self.first,
                                          self.chunk)
        else:
            ds, d = self._chunked_message(phi, features, geometry, rho, weight, i, j)
        s_msg = s + ds
        v_msg = v + d[0]
        # update: mix channels within each order, couple the orders on the atom
        u, w = torch.split(self.update_uv(v_msg), F, dim=2)               # (N, 3, F) each
        if self.lmax >= 2:
            # the T tensor channels couple to the first T scalar and vector channels
            t_msg = t + d[1]
            p, q = torch.split(self.update_tensor(t_msg), T, dim=2)       # (N, 5, T) each
            a = self.update_mlp(torch.cat([s_msg, _soft_norm(w), _soft_norm(q)], dim=1))
            a_vv, a_sv, a_ss = a[:, :F], a[:, F:2 * F], a[:, 2 * F:3 * F]
            a_tt, a_st, a_vt, a_tv = torch.split(a[:, 3 * F:], T, dim=1)
            u_t, w_t = u[:, :, :T], w[:, :, :T]
            pad = F - T
            s_local = (s_msg + a_ss + a_sv * (u * w).sum(dim=1)
                       + torch.nn.functional.pad(a_st * (p * q).sum(dim=1), [0, pad]))
            v_local = (v_msg + a_vv[:, None, :] * u
                       + torch.nn.functional.pad(a_vt[:, None, :] * matrix_vector(p, w_t),
                                                 [0, pad]))
            t_local = t_msg + a_tt[:, None, :] * p + a_tv[:, None, :] * symmetric_product(u_t, w_t)
        else:
            if self.soft_norm:  # physics 2: no 1e-8 floor, whose kink sets a force scale
                w_norm = _soft_norm(w)
            else:
                w_norm = torch.sqrt((w * w).sum(dim=1) + 1e-8)
            a = self.update_mlp(torch.cat([s_msg, w_norm], dim=1))
            a_vv, a_sv, a_ss = torch.split(a, F, dim=1)
            s_local = s_msg + a_ss + a_sv * (u * w).sum(dim=1)
            v_local = v_msg + a_vv[:, None, :] * u
            t_local = t
        if self.has_global:
            g = self.global_block(Features(s, v, t), graph)
            return s_local + g.scalars, v_local + g.vectors, t_local + g.tensors
        return s_local, v_local, t_local

    @torch.jit.unused
    def _chunked_message(self, phi: torch.Tensor, features: List[torch.Tensor],
                         geometry: List[torch.Tensor], rho: torch.Tensor, weight: torch.Tensor,
                         i: torch.Tensor, j: torch.Tensor
                         ) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """Eager path: same maths, routed by the message policy (`mlip_attn.nn.policy`): small
        graphs take one plain-autograd pass in training mode; eval mode (inference: no double
        backward) takes the compiled op or edge chunks at every size."""
        return painn_message(phi, features, geometry, rho, weight, i, j, self.first,
                             inference=not self.training)


@BACKBONES.register("painn", summary="PaiNN: scalar and vector (ℓ ≤ 1) features, equivariant "
                    "message passing (Schütt et al. 2021); lmax: 2 adds rank-2 (ℓ = 2) features",
                    presets={"painn-l2": {"lmax": 2}})
class PaiNN(Backbone):
    """PaiNN feature extractor: (species, graph) -> scalars (N, F), vectors (N, 3, F) and, with
    ``lmax`` = 2, rank-2 tensors (N, 5, F).

    Options (``model:`` keys): ``width`` F, ``layers``, ``cutoff`` Å, ``num_basis`` sinc radial
    functions (defaults follow the paper), ``lmax`` 1 or 2, ``tensor_channels`` (rank-2
    channels with ``lmax`` 2, default F / 2). ``global_blocks``: one block (or None) per layer.
    ``physics`` (set by the model): 2 uses the smooth norm `_soft_norm` in the ℓ = 1 update too
    and embeds fragment charges (`mlip_attn.nn.embedding.AtomEmbedding`); 1 as before.
    """

    order = 1
    lmax: Final[int]

    def __init__(self, num_elements: int, global_blocks: Optional[List[Optional[nn.Module]]] = None,
                 width: PositiveInt = 128, layers: PositiveInt = 3, cutoff: PositiveFloat = 5.0,
                 num_basis: PositiveInt = 20, lmax: Literal[1, 2] = 1,
                 tensor_channels: Optional[PositiveInt] = None, physics: int = 2):
        super().__init__()
        global_blocks = global_blocks or [None] * layers
        self.width = width
        self.lmax = lmax
        self.tensor_channels = self.feature_widths(
            {"width": width, "lmax": lmax, "tensor_channels": tensor_channels})[-1] \
            if lmax >= 2 else 0
        if self.tensor_channels > width:
            raise ValueError(f"tensor_channels: at most width ({width}), got {tensor_channels}")
        self.embedding = AtomEmbedding(num_elements, width, physics)
        self.basis = SincRadialBasis(num_basis, cutoff)
        self.cutoff_fn = CosineCutoff(cutoff)
        self.layers = nn.ModuleList([
            PaiNNLayer(width, num_basis, lmax, self.tensor_channels, g, first=k == 0,
                       soft_norm=physics >= 2)
            for k, g in enumerate(global_blocks)])

    @classmethod
    def feature_widths(cls, options: dict) -> Tuple[int, ...]:
        """(F, F) with ``lmax`` 1; (F, F, tensor_channels) with ``lmax`` 2, where
        ``tensor_channels`` defaults to F / 2 (their messages then cost about as much as the
        vectors', so an ℓ = 2 model costs ~1.5× an ℓ = 1 one of the same width)."""
        width = int(options.get("width", 0))
        if int(options.get("lmax", 1)) < 2:
            return (width, width)
        return (width, width, int(options.get("tensor_channels") or max(width // 2, 1)))

    def forward(self, species: torch.Tensor, graph: Graph) -> Features:
        r = graph.lengths
        envelope = self.cutoff_fn(r)[:, None]
        rho = torch.cat([self.basis(r) * envelope, envelope], dim=1)       # (E, n_basis + 1)
        unit = graph.vectors / r[:, None]
        geometry = [unit, outer_of_unit(unit)] if self.lmax >= 2 else [unit]
        s = with_atom_inputs(self.embedding(species, graph), graph)
        n = s.shape[0]
        v = s.new_zeros((n, 3, self.width))
        t = s.new_zeros((n, 5, self.tensor_channels))
        for layer in self.layers:
            s, v, t = layer(s, v, t, rho, geometry, graph)
        return Features(s, v, t)
