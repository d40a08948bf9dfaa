"""Fake (meta) kernels of the compiled ``mlip_attn`` ops, for tracers: ``torch.export``,
``make_fx`` and AOTInductor see each op as one graph node whose outputs have these shapes,
dtypes and devices (no data). Registered once per process by `register_fake_kernels`
(`mlip_attn.ops.library.load_ops` calls it after loading the library).

EFA's ops (``efa_rotate``, ``efa_grid_sums``, ``efa_grid_apply``, ``efa_pair_attention`` and
their backwards) as in `mlip_attn.attention.efa_ops`. Shapes as in `mlip_attn.ops.library`: phi (N, F + 2ΣF_l), features L tensors (N, m_l, F_l),
geometry L tensors (E, m_l), rho (E, K), weight (F + 2ΣF_l, K).
``kernel_instruction_set`` and ``sums_across_processes`` return a string and a bool (no
tensors) and have no fake kernel: an exported graph never calls them.
"""
from __future__ import annotations

from typing import List

import torch

_registered = False


def _message(phi, features, geometry, rho, weight, receivers, senders, first, chunk):
    """Δs (N, F) and one Δf (N, m_l, F_l) per order."""
    orders_width = sum(2 * f.shape[2] for f in features)
    ds = phi.new_empty((phi.shape[0], phi.shape[1] - orders_width))
    return ds, [f.new_empty(f.shape) for f in features]


def _message_backward(g_ds, g_out, phi, features, geometry, rho, weight, receivers, senders,
                      first, chunk, needs: List[int]):
    """g_phi, g_rho, g_weight, g_features, g_geometry: each the shape of its input where
    ``needs`` asks for it (features never when ``first``), else an empty (0,) tensor."""
    n = len(features)

    def like(t, need):
        return t.new_empty(t.shape if need else (0,))

    return (like(phi, needs[0]), like(rho, needs[1]), like(weight, needs[2]),
            [like(f, needs[3 + k] and not first) for k, f in enumerate(features)],
            [like(g, needs[3 + n + k]) for k, g in enumerate(geometry)])


def _allreduce(x):
    """The sum over processes has the shape of each process's part."""
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _efa_rotate(x, centred, directions, omega, scale):
    """(N, G·C·D): x (N, C, D) rotated on G grid directions."""
    return x.new_empty((x.shape[0], directions.shape[0] * x.shape[1] * x.shape[2]))


def _efa_rotate_backward(grad, x, centred, directions, omega, scale, needs: List[int]):
    """g_x (N, C, D) and g_centred (N, 3) where ``needs`` asks for them, else (0,)."""
    return (x.new_empty(x.shape if needs[0] else (0,)),
            centred.new_empty(centred.shape if needs[1] else (0,)))


def _efa_grid_sums(k, centred, directions, omega, scale, val, batch, num_graphs: int):
    """S (B, G·C·D, V): the grid sums of each structure, in k's dtype."""
    width = directions.shape[0] * k.shape[1] * k.shape[2]
    return k.new_empty((num_graphs, width, val.shape[1]))


def _efa_grid_sums_backward(g_sums, k, centred, directions, omega, scale, val, batch,
                            needs: List[int]):
    """g_k (N, C, D), g_centred (N, 3), g_val (N, V) where ``needs`` asks for them."""
    return (k.new_empty(k.shape if needs[0] else (0,)),
            centred.new_empty(centred.shape if needs[1] else (0,)),
            val.new_empty(val.shape if needs[2] else (0,)))


def _efa_grid_apply(q, centred, directions, omega, scale, sums, batch):
    """y (N, V) in q's dtype."""
    return q.new_empty((q.shape[0], sums.shape[2]))


def _efa_grid_apply_backward(g_y, q, centred, directions, omega, scale, sums, batch,
                             needs: List[int]):
    """g_q (N, C, D), g_centred (N, 3), g_sums (B, P, V) where ``needs`` asks for them."""
    return (q.new_empty(q.shape if needs[0] else (0,)),
            centred.new_empty(centred.shape if needs[1] else (0,)),
            sums.new_empty(sums.shape if needs[2] else (0,)))


def _efa_pairs(q, k, val, positions, batch, omega, r_max: float):
    """y (N, V) in q's dtype."""
    return q.new_empty((q.shape[0], val.shape[1]))


def _efa_pairs_backward(g_y, q, k, val, positions, batch, omega, r_max: float,
                        needs: List[int]):
    """g_q, g_k (N, C, D), g_val (N, V), g_positions (N, 3) where ``needs`` asks for them."""
    return (q.new_empty(q.shape if needs[0] else (0,)), q.new_empty(q.shape if needs[1] else (0,)),
            q.new_empty(val.shape if needs[2] else (0,)),
            positions.new_empty(positions.shape if needs[3] else (0,)))


def register_fake_kernels() -> None:
    """Register the fake kernels (the ops must be loaded); idempotent."""
    global _registered
    if _registered:
        return
    torch.library.register_fake("mlip_attn::painn_message_orders")(_message)
    torch.library.register_fake("mlip_attn::painn_message_orders_backward")(_message_backward)
    torch.library.register_fake("mlip_attn::allreduce_sum")(_allreduce)
    torch.library.register_fake("mlip_attn::efa_rotate")(_efa_rotate)
    torch.library.register_fake("mlip_attn::efa_rotate_backward")(_efa_rotate_backward)
    torch.library.register_fake("mlip_attn::efa_grid_sums")(_efa_grid_sums)
    torch.library.register_fake("mlip_attn::efa_grid_sums_backward")(_efa_grid_sums_backward)
    torch.library.register_fake("mlip_attn::efa_grid_apply")(_efa_grid_apply)
    torch.library.register_fake("mlip_attn::efa_grid_apply_backward")(_efa_grid_apply_backward)
    torch.library.register_fake("mlip_attn::efa_pair_attention")(_efa_pairs)
    torch.library.register_fake("mlip_attn::efa_pair_attention_backward")(_efa_pairs_backward)
    _registered = True
