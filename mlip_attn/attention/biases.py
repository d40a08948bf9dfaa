"""Attention biases: per-head additive logits b^h_ij from interatomic distances.

All biases act on atoms packed into groups (see `mlip_attn.nn.packing`):
``r`` (G, n, n) distances in Å, ``allowed`` (G, n, n) bool (True where atom i may attend to
atom j: same structure, not padding, not the diagonal), ``types`` (G, n, T) per-atom type
features (one-hot elements in the graph-free transformer, normalised scalar features in a
global block). They return (G, H, n, n) — or (G, 1, n, n), broadcast over heads — with −inf
wherever ``allowed`` is False, so a softmax over j never sees the diagonal (r = 0, log 0) or
padding. Every bias is a smooth function of r, so forces −dE/dr flow through it.

Use `pair_distances` to get ``r``: it substitutes r = 1 on excluded pairs *before* the square
root and the logarithm, so no inf/NaN reaches the gradient.

Kinds (``bias:`` in the config, see `make_bias`):

- ``power_law``            b^h_ij = p · log r_ij, p fixed (default −2) — the power-law bias
                           of molecular transformers (eq. 4 of that paper).
- ``power_law_learned``    p_h learned per head.
- ``power_law_negative``   p_h = −exp(θ_h), learned per head and always < 0 (the paper's best).
- ``gaussian``             Graphormer-3D / Transformer-M Gaussian kernels of a pair-type-aware
                           affine map of r, then an MLP K → K → H (GELU).
- ``none``                 no bias (masking only).
"""
from __future__ import annotations

import math
from typing import List, Optional

import torch
from torch import nn

BIAS_TYPES = ("power_law", "power_law_learned", "power_law_negative", "gaussian", "none")
POWER_LAW_MODES = {"power_law": "fixed", "power_law_learned": "learned",
                   "power_law_negative": "negative"}


def pair_distances(positions: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    """Distances r_ij (G, n, n) in Å of packed positions (G, n, 3).

    Where ``pairs`` (G, n, n) is False (diagonal, padding, other structures) r is set to 1
    before the square root, so log r and 1/r stay finite there and their gradients are zero.
    """
    diff = positions[:, :, None, :] - positions[:, None, :, :]
    d2 = (diff * diff).sum(-1)
    return torch.sqrt(torch.where(pairs, d2, torch.ones_like(d2)))


def _masked(bias: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    return bias.masked_fill(~allowed[:, None, :, :], float("-inf"))


def default_exponents(heads: int, mode: str, exponent: Optional[float] = None) -> List[float]:
    """Initial exponents p_h. Fixed: ``exponent`` (default −2) for every head. Learned: the
    given ``exponent`` for every head, or by default spread geometrically from −1 to −3."""
    if exponent is not None:
        return [float(exponent)] * heads
    if mode == "fixed" or heads == 1:
        return [-2.0] * heads
    return [-(3.0 ** (h / (heads - 1))) for h in range(heads)]


class PowerLawBias(nn.Module):
    """b^h_ij = p_h · log r_ij, i.e. attention ∝ r_ij^{p_h} · exp(q·k/√d).

    ``mode``: "fixed" (p is a buffer, not trained), "learned" (free p_h per head) or
    "negative" (p_h = −exp(θ_h), learned and always negative). ``exponent``: the (initial)
    exponent of every head; must be < 0 for "negative". See `default_exponents`.
    """

    def __init__(self, heads: int, mode: str = "negative", exponent: Optional[float] = None):
        super().__init__()
        if mode not in ("fixed", "learned", "negative"):
            raise ValueError(f"power-law mode {mode!r} is not one of ['fixed', 'learned', 'negative']")
        p0 = torch.tensor(default_exponents(heads, mode, exponent),
                          dtype=torch.get_default_dtype())
        if mode == "negative" and bool((p0 >= 0).any()):
            raise ValueError(f"exponent: power_law_negative needs a negative exponent, got {exponent}")
        self.heads = heads
        self.mode = mode
        if mode == "fixed":
            self.register_buffer("p", p0)
            self.theta = nn.Parameter(torch.zeros(0, dtype=p0.dtype), requires_grad=False)
        elif mode == "learned":
            self.register_buffer("p", torch.zeros(0, dtype=p0.dtype))
            self.theta = nn.Parameter(p0)
        else:
            self.register_buffer("p", torch.zeros(0, dtype=p0.dtype))
            self.theta = nn.Parameter(torch.log(-p0))

    def exponents(self) -> torch.Tensor:
        """The exponents p_h (H,)."""
        if self.mode == "fixed":
            return self.p
        if self.mode == "learned":
            return self.theta
        return -torch.exp(self.theta)

    def forward(self, r: torch.Tensor, allowed: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
        p = self.exponents()
        bias = p[None, :, None, None] * torch.log(r)[:, None, :, :]
        return _masked(bias, allowed)


class GaussianKernelBias(nn.Module):
    """Pair-type-aware Gaussian-kernel bias (Graphormer-3D, Transformer-M).

    s_ij = γ_ij · r_ij + β_ij with γ_ij = 1 + a_iᵀ Γ a_j and β_ij = a_iᵀ B a_j, where a_i (T,)
    are the type features of atom i. With one-hot elements (the graph-free transformer) Γ and B
    are exactly the originals' per-pair-of-elements tables (γ = 1, β = 0 at the start);
    in a global block a_i are the layer's normalised scalar features (the block does not see
    element indices), so the tables become learned bilinear forms. Then K Gaussian kernels
    ψ^k = exp(−½((s − μ_k)/σ_k)²)/(√(2π)σ_k), μ, σ learned (init U(0, 3), σ → |σ| + 0.01),
    and per-head bias = Linear(K, K) → GELU → Linear(K, H). Memory O(G·n²·K).
    (The originals also add W·Σ_j ψ_ij to the atom features; not done here.)
    """

    def __init__(self, heads: int, type_dim: int, num_kernels: int = 32):
        super().__init__()
        self.heads = heads
        self.num_kernels = num_kernels
        self.gamma = nn.Parameter(torch.zeros(type_dim, type_dim))
        self.beta = nn.Parameter(torch.zeros(type_dim, type_dim))
        self.means = nn.Parameter(torch.empty(num_kernels).uniform_(0.0, 3.0))
        self.stds = nn.Parameter(torch.empty(num_kernels).uniform_(0.0, 3.0))
        self.mlp = nn.Sequential(nn.Linear(num_kernels, num_kernels), nn.GELU(),
                                 nn.Linear(num_kernels, heads))

    def kernels(self, r: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
        """ψ (G, n, n, K)."""
        gamma = 1.0 + torch.matmul(torch.matmul(types, self.gamma), types.transpose(1, 2))
        beta = torch.matmul(torch.matmul(types, self.beta), types.transpose(1, 2))
        s = gamma * r + beta
        std = torch.abs(self.stds) + 0.01
        z = (s[..., None] - self.means) / std
        return torch.exp(-0.5 * z * z) / (math.sqrt(2.0 * math.pi) * std)

    def forward(self, r: torch.Tensor, allowed: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
        bias = self.mlp(self.kernels(r, types)).permute(0, 3, 1, 2)
        return _masked(bias, allowed)


class NoBias(nn.Module):
    """No distance information: 0 on allowed pairs, −inf elsewhere, shape (G, 1, n, n)."""

    def __init__(self, heads: int = 1):
        super().__init__()
        self.heads = heads

    def forward(self, r: torch.Tensor, allowed: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
        return _masked(torch.zeros_like(r)[:, None, :, :], allowed)


def make_bias(kind: str, heads: int, type_dim: int, exponent: Optional[float] = None,
              num_kernels: int = 32) -> nn.Module:
    """The bias module for a config name in `BIAS_TYPES`."""
    if kind in POWER_LAW_MODES:
        return PowerLawBias(heads, POWER_LAW_MODES[kind], exponent)
    if exponent is not None:
        raise ValueError(f"exponent: only for power-law biases, not bias {kind!r}")
    if kind == "gaussian":
        if not isinstance(num_kernels, int) or num_kernels < 1:
            raise ValueError(f"num_kernels: must be a positive integer, got {num_kernels!r}")
        return GaussianKernelBias(heads, type_dim, num_kernels)
    if kind == "none":
        return NoBias(heads)
    raise ValueError(f"bias: {kind!r} is not one of {list(BIAS_TYPES)}")
