"""Loading the compiled ``mlip_attn`` torch ops into this process.

``libmlip_attn_torch.so`` (built by `mlip_attn.ops.build.build_torch_library`, torch and a
C++ compiler only) registers, under ``torch.ops.mlip_attn``:

* ``painn_message_orders(phi, features, geometry, rho, weight, receivers, senders, first,
  chunk) -> (ds, d)``: PaiNN's message over edge chunks for a list of equivariant orders
  (vectors; rank-2 tensors with ``lmax: 2``) with a recomputing backward, the C++ twin of
  `mlip_attn.nn.painn_message.painn_message` (same arguments and shapes), so a TorchScript
  export keeps the eager model's fast backward;
* ``painn_message_orders_backward(g_ds, g_out, phi, features, geometry, rho, weight,
  receivers, senders, first, chunk, needs)``: its first derivatives, the op the backward calls
  (without grad mode), so a tracer (``torch.export``) records forward and backward as two
  nodes; fake kernels for tracing: `mlip_attn.ops.fake`;
* ``allreduce_sum(x) -> x`` summed over MPI ranks inside the LAMMPS plugin (which sets the
  communicator around each call of a global model on several ranks), the identity everywhere
  else; its backward is itself;
* ``efa_rotate`` / ``efa_grid_sums`` / ``efa_grid_apply`` / ``efa_pair_attention`` and their
  ``_backward`` ops: Euclidean fast attention's grid rotation, its grid sums with the rotation
  fused in, and its switched exact form over pairs within r_max
  (``src/efa_ops.cpp``; when EFA calls them: `mlip_attn.attention.efa_ops`);
* ``sums_across_processes() -> bool``: whether ``allreduce_sum`` sums over several processes
  now, i.e. whether the structure is split between ranks (False outside the plugin).

The plugin loads the very same file, so a process that exports models and drives LAMMPS
(``lammps_instance()``) registers the ops once.
"""
from __future__ import annotations

import ctypes
from pathlib import Path

import torch

from .fake import register_fake_kernels
from .build import (TORCH_LIBRARY_NAME, PluginBuildError, build_torch_library,
                    torch_library_dir)

_loaded: Path | None = None


def ops_registered() -> bool:
    """Whether ``torch.ops.mlip_attn`` ops are registered in this process."""
    try:
        for name in ("painn_message_orders", "painn_message_orders_backward", "allreduce_sum",
                     "sums_across_processes"):
            getattr(torch.ops.mlip_attn, name).default
    except (AttributeError, RuntimeError):
        return False
    return True


def load_ops(build: bool = True) -> Path:
    """Load ``libmlip_attn_torch.so`` (built first if missing and ``build``) and return its
    path. Raises `PluginBuildError` (no compiler, no torch headers) or `FileNotFoundError`
    (not built and ``build=False``)."""
    global _loaded
    if _loaded is not None:
        return _loaded
    so = torch_library_dir() / TORCH_LIBRARY_NAME
    if not so.exists():
        if not build:
            raise FileNotFoundError(f"{so} is not built; build it with: mlip-attn build-lammps")
        so = build_torch_library()
    torch.ops.load_library(str(so))   # the same file as the plugin's: registers once
    register_fake_kernels()
    _loaded = so
    return so


def try_load_ops(build: bool = True) -> tuple[bool, str]:
    """`load_ops` without raising: ``(True, path)`` or ``(False, why not)``."""
    try:
        return True, str(load_ops(build))
    except (PluginBuildError, FileNotFoundError, OSError) as exc:
        return False, str(exc).splitlines()[0][:300]


def allreduce_calls() -> int:
    """How many times ``allreduce_sum`` called an installed cross-process hook (0 outside the
    LAMMPS plugin): a diagnostic for tests."""
    lib = ctypes.CDLL(str(load_ops(build=False)))
    lib.mlip_attn_allreduce_calls.restype = ctypes.c_int64
    return int(lib.mlip_attn_allreduce_calls())
