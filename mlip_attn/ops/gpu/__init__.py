"""GPU kernels of the compiled ops, written in Triton (optional: ``pip install mlip-attn[gpu]``).

* `mlip_attn.ops.gpu.painn_triton`: PaiNN's fused message (the CUDA twin of
  ``painn_message_orders`` / ``src/painn_kernels.cpp``), forward and first derivatives;
* `mlip_attn.ops.gpu.efa_triton`: Euclidean fast attention's Lebedev grid rotation (the twin
  of ``efa_rotate``), forward and first derivatives.

Second derivatives (training with a force loss, Hessians) recompute the differentiable ATen
form and differentiate it, as the C++ ops do: Triton kernels have no autograd of their own.

Triton is never imported at ``import mlip_attn``: `available` imports it on first call, so the
package imports on machines (and torch builds) without it. Kernels run on CUDA tensors; with
``TRITON_INTERPRET=1`` set before the first import, Triton's interpreter runs them on CPU
tensors (numpy), which is how the tests check them on a machine without a GPU.
"""
from __future__ import annotations

import contextlib
import os

_state: dict = {"ok": None, "why": ""}


def available() -> bool:
    """Whether Triton imports here (remembered per process; the reason otherwise: `why_not`)."""
    if _state["ok"] is None:
        try:
            import triton  # noqa: F401
            import triton.language  # noqa: F401
            _state.update(ok=True, why=f"triton {triton.__version__}")
        except Exception as exc:   # noqa: BLE001 - ImportError, or a broken install
            _state.update(ok=False, why=f"triton does not import ({type(exc).__name__}: "
                          f"{str(exc)[:200]}); install it with `pip install mlip-attn[gpu]`")
    return bool(_state["ok"])


def why_not() -> str:
    """Why `available` is False ('' before the first call; the version when it is True)."""
    return _state["why"]


def interpreted() -> bool:
    """Whether Triton runs kernels in its interpreter (``TRITON_INTERPRET=1``): on CPU tensors."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def runs_on(tensor) -> bool:
    """Whether the Triton kernels can take ``tensor``: a CUDA tensor with Triton importable, or
    any CPU tensor under the interpreter."""
    if tensor.is_cuda:
        return available()
    return tensor.device.type == "cpu" and interpreted() and available()


def on_device_of(tensor):
    """A context in which Triton launches on ``tensor``'s GPU (Triton launches on the current
    CUDA device, which may be another: ``cuda:1`` tensors under a ``cuda:0`` default)."""
    if tensor.is_cuda:
        import torch
        return torch.cuda.device(tensor.device)
    return contextlib.nullcontext()


__all__ = ["available", "interpreted", "on_device_of", "runs_on", "why_not"]
