"""Multi-head self-attention over packed atoms with an additive distance bias (shared by the
transformer global block and the graph-free transformer backbone).

Evaluation uses `torch.nn.functional.scaled_dot_product_attention` with the float mask
(bias + −inf); training mode uses the same maths written out, because the fused kernels on
GPU have no double backward (needed for force losses, create_graph=True).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..nn.switching import reach_switch


class BiasedSelfAttention(nn.Module):
    """Multi-head attention over packed atoms with an additive distance bias.

    forward(x (G, n, F), r (G, n, n), allowed (G, n, n), types (G, n, T)) -> (G, n, F), the
    output projection W_O included (zero-initialised when ``zero_init``).

    ``r_max`` > 0 (Å) gives attention a reach: A_ij = S(r_ij) e^{l_ij} / (1 + Σ_j S(r_ij) e^{l_ij})
    with the C² switch S from r_max/2 to r_max — a softmax with one extra key of logit 0 (an
    "attention sink") and the pair weights switched off with distance. Atoms beyond r_max
    add nothing to the numerator or the denominator, so fragments farther apart than r_max
    do not see each other (plain softmax normalises over every atom of the structure).
    """

    def __init__(self, width: int, heads: int, bias: nn.Module, fixed: bool = False,
                 zero_init: bool = False, r_max: float = 0.0):
        super().__init__()
        if not isinstance(heads, int) or heads < 1 or width % heads != 0:
            raise ValueError(f"heads: must be a positive integer that divides the width "
                             f"{width}, got {heads!r}")
        self.width = width
        self.heads = heads
        self.head_dim = width // heads
        self.fixed = bool(fixed)
        self.bias = bias
        self.r_max = float(r_max)
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
        if self.r_max > 0.0:
            return self._switched_softmax(logits.expand(g, self.heads, n, n), r)
        return torch.softmax(logits.expand(g, self.heads, n, n), dim=-1)

    def _switched_softmax(self, logits: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """A_ij = S(r_ij) e^{l_ij} / (1 + Σ_j S(r_ij) e^{l_ij}) for logits (G, H, n, n) with −inf
        where not allowed, r (G, n, n) Å. Shifted by m = max(0, max_j l_ij) (not
        differentiated: the ratio does not depend on it) so nothing overflows."""
        shift = logits.detach().amax(dim=-1, keepdim=True).clamp(min=0.0)
        weights = torch.exp(logits - shift) * reach_switch(r, self.r_max).unsqueeze(1)
        return weights / (torch.exp(-shift) + weights.sum(dim=-1, keepdim=True))

    def forward(self, x: torch.Tensor, r: torch.Tensor, allowed: torch.Tensor,
                types: torch.Tensor) -> torch.Tensor:
        g, n = x.shape[0], x.shape[1]
        mask = self.bias(r, allowed, types)                                  # (G, H|1, n, n)
        v = self._split_heads(self.value(x))
        if self.r_max > 0.0:
            y = torch.matmul(self.weights(x, r, allowed, types), v)
        elif self.fixed:
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
