"""``mlip-attn bench --roofline``: how far our PaiNN's energy + forces is from this machine's
arithmetic limit.

* **Peak**: a large float32 matrix product (2048³, 17.2 GFLOP) on torch's threads and on one
  thread, best of 5 — the highest rate torch reaches here. **Bandwidth**: copying a 256 MB
  float32 tensor (bytes read + written per second), best of 5.
* **FLOPs of a call**: every matrix product (mm, addmm, bmm, ...) of one energy + forces call,
  counted with torch's FLOP formulas (`torch.utils.flop_counter`, 2·m·n·k each), forward and
  backward, on the Python route of the message (`mlip_attn.nn.policy.message_policy(route="python")`: the
  same products, which the compiled op hides from the counter), including the backward's
  recomputation of the radial filter; the "minimal" count leaves that recomputation out.
  Element-wise operations, gathers and scatters are not counted (they are memory traffic, not
  arithmetic).
* **FLOP-limited time** = minimal FLOPs / peak; the ratio of the measured time (the default
  route: the compiled, fused message where it is built) to it says how far from the arithmetic
  limit the call is; the achieved rate is counted FLOPs / time.
* **Where the time goes**: one call under torch's profiler, its operations' own times summed
  by kind (the fused message, matrix products, gathers, scatters, element-wise, reductions, the
  rest) as shares of the profiled total; the rates of the fused message (its products:
  `message_flops`) and of the other matrix products are their FLOPs / their time.
"""
from __future__ import annotations

import statistics
import time


def matmul_peak_gflops(threads: int | None = None, n: int = 2048, repeats: int = 5) -> float:
    """Best float32 GFLOP/s of an n×n×n matrix product (on ``threads`` threads if given)."""
    import torch
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        a, b = torch.randn(n, n), torch.randn(n, n)
        torch.mm(a, b)
        best = min(_timed(lambda: torch.mm(a, b)) for _ in range(repeats))
    finally:
        torch.set_num_threads(before)
    return 2 * n ** 3 / best / 1e9


def copy_bandwidth_gbs(mb: int = 256, repeats: int = 5) -> float:
    """Best GB/s (read + write) of copying an ``mb`` MB float32 tensor."""
    import torch
    src = torch.randn(mb * 2 ** 20 // 4)
    dst = torch.empty_like(src)
    dst.copy_(src)
    best = min(_timed(lambda: dst.copy_(src)) for _ in range(repeats))
    return 2 * src.numel() * 4 / best / 1e9


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def call_flops(call) -> int:
    """Matrix-product FLOPs of one call of ``call`` (forward and backward), with torch's own
    FLOP formulas (`torch.utils.flop_counter`) in a dispatch mode; FlopCounterMode itself
    cannot watch a call that runs ``torch.autograd.grad``."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import flop_registry

    class Count(TorchDispatchMode):
        flops = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            formula = flop_registry.get(func._overloadpacket)
            if formula is not None:
                Count.flops += int(formula(*args, **kwargs, out_val=out))
            return out

    with Count():
        call()
    return Count.flops


OP_KINDS = {
    "matrix products": ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::baddbmm"),
    "gathers": ("aten::index_select", "aten::index", "aten::gather"),
    "scatters": ("aten::index_add_", "aten::scatter_add_", "aten::index_put_",
                 "aten::scatter_add"),
    "element-wise": ("aten::mul", "aten::add", "aten::addcmul", "aten::sub", "aten::div",
                     "aten::silu", "aten::silu_backward", "aten::mul_", "aten::add_",
                     "aten::sin", "aten::cos", "aten::sqrt", "aten::neg", "aten::pow",
                     "aten::sigmoid", "aten::exp", "aten::where"),
    "reductions": ("aten::sum", "aten::linalg_vector_norm", "aten::mean"),
}


# the compiled message op and its backward (an autograd node of ops.cpp): fused loops
FUSED = "fused message"


def _kind(key: str, kind_of: dict[str, str]) -> str | None:
    if key == "mlip_attn::painn_message_orders" or "PainnMessage" in key:
        return FUSED
    if key.startswith("aten::"):
        return kind_of.get(key, "other")
    return None   # Python-level and autograd-engine events: their work is in the ops above


def time_by_kind(call) -> dict[str, float]:
    """Own time (s) of one call's operations, summed by kind (`OP_KINDS`, `FUSED`, the rest
    as "other"), from torch's profiler (which adds its own overhead: use the shares)."""
    from torch.profiler import ProfilerActivity, profile
    kind_of = {op: kind for kind, ops in OP_KINDS.items() for op in ops}
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        call()
    totals = {kind: 0.0 for kind in (FUSED, *OP_KINDS, "other")}
    for event in prof.key_averages():
        kind = _kind(event.key, kind_of)
        if kind is not None:
            totals[kind] += event.self_cpu_time_total / 1e6
    return totals


def recomputed_filter_flops(n_edges: int, num_basis: int, channels: int, layers: int) -> int:
    """FLOPs of the filter products the chunked backward recomputes: one (E, K+1) × (K+1, C)
    product per layer (K radial functions plus the envelope column, C filter channels)."""
    return 2 * n_edges * (num_basis + 1) * channels * layers


def message_flops(n_edges: int, num_basis: int, channels: int, layers: int) -> int:
    """FLOPs of the message's own products in energy + forces (frozen weights): the filter in
    the forward, its recomputation and the radial gradient (E, C) × (C, K+1) in the backward."""
    return 3 * recomputed_filter_flops(n_edges, num_basis, channels, layers)


def run_roofline(sizes=(1000, 10000), width: int = 128, layers: int = 3, cutoff: float = 5.0,
                 num_basis: int = 20, repeats: int = 5, peak_n: int = 2048, log=print
                 ) -> list[dict]:
    """Print and return, per size: time, FLOPs, achieved GFLOP/s and the ratios to the limit
    (``peak_n``: size of the matrix product that measures the peak)."""
    import torch
    from ..nn.policy import describe as kernels
    from ..nn.policy import message_policy
    from ..threads import describe
    from .peer_models import Graph, ours
    peak = matmul_peak_gflops(n=peak_n)
    peak_1 = matmul_peak_gflops(threads=1, n=peak_n)
    bandwidth = copy_bandwidth_gbs()
    log(f"PaiNN {width} × {layers}, energy + forces, float32, random C/H/O clusters; torch "
        f"{torch.__version__}, {describe()}; message: {kernels()}")
    log(f"peak (float32 {peak_n}³ matmul): {peak:.0f} GFLOP/s on {torch.get_num_threads()} "
        f"threads, {peak_1:.0f} GFLOP/s on 1; copy bandwidth {bandwidth:.1f} GB/s")
    log("| atoms | pairs | ms/call | counted GFLOP | minimal GFLOP | achieved GFLOP/s "
        "| fraction of peak | FLOP-limited ms | time / FLOP-limited |")
    log("|---|---|---|---|---|---|---|---|---|")
    rows = []
    for n in sizes:
        torch.manual_seed(0)
        graph = Graph(n, cutoff)
        call, _ = ours("painn", width, layers, cutoff, num_basis, graph)
        call()
        with message_policy(route="python"):   # the same maths, with its products visible to the counter
            flops = call_flops(call)
        in_message = message_flops(graph.n_edges, num_basis, 3 * width, layers)
        minimal = flops - recomputed_filter_flops(graph.n_edges, num_basis, 3 * width, layers)
        times = []
        for _ in range(repeats):
            times.append(_timed(call))
        t = statistics.median(times)
        limit = minimal / (peak * 1e9)
        row = {"atoms": n, "pairs": graph.n_edges, "median_s": t, "flops": flops,
               "minimal_flops": minimal, "gflops": flops / t / 1e9, "peak_gflops": peak,
               "fraction": flops / t / 1e9 / peak, "limit_s": limit, "ratio": t / limit,
               "bandwidth_gbs": bandwidth, "message_flops": in_message}
        row["time_by_kind"] = time_by_kind(call)
        rows.append(row)
        log(f"| {n:,} | {graph.n_edges:,} | {1e3 * t:.1f} | {flops / 1e9:.2f} | "
            f"{minimal / 1e9:.2f} | {row['gflops']:.1f} | {100 * row['fraction']:.1f} % | "
            f"{1e3 * limit:.1f} | {row['ratio']:.1f}× |")
    log("")
    log("where the time goes (own time of the call's operations by kind, share of the profiled "
        "total; rates: the fused message's products, and the other matrix products, in GFLOP/s "
        "and as a fraction of peak):")
    kinds = list(rows[0]["time_by_kind"]) if rows else []
    log("| atoms | " + " | ".join(kinds) + " | fused message's GFLOP/s | other products' GFLOP/s |")
    log("|---|" + "---|" * (len(kinds) + 2))
    for row in rows:
        by_kind = row["time_by_kind"]
        total = sum(by_kind.values()) or 1.0
        rates = []
        for flops, seconds in ((row["message_flops"], by_kind[FUSED]),
                               (row["flops"] - row["message_flops"], by_kind["matrix products"])):
            rate = flops / seconds / 1e9 if seconds > 0 else float("nan")
            rates.append(f"{rate:.0f} ({100 * rate / peak:.0f} % of peak)" if seconds > 0
                         else "–")
        log(f"| {row['atoms']:,} | " + " | ".join(f"{100 * by_kind[k] / total:.0f} %"
                                                  for k in kinds) + " | " + " | ".join(rates) + " |")
    return rows
