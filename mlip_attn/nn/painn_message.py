"""PaiNN's message step as one autograd function that walks the edges in cache-sized chunks.

The plain autograd version of the message builds and keeps several (E, 3F) edge tensors per
layer (gathered features, filters, products) and as many again in the backward pass; at 1,000
atoms each is ~60 MB, so the time goes to page faults and memory traffic rather than arithmetic.
Here the forward keeps only its inputs (node features, the radial expansion, unit vectors) and
the backward recomputes each chunk's edge terms, so no edge tensor larger than one chunk ever
exists. The maths is exactly the plain version's (`message_reference`), and the backward is
written in differentiable torch operations, so second derivatives (force training, Hessians)
work too.

Shapes: N atoms, E edges, F features, K radial functions (incl. the envelope column).
"""
from __future__ import annotations

from typing import Tuple

import torch

# edges per chunk: (CHUNK, 3F) float32 at F = 128 is 1.5 MB, small enough to stay in cache
# and to be recycled by the allocator instead of being mapped fresh each time
CHUNK = 1024


def _edge_messages(phi: torch.Tensor, v: torch.Tensor, rho: torch.Tensor, unit: torch.Tensor,
                   weight: torch.Tensor, senders: torch.Tensor, first: bool
                   ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-edge messages of the edges given: ds_e (E, F) and dv_e (E, 3, F)."""
    F = phi.shape[1] // 3
    x = torch.index_select(phi, 0, senders) * torch.mm(rho, weight.t())
    ds_e, dv_v, dv_r = torch.split(x, F, dim=1)
    dv_e = unit[:, :, None] * dv_r[:, None, :]
    if not first:
        dv_e = torch.addcmul(dv_e, torch.index_select(v, 0, senders), dv_v[:, None, :])
    return ds_e, dv_e


def message_in_chunks(phi: torch.Tensor, v: torch.Tensor, rho: torch.Tensor, unit: torch.Tensor,
                      weight: torch.Tensor, receivers: torch.Tensor, senders: torch.Tensor,
                      first: bool, chunk: int = 4096) -> Tuple[torch.Tensor, torch.Tensor]:
    """PaiNN message sums over edge chunks, plain autograd: TorchScript-compatible (the LAMMPS
    path) and the forward of `painn_message`.

    phi (N, 3F) = φ(s), v (N, 3, F), rho (E, K), unit (E, 3), weight (3F, K) so that the
    filter is rho @ weight.T; ``first`` means v = 0 (its term is skipped).
    Returns Δs (N, F) = Σ_j φ_s,j W_s and Δv (N, 3, F) = Σ_j v_j φ_vv,j W_vv + û_ij φ_vr,j W_vr.
    Under autograd each chunk's edge tensors are still kept, so memory is that of one pass,
    but every allocation is chunk-sized and recycled, which is faster than one pass (the
    custom-backward `painn_message` is faster still; `mlip-attn bench` measures).
    """
    ds = torch.zeros((phi.shape[0], phi.shape[1] // 3), dtype=phi.dtype, device=phi.device)
    dv = torch.zeros_like(v)
    for start in range(0, senders.shape[0], chunk):
        end = start + chunk
        ds_e, dv_e = _edge_messages(phi, v, rho[start:end], unit[start:end], weight,
                                    senders[start:end], first)
        ds.index_add_(0, receivers[start:end], ds_e)
        dv.index_add_(0, receivers[start:end], dv_e)
    return ds, dv


def message_reference(phi: torch.Tensor, v: torch.Tensor, rho: torch.Tensor, unit: torch.Tensor,
                      weight: torch.Tensor, receivers: torch.Tensor, senders: torch.Tensor,
                      first: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    """`message_in_chunks` in one pass (the test reference); same arguments and returns."""
    return message_in_chunks(phi, v, rho, unit, weight, receivers, senders, first,
                             max(senders.shape[0], 1))


class ChunkedMessage(torch.autograd.Function):
    """`message_reference` computed chunk by chunk, with a recomputing backward."""

    @staticmethod
    def forward(ctx, phi, v, rho, unit, weight, receivers, senders, first: bool, chunk: int):
        ds, dv = message_in_chunks(phi, v, rho, unit, weight, receivers, senders, first, chunk)
        ctx.save_for_backward(phi, v, rho, unit, weight, receivers, senders)
        ctx.first, ctx.chunk = first, chunk
        return ds, dv

    @staticmethod
    def backward(ctx, g_ds, g_dv):
        phi, v, rho, unit, weight, receivers, senders = ctx.saved_tensors
        first, chunk = ctx.first, ctx.chunk
        need_phi, need_v, need_rho, need_unit, need_w = ctx.needs_input_grad[:5]
        F = phi.shape[1] // 3
        g_phi = torch.zeros_like(phi)
        g_v = torch.zeros_like(v)
        g_w = torch.zeros_like(weight)
        g_rho, g_unit = [], []
        w_t = weight.t()
        for start in range(0, max(senders.shape[0], 1), chunk):  # one pass even with no edges
            i, j = receivers[start:start + chunk], senders[start:start + chunk]
            rho_c, unit_c = rho[start:start + chunk], unit[start:start + chunk]
            filt = torch.mm(rho_c, w_t)                                  # (c, 3F)
            phi_j = torch.index_select(phi, 0, j)                        # (c, 3F)
            gs = torch.index_select(g_ds, 0, i)                          # (c, F)
            gv = torch.index_select(g_dv, 0, i)                          # (c, 3, F)
            dv_r = phi_j[:, 2 * F:] * filt[:, 2 * F:]
            g_unit.append((gv * dv_r[:, None, :]).sum(dim=2))
            g_dvr = (gv * unit_c[:, :, None]).sum(dim=1)
            if first:
                g_dvv = torch.zeros_like(g_dvr)
            else:
                v_j = torch.index_select(v, 0, j)
                g_dvv = (gv * v_j).sum(dim=1)
                if need_v:
                    dv_v = phi_j[:, F:2 * F] * filt[:, F:2 * F]
                    g_v.index_add_(0, j, gv * dv_v[:, None, :])
            g_x = torch.cat([gs, g_dvv, g_dvr], dim=1)                   # (c, 3F)
            if need_phi:
                g_phi.index_add_(0, j, g_x * filt)
            g_filt = g_x * phi_j
            g_rho.append(torch.mm(g_filt, weight))
            if need_w:
                g_w.addmm_(g_filt.t(), rho_c)
        return (g_phi if need_phi else None, g_v if need_v and not first else None,
                torch.cat(g_rho) if need_rho else None, torch.cat(g_unit) if need_unit else None,
                g_w if need_w else None, None, None, None, None)


def painn_message(phi: torch.Tensor, v: torch.Tensor, rho: torch.Tensor, unit: torch.Tensor,
                  weight: torch.Tensor, receivers: torch.Tensor, senders: torch.Tensor,
                  first: bool, chunk: int = CHUNK) -> Tuple[torch.Tensor, torch.Tensor]:
    """The PaiNN message sums (see `message_reference` for shapes), computed in edge chunks."""
    return ChunkedMessage.apply(phi, v, rho, unit, weight, receivers, senders, first, chunk)
