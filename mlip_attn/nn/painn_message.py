"""PaiNN's message step as one autograd function that walks the edges in cache-sized chunks.

The message from sender j to receiver i, for scalars and each equivariant order ℓ (vectors
ℓ = 1, rank-2 tensors ℓ = 2):

    x_ij = φ(s_j) ⊙ W(r_ij)                        (filter: rho_ij @ weightᵀ)
    Δs_i = Σ_j x_ij[s]
    Δf_i = Σ_j f_j ⊙ x_ij[a_ℓ] + g_ij ⊗ x_ij[b_ℓ]   for each order: features f (N, m, F) and
                                                   edge geometry g (E, m): û (m = 3) or the
                                                   rank-2 components of û ûᵀ (m = 5)

The plain autograd version builds and keeps several (E, 3F) edge tensors per layer (gathered
features, filters, products) and as many again in the backward pass; for a thousand atoms each
is tens of MB, so the time goes to page faults and memory traffic rather than arithmetic. Here
the forward keeps only its inputs (node features, the radial expansion, edge geometry) and the
backward recomputes each chunk's edge terms, so no edge tensor larger than one chunk exists.
The maths is exactly the plain version's (`message_reference`), and the backward is written in
differentiable torch operations, so second derivatives (force training, Hessians) work too.
Where the compiled ops are built (`mlip_attn.nn.policy`), `painn_message` calls their C++ twin
instead, whose CPU forward and first derivatives are fused per-edge loops
(``mlip_attn/ops/src/painn_kernels.cpp``, about 2× faster); this module is then the
reference and the fallback.

Shapes: N atoms, E edges, F scalar features, F_ℓ features of order ℓ (any number), K radial
functions (incl. the envelope column), L equivariant orders; ``phi`` and the filter have
F + 2 Σ F_ℓ columns laid out as [s (F) | a_1 b_1 (F_1 each) | a_2 b_2 (F_2 each) …].
"""
from __future__ import annotations

from typing import List, Tuple

import torch

from .policy import compiled_message_available, current, triton_kernels_for


def _offsets(phi: torch.Tensor, features: List[torch.Tensor]) -> List[int]:
    """Column offsets in ``phi``: [F, F + F_1, F + 2F_1, F + 2F_1 + F_2, …] — where each
    order's a and b blocks start, then the end."""
    widths = [int(f.shape[2]) for f in features]
    start = int(phi.shape[1]) - 2 * sum(widths)
    offsets = [start]
    for w in widths:
        offsets.append(offsets[-1] + w)
        offsets.append(offsets[-1] + w)
    return offsets


def _edge_messages(phi: torch.Tensor, features: List[torch.Tensor],
                   geometry: List[torch.Tensor], rho: torch.Tensor, weight: torch.Tensor,
                   senders: torch.Tensor, first: bool
                   ) -> Tuple[torch.Tensor, List[torch.Tensor]]:
    """Per-edge messages of the edges given: ds_e (E, F) and one (E, m, F_ℓ) per order."""
    at = _offsets(phi, features)
    x = torch.index_select(phi, 0, senders) * torch.mm(rho, weight.t())
    out: List[torch.Tensor] = []
    for order, (feature, geo) in enumerate(zip(features, geometry)):
        a = x[:, at[2 * order]:at[2 * order + 1]]
        b = x[:, at[2 * order + 1]:at[2 * order + 2]]
        d = geo[:, :, None] * b[:, None, :]
        if not first:
            d = torch.addcmul(d, torch.index_select(feature, 0, senders), a[:, None, :])
        out.append(d)
    return x[:, :at[0]], out


def message_in_chunks(phi: torch.Tensor, features: List[torch.Tensor],
                      geometry: List[torch.Tensor], rho: torch.Tensor, weight: torch.Tensor,
                      receivers: torch.Tensor, senders: torch.Tensor, first: bool,
                      chunk: int = 1024) -> Tuple[torch.Tensor, List[torch.Tensor]]:
    """PaiNN message sums over edge chunks, plain autograd: TorchScript-compatible (the LAMMPS
    path) and the forward of `painn_message`.

    phi (N, F + 2ΣF_ℓ) = φ(s); features: L tensors (N, m_ℓ, F_ℓ); geometry: L tensors
    (E, m_ℓ); rho (E, K), weight (F + 2ΣF_ℓ, K) so that the filter is rho @ weight.T; ``first`` means
    every feature is zero (their terms are skipped); ``chunk``: edges per chunk (a TorchScript
    export passes the policy's ``script_chunk``, which this default equals). Returns Δs (N, F) and Δf (N, m_ℓ, F) per
    order (see the module docstring). Under autograd each chunk's edge tensors are still kept,
    so memory is that of one pass, but every allocation is chunk-sized and recycled, which is
    faster than one pass (the custom-backward `painn_message` is faster still).
    """
    width = _offsets(phi, features)[0]
    ds = torch.zeros((phi.shape[0], width), dtype=phi.dtype, device=phi.device)
    out = [torch.zeros_like(f) for f in features]
    for start in range(0, senders.shape[0], chunk):
        end = start + chunk
        ds_e, d_e = _edge_messages(phi, features, [g[start:end] for g in geometry],
                                   rho[start:end], weight, senders[start:end], first)
        ds.index_add_(0, receivers[start:end], ds_e)
        for total, part in zip(out, d_e):
            total.index_add_(0, receivers[start:end], part)
    return ds, out


def message_reference(phi: torch.Tensor, features: List[torch.Tensor],
                      geometry: List[torch.Tensor], rho: torch.Tensor, weight: torch.Tensor,
                      receivers: torch.Tensor, senders: torch.Tensor, first: bool
                      ) -> Tuple[torch.Tensor, List[torch.Tensor]]:
    """`message_in_chunks` in one pass (the test reference); same arguments and returns."""
    return message_in_chunks(phi, features, geometry, rho, weight, receivers, senders, first,
                             max(senders.shape[0], 1))


def _sum_over_components(gd: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """Σ_m gd[:, m] ⊙ other[:, m] for gd (c, m, F) and other (c, m, F) or (c, m, 1): (c, F),
    accumulated in place over the m components (3 or 5) without the (c, m, F) product that
    ``(gd * other).sum(1)`` writes and reads back (1.3–1.9× faster for that step)."""
    out = gd[:, 0] * other[:, 0]
    for m in range(1, gd.shape[1]):
        out.addcmul_(gd[:, m], other[:, m])
    return out


class ChunkedMessage(torch.autograd.Function):
    """`message_reference` computed chunk by chunk, with a recomputing backward.

    Inputs: phi, rho, weight, receivers, senders, first, chunk, then per order its features
    and its geometry (interleaved). Outputs: Δs, then Δf per order.
    """

    @staticmethod
    def forward(ctx, phi, rho, weight, receivers, senders, first: bool, chunk: int, *orders):
        features, geometry = list(orders[0::2]), list(orders[1::2])
        ds, out = message_in_chunks(phi, features, geometry, rho, weight, receivers, senders,
                                    first, chunk)
        ctx.save_for_backward(phi, rho, weight, receivers, senders, *orders)
        ctx.first, ctx.chunk = first, chunk
        return (ds, *out)

    @staticmethod
    def backward(ctx, g_ds, *g_out):
        phi, rho, weight, receivers, senders, *orders = ctx.saved_tensors
        features, geometry = orders[0::2], orders[1::2]
        first, chunk = ctx.first, ctx.chunk
        need_phi, need_rho, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1], \
            ctx.needs_input_grad[2]
        need_feature = ctx.needs_input_grad[7::2]
        need_geometry = ctx.needs_input_grad[8::2]
        at = _offsets(phi, list(features))
        g_phi = torch.zeros_like(phi)
        g_w = torch.zeros_like(weight)
        g_features = [torch.zeros_like(f) for f in features]
        g_rho, g_geometry = [], [[] for _ in geometry]
        w_t = weight.t()
        for start in range(0, max(senders.shape[0], 1), chunk):  # one pass even with no edges
            i, j = receivers[start:start + chunk], senders[start:start + chunk]
            rho_c = rho[start:start + chunk]
            filt = torch.mm(rho_c, w_t)                                  # (c, F + 2ΣF_ℓ)
            phi_j = torch.index_select(phi, 0, j)                        # (c, F + 2ΣF_ℓ)
            parts = [torch.index_select(g_ds, 0, i)]                     # g of x[s]: (c, F)
            for order, (feature, geo) in enumerate(zip(features, geometry)):
                sa = slice(at[2 * order], at[2 * order + 1])
                sb = slice(at[2 * order + 1], at[2 * order + 2])
                gd = torch.index_select(g_out[order], 0, i)              # (c, m, F)
                b = phi_j[:, sb] * filt[:, sb]
                g_geometry[order].append((gd * b[:, None, :]).sum(dim=2))
                g_b = _sum_over_components(gd, geo[start:start + chunk, :, None])
                if first:
                    g_a = torch.zeros_like(g_b)
                else:
                    g_a = _sum_over_components(gd, torch.index_select(feature, 0, j))
                    if need_feature[order]:
                        a = phi_j[:, sa] * filt[:, sa]
                        g_features[order].index_add_(0, j, gd * a[:, None, :])
                parts += [g_a, g_b]
            g_x = torch.cat(parts, dim=1)                                # (c, F + 2ΣF_ℓ)
            if need_phi:
                g_phi.index_add_(0, j, g_x * filt)
            g_filt = g_x * phi_j
            g_rho.append(torch.mm(g_filt, weight))
            if need_w:
                g_w.addmm_(g_filt.t(), rho_c)
        grads = [g_phi if need_phi else None, torch.cat(g_rho) if need_rho else None,
                 g_w if need_w else None, None, None, None, None]
        for order in range(len(features)):
            grads.append(g_features[order] if need_feature[order] and not first else None)
            grads.append(torch.cat(g_geometry[order]) if need_geometry[order] else None)
        return tuple(grads)


def painn_message(phi: torch.Tensor, features: List[torch.Tensor], geometry: List[torch.Tensor],
                  rho: torch.Tensor, weight: torch.Tensor, receivers: torch.Tensor,
                  senders: torch.Tensor, first: bool, chunk: int | None = None,
                  inference: bool = False) -> Tuple[torch.Tensor, List[torch.Tensor]]:
    """The PaiNN message sums (see `message_in_chunks` for shapes), routed by the message
    policy (`mlip_attn.nn.policy.current`): in training, one plain-autograd pass for graphs of
    fewer than ``one_pass_below`` edges; otherwise (and always with ``inference``: eval mode,
    no double backward) the compiled op (fused per-edge loops on the CPU) where the policy
    allows it and it is available (CUDA tensors: the Triton kernels of `mlip_attn.ops.gpu`
    where Triton imports), else `ChunkedMessage` in chunks of ``chunk`` edges (default
    ``policy.chunk()``) with the recomputing backward."""
    policy = current()
    if not inference and senders.shape[0] < policy.one_pass_below:
        return message_reference(phi, features, geometry, rho, weight, receivers, senders, first)
    chunk = policy.chunk() if chunk is None else chunk
    if triton_kernels_for(phi):   # CUDA: Triton kernels; second derivatives via the ATen form
        from ..ops.gpu.painn_triton import painn_message_triton
        return painn_message_triton(phi, features, geometry, rho, weight, receivers, senders,
                                    first, message_reference)
    if compiled_message_available():
        ds, out = torch.ops.mlip_attn.painn_message_orders(
            phi, features, geometry, rho, weight, receivers, senders, first, chunk)
        return ds, list(out)
    orders = [t for pair in zip(features, geometry) for t in pair]
    ds, *out = ChunkedMessage.apply(phi, rho, weight, receivers, senders, first, chunk, *orders)
    return ds, list(out)
