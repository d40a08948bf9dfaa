"""How message sums run: one policy for PaiNN and EGNN, with one override point.

A message sum (PaiNN's filter × neighbour features, EGNN's edge network) can run four ways:

* **compiled** (PaiNN): ``torch.ops.mlip_attn.painn_message_orders``, the fused per-edge C++
  loops of `mlip_attn.ops` (built once per torch version on first use, about 40 s; the same op
  the LAMMPS export calls);
* **chunked** (Python): the same maths over edge chunks with a recomputing backward, so no edge
  tensor larger than a chunk is kept (`mlip_attn.nn.painn_message.ChunkedMessage`,
  `mlip_attn.nn.egnn_message.ChunkedEdgeMessages`);
* **Triton** (PaiNN, CUDA tensors): the GPU kernels of `mlip_attn.ops.gpu`, where Triton
  imports (`triton_kernels_for`); without Triton, CUDA tensors run the ATen form;
* **one pass**: plain autograd over all edges (fastest for small training batches, whose force
  loss differentiates the message twice).

`MessagePolicy` holds every number that chooses between them; `current()` is the policy in
force and `message_policy(...)` (a context manager) or `set_message_policy(...)` change it.
``MLIP_ATTN_KERNELS=python`` in the environment sets ``route="python"`` for a whole process.
The CPU thread count is chosen per call by `mlip_attn.threads` from ``one_thread_below``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import warnings

ROUTES = ("auto", "python")
ROUTE_ENV = "MLIP_ATTN_KERNELS"     # "python": never load or build the compiled ops


@dataclasses.dataclass(frozen=True)
class MessagePolicy:
    """The numbers that decide how a message sum runs (edges = directed neighbour pairs).

    route: ``"auto"`` (PaiNN calls the compiled op where it builds, else Python) or
        ``"python"`` (always Python).
    edges_per_thread: edges per chunk per intra-op thread on the chunked routes. A (256, 3F)
        float32 block at F = 128 is 0.4 MB, inside a 2 MB L2 cache; 256 per thread against a
        fixed 1,024 edges was 1.19× faster at 1,000 atoms and 1.11× at 4,000 (PaiNN 128 × 3,
        2 threads, one side-by-side run).
    one_pass_below: training steps on graphs with fewer edges take one plain-autograd pass
        (PaiNN; measured on batches of small molecules). Inference is chunked at every size:
        2.1× faster than one pass at 100 atoms (3,060 pairs).
    egnn_chunked_from: EGNN inference on at least this many edges takes the chunked route: 2×
        faster at 10,000 atoms (400k edges), 15 % slower at 1,000 (40k edges); EGNN training
        always takes one pass.
    script_chunk: the fixed chunk baked into a TorchScript export (which cannot read the thread
        count): (1,024, 3F) float32 at F = 128 is 1.5 MB.
    one_thread_below: a model call on fewer neighbour pairs runs on one thread (its many small
        operations gain nothing from a second): PaiNN 128 × 3, idle 2-core machine, 1 against
        2 threads, ms: 314 pairs 2.6/2.4, 862 pairs 4.5/3.9, 1,720 pairs 7.9/4.9.
    """

    route: str = "auto"
    edges_per_thread: int = 256
    one_pass_below: int = 4096
    egnn_chunked_from: int = 100_000
    script_chunk: int = 1024
    one_thread_below: int = 1024

    def __post_init__(self):
        if self.route not in ROUTES:
            raise ValueError(f"message route: one of {ROUTES}, got {self.route!r}")
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name != "route" and (not isinstance(value, int) or value < 0):
                raise ValueError(f"message policy {field.name}: a non-negative integer, got "
                                 f"{value!r}")
        if self.edges_per_thread < 1 or self.script_chunk < 1:
            raise ValueError("message policy: chunks must hold at least one edge")

    def chunk(self) -> int:
        """Edges per chunk on the eager chunked routes: ``edges_per_thread`` per thread."""
        import torch
        return self.edges_per_thread * max(torch.get_num_threads(), 1)


def _from_environment() -> MessagePolicy:
    route = os.environ.get(ROUTE_ENV, "").strip().lower()
    return MessagePolicy(route="python" if route == "python" else "auto")


_policy = _from_environment()
# what "auto" resolved to in this process: None (not yet), "compiled" or "python", and why
_compiled: dict = {"route": None, "why": ""}
_gpu_warned: list = []   # non-empty once a CUDA tensor met no Triton (one warning per process)


def current() -> MessagePolicy:
    """The policy in force."""
    return _policy


def set_message_policy(**changes) -> MessagePolicy:
    """Change fields of the policy for the rest of the process; returns the previous policy."""
    global _policy
    before = _policy
    _policy = dataclasses.replace(_policy, **changes)
    return before


@contextlib.contextmanager
def message_policy(**changes):
    """Within the block, the policy has ``changes`` (e.g. ``route="python"`` for side-by-side
    timings, or to count the message's matrix products, which the compiled op hides)."""
    global _policy
    before = set_message_policy(**changes)
    try:
        yield _policy
    finally:
        _policy = before


def _resolve_compiled() -> None:
    """Load (building it on first use) the compiled ops, or record why they are unavailable.
    A failed build is remembered in the library's folder so later processes do not retry."""
    from ..ops.build import FAILED_MARKER, TORCH_LIBRARY_NAME, torch_library_dir
    from ..ops.library import ops_registered, try_load_ops
    if not ops_registered():
        try:
            folder = torch_library_dir()
        except Exception as exc:   # noqa: BLE001 - e.g. no torch metadata
            _compiled.update(route="python", why=f"the compiled ops are unavailable: {exc}")
            return
        failed = folder / FAILED_MARKER
        if failed.exists():
            _compiled.update(route="python", why=f"{failed.read_text()[:300]} (delete {failed} "
                             "to try again)")
            return
        if not (folder / TORCH_LIBRARY_NAME).exists():
            print("mlip_attn: compiling the fused CPU kernels once for this torch version "
                  f"(about 40 s; {ROUTE_ENV}=python skips this)", file=sys.stderr)
        ok, why = try_load_ops(build=True)
        if not ok:
            why = f"the compiled ops could not be built or loaded: {why}"
            try:
                folder.mkdir(parents=True, exist_ok=True)
                failed.write_text(why)
            except OSError:
                pass
            _compiled.update(route="python", why=why)
            return
    import torch
    isa = torch.ops.mlip_attn.kernel_instruction_set()
    _compiled.update(route="compiled", why=f"fused per-edge loops ({isa})")


def compiled_message_available() -> bool:
    """Whether PaiNN's eager message calls the compiled op under the current policy (loading
    or building it on the first call)."""
    if _policy.route == "python":
        return False
    if _compiled["route"] is None:
        _resolve_compiled()
    return _compiled["route"] == "compiled"


def triton_kernels_for(tensor) -> bool:
    """Whether a message sum or EFA rotation on ``tensor`` takes the Triton kernels of
    `mlip_attn.ops.gpu`: a CUDA tensor, Triton importable, and a route other than ``python``.
    CPU tensors keep the compiled C++ ops. A CUDA tensor without Triton takes the ATen form, and
    the first such call in a process warns, saying why."""
    if _policy.route == "python" or not tensor.is_cuda:
        return False
    from ..ops import gpu
    if gpu.available():
        return True
    if not _gpu_warned:
        _gpu_warned.append(str(tensor.device))
        warnings.warn(f"mlip_attn: no GPU kernels for {tensor.device}: {gpu.why_not()}. The "
                      "PaiNN message and EFA's rotation run as ATen operations there (correct, "
                      "slower).", RuntimeWarning, stacklevel=2)
    return False


def prepare() -> str:
    """Resolve the route now (building the compiled ops if needed) and return `describe()`: a
    parent process calls it before starting workers, so they do not all compile at once."""
    compiled_message_available()
    return describe()


def describe() -> str:
    """One line: the route PaiNN's message takes here, and why."""
    if _policy.route == "python":
        env = os.environ.get(ROUTE_ENV, "").strip().lower() == "python"
        return f"python: {ROUTE_ENV}=python" if env else "python: message_policy(route='python')"
    if _compiled["route"] is None:
        _resolve_compiled()
    return f"{_compiled['route']}: {_compiled['why']}"
