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


def _our_model(backbone: str, width: int, layers: int, cutoff: float, num_basis: int,
               **options):
    """Our model as the ASE calculator runs it (eval mode, frozen weights)."""
    from ..models import build_model
    model = build_model({"backbone": backbone, "elements": [1, 6, 8], "width": width,
                         "layers": layers, "cutoff": cutoff, "num_basis": num_basis, **options})
    return model.eval().requires_grad_(False)


def ours(backbone: str, width: int, layers: int, cutoff: float, num_basis: int, graph: Graph,
         **options):
    """The bare model call on a prepared batch."""
    import torch
    from ..data import AtomicData, Batch
    model = _our_model(backbone, width, layers, cutoff, num_basis, **options)
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


def _schnetpack_call(rep, width: int, graph: Graph):
    """A SchNetPack representation with an energy head and autograd forces, on our edges."""
    import torch
    spk = _import_schnetpack()
    props = spk.properties
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


def schnetpack_painn(width: int, layers: int, cutoff: float, num_basis: int, graph: Graph):
    """SchNetPack's PaiNN with the same hyperparameters (Bessel = our sinc basis, cosine cutoff)."""
    spk = _import_schnetpack()
    rep = spk.representation.PaiNN(
        n_atom_basis=width, n_interactions=layers,
        radial_basis=spk.nn.radial.BesselRBF(n_rbf=num_basis, cutoff=cutoff),
        cutoff_fn=spk.nn.cutoff.CosineCutoff(cutoff))
    return _schnetpack_call(rep, width, graph)


def schnetpack_schnet(width: int, layers: int, cutoff: float, num_basis: int, graph: Graph):
    """SchNetPack's SchNet (invariant): width filters, layers interactions, Gaussian basis."""
    spk = _import_schnetpack()
    rep = spk.representation.SchNet(
        n_atom_basis=width, n_interactions=layers, n_filters=width,
        radial_basis=spk.nn.radial.GaussianRBF(n_rbf=num_basis, cutoff=cutoff),
        cutoff_fn=spk.nn.cutoff.CosineCutoff(cutoff))
    return _schnetpack_call(rep, width, graph)


def _mace_irreps(width: int, order: int) -> str:
    """MACE hidden irreps up to ℓ = ``order``, width channels each (MACE's residual
    interaction needs one channel count for every ℓ)."""
    return "+".join([f"{width}x0e", f"{width}x1o", f"{width}x2e"][:order + 1])


def mace(width: int, layers: int, cutoff: float, num_basis: int, graph: Graph,
         order: int = 0):
    """MACE (correlation 3, residual interactions, `layers` interactions, `num_basis` Bessel
    functions): ``order`` 0 is 128x0e features with ℓ ≤ 3 edge harmonics (MACE's invariant
    reference setting); order 1 and 2 carry features and edge harmonics up to that ℓ."""
    import torch
    # e3nn 0.4.4 torch.loads its own constants file, which holds `slice` objects: allow that
    # one harmless type for the weights-only loader rather than turning the check off
    with torch.serialization.safe_globals([slice]):
        from e3nn import o3
        from mace import modules
    block = modules.interaction_classes["RealAgnosticResidualInteractionBlock"]
    model = modules.MACE(
        r_max=cutoff, num_bessel=num_basis, num_polynomial_cutoff=5,
        max_ell=3 if order == 0 else order, interaction_cls=block, interaction_cls_first=block,
        num_interactions=layers, num_elements=3, hidden_irreps=o3.Irreps(_mace_irreps(width, order)),
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


def _given_edges(graph: Graph):
    """A module that stands in for TorchMD-Net's neighbour search: our edges (plus the
    self-loops its ``loop=True`` search returns), with vectors and lengths computed from the
    positions so that forces flow through them."""
    import torch

    class GivenEdges(torch.nn.Module):
        def __init__(self):
            super().__init__()
            loops = torch.arange(graph.n_atoms).repeat(2, 1)
            self.edge_index = torch.cat([graph.edge_index, loops], dim=1)

        def forward(self, pos, batch, box=None):
            i, j = self.edge_index
            vec = torch.index_select(pos, 0, i) - torch.index_select(pos, 0, j)
            return self.edge_index, torch.linalg.norm(vec, dim=1), vec
    return GivenEdges()


def tensornet(width: int, layers: int, cutoff: float, num_basis: int, graph: Graph):
    """TorchMD-Net's TensorNet (rank-2 Cartesian: ℓ ≤ 2, O(3)), width channels, `layers`
    interactions, `num_basis` expnorm radial functions, with its warp kernels (CPU)."""
    import torch
    from torchmdnet.models.model import create_model
    args = dict(model="tensornet", precision=32, embedding_dimension=width, num_layers=layers,
                num_rbf=num_basis, rbf_type="expnorm", trainable_rbf=False, activation="silu",
                cutoff_lower=0.0, cutoff_upper=cutoff, max_z=9, max_num_neighbors=256,
                derivative=True, atom_filter=-1, prior_model=None, output_model="Scalar",
                reduce_op="sum", equivariance_invariance_group="O(3)", static_shapes=False)
    model = create_model(args).eval().requires_grad_(False)
    model.representation_model.distance = _given_edges(graph)
    z, pos = graph.numbers, graph.positions

    def call():
        return model(z, pos.clone())
    return call, sum(p.numel() for p in model.parameters())


def _nequip_framework():
    """nequip's global state (once): it sets torch's default dtype to float64, which the
    other models must not inherit, so the default is restored."""
    import torch
    from nequip.utils.global_state import global_state_initialized, set_global_state
    if not global_state_initialized():
        dtype = torch.get_default_dtype()
        set_global_state()
        torch.set_default_dtype(dtype)


def _nequip_call(model, graph: Graph):
    import torch
    model = model.eval().requires_grad_(False)
    index = {1: 0, 6: 1, 8: 2}
    n = graph.n_atoms
    data = {"pos": graph.positions, "edge_index": graph.edge_index,
            "atom_types": torch.tensor([index[int(z)] for z in graph.numbers]),
            "batch": torch.zeros(n, dtype=torch.long), "num_atoms": torch.tensor([n])}

    def call():
        out = model(dict(data))
        return out["total_energy"], out["forces"]
    return call, sum(p.numel() for p in model.parameters())


def _nequip_common(cutoff: float, graph: Graph) -> dict:
    return dict(seed=0, model_dtype="float32", r_max=cutoff, type_names=["H", "C", "O"],
                avg_num_neighbors=graph.n_edges / graph.n_atoms, per_type_energy_scales=1.0,
                per_type_energy_shifts=0.0)


def nequip(width: int, layers: int, cutoff: float, num_basis: int, graph: Graph,
           order: int = 1):
    """NequIP (nequip >= 0.7 API): features up to ℓ = ``order`` with width channels (ℓ = 2:
    width / 2), no parity, `layers` convolutions, `num_basis` Bessel functions, its standard
    preset otherwise (type embedding 32, radial MLP 1 × 128)."""
    import warnings
    _nequip_framework()
    from nequip.model import NequIPGNNModel
    features = [width, width, max(width // 2, 1)][:order + 1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = NequIPGNNModel(num_layers=layers, l_max=order, parity=False,
                               num_features=features, num_bessels=num_basis,
                               type_embed_num_features=32, radial_mlp_depth=1,
                               radial_mlp_width=128, **_nequip_common(cutoff, graph))
    return _nequip_call(model, graph)


def allegro(width: int, layers: int, cutoff: float, num_basis: int, graph: Graph,
            order: int = 1):
    """Allegro (strictly local, edge-based): tensor track up to ℓ = ``order`` (no parity),
    `layers` Allegro layers, width scalar features and MLP width, width / 4 tensor features,
    `num_basis` Bessel functions."""
    import warnings
    _nequip_framework()
    from allegro.model import AllegroModel
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = AllegroModel(
            l_max=order, parity=False, num_layers=layers, num_scalar_features=width,
            num_tensor_features=max(width // 4, 1), allegro_mlp_hidden_layers_width=width,
            readout_mlp_hidden_layers_width=max(width // 2, 1),
            radial_chemical_embed={"_target_": "allegro.nn.TwoBodyBesselScalarEmbed",
                                   "num_bessels": num_basis},
            **_nequip_common(cutoff, graph))
    return _nequip_call(model, graph)


# name -> (builder, label, order): order is the highest ℓ of the features a model passes on
# (0 invariant, 1 vectors, 2 rank-2 tensors); "vs best peer" compares within an order
MODELS = {
    "egnn": (lambda w, l, c, b, g: ours("egnn", w, l, c, b, g), "mlip-attn EGNN", 0),
    "schnetpack-schnet": (schnetpack_schnet, "SchNetPack SchNet", 0),
    "mace": (mace, "MACE 128x0e (ℓ ≤ 3 edges)", 0),
    "painn": (lambda w, l, c, b, g: ours("painn", w, l, c, b, g), "mlip-attn PaiNN", 1),
    "painn-ase": (ours_in_ase, "mlip-attn PaiNN in AttnCalculator", 1),
    "schnetpack-painn": (schnetpack_painn, "SchNetPack PaiNN", 1),
    "nequip-l1": (lambda w, l, c, b, g: nequip(w, l, c, b, g, order=1), "NequIP ℓ ≤ 1", 1),
    "allegro-l1": (lambda w, l, c, b, g: allegro(w, l, c, b, g, order=1), "Allegro ℓ ≤ 1", 1),
    "mace-l1": (lambda w, l, c, b, g: mace(w, l, c, b, g, order=1), "MACE ℓ ≤ 1", 1),
    "painn-l2": (lambda w, l, c, b, g: ours("painn", w, l, c, b, g, lmax=2),
                 "mlip-attn PaiNN ℓ ≤ 2", 2),
    "tensornet": (tensornet, "TorchMD-Net TensorNet", 2),
    "nequip-l2": (lambda w, l, c, b, g: nequip(w, l, c, b, g, order=2), "NequIP ℓ ≤ 2", 2),
    "allegro-l2": (lambda w, l, c, b, g: allegro(w, l, c, b, g, order=2), "Allegro ℓ ≤ 2", 2),
    "mace-l2": (lambda w, l, c, b, g: mace(w, l, c, b, g, order=2), "MACE ℓ ≤ 2", 2),
}
OURS = ("egnn", "painn", "painn-ase", "painn-l2")
# what each peer needs, for the "not installed" message
INSTALL = {"schnetpack": "pip install 'schnetpack>=2.0.4,<2.1'",
           "mace": "pip install --no-deps mace-torch==0.3.16 (see README: Performance)",
           "torchmdnet": "pip install torchmd-net>=3.1",
           "nequip": "pip install --no-deps nequip==0.19.1 e3nn==0.6.0 (see README)",
           "allegro": "pip install --no-deps nequip-allegro==0.8.3 (see README)",
           "e3nn": "pip install e3nn (see README: Performance)"}


def _why_missing(exc: ImportError) -> str:
    root = (exc.name or "").split(".")[0]
    return f"not installed ({exc.name or exc}): {INSTALL.get(root, 'see README: Performance')}"


def _build(names, width, layers, cutoff, num_basis, graph):
    """Models that could be built: name -> (call, parameters); errors: name -> reason."""
    built, errors = {}, {}
    for name in names:
        try:
            built[name] = MODELS[name][0](width, layers, cutoff, num_basis, graph)
        except ImportError as exc:
            errors[name] = _why_missing(exc)
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
    call()  # warm-up: lazily built buffers and caches are not part of a call's cost
    _reset_peak()
    before = _status_mb("VmRSS")
    call()
    queue.put({"call_peak_mb": _status_mb("VmHWM") - before,
               "process_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})


def peak_memory(name, n_atoms, width=128, layers=3, cutoff=5.0, num_basis=20) -> dict | None:
    """Memory of one energy + forces call in a fresh process, after a warm-up call: the peak
    resident memory during the call minus the resident memory before it (MB). None when the
    model is missing or the process died (e.g. killed for memory)."""
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
    if "skipped" in last:
        return "skipped (a smaller size was skipped)"
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


def run_peers(sizes=(100, 1000, 10000), models=DEFAULT_MODELS, repeats: int = 7,
              width: int = 128, layers: int = 3, cutoff: float = 5.0, num_basis: int = 20,
              memory: bool = True, max_seconds: float = 1200.0, log=print) -> list[dict]:
    """Time every model interleaved in this process (per size: A, B, C, ..., again), print
    medians, ratios to SchNetPack's PaiNN and to the fastest peer of the same order, and
    peak memory per call (each model in a fresh process). Sizes from 10,000 atoms get
    ``max(3, repeats // 2)`` calls. Returns one row per (model, size)."""
    import torch
    from ..threads import describe
    log(f"energy + forces, float32, eval mode, random C/H/O clusters at 0.1 atoms/Å³, same "
        f"neighbour list for all; width {width}, {layers} layers, cutoff {cutoff} Å, "
        f"{num_basis} radial functions for every model (ℓ = 2 features: width / 2 channels; "
        f"MACE: width channels at every ℓ, correlation 3, MACE 128x0e with ℓ ≤ 3 edge "
        f"harmonics; Allegro: width / 4 tensor features)")
    log(f"torch {torch.__version__}, {describe()}, allocator: {allocator()}; median of "
        f"{repeats} interleaved calls after one warm-up")
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
            log(f"  {MODELS[name][1]}: {why}")
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
             "| vs fastest peer of its ℓ: time, memory | memory of one call (MB) |",
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
