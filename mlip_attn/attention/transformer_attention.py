"""Transformer attention as a global block: multi-head self-attention over all atoms of each
structure, with distance biases (GPS-style fusion, Rampášek et al. 2022).

Attention acts on the scalar features only (vectors pass untouched):

    ds = W_O · concat_h softmax_j(q_i·k_j/√d + b^h_ij) v_j,   q, k, v from LayerNorm(s)

with W_O zero-initialised (a fresh model equals the local model). ``fixed=True`` drops the
queries and keys: A^h = softmax_j(b^h_ij) ("fixed attention" of the power-law bias paper,
see `mlip_attn.attention.biases`). Atoms are packed per `mlip_attn.nn.packing`.
Memory is O(n²) per structure.
"""
from __future__ import annotations

import math
from typing import List, Literal, Optional, Tuple

import torch
from torch import nn

from ..nn.graph import Features, Graph
from ..registry import GLOBAL_BLOCKS, PositiveFloat, PositiveInt
from .base import GlobalBlock
from .biases import BIAS_TYPES, make_bias, pair_distances
from .multihead import BiasedSelfAttention
from ..nn.packing import LAYOUTS, pack, pair_masks, structure_layout


@GLOBAL_BLOCKS.register(
    "transformer", summary="softmax attention (with a sink, switched off at r_max) over the "
    "atoms of a structure with physical distance biases (power law, Gaussian kernels); O(n²)",
    presets={"transformer": {"heads": 4, "bias": "power_law_negative"}})
class TransformerAttention(GlobalBlock):
    """Global block: multi-head attention over the atoms of each structure (GPS-style fusion).

    Args:
        widths: the host's channels per rotation order; attention reads and writes the
            scalars (F = widths[0]) only.
        heads: H (must divide F).
        bias: one of `BIAS_TYPES` (see `mlip_attn.attention.biases`).
        fixed: attention from the bias alone, A = softmax_j(b_ij) (no queries or keys).
        exponent: (initial) power-law exponent; default −2 (fixed) or −1…−3 across heads.
        num_kernels: K of the Gaussian bias.
        layout: "auto" | "padded" | "block_diagonal" (see `mlip_attn.nn.packing`).
        r_max: reach (Å): attention weights are switched off between r_max/2 and r_max and
            normalised with an attention sink (`BiasedSelfAttention`), so atoms farther apart
            than r_max never interact (physics 2, models built now); model files written
            before it (physics 1) ignore it: plain softmax over every atom.
        physics: set by the model (`mlip_attn.models.builder`), not the config.

    forward(x: Features, graph) -> Features with scalars (N, F) and zero vectors/tensors.
    """

    order = 0
    not_distributed = "its softmax over every atom needs every atom on every rank"

    def __init__(self, widths: Tuple[int, ...], heads: PositiveInt = 4,
                 bias: Literal[BIAS_TYPES] = "power_law_negative", fixed: bool = False,
                 exponent: Optional[float] = None, num_kernels: PositiveInt = 32,
                 layout: Literal[LAYOUTS] = "auto", r_max: PositiveFloat = 12.0,
                 physics: int = 2):
        super().__init__()
        width = widths[0]
        self.reach = float(r_max) if physics >= 2 else math.inf
        self.through_space = self.reach
        self.width = width
        self.layout = layout
        self.bias_kind = bias
        self.norm = nn.LayerNorm(width)
        self.attention = BiasedSelfAttention(
            width, heads, make_bias(bias, heads, width, exponent, num_kernels), fixed, zero_init=True,
            r_max=self.reach if math.isfinite(self.reach) else 0.0)

    def forward(self, x: Features, graph: Graph) -> Features:
        group, slot, sid = structure_layout(graph.batch, graph.num_graphs, self.layout)
        pairs, allowed, has_partner = pair_masks(sid)
        h = pack(self.norm(x.scalars), group, slot, sid)
        r = pair_distances(pack(graph.positions, group, slot, sid), pairs)
        y = self.attention(h, r, allowed, h) * has_partner[:, :, None].to(h.dtype)
        return Features(y[group, slot], torch.zeros_like(x.vectors), torch.zeros_like(x.tensors))

    @torch.jit.unused
    def attention_weights(self, x: Features, graph: Graph
                          ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Introspection (not part of the scripted forward), on this block's forward inputs.

        Returns ``weights`` (G, H, n, n), ``r`` (G, n, n) Å and ``pairs`` (G, n, n) bool — the
        entries that are two different atoms of one structure — in the packed layout.
        """
        group, slot, sid = structure_layout(graph.batch, graph.num_graphs, self.layout)
        pairs, allowed, _ = pair_masks(sid)
        h = pack(self.norm(x.scalars), group, slot, sid)
        r = pair_distances(pack(graph.positions, group, slot, sid), pairs)
        return self.attention.weights(h, r, allowed, h), r, pairs

    @torch.jit.unused
    def exponents(self) -> Optional[torch.Tensor]:
        """Power-law exponents p_h (H,), or None for other biases."""
        b = self.attention.bias
        return b.exponents() if hasattr(b, "exponents") else None


def time_layouts(structure_sizes: List[int], width: int = 128, heads: int = 4,
                 bias: str = "power_law_negative", repeats: int = 5, forces: bool = True,
                 dtype: torch.dtype = torch.float32, device: str = "cpu", seed: int = 0) -> dict:
    """Median wall time (s) of one `TransformerAttention` forward (+ backward to positions when
    ``forces``) for a batch of random structures of the given sizes, per layout."""
    import time
    gen = torch.Generator().manual_seed(seed)
    sizes = torch.tensor(structure_sizes)
    batch = torch.repeat_interleave(torch.arange(len(structure_sizes)), sizes).to(device)
    n = int(sizes.sum())
    positions = (torch.randn(n, 3, generator=gen) * 5.0).to(device=device, dtype=dtype)
    s = torch.randn(n, width, generator=gen).to(device=device, dtype=dtype)
    from ..nn.graph import empty_features, graph_without_edges
    result = {}
    for layout in ("padded", "block_diagonal"):
        block = TransformerAttention((width,), heads, bias, layout=layout).to(device=device, dtype=dtype).eval()
        nn.init.normal_(block.attention.out.weight)
        times = []
        for k in range(repeats + 1):
            pos = positions.detach().requires_grad_(forces)
            if device != "cpu":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            graph = graph_without_edges(pos, batch, len(structure_sizes))
            ds = block(empty_features(s), graph).scalars
            if forces:
                torch.autograd.grad(ds.sum(), pos)
            if device != "cpu":
                torch.cuda.synchronize()
            if k > 0:  # the first call warms up
                times.append(time.perf_counter() - t0)
        result[layout] = sorted(times)[len(times) // 2]
    return result
