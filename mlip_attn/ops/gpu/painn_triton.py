"""PaiNN's message as Triton kernels: the GPU twin of ``painn_message_orders``.

The maths is that of `mlip_attn.nn.painn_message.message_reference` (and of the C++ loops in
``src/painn_kernels.cpp``): with the filter ``filt_e = rho_e @ weightᵀ`` and
``x_e = phi_j ⊙ filt_e`` (C = F + 2ΣF_ℓ columns, laid out [s | a_1 b_1 | a_2 b_2 …]),

    Δs_i += x_e[s],   Δf_i += g_e ⊗ x_e[b_ℓ] + f_j ⊙ x_e[a_ℓ]   (each order ℓ)

One kernel launch per segment (the scalars, then each order) over a grid of (edge block,
column block): every program computes its edges' filter for its columns only (a loop over the K
radial functions, no (E, C) tensor), multiplies and adds into the receivers with atomic adds.
The backward kernel recomputes the same per-edge values and scatters g_phi and g_features to
the senders (atomic), g_geometry and g_rho per edge and g_weight per column (atomic partial sums
of the block). Memory: the outputs and gradients only, nothing per edge beyond g_rho and
g_geometry, which are outputs.

Atomic adds make the float sums' order vary from run to run (float64: ~1e-16 relative).
Shapes: phi (N, C), features L tensors (N, m_ℓ, F_ℓ), geometry L tensors (E, m_ℓ), rho (E, K),
weight (C, K), receivers and senders (E,) int64.
"""
from __future__ import annotations

from typing import Callable, List, Tuple

import torch
import triton
import triton.language as tl

from . import on_device_of

BLOCK_E = 32


@triton.jit
def _add(a, b):
    """The combine of a sum (``tl.reduce``). The kernels use Triton builtins only, never
    ``triton.language``'s own jit helpers (``tl.sum``, ``tl.zeros``), so that the interpreter
    runs them even when Triton was imported before ``TRITON_INTERPRET`` was set."""
    return a + b


@triton.jit
def _filter(rho, weight, e, me, col, mc, K, BLOCK_E: tl.constexpr, BLOCK_C: tl.constexpr):
    """(BLOCK_E, BLOCK_C) filter rho[e] @ weight[col]ᵀ, zero outside the masks."""
    acc = tl.full((BLOCK_E, BLOCK_C), 0.0, rho.dtype.element_ty)
    for k in range(K):
        r = tl.load(rho + e * K + k, mask=me, other=0.0)
        w = tl.load(weight + col * K + k, mask=mc, other=0.0)
        acc += r[:, None] * w[None, :]
    return acc


@triton.jit
def _message_forward(phi, weight, rho, receivers, senders, feature, geometry, out,
                     E, K, C, col_a, col_b, width,
                     M: tl.constexpr, FIRST: tl.constexpr,
                     BLOCK_E: tl.constexpr, BLOCK_C: tl.constexpr):
    """One segment's sums: M = 0 the scalars (columns col_a + c, out (N, width)); M > 0 one
    order with m = M components (a block at col_a, b block at col_b, out (N, M, width))."""
    e = (tl.program_id(0) * BLOCK_E + tl.arange(0, BLOCK_E)).to(tl.int64)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    me, mc = e < E, c < width
    mask = me[:, None] & mc[None, :]
    i = tl.load(receivers + e, mask=me, other=0)
    j = tl.load(senders + e, mask=me, other=0)
    xa = tl.load(phi + j[:, None] * C + col_a + c[None, :], mask=mask, other=0.0) * \
        _filter(rho, weight, e, me, col_a + c, mc, K, BLOCK_E, BLOCK_C)
    if M == 0:
        tl.atomic_add(out + i[:, None] * width + c[None, :], xa, mask=mask)
    else:
        xb = tl.load(phi + j[:, None] * C + col_b + c[None, :], mask=mask, other=0.0) * \
            _filter(rho, weight, e, me, col_b + c, mc, K, BLOCK_E, BLOCK_C)
        for m in tl.static_range(M):
            g = tl.load(geometry + e * M + m, mask=me, other=0.0)
            val = g[:, None] * xb
            if not FIRST:
                f = tl.load(feature + (j[:, None] * M + m) * width + c[None, :], mask=mask,
                            other=0.0)
                val += f * xa
            tl.atomic_add(out + (i[:, None] * M + m) * width + c[None, :], val, mask=mask)


@triton.jit
def _weight_terms(g_filt, rho, weight, g_rho, g_weight, e, me, col, mc, K,
                  NEED_RHO: tl.constexpr, NEED_W: tl.constexpr):
    """g_rho[e] += g_filt @ weight[col] and g_weight[col] += g_filtᵀ @ rho[e] (atomic)."""
    for k in range(K):
        if NEED_RHO:
            w = tl.load(weight + col * K + k, mask=mc, other=0.0)
            tl.atomic_add(g_rho + e * K + k, tl.reduce(g_filt * w[None, :], 1, _add), mask=me)
        if NEED_W:
            r = tl.load(rho + e * K + k, mask=me, other=0.0)
            tl.atomic_add(g_weight + col * K + k, tl.reduce(g_filt * r[:, None], 0, _add), mask=mc)


@triton.jit
def _message_backward(phi, weight, rho, receivers, senders, feature, geometry, grad,
                      g_phi, g_rho, g_weight, g_feature, g_geometry,
                      E, K, C, col_a, col_b, width,
                      M: tl.constexpr, FIRST: tl.constexpr, NEED_PHI: tl.constexpr,
                      NEED_RHO: tl.constexpr, NEED_W: tl.constexpr, NEED_F: tl.constexpr,
                      NEED_G: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_C: tl.constexpr):
    """First derivatives of one segment of `_message_forward` (same grid), given the gradient
    of its output ``grad`` ((N, width) or (N, M, width)), summed into the g_* buffers."""
    e = (tl.program_id(0) * BLOCK_E + tl.arange(0, BLOCK_E)).to(tl.int64)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    me, mc = e < E, c < width
    mask = me[:, None] & mc[None, :]
    i = tl.load(receivers + e, mask=me, other=0)
    j = tl.load(senders + e, mask=me, other=0)
    filt_a = _filter(rho, weight, e, me, col_a + c, mc, K, BLOCK_E, BLOCK_C)
    phi_a = tl.load(phi + j[:, None] * C + col_a + c[None, :], mask=mask, other=0.0)
    if M == 0:
        g_xa = tl.load(grad + i[:, None] * width + c[None, :], mask=mask, other=0.0)
    else:
        filt_b = _filter(rho, weight, e, me, col_b + c, mc, K, BLOCK_E, BLOCK_C)
        phi_b = tl.load(phi + j[:, None] * C + col_b + c[None, :], mask=mask, other=0.0)
        xa = phi_a * filt_a
        xb = phi_b * filt_b
        g_xa = tl.full((BLOCK_E, BLOCK_C), 0.0, phi.dtype.element_ty)
        g_xb = tl.full((BLOCK_E, BLOCK_C), 0.0, phi.dtype.element_ty)
        for m in tl.static_range(M):
            gd = tl.load(grad + (i[:, None] * M + m) * width + c[None, :], mask=mask, other=0.0)
            geo = tl.load(geometry + e * M + m, mask=me, other=0.0)
            g_xb += gd * geo[:, None]
            if NEED_G:
                tl.atomic_add(g_geometry + e * M + m, tl.reduce(gd * xb, 1, _add), mask=me)
            if not FIRST:
                f = tl.load(feature + (j[:, None] * M + m) * width + c[None, :], mask=mask,
                            other=0.0)
                g_xa += gd * f
                if NEED_F:
                    tl.atomic_add(g_feature + (j[:, None] * M + m) * width + c[None, :],
                                  gd * xa, mask=mask)
        if NEED_PHI:
            tl.atomic_add(g_phi + j[:, None] * C + col_b + c[None, :], g_xb * filt_b, mask=mask)
        _weight_terms(g_xb * phi_b, rho, weight, g_rho, g_weight, e, me, col_b + c, mc, K,
                      NEED_RHO, NEED_W)
    if NEED_PHI:
        tl.atomic_add(g_phi + j[:, None] * C + col_a + c[None, :], g_xa * filt_a, mask=mask)
    _weight_terms(g_xa * phi_a, rho, weight, g_rho, g_weight, e, me, col_a + c, mc, K,
                  NEED_RHO, NEED_W)


def _segments(phi: torch.Tensor, features: List[torch.Tensor]) -> List[Tuple[int, int, int, int]]:
    """(order index or -1 for the scalars, col_a, col_b, width) per launch."""
    widths = [int(f.shape[2]) for f in features]
    start = int(phi.shape[1]) - 2 * sum(widths)
    out, at = [(-1, 0, 0, start)], start
    for order, w in enumerate(widths):
        out.append((order, at, at + w, w))
        at += 2 * w
    return out


def _grid(edges: int, width: int):
    block_c = min(64, triton.next_power_of_2(max(width, 1)))
    return (triton.cdiv(edges, BLOCK_E), triton.cdiv(width, block_c)), block_c


def message_forward(phi, features, geometry, rho, weight, receivers, senders, first: bool
                    ) -> Tuple[torch.Tensor, List[torch.Tensor]]:
    """Δs (N, F) and Δf (N, m_ℓ, F_ℓ) per order (shapes: the module docstring)."""
    phi, rho, weight = phi.contiguous(), rho.contiguous(), weight.contiguous()
    receivers, senders = receivers.contiguous(), senders.contiguous()
    features = [f.contiguous() for f in features]
    geometry = [g.contiguous() for g in geometry]
    segments = _segments(phi, features)
    ds = phi.new_zeros((phi.shape[0], segments[0][3]))
    out = [torch.zeros_like(f) for f in features]
    E, K, C = int(senders.shape[0]), int(rho.shape[1]), int(phi.shape[1])
    for order, col_a, col_b, width in segments:
        if E == 0 or width == 0:
            continue
        grid, block_c = _grid(E, width)
        feature, geo, target = ((phi, rho, ds) if order < 0 else
                                (features[order], geometry[order], out[order]))
        with on_device_of(phi):
            _message_forward[grid](phi, weight, rho, receivers, senders, feature, geo, target,
                                   E, K, C, col_a, col_b, width,
                                   M=0 if order < 0 else int(geo.shape[1]), FIRST=bool(first),
                                   BLOCK_E=BLOCK_E, BLOCK_C=block_c)
    return ds, out


def message_backward(g_ds, g_out, phi, features, geometry, rho, weight, receivers, senders,
                     first: bool, needs: List[bool]):
    """g_phi, g_rho, g_weight, g_features (list), g_geometry (list), each None where ``needs``
    (phi, rho, weight, then features per order, then geometry per order) does not ask for it."""
    phi, rho, weight = phi.contiguous(), rho.contiguous(), weight.contiguous()
    receivers, senders = receivers.contiguous(), senders.contiguous()
    features = [f.contiguous() for f in features]
    geometry = [g.contiguous() for g in geometry]
    L = len(features)
    need_phi, need_rho, need_w = needs[0], needs[1], needs[2]
    need_f = [bool(needs[3 + k]) and not first for k in range(L)]
    need_g = [bool(needs[3 + L + k]) for k in range(L)]
    g_phi, g_rho, g_w = torch.zeros_like(phi), torch.zeros_like(rho), torch.zeros_like(weight)
    g_f = [torch.zeros_like(f) for f in features]
    g_geo = [torch.zeros_like(g) for g in geometry]
    E, K, C = int(senders.shape[0]), int(rho.shape[1]), int(phi.shape[1])
    for order, col_a, col_b, width in _segments(phi, features):
        if E == 0 or width == 0:
            continue
        grid, block_c = _grid(E, width)
        if order < 0:
            feature, geo, grad, gf, gg, M = phi, rho, g_ds.contiguous(), phi, rho, 0
            nf = ng = False
        else:
            feature, geo = features[order], geometry[order]
            grad, gf, gg, M = g_out[order].contiguous(), g_f[order], g_geo[order], int(geo.shape[1])
            nf, ng = need_f[order], need_g[order]
        with on_device_of(phi):
            _message_backward[grid](phi, weight, rho, receivers, senders, feature, geo, grad,
                                    g_phi, g_rho, g_w, gf, gg, E, K, C, col_a, col_b, width,
                                    M=M, FIRST=bool(first), NEED_PHI=bool(need_phi),
                                    NEED_RHO=bool(need_rho), NEED_W=bool(need_w), NEED_F=nf,
                                    NEED_G=ng, BLOCK_E=BLOCK_E, BLOCK_C=block_c)
    return (g_phi if need_phi else None, g_rho if need_rho else None, g_w if need_w else None,
            [g if n else None for g, n in zip(g_f, need_f)],
            [g if n else None for g, n in zip(g_geo, need_g)])


class TritonMessage(torch.autograd.Function):
    """The message with Triton forward and backward. Inputs: reference (the differentiable ATen
    form, called as ``reference(phi, features, geometry, rho, weight, receivers, senders,
    first)``, for second derivatives), phi, rho, weight, receivers, senders, first, then per
    order its features and geometry (interleaved). Outputs: Δs, then Δf per order."""

    @staticmethod
    def forward(ctx, reference: Callable, phi, rho, weight, receivers, senders, first: bool,
                *orders):
        features, geometry = list(orders[0::2]), list(orders[1::2])
        ds, out = message_forward(phi, features, geometry, rho, weight, receivers, senders, first)
        ctx.save_for_backward(phi, rho, weight, receivers, senders, *orders)
        ctx.first, ctx.reference = first, reference
        return (ds, *out)

    @staticmethod
    def backward(ctx, g_ds, *g_out):
        phi, rho, weight, receivers, senders, *orders = ctx.saved_tensors
        features, geometry = list(orders[0::2]), list(orders[1::2])
        L = len(features)
        needs = [ctx.needs_input_grad[1], ctx.needs_input_grad[2], ctx.needs_input_grad[3]]
        needs += [ctx.needs_input_grad[7 + 2 * k] for k in range(L)]
        needs += [ctx.needs_input_grad[8 + 2 * k] for k in range(L)]
        if torch.is_grad_enabled():   # create_graph: differentiate the ATen form instead
            return (None, *_differentiable_backward(ctx, g_ds, g_out, needs))
        if g_ds is None:   # Δs unused
            width = int(phi.shape[1]) - 2 * sum(int(f.shape[2]) for f in features)
            g_ds = phi.new_zeros((phi.shape[0], width))
        g_out = [torch.zeros_like(f) if g is None else g for g, f in zip(g_out, features)]
        g_phi, g_rho, g_w, g_f, g_geo = message_backward(
            g_ds, g_out, phi, features, geometry, rho, weight, receivers, senders, ctx.first,
            needs)
        grads = [None, g_phi, g_rho, g_w, None, None, None]
        for k in range(L):
            grads += [g_f[k], g_geo[k]]
        return tuple(grads)


def _differentiable_backward(ctx, g_ds, g_out, needs):
    """The first derivatives as a function autograd can differentiate again: the ATen form on
    views of the saved inputs (only the direct paths from each input count)."""
    phi, rho, weight, receivers, senders, *orders = ctx.saved_tensors
    views = [t.view_as(t) for t in (phi, rho, weight, *orders)]
    phi_v, rho_v, w_v, *orders_v = views
    ds, out = ctx.reference(phi_v, list(orders_v[0::2]), list(orders_v[1::2]), rho_v, w_v,
                            receivers, senders, ctx.first)
    outputs, grads = [], []
    for value, g in zip([ds, *out], [g_ds, *g_out]):
        if g is not None and value.requires_grad:
            outputs.append(value)
            grads.append(g)
    L = len(orders) // 2
    wanted = [needs[0], needs[1], needs[2]]
    for k in range(L):
        wanted += [needs[3 + k], needs[3 + L + k]]
    inputs = [v for v, w in zip(views, wanted) if w]
    found = (torch.autograd.grad(outputs, inputs, grads, create_graph=True, allow_unused=True)
             if outputs and inputs else [None] * len(inputs))
    found = iter(found)
    got = [next(found) if w else None for w in wanted]
    got = [torch.zeros_like(v) if w and g is None else g for v, w, g in zip(views, wanted, got)]
    return (got[0], got[1], got[2], None, None, None, *got[3:])


def painn_message_triton(phi: torch.Tensor, features: List[torch.Tensor],
                         geometry: List[torch.Tensor], rho: torch.Tensor, weight: torch.Tensor,
                         receivers: torch.Tensor, senders: torch.Tensor, first: bool,
                         reference: Callable) -> Tuple[torch.Tensor, List[torch.Tensor]]:
    """The PaiNN message sums on the Triton kernels (arguments and returns as
    `mlip_attn.nn.painn_message.painn_message`; ``reference``: its ATen form, which second
    derivatives differentiate). float32 or float64, CUDA tensors (CPU under the interpreter)."""
    if phi.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"painn_message_triton: float32 or float64, got {phi.dtype}")
    orders = [t for pair in zip(features, geometry) for t in pair]
    ds, *out = TritonMessage.apply(reference, phi, rho, weight, receivers, senders, bool(first),
                                   *orders)
    return ds, list(out)
