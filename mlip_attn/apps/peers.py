"""``mlip-attn bench --peers``: our models against SchNetPack's PaiNN and MACE, side by side.

Every model gets the same random C/H/O cluster (0.1 atoms/Å³, isolated) and the same full
neighbour list (vesin, computed once, not timed), and computes energy + forces (−dE/dr by
autograd) in float32 in eval mode. All models run in **one process, interleaved** (model A,
model B, ..., then again), so machine noise and the allocator hit every model alike; the table
gives medians and our/their throughput ratios. Peak memory is measured per model in a fresh
subprocess: the peak increase of resident memory during one call, after a warm-up call.

The peers are optional (``pip install -e '.[bench]'`` after ``pip install torch==2.13.0``);
a peer that is not installed is reported as such and skipped.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import resource
import statistics
import time

import numpy as np

# SchNetPack 2.0.4 imports a name that torch >= 2.6 no longer exports; it is only a type alias
_SHIM = "T_co"


def _import_schnetpack():
    import typing
    import torch.utils.data.dataloader as loader
    if not hasattr(loader, _SHIM):
        setattr(loader, _SHIM, typing.TypeVar(_SHIM, covariant=True))
    import schnetpack
    return schnetpack


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


class Graph:
    """One cluster and its neighbour list, as float32 tensors."""

    def __init__(self, n_atoms: int, cutoff: float, seed: int = 0):
        import torch
        from .bench import random_box
        from ..data.neighbours import neighbour_list
        atoms = random_box(n_atoms, seed=seed, periodic=False)
        self.atoms = atoms
        self.numbers = torch.tensor(atoms.numbers, dtype=torch.long)
        self.positions = torch.tensor(atoms.positions, dtype=torch.float32)
        edge_index, shifts = neighbour_list(atoms.positions, np.zeros((3, 3)), [False] * 3, cutoff)
        self.edge_index = torch.as_tensor(edge_index, dtype=torch.long)
        self.shifts = torch.as_tensor(shifts, dtype=torch.float32)
        self.n_atoms, self.n_edges = n_atoms, self.edge_index.shape[1]


def _our_model(backbone: str, width: int, layers: int, cutoff: float, num_basis: int):
    """Our model as the ASE calculator runs it (eval mode, frozen weights)."""
    from ..models import build_model
    model = build_model({"backbone": backbone, "elements": [1, 6, 8], "width": width,
                         "layers": layers, "cutoff": cutoff, "num_basis": num_basis})
    return model.eval().requires_grad_(False)


def ours(backbone: str, width: int, layers: int, cutoff: float, num_basis: int, graph: Graph):
    """The bare model call on a prepared batch."""
    import torch
    from ..data import AtomicData, Batch
    model = _our_model(backbone, width, layers, cutoff, num_basis)
    batch = Batch.collate([AtomicData.from_atoms(graph.atoms).with_graph(cutoff)])
    batch = batch.to(dtype=torch.float32)
    assert batch.edge_index.shape[1] == graph.n_edges

    def call():
        out = model.predict(batch, compute_forces=True)
        return out["energy"], out["forces"]
    return call, sum(p.numel() for p in model.parameters())


def ours_in_ase(width: int, layers: int, cutoff: float, num_basis: int, graph: Graph):
    """Our PaiNN through `AttnCalculator.get_forces` (input checks, neighbour list with skin,
    conversions), on positions that move by ~0.005 Å each call as in MD."""
    from ..calculators.ase_calculator import AttnCalculator
    model = _our_model("painn", width, layers, cutoff, num_basis)
    atoms = graph.atoms.copy()
    atoms.calc = AttnCalculator(model)
    rng = np.random.default_rng(0)

    def call():
        atoms.positions = atoms.positions + rng.normal(0.0, 0.003, atoms.positions.shape)
        return atoms.get_potential_energy(), atoms.get_forces()
    return call, sum(p.numel() for p in model.parameters())


def schnetpack_painn(width: int, layers: int, cutoff: float, num_basis: int, graph: Graph):
    """SchNetPack's PaiNN with the same hyperparameters (Bessel = our sinc basis, cosine cutoff)."""
    import torch
    spk = _import_schnetpack()
    props = spk.properties
    rep = spk.representation.PaiNN(
        n_atom_basis=width, n_interactions=layers,
        radial_basis=spk.nn.radial.BesselRBF(n_rbf=num_basis, cutoff=cutoff),
        cutoff_fn=spk.nn.cutoff.CosineCutoff(cutoff))
    model = spk.model.NeuralNetworkPotential(
        representation=rep, input_modules=[spk.atomistic.PairwiseDistances()],
        output_modules=[spk.atomistic.Atomwise(n_in=width, output_key="energy"),
                        spk.atomistic.Forces(energy_key="energy", force_key="forces")])
    model = model.eval().requires_grad_(False)  # frozen like ours (no effect on plain autograd)
    n = graph.n_atoms
    inputs = {props.Z: graph.numbers, props.R: graph.positions,
              props.idx_i: graph.edge_index[0], props.idx_j: graph.edge_index[1],
              props.offsets: graph.shifts, props.n_atoms: torch.tensor([n]),
              props.idx_m: torch.zeros(n, dtype=torch.long),
              props.cell: torch.zeros(1, 3, 3), props.pbc: torch.zeros(1, 3, dtype=torch.bool)}

    def call():
        out = model(dict(inputs))  # the model adds keys to its input dict
        return out["energy"], out["forces"]
    return call, sum(p.numel() for p in model.parameters())


def mace(width: int, layers: int, cutoff: float, num_basis: int, graph: Graph):
    """MACE 128x0e, 2 layers, ℓmax 3, correlation 3 (the issue's reference setting)."""
    import torch
    # e3nn 0.4.4 torch.loads its own constants file, which holds `slice` objects: allow that
    # one harmless type for the weights-only loader rather than turning the check off
    with torch.serialization.safe_globals([slice]):
        from e3nn import o3
        from mace import modules
    model = modules.MACE(
        r_max=cutoff, num_bessel=8, num_polynomial_cutoff=5, max_ell=3,
        interaction_cls=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
        interaction_cls_first=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
        num_interactions=2, num_elements=3, hidden_irreps=o3.Irreps(f"{width}x0e"),
        MLP_irreps=o3.Irreps("16x0e"), atomic_energies=np.zeros(3),
        avg_num_neighbors=graph.n_edges / graph.n_atoms, atomic_numbers=[1, 6, 8],
        correlation=3, gate=torch.nn.functional.silu, radial_MLP=[64, 64, 64])
    model = model.float().eval().requires_grad_(False)
    index = {1: 0, 6: 1, 8: 2}
    one_hot = torch.nn.functional.one_hot(
        torch.tensor([index[int(z)] for z in graph.numbers]), 3).float()
    n = graph.n_atoms
    data = {"positions": graph.positions, "node_attrs": one_hot, "edge_index": graph.edge_index,
            "shifts": graph.shifts, "unit_shifts": graph.shifts, "cell": torch.zeros(3, 3),
            "batch": torch.zeros(n, dtype=torch.long), "ptr": torch.tensor([0, n]),
            "head": torch.zeros(1, dtype=torch.long)}

    def call():
        out = model(dict(data), training=False, compute_force=True)
        return out["energy"], out["forces"]
    return call, sum(p.numel() for p in model.parameters())


# name -> (builder, label)
MODELS = {
    "painn": (lambda w, l, c, b, g: ours("painn", w, l, c, b, g), "mlip-attn PaiNN"),
    "painn-ase": (ours_in_ase, "mlip-attn PaiNN in AttnCalculator"),
    "egnn": (lambda w, l, c, b, g: ours("egnn", w, l, c, b, g), "mlip-attn EGNN"),
    "schnetpack-painn": (schnetpack_painn, "SchNetPack PaiNN"),
    "mace": (mace, "MACE"),
}


def _build(names, width, layers, cutoff, num_basis, graph):
    """Models that could be built: name -> (call, parameters); errors: name -> reason."""
    built, errors = {}, {}
    for name in names:
        try:
            built[name] = MODELS[name][0](width, layers, cutoff, num_basis, graph)
        except ImportError as exc:
            errors[name] = f"not installed ({exc.name or exc}); pip install -e '.[bench]'"
    return built, errors


def _memory(name, n_atoms, width, layers, cutoff, num_basis, queue):
    import torch
    torch.manual_seed(0)
    graph = Graph(n_atoms, cutoff)
    built, errors = _build([name], width, layers, cutoff, num_basis, graph)
    if name in errors:
        queue.put(None)
        return
    call = built[name][0]
    call()  # warm-up: lazily built buffers and caches are not part of a call's cost
    _reset_peak()
    before = _status_mb("VmRSS")
    call()
    queue.put({"call_peak_mb": _status_mb("VmHWM") - before,
               "process_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})


def peak_memory(name, n_atoms, width=128, layers=3, cutoff=5.0, num_basis=20) -> dict | None:
    """Memory of one energy + forces call in a fresh process, after a warm-up call: the peak
    resident memory during the call minus the resident memory before it (MB)."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_memory, args=(name, n_atoms, width, layers, cutoff, num_basis,
                                              queue))
    proc.start()
    proc.join()
    return queue.get() if proc.exitcode == 0 else None


def run_peers(sizes=(100, 1000),
              models=("painn", "painn-ase", "egnn", "schnetpack-painn", "mace"),
              repeats: int = 7, width: int = 128, layers: int = 3, cutoff: float = 5.0,
              num_basis: int = 20, memory: bool = True, log=print) -> list[dict]:
    """Time every model interleaved in this process; print medians and ratios to the first
    peer (SchNetPack's PaiNN when present). Returns one row per (model, size)."""
    import torch
    log(f"energy + forces, float32, eval mode, random C/H/O clusters at 0.1 atoms/Å³, "
        f"cutoff {cutoff} Å; PaiNN/EGNN width {width}, {layers} layers, {num_basis} radial "
        f"functions; MACE {width}x0e, 2 layers, ℓmax 3, correlation 3")
    log(f"torch {torch.__version__}, {torch.get_num_threads()} threads, allocator: "
        f"{allocator()}; median of {repeats} interleaved calls after one warm-up")
    rows = []
    for n in sizes:
        torch.manual_seed(0)
        graph = Graph(n, cutoff)
        built, errors = _build(models, width, layers, cutoff, num_basis, graph)
        for name, why in errors.items():
            log(f"  {MODELS[name][1]}: {why}")
        times = {name: [] for name in built}
        for _ in range(repeats + 1):
            for name, (call, _) in built.items():
                t = time.perf_counter()
                call()
                times[name].append(time.perf_counter() - t)
        for name, (_, params) in built.items():
            rows.append({"model": name, "atoms": n, "pairs": graph.n_edges, "parameters": params,
                         "median_s": statistics.median(times[name][1:]),
                         "memory": peak_memory(name, n, width, layers, cutoff, num_basis)
                         if memory else None})
    log(format_table(rows))
    for n in sizes:
        t = {r["model"]: r["median_s"] for r in rows if r["atoms"] == n}
        if "painn" in t and "painn-ase" in t:
            log(f"{n:,} atoms: AttnCalculator adds {100 * (t['painn-ase'] / t['painn'] - 1):+.1f}% "
                f"over the bare PaiNN call")
    return rows


def format_table(rows: list[dict]) -> str:
    """Markdown table; 'vs SchNetPack' is their time / our time (higher is faster) per size."""
    lines = ["| model | atoms | pairs | parameters | ms/call | atom·calls/s | vs SchNetPack "
             "| memory of one call (MB) |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ref = [x for x in rows if x["atoms"] == r["atoms"] and x["model"] == "schnetpack-painn"]
        ratio = f"{ref[0]['median_s'] / r['median_s']:.2f}×" if ref else "-"
        mem = f"{r['memory']['call_peak_mb']:.0f}" if r.get("memory") else "-"
        lines.append(f"| {MODELS[r['model']][1]} | {r['atoms']:,} | {r['pairs']:,} | "
                     f"{r['parameters']:,} | {1e3 * r['median_s']:.1f} | "
                     f"{r['atoms'] / r['median_s']:,.0f} | {ratio} | {mem} |")
    return "\n".join(lines)
