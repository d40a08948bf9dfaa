"""``mlip-attn bench --lammps``: ms per MD step in LAMMPS against ASE with the same model file,
dtype, threads and structure, and strong scaling over MPI ranks.

Two tables:

1. **One rank, side by side.** In one process, interleaved step by step (ASE, LAMMPS, …,
   again): the ASE MD step (`AttnCalculator` + velocity Verlet), the LAMMPS MD step
   (``pair_style mlip_attn`` in the ``lammps`` module, fast export route; for the local model
   also the plain-TorchScript fallback route), and the bare calls each runs (eager
   `Potential`; the export called from Python as the pair style calls it). Models: PaiNN
   (width × layers, random weights, MD-stable) on rattled periodic fcc copper, and PaiNN + EFA
   (``efa-l1`` preset in its MPI-split physics-1 form, reach ``r_max`` beyond the cluster,
   its zero-initialised output layers
   given small random weights so that attention contributes) on a copper cube in vacuum.
2. **Strong scaling** (float64, the ``lmp`` binary): 1 rank × ``threads`` threads against each
   of ``ranks`` × 1 thread, alternating runs; the energy and forces of the first step on n
   ranks against one rank.

3. **Electrostatics** (`mlip_attn.apps.lammps_bench_electrostatics`, also alone:
   ``--electrostatics``): PaiNN
   with and without the ``electrostatics`` block (same width, layers, cutoff; ``accuracy``,
   ``method`` auto) on rattled rock salt (Na⁺/Cl⁻), float64: the ASE cost ratio (energy +
   forces by `AttnCalculator`) and strong scaling in LAMMPS, local vs electrostatics on 1 and 2
   ranks, with ΔE/ΔF from 1 rank. A size whose estimated time per step exceeds ``time_limit``
   seconds (from the smaller size, linearly) is skipped, and the table says so.

Every time is a median of at least ``steps`` per-step times after 2 warm-up steps (LAMMPS
binary: ``thermo 1`` with the ``cpu`` column, elapsed wall time).
"""
from __future__ import annotations

import math
import re
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

WARMUP = 2
EFA_PRESET = {"type": "efa", "grid": 50, "d_qk": 16, "d_v": 16, "vectors": True}


def _copper(n: int, periodic: bool):
    """Rattled fcc Cu with about ``n`` atoms: 4 k³ atoms, periodic or a cube in vacuum."""
    from ase.build import bulk
    reps = max(1, round((n / 4) ** (1 / 3)))
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((reps, reps, reps))
    atoms.rattle(0.02, seed=1)
    if not periodic:
        atoms.pbc = False
        atoms.center(vacuum=10.0)
    return atoms


def _save_model(path: Path, width: int, layers: int, cutoff: float, attention=None) -> None:
    import torch
    from ..models import build_model, save_model
    torch.manual_seed(0)
    # EFA over MPI ranks is the linear-cost Lebedev factorisation of physics 1 (the separable
    # physics-2 form runs on one rank): the scaling benchmark measures that form
    physics = {"physics": 1} if attention else {}
    model = build_model({"backbone": "painn", "elements": ["Cu"], "width": width,
                         "layers": layers, "cutoff": cutoff, "attention": attention, **physics})
    with torch.no_grad():   # global blocks start at zero: let them contribute
        for name, p in model.named_parameters():
            if "global_block" in name and not p.abs().any():
                p.normal_(0.0, 1e-5)   # small: attention sums grow with the atom count
    save_model(model, path)


def _deck(data: Path, exported: Path, periodic: bool, threads: int, species: str = "Cu") -> str:
    return f"""units metal
boundary {'p p p' if periodic else 'f f f'}
atom_style atomic
read_data {data}
pair_style mlip_attn {exported} threads {threads}
pair_coeff * * {species}
velocity all create 300 1 loop geom
fix 1 all nve
timestep 0.001
"""


# --------------------------------------------------------------------------- side by side

def _ase_stepper(model_path: Path, atoms, dtype: str):
    from ase import units
    from ase.md.velocitydistribution import thermalize_momenta
    from ase.md.verlet import VelocityVerlet
    from ..calculators import AttnCalculator
    a = atoms.copy()
    a.calc = AttnCalculator(model_path, default_dtype=dtype)
    thermalize_momenta(a, temperature_K=300, rng=np.random.default_rng(0))
    dyn = VelocityVerlet(a, timestep=1 * units.fs)
    return lambda: dyn.run(1)


def _lammps_stepper(exported: Path, data: Path, periodic: bool, threads: int, opened: list):
    """One MD step of an in-process LAMMPS instance (``run 1 pre no post no``)."""
    from ..lammps.discovery import lammps_instance
    lmp = lammps_instance(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
    opened.append(lmp)
    # no pressure in the thermo output: every `run 1` ends on a thermo step, and a pressure
    # there would make the pair style compute the virial, which the ASE step does not
    lmp.commands_string(_deck(data, exported, periodic, threads)
                        + "thermo_style custom step\nthermo 0\nrun 0\n")
    return lambda: lmp.command("run 1 pre no post no")


def _call(model_path: Path, exported: Path, atoms, cutoff: float, dtype: str):
    """The eager `Potential` call and the export called as the pair style calls it (energy +
    forces on a prebuilt neighbour list)."""
    import torch
    from ..data import AtomicData, Batch
    from ..lammps.export import load_torchscript
    from ..models import load_model
    model = load_model(model_path, dtype=dtype).requires_grad_(False)
    batch = Batch.collate([AtomicData.from_atoms(atoms).with_graph(cutoff)]).to(
        dtype=getattr(torch, dtype))
    scripted = load_torchscript(exported)
    zero = torch.zeros(1, dtype=torch.float64)
    args = (batch.positions.double(), batch.numbers, batch.edge_index, batch.shifts.double(),
            len(atoms), zero, zero, False, batch.cell[0].double())

    def script():
        with torch.jit.optimized_execution(False):
            scripted(*args)
    return lambda: model.predict(batch), script


def _side_by_side(timers: dict, steps: int) -> dict:
    """Median ms of each callable, called in turn (A, B, C, A, B, C, …) after warm-up."""
    for _ in range(WARMUP):
        for f in timers.values():
            f()
    times = {k: [] for k in timers}
    for _ in range(steps):
        for k, f in timers.items():
            t = time.perf_counter()
            f()
            times[k].append(1e3 * (time.perf_counter() - t))
    return {k: statistics.median(v) for k, v in times.items()}


# --------------------------------------------------------------------------- lmp binary

def _lammps_run(work: Path, exported: Path, data: Path, periodic: bool, steps: int,
                threads: int, ranks: int, species: str = "Cu") -> dict:
    """A run of the ``lmp`` binary on ``ranks`` ranks: per-step ms after warm-up, and the
    first step's energy and forces."""
    from ..lammps.discovery import lmp_environment, lmp_executable, mpirun_executable
    tag = f"{exported.stem}-{data.stem}-{ranks}"
    deck = work / f"in.{tag}"
    deck.write_text(_deck(data, exported, periodic, threads, species) + f"""thermo_style custom step pe
thermo_modify format float %.17g
run 0
write_dump all custom {work}/{tag}.forces id fx fy fz modify sort id format float %.17g
run {WARMUP}
thermo_style custom step cpu
thermo_modify format float %.9f
thermo 1
run {steps}
""")
    cmd = [str(lmp_executable()), "-in", str(deck), "-log", "none", "-nocite"]
    if ranks > 1:
        cmd = [str(mpirun_executable()), "-np", str(ranks)] + cmd
    run = subprocess.run(cmd, env=lmp_environment(), capture_output=True, text=True)
    tables = _thermo_tables(run.stdout)
    if run.returncode != 0 or len(tables) < 3:
        raise RuntimeError(f"LAMMPS failed:\n{run.stdout[-1500:]}\n{run.stderr[-1500:]}")
    return {"ms": [1e3 * d for d in np.diff([row[1] for row in tables[-1]])],
            "energy": tables[0][0][1],
            "forces": np.loadtxt(work / f"{tag}.forces", skiprows=9)[:, 1:]}


def _thermo_tables(stdout: str) -> list[list[list[float]]]:
    tables, rows = [], None
    for line in stdout.splitlines():
        if line.split()[:1] == ["Step"]:
            rows = []
            tables.append(rows)
        elif rows is not None:
            try:
                rows.append([float(v) for v in line.split()])
            except ValueError:
                rows = None
    return [t for t in tables if t]


def _print_row(cells, widths) -> None:
    print("".join(f"{c:>{w}}" for c, w in zip(cells, widths)), flush=True)


def _one_rank_table(work, models, exports, sizes, dtypes, cutoff, steps, threads,
                    fallback_atoms) -> list:
    import ase.io
    rows, opened = [], []
    widths = (23, 7, 9, 9, 9, 12, 13, 9, 13)
    _print_row(("model", "atoms", "dtype", "ASE", "LAMMPS", "LAMMPS/ASE", "LAMMPS (TS)",
                "eager", "TS+ops call"), widths)
    try:
        for name, path, periodic in models:
            for n in sizes:
                atoms = _copper(n, periodic)
                data = work / f"{path.stem}-{len(atoms)}.data"
                ase.io.write(data, atoms, format="lammps-data", masses=True, specorder=["Cu"])
                for dtype in dtypes:
                    fast = exports[path.stem, dtype, "torchscript+ops"]
                    eager, script = _call(path, fast, atoms, cutoff, dtype)
                    timers = {"ase_ms": _ase_stepper(path, atoms, dtype),
                              "lammps_ms": _lammps_stepper(fast, data, periodic, threads, opened)}
                    if periodic and len(atoms) <= fallback_atoms:   # the fallback route
                        timers["lammps_torchscript_ms"] = _lammps_stepper(
                            exports[path.stem, dtype, "torchscript"], data, periodic, threads,
                            opened)
                    timers.update(eager_ms=eager, script_ms=script)
                    row = {"model": name, "atoms": len(atoms), "dtype": dtype,
                           "lammps_torchscript_ms": math.nan, **_side_by_side(timers, steps)}
                    row["ratio"] = row["lammps_ms"] / row["ase_ms"]
                    rows.append(row)
                    _print_row((name, len(atoms), dtype, f"{row['ase_ms']:.1f}",
                                f"{row['lammps_ms']:.1f}", f"{row['ratio']:.2f}×",
                                f"{row['lammps_torchscript_ms']:.1f}",
                                f"{row['eager_ms']:.1f}", f"{row['script_ms']:.1f}"), widths)
                    while opened:
                        opened.pop().close()
    finally:
        for lmp in opened:
            lmp.close()
    return rows


def _scaling_table(work, models, exports, sizes, ranks, steps, threads, rounds) -> list:
    import ase.io
    rows = []
    widths = (23, 7, 9, 9, 4, 10, 22)
    _print_row(("model", "atoms", "1 rank", "n ranks", "n", "speed-up", "ΔE/|E|, ΔF (eV/Å)"),
               widths)
    per_round = max(1, math.ceil(steps / rounds))
    for name, path, periodic in models:
        exported = exports[path.stem, "float64", "torchscript+ops"]
        for n in sizes:
            atoms = _copper(n, periodic)
            data = work / f"{path.stem}-{len(atoms)}.data"
            ase.io.write(data, atoms, format="lammps-data", masses=True, specorder=["Cu"])
            for r in ranks:
                one, many = {"ms": []}, {"ms": []}
                for _ in range(rounds):   # alternate: drifts of the machine's load cancel
                    a = _lammps_run(work, exported, data, periodic, per_round, threads, 1)
                    b = _lammps_run(work, exported, data, periodic, per_round, 1, r)
                    one = {**a, "ms": one["ms"] + a["ms"]}
                    many = {**b, "ms": many["ms"] + b["ms"]}
                one_ms, many_ms = statistics.median(one["ms"]), statistics.median(many["ms"])
                de = abs(many["energy"] - one["energy"]) / abs(one["energy"])
                df = float(np.abs(many["forces"] - one["forces"]).max())
                row = {"model": name, "atoms": len(atoms), "one_rank_ms": one_ms, "ranks": r,
                       "ranks_ms": many_ms, "speedup": one_ms / many_ms,
                       "energy_rel_diff": de, "force_diff": df}
                rows.append(row)
                _print_row((name, len(atoms), f"{one_ms:.1f}", f"{many_ms:.1f}", r,
                            f"{row['speedup']:.2f}×", f"{de:.1e}, {df:.1e}"), widths)
    return rows


def run_lammps_bench(sizes=(1000, 10000), width: int = 64, layers: int = 2, cutoff: float = 5.0,
                     steps: int = 10, threads: int | None = None, ranks=(2,),
                     dtypes=("float32", "float64"), efa_r_max: float = 100.0,
                     rounds: int = 2, fallback_atoms: int = 2000) -> dict:
    """Print and return both tables (see the module docstring): ``{"one_rank": rows,
    "scaling": rows}``, times in ms per MD step. The plain-TorchScript fallback route is timed
    up to ``fallback_atoms`` atoms (beyond, its autograd through the message is slow)."""
    import torch
    from ..lammps.build import build_plugin
    from ..lammps.export import export_lammps
    from ..ops import load_ops

    threads = threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    build_plugin()
    load_ops()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        local, efa = work / "painn.pt", work / "painn-efa.pt"
        _save_model(local, width, layers, cutoff)
        _save_model(efa, width, layers, cutoff, {**EFA_PRESET, "r_max": efa_r_max})
        exports = {}
        for model in (local, efa):
            for dtype in set(dtypes) | {"float64"}:
                for route in ("torchscript+ops", "torchscript"):
                    path = work / f"{model.stem}-{dtype}-{route.replace('+', '-')}.lmp.pt"
                    export_lammps(model, path, dtype=dtype, route=route)
                    exports[model.stem, dtype, route] = path
        models = (("PaiNN (local, periodic)", local, True),
                  ("PaiNN + EFA (cluster)", efa, False))
        print(f"1. One MPI rank, {threads} threads, side by side in one process: ms per MD "
              f"step, median of {steps} steps after {WARMUP} warm-up steps; PaiNN {width} × "
              f"{layers}, cutoff {cutoff} Å, rattled fcc Cu; EFA efa-l1, r_max {efa_r_max} Å")
        one_rank = _one_rank_table(work, models, exports, sizes, dtypes, cutoff, steps,
                                   threads, fallback_atoms)
        print(f"\n2. Strong scaling (lmp binary), float64: 1 rank × {threads} threads vs n "
              f"ranks × 1 thread, {rounds} alternating runs each; ms per MD step; ΔE, ΔF: "
              "largest difference from 1 rank at the first step")
        scaling = _scaling_table(work, models, exports, sizes, ranks, steps, threads, rounds)
    return {"one_rank": one_rank, "scaling": scaling}

