"""Which route PaiNN's message takes in eager PyTorch: the compiled op or Python.

The compiled op ``torch.ops.mlip_attn.painn_message_orders`` (``mlip_attn/lammps/src``: the
fused per-edge loops of ``painn_kernels.cpp`` on the CPU) lives in ``libmlip_attn_torch.so``, the
same file the LAMMPS plugin loads. It is compiled once per torch version and C++ sources, the
first time a PaiNN message runs (about 40 s with g++ ≥ 10; `mlip-attn build-lammps` does it
ahead of time), and cached (`mlip_attn.lammps.torch_build.torch_library_dir`). Without a
compiler (a failed build is remembered in that folder, so later processes do not try again),
or with ``MLIP_ATTN_KERNELS=python``, the message runs as the Python
`~mlip_attn.nn.painn_message.ChunkedMessage`: the same maths, slower (the README's performance
section has both).
"""
from __future__ import annotations

import contextlib
import os
import sys

_state: dict = {"route": None, "why": "", "forced_python": False}


def _choose() -> None:
    if os.environ.get("MLIP_ATTN_KERNELS", "").strip().lower() == "python":
        _state.update(route="python", why="MLIP_ATTN_KERNELS=python")
        return
    from ..lammps.ops import ops_registered, try_load_ops
    from ..lammps.torch_build import FAILED_MARKER, TORCH_LIBRARY_NAME, torch_library_dir
    if not ops_registered():
        try:
            folder = torch_library_dir()
        except Exception as exc:   # noqa: BLE001 - e.g. no torch metadata
            _state.update(route="python", why=f"the compiled ops are unavailable: {exc}")
            return
        failed = folder / FAILED_MARKER
        if failed.exists():   # a build failed here before: do not pay for it in every process
            _state.update(route="python", why=f"{failed.read_text()[:300]} (delete {failed} "
                          "to try again)")
            return
        if not (folder / TORCH_LIBRARY_NAME).exists():
            print("mlip_attn: compiling the fused CPU kernels once for this torch version "
                  "(about 40 s; MLIP_ATTN_KERNELS=python skips this)", file=sys.stderr)
        ok, why = try_load_ops(build=True)
        if not ok:
            why = f"the compiled ops could not be built or loaded: {why}"
            try:
                folder.mkdir(parents=True, exist_ok=True)
                failed.write_text(why)
            except OSError:
                pass
            _state.update(route="python", why=why)
            return
    import torch
    isa = torch.ops.mlip_attn.kernel_instruction_set()
    _state.update(route="compiled", why=f"fused per-edge loops ({isa})")


def compiled_message_available() -> bool:
    """Whether PaiNN's eager message calls the compiled op (loading or building it on the
    first call)."""
    if _state["forced_python"]:
        return False
    if _state["route"] is None:
        _choose()
    return _state["route"] == "compiled"


def describe() -> str:
    """One line: the route the message takes here, and why."""
    if _state["forced_python"]:
        return "python (within python_message())"
    if _state["route"] is None:
        _choose()
    return f"{_state['route']}: {_state['why']}"


@contextlib.contextmanager
def python_message():
    """Within the block, PaiNN's eager message runs as Python (for side-by-side timings and
    for counting its matrix products' FLOPs, which the compiled op hides)."""
    before = _state["forced_python"]
    _state["forced_python"] = True
    try:
        yield
    finally:
        _state["forced_python"] = before
