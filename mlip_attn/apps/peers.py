"""``mlip-attn bench --peers``: our models against the CPU models users would pick instead
(SchNetPack's SchNet and PaiNN, TorchMD-Net's TensorNet, NequIP, Allegro, MACE), side by side
at matched sizes, grouped by equivariance order ℓ (the models: `mlip_attn.apps.peer_models`).

Every model gets the same random C/H/O cluster (0.1 atoms/Å³, isolated) and the same full
neighbour list (vesin, computed once, not timed), and computes energy + forces (−dE/dr by
autograd) in float32 in eval mode. All models run in **one process, interleaved** (model A,
model B, ..., then again), so machine noise and the allocator hit every model alike; the table
gives medians and our/their throughput ratios. Peak memory is measured per model in a fresh
subprocess: the peak rise of resident memory over the first two calls, from before them.
Sizes a model would not fit in memory or time (extrapolated from the size below) are skipped.

The peers are optional (``pip install -e '.[bench]'`` after ``pip install torch==2.13.0``,
then NequIP/Allegro with ``--no-deps``; docs/results/performance.md); a peer that is not installed is
reported with its install command and skipped. ``--quick`` checks in about a minute that every
model builds and runs.
"""
from __future__ import annotations

import multiprocessing as mp
import resource
import statistics
import time

from .peer_models import MODELS, OURS, Graph, why_missing


def allocator() -> str:
    """The malloc in use: tcmalloc/jemalloc when preloaded, else glibc's default."""
    with open("/proc/self/maps") as fh:
        maps = fh.read()
    for name in ("tcmalloc", "jemalloc", "mimalloc"):
        if name in maps:
            return name
    return "glibc malloc (default)"


def _status_mb(key: str) -> float:
    """VmRSS (resident now) or VmHWM (resident peak) of this process, MB."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{key} not in /proc/self/status")


def _reset_peak() -> None:
    """Reset VmHWM to the current RSS (Linux >= 4.0), so the next peak is the call's own."""
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


def _build(names, width, layers, cutoff, num_basis, graph):
    """Models that could be built: name -> (call, parameters); errors: name -> reason."""
    built, errors = {}, {}
    for name in names:
        try:
            built[name] = MODELS[name][0](width, layers, cutoff, num_basis, graph)
        except ImportError as exc:
            errors[name] = why_missing(name, exc)
        except Exception as exc:  # a peer that installs but does not run: report, go on
            errors[name] = f"failed to build: {type(exc).__name__}: {exc}"
    return built, errors


def _memory(name, n_atoms, width, layers, cutoff, num_basis, queue):
    import torch
    from ..threads import configure
    configure()
    torch.manual_seed(0)
    graph = Graph(n_atoms, cutoff)
    built, errors = _build([name], width, layers, cutoff, num_basis, graph)
    if name in errors:
        queue.put(None)
        return
    call = built[name][0]
    # from before the first call: a second call alone would reuse the pages the first one
    # mapped and allocators keep, and count almost nothing (0 MB for a model that needs GBs)
    _reset_peak()
    before = _status_mb("VmRSS")
    call()
    call()
    queue.put({"call_peak_mb": _status_mb("VmHWM") - before,
               "process_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})


def peak_memory(name, n_atoms, width=128, layers=3, cutoff=5.0, num_basis=20) -> dict | None:
    """Working memory of energy + forces calls in a fresh process: the peak resident memory
    over the first two calls minus the resident memory before them, with the model and the
    structure already built (MB). None when the model is missing or the process died (e.g.
    killed for memory)."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_memory, args=(name, n_atoms, width, layers, cutoff, num_basis,
                                              queue))
    proc.start()
    proc.join()
    return queue.get() if proc.exitcode == 0 else None


def available_mb() -> float:
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    return float("inf")


def _skip_reason(name: str, n: int, rows: list[dict], repeats: int, max_seconds: float
                 ) -> str | None:
    """Why not to run ``name`` at ``n`` atoms, extrapolating linearly from its largest
    smaller size: memory beyond what is available, or calls beyond ``max_seconds`` in all."""
    done = [r for r in rows if r["model"] == name and r["atoms"] < n]
    if not done:
        return None
    last = max(done, key=lambda r: r["atoms"])
    if "skipped" in last:   # a missing peer stays missing; a guarded one stays out
        missing = last["skipped"].startswith(("not installed", "failed to build"))
        return last["skipped"] if missing else "skipped (a smaller size was skipped)"
    scale = n / last["atoms"]
    if last.get("memory"):   # the process's baseline plus the call's own memory, scaled
        mem = last["memory"]
        need = mem["process_peak_mb"] + (scale - 1) * mem["call_peak_mb"]
        if 1.3 * need > available_mb():
            return (f"skipped: would need ~{need / 1024:.0f} GB, "
                    f"{available_mb() / 1024:.0f} GB available")
    if scale * last["median_s"] * (repeats + 2) > max_seconds:
        return (f"skipped: ~{scale * last['median_s']:.0f} s per call, over the "
                f"{max_seconds:.0f} s budget for {repeats + 2} calls")
    return None


DEFAULT_MODELS = tuple(MODELS)
# `--peers --quick`: that every model builds and runs (or is reported missing), not numbers:
# one small cluster, small models (2 layers, so that ℓ = 2 features reach an output), one
# timed call each, no memory subprocesses
QUICK = dict(sizes=(40,), repeats=1, width=16, layers=2, num_basis=8, memory=False)


def run_peers(sizes=(100, 1000, 10000), models=DEFAULT_MODELS, repeats: int = 7,
              width: int = 128, layers: int = 3, cutoff: float = 5.0, num_basis: int = 20,
              memory: bool = True, max_seconds: float = 1200.0, log=print,
              quick: bool = False) -> list[dict]:
    """Time every model interleaved in this process (per size: A, B, C, ..., again), print
    medians, ratios to SchNetPack's PaiNN and to the fastest peer of the same order, and
    peak memory per call (each model in a fresh process). Sizes from 10,000 atoms get
    ``max(3, repeats // 2)`` calls. ``quick``: the `QUICK` settings instead of sizes,
    repeats, width, layers, num_basis and memory (a check of the installation, in about a
    minute). Returns one row per (model, size)."""
    import torch
    from ..nn.policy import describe as kernels
    from ..threads import describe
    if quick:
        sizes, repeats, width, layers, num_basis, memory = (
            QUICK[k] for k in ("sizes", "repeats", "width", "layers", "num_basis", "memory"))
        log("quick check (--quick): every model builds and runs at small sizes; the times "
            "are not the benchmark")
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise ValueError(f"--peer-models: unknown {unknown}; choose from {list(MODELS)}")
    log(f"energy + forces, float32, eval mode, random C/H/O clusters at 0.1 atoms/Å³, same "
        f"neighbour list for all; width {width}, {layers} layers, cutoff {cutoff} Å, "
        f"{num_basis} radial functions for every model (ℓ = 2 features: width / 2 channels; "
        f"MACE: width channels at every ℓ, correlation 3, MACE 128x0e with ℓ ≤ 3 edge "
        f"harmonics; Allegro: width / 4 tensor features)")
    log(f"torch {torch.__version__}, {describe()}, allocator: {allocator()}; PaiNN's message: "
        f"{kernels()}; median of {repeats} interleaved calls after one warm-up")
    rows = []
    for n in sizes:
        reps = repeats if n < 10000 else max(3, repeats // 2)
        torch.manual_seed(0)
        graph = Graph(n, cutoff)
        todo = []
        for name in models:
            why = _skip_reason(name, n, rows, reps, max_seconds)
            if why:
                log(f"  {MODELS[name][1]}, {n:,} atoms: {why}")
                rows.append({"model": name, "atoms": n, "pairs": graph.n_edges,
                             "skipped": why})
            else:
                todo.append(name)
        mem = {}
        if memory:  # first, so that a model that dies for memory is not timed
            for name in todo:
                mem[name] = peak_memory(name, n, width, layers, cutoff, num_basis)
        built, errors = _build(todo, width, layers, cutoff, num_basis, graph)
        for name, why in errors.items():
            log(f"  {MODELS[name][1]}, {n:,} atoms: skipped, {why}")
            rows.append({"model": name, "atoms": n, "pairs": graph.n_edges, "skipped": why})
        if memory:
            for name in [m for m in built if mem.get(m) is None]:
                log(f"  {MODELS[name][1]}, {n:,} atoms: the memory run failed (out of "
                    f"memory?); not timed")
                rows.append({"model": name, "atoms": n, "pairs": graph.n_edges,
                             "skipped": "failed (out of memory?)"})
                del built[name]
        times = {name: [] for name in built}
        for _ in range(reps + 1):
            for name, (call, _) in built.items():
                t = time.perf_counter()
                call()
                times[name].append(time.perf_counter() - t)
        for name, (_, params) in built.items():
            rows.append({"model": name, "atoms": n, "pairs": graph.n_edges, "parameters": params,
                         "median_s": statistics.median(times[name][1:]),
                         "memory": mem.get(name)})
        del built
    log(format_table(rows))
    for n in sizes:
        t = {r["model"]: r["median_s"] for r in rows if r["atoms"] == n and "median_s" in r}
        if "painn" in t and "painn-ase" in t:
            log(f"{n:,} atoms: AttnCalculator adds {100 * (t['painn-ase'] / t['painn'] - 1):+.1f}% "
                f"over the bare PaiNN call")
        if "painn" in t and "painn-python" in t:
            log(f"{n:,} atoms: PaiNN with the fused message is {t['painn-python'] / t['painn']:.2f}× "
                f"as fast as with the Python message")
    return rows


def _fastest_peer(rows: list[dict], row: dict) -> dict | None:
    peers = [r for r in rows if r["atoms"] == row["atoms"] and "median_s" in r
             and r["model"] not in OURS and MODELS[r["model"]][2] == MODELS[row["model"]][2]]
    return min(peers, key=lambda r: r["median_s"]) if peers else None


def format_table(rows: list[dict]) -> str:
    """Markdown table, by size and order: 'vs SchNetPack' is SchNetPack PaiNN's time / the
    row's time (higher is faster); 'vs fastest peer' (our rows) is the fastest peer of the
    same order's time / ours, and its memory / ours."""
    lines = ["| model | ℓ | atoms | pairs | parameters | ms/call | atom·calls/s | vs SchNetPack "
             "| vs fastest peer of its ℓ: time, memory | peak memory of the calls (MB) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    order = {name: k for k, name in enumerate(MODELS)}
    for r in sorted(rows, key=lambda r: (r["atoms"], MODELS[r["model"]][2], order[r["model"]])):
        label, ell = MODELS[r["model"]][1], MODELS[r["model"]][2]
        if "median_s" not in r:
            lines.append(f"| {label} | {ell} | {r['atoms']:,} | {r['pairs']:,} | | "
                         f"{r.get('skipped', '-')} | | | | |")
            continue
        ref = [x for x in rows if x["atoms"] == r["atoms"] and x["model"] == "schnetpack-painn"
               and "median_s" in x]
        ratio = f"{ref[0]['median_s'] / r['median_s']:.2f}×" if ref else "-"
        mem = f"{r['memory']['call_peak_mb']:.0f}" if r.get("memory") else "-"
        versus = "-"
        best = _fastest_peer(rows, r) if r["model"] in OURS else None
        if best is not None:
            versus = f"{best['median_s'] / r['median_s']:.2f}× ({MODELS[best['model']][1]})"
            if r.get("memory") and best.get("memory"):
                versus += (f", {best['memory']['call_peak_mb'] / max(r['memory']['call_peak_mb'], 1):.1f}×")
        lines.append(f"| {label} | {ell} | {r['atoms']:,} | {r['pairs']:,} | "
                     f"{r['parameters']:,} | {1e3 * r['median_s']:.1f} | "
                     f"{r['atoms'] / r['median_s']:,.0f} | {ratio} | {versus} | {mem} |")
    return "\n".join(lines)
