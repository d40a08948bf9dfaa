"""When Euclidean fast attention (`mlip_attn.attention.efa`) runs its compiled kernels.

The compiled ``mlip_attn`` library (`mlip_attn.ops`, ``src/efa_kernels.cpp``) has two EFA ops,
each with a backward op of its own (first derivatives; a differentiable ATen recomputation
when a second derivative is taken), fake kernels for ``torch.export`` (`mlip_attn.ops.fake`):

* ``efa_rotate(x, centred, directions, omega, scale) -> (N, G·C·d_qk)``: the Lebedev form's
  grid rotation of queries or keys, fused (no (N, G, K) angle tensors);
* ``efa_pair_attention(q, k, val, positions, batch, omega, r_max) -> (N, V)``: the exact
  (switched) form over the pairs within r_max, atoms in tiles of 16 along a Morton curve whose
  tile pairs beyond r_max are skipped, the loops vectorised over a tile's atoms; O(N) memory
  (no N×N×K tensor).

Eager EFA takes them where the PaiNN message takes its op (the message policy,
`mlip_attn.nn.policy`: not with ``MLIP_ATTN_KERNELS=python`` or ``route="python"``), in eval
mode (inference: energy and forces; training keeps plain autograd, whose double backward a force
loss needs), and unless `efa_kernels` (False) turns them off, for side-by-side checks and
benchmarks. On CUDA tensors, eager EFA in eval mode rotates on the Triton kernels of
`mlip_attn.ops.gpu` (`triton_kernels`) where Triton imports; the exact form's pair op has no
GPU kernel (it takes the C++ library's ATen form there). A TorchScript export calls them when
the export sets the block's ``compiled_message`` (`mlip_attn.lammps.export.use_compiled_ops`).
Both routes compute the same function (float64: to ~1e-13).
"""
from __future__ import annotations

import contextlib

import torch

from ..nn.policy import compiled_message_available, triton_kernels_for

_state = {"enabled": True}


def kernels_enabled(training: bool) -> bool:
    """Whether eager EFA calls the compiled ops now (``training``: the block's mode)."""
    return _state["enabled"] and not training and compiled_message_available()


def triton_kernels(x: torch.Tensor, training: bool) -> bool:
    """Whether eager EFA rotates ``x`` (a query/key tensor) on the Triton kernels now: a CUDA
    tensor (`mlip_attn.nn.policy.triton_kernels_for`), eval mode, `efa_kernels` not off."""
    return _state["enabled"] and not training and triton_kernels_for(x)


def rotations_triton(q: torch.Tensor, k: torch.Tensor, centred: torch.Tensor,
                     directions: torch.Tensor, omega: torch.Tensor, weights: torch.Tensor):
    """q and k (N, C, d_qk) rotated on the grid by the Triton kernels, the quadrature weights
    folded into q: as `mlip_attn.attention.efa._rotations` ((N, G·C·d_qk) each)."""
    from ..ops.gpu.efa_triton import efa_rotate_triton
    return (efa_rotate_triton(q, centred, directions, omega, weights),
            efa_rotate_triton(k, centred, directions, omega, torch.ones_like(weights)))


@contextlib.contextmanager
def efa_kernels(enabled: bool):
    """Within the block, eager EFA uses its compiled kernels (``True``, where available) or
    the Python/ATen form (``False``)."""
    previous = _state["enabled"]
    _state["enabled"] = bool(enabled)
    try:
        yield
    finally:
        _state["enabled"] = previous
