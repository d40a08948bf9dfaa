"""EGNN's edge network and message sum as one autograd function over cache-sized edge chunks.

For an edge from sender j to receiver i (the maths of `mlip_attn.backbones.egnn.EGNNLayer`):

    pre_ij = rho_ij @ W_rᵀ + b + p_i + q_j     p = h W_iᵀ, q = h W_jᵀ (per atom: ``node``)
    m_ij   = silu(silu(pre_ij) @ W_2ᵀ + b_2)
    Δh_i   = Σ_j m_ij · sigmoid(m_ij · w_g + b_g) · envelope(r_ij)

Plain autograd keeps about six (E, F) edge tensors per layer for the backward (tens of MB at a
thousand atoms, freshly mapped memory on every call). Here the forward keeps only its inputs,
and the backward recomputes each chunk's edge terms, so no edge tensor larger than a chunk
exists. The backward is written in torch operations (differentiable again). The layer uses it
for inference (eval mode) on large graphs (the message policy's ``egnn_chunked_from`` edges,
`mlip_attn.nn.policy`); the
recomputed edge network (an (E, F) × (F, F) product) makes it slower than plain autograd on
small ones, and training keeps plain autograd.

Shapes: N atoms, E edges, F features, K radial functions; ``node`` (N, 2F) = [p | q],
``radial`` (E, K), ``envelope`` (E,), ``w_r`` (F, K), ``b`` (F,), ``w_2`` (F, F), ``b_2`` (F,),
``w_g`` (1, F), ``b_g`` (1,); receivers/senders (E,) int64. Returns Δh (N, F).
"""
from __future__ import annotations

import torch
from torch.nn.functional import silu

from .policy import current


def _silu_grad(x: torch.Tensor) -> torch.Tensor:
    """d silu(x) / dx = σ(x) (1 + x (1 − σ(x)))."""
    s = torch.sigmoid(x)
    return s * (1.0 + x * (1.0 - s))


def _edges(node, radial, w_r, b, w_2, b_2, w_g, b_g, i, j):
    """pre, silu(pre), z, m, gate of a chunk of edges (see the module doc)."""
    F = w_2.shape[0]
    pre = torch.addmm(b, radial, w_r.t())
    pre = pre + torch.index_select(node[:, :F], 0, i) + torch.index_select(node[:, F:], 0, j)
    a = silu(pre)
    z = torch.addmm(b_2, a, w_2.t())
    m = silu(z)
    gate = torch.sigmoid(torch.addmm(b_g, m, w_g.t()))                   # (c, 1)
    return pre, a, z, m, gate


def edge_messages_reference(node, radial, envelope, w_r, b, w_2, b_2, w_g, b_g, receivers,
                            senders) -> torch.Tensor:
    """The message sum in one plain-autograd pass (the test reference)."""
    *_, m, gate = _edges(node, radial, w_r, b, w_2, b_2, w_g, b_g, receivers, senders)
    out = m * (gate * envelope[:, None])
    total = node.new_zeros((node.shape[0], w_2.shape[0]))
    return total.index_add(0, receivers, out)


class ChunkedEdgeMessages(torch.autograd.Function):
    """`edge_messages_reference` chunk by chunk, with a recomputing backward."""

    @staticmethod
    def forward(ctx, node, radial, envelope, w_r, b, w_2, b_2, w_g, b_g, receivers, senders,
                chunk: int):
        total = node.new_zeros((node.shape[0], w_2.shape[0]))
        for start in range(0, senders.shape[0], chunk):
            i, j = receivers[start:start + chunk], senders[start:start + chunk]
            *_, m, gate = _edges(node, radial[start:start + chunk], w_r, b, w_2, b_2, w_g, b_g,
                                 i, j)
            total.index_add_(0, i, m * (gate * envelope[start:start + chunk, None]))
        ctx.save_for_backward(node, radial, envelope, w_r, b, w_2, b_2, w_g, b_g, receivers,
                              senders)
        ctx.chunk = chunk
        return total

    @staticmethod
    def backward(ctx, g_total):
        node, radial, envelope, w_r, b, w_2, b_2, w_g, b_g, receivers, senders = \
            ctx.saved_tensors
        need = ctx.needs_input_grad
        F = w_2.shape[0]
        g_p = node.new_zeros((node.shape[0], F))
        g_q = torch.zeros_like(g_p)
        g_radial, g_env = [], []
        g_w = [torch.zeros_like(t) for t in (w_r, b, w_2, b_2, w_g, b_g)]
        for start in range(0, max(senders.shape[0], 1), ctx.chunk):
            end = start + ctx.chunk
            i, j = receivers[start:end], senders[start:end]
            rho, env = radial[start:end], envelope[start:end, None]
            pre, a, z, m, gate = _edges(node, rho, w_r, b, w_2, b_2, w_g, b_g, i, j)
            go = torch.index_select(g_total, 0, i)                        # (c, F)
            t = (go * m).sum(dim=1, keepdim=True)                         # (c, 1)
            g_env.append((t * gate).squeeze(1))
            g_gate_in = t * env * gate * (1.0 - gate)                     # d/d(m·w_g + b_g)
            g_m = torch.addmm(go * (gate * env), g_gate_in, w_g)
            g_z = g_m * _silu_grad(z)
            g_pre = torch.mm(g_z, w_2) * _silu_grad(pre)
            g_radial.append(torch.mm(g_pre, w_r))
            if need[0]:
                g_p.index_add_(0, i, g_pre)
                g_q.index_add_(0, j, g_pre)
            if any(need[3:9]):
                for acc, value in zip(g_w, (torch.mm(g_pre.t(), rho), g_pre.sum(0),
                                            torch.mm(g_z.t(), a), g_z.sum(0),
                                            torch.mm(g_gate_in.t(), m), g_gate_in.sum(0))):
                    acc.add_(value)
        grads = [torch.cat([g_p, g_q], dim=1) if need[0] else None,
                 torch.cat(g_radial) if need[1] else None,
                 torch.cat(g_env) if need[2] else None]
        grads += [g if n else None for g, n in zip(g_w, need[3:9])]
        return (*grads, None, None, None)


def edge_messages(node, radial, envelope, w_r, b, w_2, b_2, w_g, b_g, receivers, senders,
                  chunk: int | None = None) -> torch.Tensor:
    """Δh (N, F), chunked (``chunk`` edges, default the message policy's ``chunk()``) with the
    recomputing backward; see the module doc for the arguments."""
    chunk = current().chunk() if chunk is None else chunk
    return ChunkedEdgeMessages.apply(node, radial, envelope, w_r, b, w_2, b_2, w_g, b_g,
                                     receivers, senders, chunk)
