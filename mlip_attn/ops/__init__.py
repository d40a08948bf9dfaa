"""The compiled side of mlip-attn: torch custom ops, the fused CPU loops they call, the C++
model runner a host program (the LAMMPS plugin) drives, and their build.

* `mlip_attn.ops.build` compiles ``libmlip_attn_torch.so`` from ``src/`` once per torch version
  and sources (about 40 s; ``mlip-attn build-lammps`` does it ahead of time);
* `mlip_attn.ops.library` loads it, registering ``torch.ops.mlip_attn.*``, and the fake
  kernels of `mlip_attn.ops.fake` that let ``torch.export`` trace them.

It imports only `mlip_attn.atomic` (atomic file writes) of the package: the message policy (`mlip_attn.nn.policy`),
the export and the LAMMPS plugin sit above it.
"""
from .library import allreduce_calls, load_ops, ops_registered, try_load_ops

__all__ = ["allreduce_calls", "load_ops", "ops_registered", "try_load_ops"]
