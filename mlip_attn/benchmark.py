"""``mlip-attn bench``: throughput and peak memory of energy + forces, and of neighbour lists.

Systems are periodic boxes of random C/H/O atoms at 0.1 atoms/Å³ (liquid-like density, minimum
distance 0.9 Å). Each (model, size) point runs in a fresh subprocess so that its peak resident
memory (ru_maxrss) is its own. Times are medians of ``repeats`` calls after one warm-up.
"""
from __future__ import annotations

import multiprocessing as mp
import resource
import statistics
import time

import numpy as np

DENSITY = 0.1  # atoms / Å^3


def random_box(n_atoms: int, seed: int = 0, density: float = DENSITY):
    """A periodic cubic box of ``n_atoms`` random C/H/O atoms (no pair closer than ~0.9 Å)."""
    from ase import Atoms
    rng = np.random.default_rng(seed)
    length = (n_atoms / density) ** (1 / 3)
    grid = int(np.ceil(n_atoms ** (1 / 3)))
    spacing = length / grid
    cells = rng.permutation(grid ** 3)[:n_atoms]
    idx = np.stack(np.unravel_index(cells, (grid,) * 3), axis=1)
    positions = (idx + 0.5 + rng.uniform(-0.2, 0.2, (n_atoms, 3))) * spacing
    numbers = rng.choice([1, 6, 8], size=n_atoms, p=[0.5, 0.3, 0.2])
    return Atoms(numbers=numbers, positions=positions, cell=[length] * 3, pbc=True)


def _measure(kind: str, n_atoms: int, repeats: int, width: int, layers: int, cutoff: float, queue):
    import torch
    torch.set_num_threads(torch.get_num_threads())
    from .data import AtomicData, Batch
    from .data.neighbours import neighbour_list
    atoms = random_box(n_atoms)
    data = AtomicData.from_atoms(atoms)
    times = []
    if kind == "neighbour-list":
        for _ in range(repeats + 1):
            t = time.perf_counter()
            neighbour_list(atoms.positions, atoms.cell.array, atoms.pbc, cutoff)
            times.append(time.perf_counter() - t)
        edges = 0
    else:
        from .models import build_model
        model = build_model({"backbone": kind, "elements": [1, 6, 8], "width": width,
                             "layers": layers, "cutoff": cutoff}).eval()
        batch = Batch.collate([data.with_graph(cutoff)]).to(dtype=torch.float32)
        edges = batch.edge_index.shape[1]
        for _ in range(repeats + 1):
            t = time.perf_counter()
            out = model.predict(batch, compute_forces=True)
            out["forces"].sum().item()
            times.append(time.perf_counter() - t)
    queue.put({"median_s": statistics.median(times[1:]), "edges": edges,
               "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})


def measure(kind: str, n_atoms: int, repeats: int = 5, width: int = 128, layers: int = 3,
            cutoff: float = 5.0) -> dict:
    """Median seconds and peak RSS (MB, whole process) for one point, in a fresh process."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_measure, args=(kind, n_atoms, repeats, width, layers, cutoff, queue))
    proc.start()
    proc.join()
    if proc.exitcode != 0:
        return {"median_s": float("nan"), "edges": 0, "peak_mb": float("nan"),
                "error": f"exit code {proc.exitcode} (out of memory?)"}
    return queue.get()


def run_bench(sizes=(100, 1000, 10000), models=("painn", "egnn"), repeats: int = 5,
              width: int = 128, layers: int = 3, cutoff: float = 5.0) -> list[dict]:
    """Print and return a table of throughput (atom·steps/s) and peak memory per point."""
    import torch
    print(f"energy + forces, float32, width {width}, {layers} layers, cutoff {cutoff} Å, "
          f"random C/H/O boxes at {DENSITY} atoms/Å³, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; median of {repeats}")
    print(f"{'model':<16}{'atoms':>8}{'pairs':>10}{'ms/step':>12}{'atom·steps/s':>15}{'peak MB':>10}")
    rows = []
    for kind in ["neighbour-list", *models]:
        for n in sizes:
            r = measure(kind, n, repeats, width, layers, cutoff)
            r.update(model=kind, atoms=n)
            rows.append(r)
            pairs = f"{r['edges']:,}" if r["edges"] else "-"
            print(f"{kind:<16}{n:>8}{pairs:>10}{1e3 * r['median_s']:>12.2f}"
                  f"{n / r['median_s']:>15,.0f}{r['peak_mb']:>10.0f}"
                  f"{'  ' + r['error'] if 'error' in r else ''}", flush=True)
    return rows
