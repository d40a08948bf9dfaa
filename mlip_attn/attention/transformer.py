"""Multi-head self-attention over all atoms of each structure, with distance biases.

`TransformerAttention` is a global block (see `mlip_attn.nn.global_block`) for PaiNN and EGNN:
GPS-style fusion, attention on the scalar features only (vectors pass untouched, dv = 0):

    ds = W_O · concat_h softmax_j(q_i·k_j/√d + b^h_ij) v_j,   q, k, v from LayerNorm(s)

with W_O zero-initialised (a fresh model equals the local model). ``fixed=True`` drops the
queries and keys: A^h = softmax_j(b^h_ij) (seed 004, "fixed attention").

Layout. Atoms of a batch are packed into G groups of n slots:

- ``padded``: one group per structure, n = largest structure, empty slots are padding
  (cost ∝ B·n_max²);
- ``block_diagonal``: one group with all N atoms and a mask that forbids pairs of different
  structures (cost ∝ N²);
- ``auto`` (default): per batch, whichever has fewer pairs — padded for batches of
  similar-sized structures (always when they are equal), block-diagonal when one large
  structure sits with many small ones. One structure: a single group, no padding, no mask.
  Measured with `time_layouts` (CPU, 1 thread, float32, F = 128, 4 heads, power-law bias,
  forward + forces): 8 × 50 atoms padded 14 ms vs block-diagonal 64 ms; 2 × 500 atoms 182 vs
  371 ms; 1 × 500 + 7 × 10 atoms 901 vs 44 ms — hence the pair-count rule of ``auto``.

Pairs of different structures, padding and the diagonal (r = 0) are −inf in the additive mask,
so nothing leaks between structures. An atom alone in its structure (or a padding slot) would
have no key at all; it attends to itself instead and its output is set to zero.

Evaluation uses `torch.nn.functional.scaled_dot_product_attention` with the float mask
(bias + −inf); training mode uses the same maths written out, because the fused kernels on
GPU have no double backward (needed for force losses, create_graph=True).
"""
from __future__ import annotations

import math
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .biases import BIAS_TYPES, make_bias, pair_distances

LAYOUTS = ("auto", "padded", "block_diagonal")


def _rank_in_segment(batch: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Position of each atom inside its structure (0..count-1), for any order of ``batch``."""
    n = batch.shape[0]
    ptr = torch.cumsum(counts, 0) - counts
    sorted_batch, order = torch.sort(batch, stable=True)
    rank_sorted = torch.arange(n, device=batch.device) - ptr[sorted_batch]
    return torch.empty_like(batch).index_put_((order,), rank_sorted)


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
        rank = _rank_in_segment(batch, counts)
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


class BiasedSelfAttention(nn.Module):
    """Multi-head attention over packed atoms with an additive distance bias.

    forward(x (G, n, F), r (G, n, n), allowed (G, n, n), types (G, n, T)) -> (G, n, F), the
    output projection W_O included (zero-initialised when ``zero_init``).
    """

    def __init__(self, width: int, heads: int, bias: nn.Module, fixed: bool = False,
                 zero_init: bool = False):
        super().__init__()
        if not isinstance(heads, int) or heads < 1 or width % heads != 0:
            raise ValueError(f"heads: must be a positive integer that divides the width "
                             f"{width}, got {heads!r}")
        self.width = width
        self.heads = heads
        self.head_dim = width // heads
        self.fixed = bool(fixed)
        self.bias = bias
        self.query_key = nn.Identity() if self.fixed else nn.Linear(width, 2 * width)
        self.value = nn.Linear(width, width)
        self.out = nn.Linear(width, width)
        if zero_init:
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        g, n = x.shape[0], x.shape[1]
        return x.reshape(g, n, self.heads, self.head_dim).transpose(1, 2)     # (G, H, n, d)

    def weights(self, x: torch.Tensor, r: torch.Tensor, allowed: torch.Tensor,
                types: torch.Tensor) -> torch.Tensor:
        """Attention weights A^h_ij (G, H, n, n); rows sum to 1 over allowed j."""
        logits = self.bias(r, allowed, types)
        if not self.fixed:
            q, k = torch.split(self.query_key(x), self.width, dim=-1)
            q, k = self._split_heads(q), self._split_heads(k)
            logits = logits + torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim)
        g, n = x.shape[0], x.shape[1]
        return torch.softmax(logits.expand(g, self.heads, n, n), dim=-1)

    def forward(self, x: torch.Tensor, r: torch.Tensor, allowed: torch.Tensor,
                types: torch.Tensor) -> torch.Tensor:
        g, n = x.shape[0], x.shape[1]
        mask = self.bias(r, allowed, types)                                  # (G, H|1, n, n)
        v = self._split_heads(self.value(x))
        if self.fixed:
            y = torch.matmul(torch.softmax(mask, dim=-1), v)
        else:
            q, k = torch.split(self.query_key(x), self.width, dim=-1)
            q, k = self._split_heads(q), self._split_heads(k)
            if self.training:  # twice differentiable on every device (force losses)
                logits = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim) + mask
                y = torch.matmul(torch.softmax(logits, dim=-1), v)
            else:
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        y = y.transpose(1, 2).reshape(g, n, self.width)
        return self.out(y)


class TransformerAttention(nn.Module):
    """Global block: multi-head attention over the atoms of each structure (GPS-style fusion).

    Args:
        width: F, the scalar feature width.  heads: H (must divide F).
        bias: one of `BIAS_TYPES` (see `mlip_attn.attention.biases`).
        fixed: attention from the bias alone, A = softmax_j(b_ij) (no queries or keys).
        exponent: (initial) power-law exponent; default −2 (fixed) or −1…−3 across heads.
        num_kernels: K of the Gaussian bias.
        layout: "auto" | "padded" | "block_diagonal" (see the module docstring).

    forward(s (N, F), v (N, 3, F|0), positions (N, 3), batch (N,), num_graphs) -> (ds, 0).
    """

    def __init__(self, width: int, heads: int = 4, bias: str = "power_law_negative",
                 fixed: bool = False, exponent: Optional[float] = None, num_kernels: int = 32,
                 layout: str = "auto"):
        super().__init__()
        if bias not in BIAS_TYPES:
            raise ValueError(f"bias: {bias!r} is not one of {list(BIAS_TYPES)}")
        if layout not in LAYOUTS:
            raise ValueError(f"layout: {layout!r} is not one of {list(LAYOUTS)}")
        if not isinstance(fixed, bool):
            raise ValueError(f"fixed: must be true or false, got {fixed!r}")
        self.width = width
        self.layout = layout
        self.bias_kind = bias
        self.norm = nn.LayerNorm(width)
        self.attention = BiasedSelfAttention(
            width, heads, make_bias(bias, heads, width, exponent, num_kernels), fixed, zero_init=True)

    def forward(self, s: torch.Tensor, v: torch.Tensor, positions: torch.Tensor,
                batch: torch.Tensor, num_graphs: int) -> Tuple[torch.Tensor, torch.Tensor]:
        group, slot, sid = structure_layout(batch, num_graphs, self.layout)
        pairs, allowed, has_partner = pair_masks(sid)
        x = pack(self.norm(s), group, slot, sid)
        r = pair_distances(pack(positions, group, slot, sid), pairs)
        y = self.attention(x, r, allowed, x) * has_partner[:, :, None].to(x.dtype)
        return y[group, slot], torch.zeros_like(v)

    @torch.jit.unused
    def attention_weights(self, s: torch.Tensor, positions: torch.Tensor, batch: torch.Tensor,
                          num_graphs: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Introspection (not part of the scripted forward), on this block's input features.

        Returns ``weights`` (G, H, n, n), ``r`` (G, n, n) Å and ``pairs`` (G, n, n) bool — the
        entries that are two different atoms of one structure — in the packed layout.
        """
        group, slot, sid = structure_layout(batch, num_graphs, self.layout)
        pairs, allowed, _ = pair_masks(sid)
        x = pack(self.norm(s), group, slot, sid)
        r = pair_distances(pack(positions, group, slot, sid), pairs)
        return self.attention.weights(x, r, allowed, x), r, pairs

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
    v = s.new_zeros((n, 3, 0))
    result = {}
    for layout in ("padded", "block_diagonal"):
        block = TransformerAttention(width, heads, bias, layout=layout).to(device=device, dtype=dtype).eval()
        nn.init.normal_(block.attention.out.weight)
        times = []
        for k in range(repeats + 1):
            pos = positions.detach().requires_grad_(forces)
            if device != "cpu":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            ds, _ = block(s, v, pos, batch, len(structure_sizes))
            if forces:
                torch.autograd.grad(ds.sum(), pos)
            if device != "cpu":
                torch.cuda.synchronize()
            if k > 0:  # the first call warms up
                times.append(time.perf_counter() - t0)
        result[layout] = sorted(times)[len(times) // 2]
    return result
