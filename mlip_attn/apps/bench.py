"""``mlip-attn bench``: throughput and peak memory of energy + forces, and of neighbour lists.

Systems are boxes of random C/H/O atoms at 0.1 atoms/Å³ (liquid-like density, no pair closer
than ~0.9 Å): periodic when only local models are compared, otherwise the same box as an
isolated cluster for every model (global attention refuses periodic cells), so all rows of one
table see the same structures. Each (model, size) point runs in a fresh
subprocess, so its peak resident memory (ru_maxrss) is its own and an out-of-memory failure
only ends that point. Times are medians of ``repeats`` calls after one warm-up, float32.

``device``: ``cpu`` (default) or ``cuda``/``cuda:N``: the model and the structure on that
device, every timed call ended by a device synchronisation, and the peak memory the device's
(``torch.cuda.max_memory_allocated``) instead of the process's resident memory. A CUDA device
that this torch cannot see is refused before anything runs (`check_device`).
"""
from __future__ import annotations

import math
import multiprocessing as mp
import resource
import statistics
import time

import numpy as np

from ..threads import describe as describe_threads

DENSITY = 0.1  # atoms / Å^3
BENCH_MODES = ("roofline", "under_load", "lammps", "training", "peers")  # the CPU-only modes

MODEL_NAMES_HELP = ("<backbone> or <backbone>+<attention preset>, optionally @<encoders> "
                    "(comma-separated, or 'all'), e.g. painn, painn-l2, egnn, painn+efa-l1 "
                    "(painn+efa-l1:lebedev: EFA's linear-cost form, switch false), "
                    "painn+transformer, painn@all, egnn@chemical (see `mlip-attn components`)")


def random_box(n_atoms: int, seed: int = 0, density: float = DENSITY, periodic: bool = True):
    """A cubic box of ``n_atoms`` random C/H/O atoms (no pair closer than ~0.9 Å)."""
    from ase import Atoms
    rng = np.random.default_rng(seed)
    length = (n_atoms / density) ** (1 / 3)
    grid = int(np.ceil(n_atoms ** (1 / 3)))
    spacing = length / grid
    cells = rng.permutation(grid ** 3)[:n_atoms]
    idx = np.stack(np.unravel_index(cells, (grid,) * 3), axis=1)
    positions = (idx + 0.5 + rng.uniform(-0.2, 0.2, (n_atoms, 3))) * spacing
    numbers = rng.choice([1, 6, 8], size=n_atoms, p=[0.5, 0.3, 0.2])
    return Atoms(numbers=numbers, positions=positions, cell=[length] * 3 if periodic else None,
                 pbc=periodic)


def model_config(kind: str, width: int, layers: int, cutoff: float, r_max: float) -> dict:
    """The model config of a benchmark model name (see `MODEL_NAMES_HELP`); a global block
    with a finite reach gets ``r_max`` Å."""
    from ..registry import BACKBONES, ENCODERS, GLOBAL_BLOCKS
    kind, _, encoders = kind.partition("@")
    backbone, _, preset = kind.partition("+")
    own = {}
    if backbone in BACKBONES.presets():  # e.g. painn-l2 = painn with lmax 2
        backbone, own = BACKBONES.presets()[backbone]
    BACKBONES.get(backbone, f"benchmark model {kind!r}: backbone")
    cfg = {"backbone": backbone, "elements": [1, 6, 8], "width": width, "layers": layers,
           "cutoff": cutoff, **own}
    preset, _, form = preset.partition(":")
    if form not in ("", "lebedev"):
        raise ValueError(f"benchmark model {kind!r}: the only form suffix is ':lebedev', got "
                         f"{form!r}")
    if preset:
        presets = GLOBAL_BLOCKS.presets()
        if preset not in presets:
            raise ValueError(f"benchmark model {kind!r}: attention preset {preset!r} is not one "
                             f"of {sorted(presets)}")
        block, options = presets[preset]
        if "r_max" in GLOBAL_BLOCKS[block].parameters():
            options.setdefault("r_max", r_max)
        cfg["attention"] = {"type": block, **options, **({"switch": False} if form else {})}
    if encoders:
        names = ENCODERS.names() if encoders == "all" else encoders.split(",")
        for name in names:
            ENCODERS.get(name, f"benchmark model {kind}@{encoders}: encoder")
        cfg["encoders"] = names
    return cfg


def is_periodic(kind: str, width: int = 16, layers: int = 1, cutoff: float = 5.0) -> bool:
    """Whether the benchmark model ``kind`` accepts periodic cells."""
    from ..models import build_model
    return build_model(model_config(kind, width, layers, cutoff, 10.0)).periodic


def check_device(device: str) -> str:
    """``device`` if this torch can run on it, else a ValueError that says why: ``cpu``, or
    ``cuda``/``cuda:N`` with a CUDA build of torch that sees that GPU."""
    import torch
    try:
        parsed = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"--device {device!r} is not a device name (cpu, cuda or cuda:N)") \
            from exc
    if parsed.type == "cpu":
        return device
    if parsed.type != "cuda":
        raise ValueError(f"--device {device!r}: the benchmark runs on cpu or cuda only")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise ValueError(f"--device {device}: this torch ({torch.__version__}, CUDA "
                         f"{torch.version.cuda or 'not built in'}) sees no CUDA device; run "
                         "on a machine with an NVIDIA GPU and a CUDA build of torch")
    if parsed.index is not None and parsed.index >= count:
        raise ValueError(f"--device {device}: this machine has {count} CUDA device(s)")
    return device


def check_mode_device(device: str, modes: list[str]) -> None:
    """Only the plain bench runs on another device than the CPU: a ValueError naming the first
    of the other bench ``modes`` asked for with a non-CPU ``device``."""
    if device != "cpu" and modes:
        raise ValueError(f"--device {device}: only the plain `mlip-attn bench` (energy + forces "
                         f"per model and size) runs on another device, not "
                         f"--{modes[0].replace('_', '-')}")


def _synchronize(device) -> None:
    import torch
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _measure(kind: str, n_atoms: int, repeats: int, width: int, layers: int, cutoff: float,
             periodic: bool, queue, device: str = "cpu"):
    import torch
    from ..threads import configure
    configure()  # the parent's --threads reach this process through MLIP_ATTN_THREADS
    from ..data import AtomicData, Batch
    from ..data.neighbours import neighbour_list
    atoms = random_box(n_atoms, periodic=periodic)
    data = AtomicData.from_atoms(atoms)
    times = []
    if kind == "neighbour-list":
        for _ in range(repeats + 1):
            t = time.perf_counter()
            neighbour_list(atoms.positions, atoms.cell.array, atoms.pbc, cutoff)
            times.append(time.perf_counter() - t)
        edges = 0
    else:
        from ..models import build_model
        where = torch.device(device)
        model = build_model(model_config(kind, width, layers, cutoff, data.extent + 1.0))
        model = model.eval().requires_grad_(False).to(where)  # inference, as AttnCalculator
        batch = Batch.collate([data.with_graph(cutoff)]).to(dtype=torch.float32, device=where)
        edges = batch.edge_index.shape[1]
        for _ in range(repeats + 1):
            _synchronize(where)
            t = time.perf_counter()
            out = model.predict(batch, compute_forces=True)
            assert out["forces"].device.type == where.type
            _synchronize(where)
            times.append(time.perf_counter() - t)
    if device != "cpu" and kind != "neighbour-list":
        peak_mb = torch.cuda.max_memory_allocated(torch.device(device)) / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put({"median_s": statistics.median(times[1:]), "edges": edges, "peak_mb": peak_mb})


def measure(kind: str, n_atoms: int, repeats: int = 5, width: int = 128, layers: int = 3,
            cutoff: float = 5.0, periodic: bool = True, device: str = "cpu",
            time_cap: float | None = None) -> dict:
    """Median seconds and peak memory (MB: the whole process's resident memory on the CPU,
    the device's allocations on a GPU) for one point, in a fresh process, ended (an error
    row) after ``time_cap`` seconds if given."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_measure, args=(kind, n_atoms, repeats, width, layers, cutoff,
                                                   periodic, queue, device))
    proc.start()
    proc.join(time_cap)
    if proc.is_alive():
        proc.kill()
        proc.join()
        return {"median_s": float("nan"), "edges": 0, "peak_mb": float("nan"),
                "error": f"over the time cap ({time_cap:g} s for the point)"}
    if proc.exitcode != 0:
        return {"median_s": float("nan"), "edges": 0, "peak_mb": float("nan"),
                "error": f"failed (exit code {proc.exitcode}; out of memory?)"}
    return queue.get()


def loglog_slope(sizes: list[int], seconds: list[float]) -> float:
    """Least-squares slope of log(time) against log(atoms) over the finite points."""
    pts = [(math.log(n), math.log(s)) for n, s in zip(sizes, seconds) if math.isfinite(s)]
    if len({x for x, _ in pts}) < 2:   # one size (possibly measured twice): no slope
        return float("nan")
    x, y = np.array(pts).T
    return float(np.polyfit(x, y, 1)[0])


def _device_name(device: str) -> str:
    import torch
    if device == "cpu":
        return f"cpu, {describe_threads()}"
    return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"


def run_bench(sizes=(100, 1000, 10000), models=("painn", "egnn"), repeats: int = 5,
              width: int = 128, layers: int = 3, cutoff: float = 5.0,
              neighbour_list: bool = True, device: str = "cpu",
              time_cap: float | None = None) -> list[dict]:
    """Print and return a table of throughput (atom·steps/s, µs/atom/step) and peak memory
    per point on ``device``, and the log-log slope of time against atoms per model.
    ``time_cap`` (s): a point is ended after it, and a size is skipped when the last one's
    time, scaled linearly in atoms over its repeats, predicts more."""
    import torch
    check_device(device)
    periodic = all(is_periodic(m) for m in models)
    print(f"energy + forces, float32, width {width}, {layers} layers, cutoff {cutoff} Å, "
          f"random C/H/O at {DENSITY} atoms/Å³ ({'periodic box' if periodic else 'isolated box'}), "
          f"torch {torch.__version__}, {_device_name(device)}; median of {repeats}")
    memory = "peak MB" if device == "cpu" else "GPU MB"
    print(f"{'model':<15}{'atoms':>8}{'pairs':>11}{'ms/step':>12}{'atom·steps/s':>15}"
          f"{'µs/atom/step':>14}{memory:>10}")
    rows = []
    for kind in (["neighbour-list"] if neighbour_list else []) + list(models):
        if kind != "neighbour-list":
            model_config(kind, width, layers, cutoff, 10.0)  # a clear error for a bad name
        failed, last = False, None
        for n in sizes:
            skip = "skipped (a smaller size already failed)" if failed else None
            predicted = last["median_s"] * n / last["atoms"] * (repeats + 1) if last else 0.0
            if time_cap and predicted > time_cap:
                skip = f"skipped (estimated over the time cap of {time_cap:g} s)"
            r = (measure(kind, n, repeats, width, layers, cutoff, periodic,
                         "cpu" if kind == "neighbour-list" else device, time_cap) if not skip
                 else {"median_s": float("nan"), "edges": 0, "peak_mb": float("nan"),
                       "error": skip})
            failed = failed or "error" in r
            r.update(model=kind, atoms=n, device="cpu" if kind == "neighbour-list" else device,
                     us_per_atom_step=1e6 * r["median_s"] / n)
            rows.append(r)
            last = r if "error" not in r else last
            pairs = f"{r['edges']:,}" if r["edges"] else "-"
            print(f"{kind:<15}{n:>8}{pairs:>11}{1e3 * r['median_s']:>12.2f}"
                  f"{n / r['median_s']:>15,.0f}{r['us_per_atom_step']:>14.2f}"
                  f"{r['peak_mb']:>10.0f}"
                  f"{'  ' + r['error'] if 'error' in r else ''}", flush=True)
        own = [r for r in rows if r["model"] == kind]
        slope = loglog_slope([r["atoms"] for r in own], [r["median_s"] for r in own])
        if math.isfinite(slope):
            print(f"{'':<15}log-log slope of time vs atoms: {slope:.2f}", flush=True)
    return rows


def write_bench_json(path, rows: list[dict], device: str, **settings) -> dict:
    """Write `run_bench`'s ``rows`` to ``path`` (JSON) with what produced them: the device's
    name, torch, CUDA and Triton versions, the route of PaiNN's message there, and
    ``settings`` (width, layers, ...). NaN times (failed or skipped points) become null."""
    import json
    import platform

    import torch

    from ..nn.policy import describe
    from ..ops import gpu
    on_gpu = device != "cpu"
    info = {"device": _device_name(device), "torch": torch.__version__,
            "cuda": torch.version.cuda, "triton": gpu.why_not() if gpu.available() else None,
            "message_route": ("triton" if gpu.available() else "aten") if on_gpu else describe(),
            "python": platform.python_version(), "float": "float32", **settings}
    clean = [{k: (None if isinstance(v, float) and not math.isfinite(v) else v)
              for k, v in r.items()} for r in rows]
    document = {"settings": info, "rows": clean}
    with open(path, "w") as handle:
        json.dump(document, handle, indent=1)
    return document


def training_structures(kind: str, n_structures: int, atoms: int):
    """Unlabelled structures for training steps: ``"clusters"`` (random isolated C/H/O
    clusters of ``atoms`` atoms) or ``"cumulene"`` (C9H4, the EFA paper's molecule: 13 atoms,
    distorted, no QM needed)."""
    if kind == "clusters":
        return [random_box(atoms, seed=k, periodic=False) for k in range(n_structures)]
    if kind == "cumulene":
        from ..qm.systems.cumulene import DISTORTIONS, cumulene_structures
        return cumulene_structures([9], n_structures, seed=0, optimise=False, **DISTORTIONS)
    raise ValueError(f"--structures: {kind!r} is not one of ['clusters', 'cumulene']")


def _training_step_times(kind: str, n_structures: int, atoms: int, batch_size: int, steps: int,
                         width: int, layers: int, cutoff: float, structures: str, queue) -> None:
    import torch
    from ..threads import configure
    configure()
    from ..data import AtomicData, Batch
    from ..models import build_model
    from ..training.loss import loss_terms
    torch.manual_seed(0)
    frames = []
    for atoms_k in training_structures(structures, n_structures, atoms):
        # labels are random: the cost does not depend on them
        data = AtomicData.from_atoms(atoms_k).with_graph(cutoff)
        data.energy = float(torch.randn(()))
        data.forces = torch.randn(len(atoms_k), 3, dtype=torch.float64)
        frames.append(data)
    batches = [Batch.collate(frames[k:k + batch_size]).to(dtype=torch.float32)
               for k in range(0, n_structures, batch_size)]
    model = build_model(model_config(kind, width, layers, cutoff, 2 * frames[0].extent + 1.0))
    model.train()
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-4)
    weights = {"energy": 1.0, "forces": 10.0, "stress": 0.0}
    times = []
    for step in range(steps + 1):
        batch = batches[step % len(batches)]
        t = time.perf_counter()
        loss = loss_terms(model.predict(batch, compute_forces=True), batch, weights)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        times.append(time.perf_counter() - t)
    queue.put({"median_s": statistics.median(times[1:]),
               "edges": sum(b.edge_index.shape[1] for b in batches) / len(batches),
               "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})


def run_training_bench(models=("painn", "egnn"), atoms: int = 30, batch_size: int = 16,
                       steps: int = 10, width: int = 128, layers: int = 3, cutoff: float = 5.0,
                       structures: str = "clusters", log=print) -> list[dict]:
    """Training throughput (structures/s) of energy + force training steps (forward, forces
    with create_graph, loss, backward, AdamW step), float32, each model in a fresh process
    (peak RSS is its own). Structures: see `training_structures`."""
    import torch
    what = (f"{atoms}-atom C/H/O clusters" if structures == "clusters"
            else "C9H4 cumulenes (13 atoms)")
    training_structures(structures, 0, atoms)  # a clear error for a bad name
    log(f"training steps: batch {batch_size} × {what}, float32, width "
        f"{width}, {layers} layers, cutoff {cutoff} Å, torch {torch.__version__}, "
        f"{describe_threads()}; median of {steps} steps")
    name_width = max(16, *(len(kind) + 2 for kind in models))
    log(f"{'model':<{name_width}}{'pairs/batch':>12}{'ms/step':>10}{'structures/s':>14}"
        f"{'peak MB':>10}")
    rows = []
    ctx = mp.get_context("spawn")
    for kind in models:
        queue = ctx.Queue()
        proc = ctx.Process(target=_training_step_times, args=(
            kind, 4 * batch_size, atoms, batch_size, steps, width, layers, cutoff, structures,
            queue))
        proc.start()
        proc.join()
        if proc.exitcode != 0:
            log(f"{kind:<{name_width}}failed (exit code {proc.exitcode})")
            continue
        r = {"model": kind, **queue.get()}
        rows.append(r)
        log(f"{kind:<{name_width}}{r['edges']:>12,.0f}{1e3 * r['median_s']:>10.1f}"
            f"{batch_size / r['median_s']:>14.1f}{r['peak_mb']:>10.0f}")
    return rows
