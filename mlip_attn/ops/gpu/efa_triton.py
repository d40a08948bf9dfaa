"""Euclidean fast attention's Lebedev grid rotation as Triton kernels: the GPU twin of
``efa_rotate`` (``src/efa_kernels.cpp``; the ATen form: `rotate_reference`).

    θ_ngk = ω_k (u_g · r_n),   out[n, g, c, 2k]   = s_g (a cos θ − b sin θ),
                               out[n, g, c, 2k+1] = s_g (a sin θ + b cos θ)

for x (N, C, 2K) with (a, b) = x[n, c, 2k], x[n, c, 2k+1]; centred positions r (N, 3) Å,
directions u (G, 3), frequencies ω (K,) 1/Å, scales s (G,) (quadrature weights for the
queries, ones for the keys). Output (N, G·C·2K), as `mlip_attn.attention.efa._rotations`.
The forward runs one program per (atom block, direction, pair block); the backward one per
(atom block, pair block), looping over the directions: g_x is summed in registers, g_centred
(N, 3) is summed over pair blocks with atomic adds. No (N, G, K) angle tensor exists on either
pass. The grid (directions, ω, s) is cast to x's dtype, as the C++ op does.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import on_device_of

BLOCK_N = 16


@triton.jit
def _add(a, b):
    """The combine of a sum (``tl.reduce``). The kernels use Triton builtins only, never
    ``triton.language``'s own jit helpers (``tl.sum``, ``tl.zeros``), so that the interpreter
    runs them even when Triton was imported before ``TRITON_INTERPRET`` was set."""
    return a + b


@triton.jit
def _rotate_forward(x, centred, dirs, omega, scale, out, N, G, P, K,
                    BLOCK_N: tl.constexpr, BLOCK_P: tl.constexpr):
    """P = C·K channel pairs per atom, p = c·K + k; x (N, 2P), out (N, G·2P)."""
    n = (tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
    g = tl.program_id(1)
    p = tl.program_id(2) * BLOCK_P + tl.arange(0, BLOCK_P)
    mn, mp = n < N, p < P
    mask = mn[:, None] & mp[None, :]
    t = (tl.load(centred + n * 3, mask=mn, other=0.0) * tl.load(dirs + g * 3)
         + tl.load(centred + n * 3 + 1, mask=mn, other=0.0) * tl.load(dirs + g * 3 + 1)
         + tl.load(centred + n * 3 + 2, mask=mn, other=0.0) * tl.load(dirs + g * 3 + 2))
    w = tl.load(omega + p % K, mask=mp, other=0.0)
    s = tl.load(scale + g)
    theta = t[:, None] * w[None, :]
    cs, sn = tl.cos(theta) * s, tl.sin(theta) * s
    a = tl.load(x + n[:, None] * (2 * P) + 2 * p[None, :], mask=mask, other=0.0)
    b = tl.load(x + n[:, None] * (2 * P) + 2 * p[None, :] + 1, mask=mask, other=0.0)
    at = out + n[:, None] * (G * 2 * P) + g * (2 * P) + 2 * p[None, :]
    tl.store(at, a * cs - b * sn, mask=mask)
    tl.store(at + 1, a * sn + b * cs, mask=mask)


@triton.jit
def _rotate_backward(grad, x, centred, dirs, omega, scale, g_x, g_centred, N, G, P, K,
                     NEED_X: tl.constexpr, NEED_R: tl.constexpr,
                     BLOCK_N: tl.constexpr, BLOCK_P: tl.constexpr):
    """g_x (N, 2P) written, g_centred (N, 3) summed into (atomic), from grad (N, G·2P)."""
    n = (tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
    p = tl.program_id(1) * BLOCK_P + tl.arange(0, BLOCK_P)
    mn, mp = n < N, p < P
    mask = mn[:, None] & mp[None, :]
    r0 = tl.load(centred + n * 3, mask=mn, other=0.0)
    r1 = tl.load(centred + n * 3 + 1, mask=mn, other=0.0)
    r2 = tl.load(centred + n * 3 + 2, mask=mn, other=0.0)
    w = tl.load(omega + p % K, mask=mp, other=0.0)
    a = tl.load(x + n[:, None] * (2 * P) + 2 * p[None, :], mask=mask, other=0.0)
    b = tl.load(x + n[:, None] * (2 * P) + 2 * p[None, :] + 1, mask=mask, other=0.0)
    acc_a = tl.full((BLOCK_N, BLOCK_P), 0.0, a.dtype)
    acc_b = tl.full((BLOCK_N, BLOCK_P), 0.0, a.dtype)
    gr0 = tl.full((BLOCK_N,), 0.0, a.dtype)
    gr1 = tl.full((BLOCK_N,), 0.0, a.dtype)
    gr2 = tl.full((BLOCK_N,), 0.0, a.dtype)
    for g in range(G):
        u0, u1, u2 = tl.load(dirs + g * 3), tl.load(dirs + g * 3 + 1), tl.load(dirs + g * 3 + 2)
        s = tl.load(scale + g)
        theta = (r0 * u0 + r1 * u1 + r2 * u2)[:, None] * w[None, :]
        cs, sn = tl.cos(theta) * s, tl.sin(theta) * s
        at = grad + n[:, None] * (G * 2 * P) + g * (2 * P) + 2 * p[None, :]
        ga = tl.load(at, mask=mask, other=0.0)
        gb = tl.load(at + 1, mask=mask, other=0.0)
        if NEED_X:
            acc_a += ga * cs + gb * sn
            acc_b += gb * cs - ga * sn
        if NEED_R:
            g_theta = ga * (-a * sn - b * cs) + gb * (a * cs - b * sn)
            g_t = tl.reduce(g_theta * w[None, :], 1, _add)
            gr0 += g_t * u0
            gr1 += g_t * u1
            gr2 += g_t * u2
    if NEED_X:
        to = g_x + n[:, None] * (2 * P) + 2 * p[None, :]
        tl.store(to, acc_a, mask=mask)
        tl.store(to + 1, acc_b, mask=mask)
    if NEED_R:
        tl.atomic_add(g_centred + n * 3, gr0, mask=mn)
        tl.atomic_add(g_centred + n * 3 + 1, gr1, mask=mn)
        tl.atomic_add(g_centred + n * 3 + 2, gr2, mask=mn)


def rotate_reference(x: torch.Tensor, centred: torch.Tensor, directions: torch.Tensor,
                     omega: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The ATen form of the rotation (the C++ op's ``rotate_aten``), differentiable twice."""
    n, c, d = x.shape
    theta = (centred @ directions.to(x.dtype).t()).unsqueeze(-1) * omega.to(x.dtype)
    s = scale.to(x.dtype).view(1, -1, 1)
    cos, sin = (torch.cos(theta) * s).unsqueeze(2), (torch.sin(theta) * s).unsqueeze(2)
    pairs = x.reshape(n, 1, c, d // 2, 2)
    a, b = pairs[..., 0], pairs[..., 1]
    rotated = torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1)
    return rotated.reshape(n, directions.shape[0] * c * d)


def _grid_tensors(x, directions, omega, scale):
    return (directions.to(x.dtype).contiguous(), omega.to(x.dtype).contiguous(),
            scale.to(x.dtype).contiguous())


def _block_p(pairs: int) -> int:
    return min(64, triton.next_power_of_2(max(pairs, 1)))


def rotate_forward(x, centred, directions, omega, scale) -> torch.Tensor:
    """(N, G·C·2K): see the module docstring."""
    x, centred = x.contiguous(), centred.to(x.dtype).contiguous()
    dirs, omega, scale = _grid_tensors(x, directions, omega, scale)
    N, C, D = x.shape
    G, K = int(dirs.shape[0]), int(omega.shape[0])
    if D != 2 * K:
        raise ValueError(f"efa rotation: x (N, C, 2K) with K = {K} frequencies, got "
                         f"{tuple(x.shape)}")
    out = x.new_empty((N, G * C * D))
    P = C * K
    if N and G and P:
        block_p = _block_p(P)
        with on_device_of(x):
            _rotate_forward[(triton.cdiv(N, BLOCK_N), G, triton.cdiv(P, block_p))](
                x, centred, dirs, omega, scale, out, N, G, P, K, BLOCK_N=BLOCK_N,
                BLOCK_P=block_p)
    return out


def rotate_backward(grad, x, centred, directions, omega, scale, need_x: bool, need_r: bool):
    """(g_x (N, C, 2K) or None, g_centred (N, 3) or None)."""
    x, centred, grad = x.contiguous(), centred.to(x.dtype).contiguous(), grad.contiguous()
    dirs, omega, scale = _grid_tensors(x, directions, omega, scale)
    N, C, D = x.shape
    G, K = int(dirs.shape[0]), int(omega.shape[0])
    P = C * K
    g_x = torch.zeros_like(x)
    g_r = torch.zeros_like(centred)
    if N and G and P and (need_x or need_r):
        block_p = _block_p(P)
        with on_device_of(x):
            _rotate_backward[(triton.cdiv(N, BLOCK_N), triton.cdiv(P, block_p))](
                grad, x, centred, dirs, omega, scale, g_x, g_r, N, G, P, K,
                NEED_X=bool(need_x), NEED_R=bool(need_r), BLOCK_N=BLOCK_N, BLOCK_P=block_p)
    return (g_x if need_x else None), (g_r if need_r else None)


class TritonRotate(torch.autograd.Function):
    """`rotate_forward` with the Triton backward (gradients for x and the positions; the grid
    is fixed). Second derivatives differentiate `rotate_reference`."""

    @staticmethod
    def forward(ctx, x, centred, directions, omega, scale):
        ctx.save_for_backward(x, centred, directions, omega, scale)
        return rotate_forward(x, centred, directions, omega, scale)

    @staticmethod
    def backward(ctx, grad):
        x, centred, directions, omega, scale = ctx.saved_tensors
        need_x, need_r = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if torch.is_grad_enabled():   # create_graph: the ATen form, on views (direct paths)
            xv, rv = x.view_as(x), centred.view_as(centred)
            inputs = [v for v, need in ((xv, need_x), (rv, need_r)) if need]
            found = iter(torch.autograd.grad(rotate_reference(xv, rv, directions, omega, scale),
                                             inputs, grad, create_graph=True, allow_unused=True))
            g_x = next(found) if need_x else None
            g_r = next(found) if need_r else None
        else:
            g_x, g_r = rotate_backward(grad, x, centred, directions, omega, scale, need_x, need_r)
        if g_r is not None and g_r.dtype != centred.dtype:
            g_r = g_r.to(centred.dtype)
        return g_x, g_r, None, None, None


def efa_rotate_triton(x: torch.Tensor, centred: torch.Tensor, directions: torch.Tensor,
                      omega: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``efa_rotate`` on the Triton kernels (arguments and result as the C++ op)."""
    if x.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"efa_rotate_triton: float32 or float64, got {x.dtype}")
    if x.dim() != 3 or centred.shape != (x.shape[0], 3) or directions.dim() != 2 \
            or directions.shape[1] != 3:
        raise ValueError(f"efa_rotate_triton: x (N, C, 2K), centred (N, 3), directions (G, 3); "
                         f"got {tuple(x.shape)}, {tuple(centred.shape)}, {tuple(directions.shape)}")
    return TritonRotate.apply(x, centred, directions, omega, scale)
