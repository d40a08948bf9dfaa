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
