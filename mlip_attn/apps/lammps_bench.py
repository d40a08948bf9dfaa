"""``mlip-attn bench --lammps``: ms per MD step in LAMMPS against ASE with the same model file,
dtype, threads and structure, and strong scaling over MPI ranks.

Two tables:

1. **One rank.** PaiNN (width × layers, random weights, MD-stable) on rattled periodic fcc
   copper: the LAMMPS step (fast export route and plain-TorchScript fallback) against the ASE
   step (`AttnCalculator` + velocity Verlet), with the bare model calls each runs (eager
   `Potential`; the exported TorchScript called from Python as the pair style calls it).
2. **Strong scaling** (float64): the same local model, periodic, and PaiNN + EFA (``efa-l1``
   preset, reach ``r_max`` larger than the cluster, its zero-initialised output layers given
   small random weights so that attention contributes) on a non-periodic fcc copper cube, on
   1 rank × ``threads`` threads and on each of ``ranks`` × 1 thread; the energy and forces of
   the first step on n ranks are compared with one rank.

Every time is the median of ``steps`` per-step times after 2 warm-up steps: LAMMPS steps from
``thermo 1`` with the ``cpu`` (elapsed wall time) column, ASE steps timed one by one.
"""
from __future__ import annotations

import re
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

WARMUP = 2


def _copper(n: int, periodic: bool):
    """Rattled fcc Cu with about ``n`` atoms: 4 k³ atoms, periodic or a cluster in vacuum."""
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
    model = build_model({"backbone": "painn", "elements": ["Cu"], "width": width,
                         "layers": layers, "cutoff": cutoff, "attention": attention})
    with torch.no_grad():   # global blocks start at zero: let them contribute
        for name, p in model.named_parameters():
            if "global_block" in name and not p.abs().any():
                p.normal_(0.0, 0.01)
    save_model(model, path)


def _lammps(work: Path, exported: Path, data: Path, periodic: bool, steps: int, threads: int,
            ranks: int = 1) -> dict:
    """One LAMMPS run: per-step ms (median after warm-up), first-step energy and forces."""
    from ..lammps.discovery import lmp_environment, lmp_executable, mpirun_executable
    tag = f"{exported.stem}-{data.stem}-{ranks}"
    deck = work / f"in.{tag}"
    deck.write_text(f"""units metal
boundary {'p p p' if periodic else 'f f f'}
atom_style atomic
read_data {data}
pair_style mlip_attn {exported} threads {threads}
pair_coeff * * Cu
velocity all create 300 1 loop geom
fix 1 all nve
timestep 0.001
thermo_style custom step pe
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
    elapsed = [row[1] for row in tables[-1]]
    forces = np.loadtxt(work / f"{tag}.forces", skiprows=9)[:, 1:]
    route = re.search(r"route: ([^;]*);", run.stdout)
    return {"ms": 1e3 * statistics.median(np.diff(elapsed)), "energy": tables[0][0][1],
            "forces": forces, "route": route.group(1) if route else "?"}


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


def _median_ms(call, repeats: int) -> float:
    times = []
    for _ in range(repeats + 1):
        t = time.perf_counter()
        call()
        times.append(1e3 * (time.perf_counter() - t))
    return statistics.median(times[1:])


def _ase_ms(model_path: Path, atoms, dtype: str, steps: int) -> float:
    """Median ms of one velocity-Verlet step with `AttnCalculator` (after warm-up)."""
    from ase import units
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
    from ase.md.verlet import VelocityVerlet
    from ..calculators import AttnCalculator
    a = atoms.copy()
    a.calc = AttnCalculator(model_path, default_dtype=dtype)
    MaxwellBoltzmannDistribution(a, temperature_K=300, rng=np.random.default_rng(0))
    dyn = VelocityVerlet(a, timestep=1 * units.fs)
    dyn.run(WARMUP)
    return _median_ms(lambda: dyn.run(1), steps - 1)


def _calls_ms(model_path: Path, exported: Path, atoms, cutoff: float, dtype: str,
              steps: int) -> tuple[float, float]:
    """Median ms of the eager `Potential` call and of the exported TorchScript called from
    Python as the pair style calls it (energy + forces, prebuilt neighbour list)."""
    import torch
    from ..data import AtomicData, Batch
    from ..models import load_model
    model = load_model(model_path, dtype=dtype).requires_grad_(False)
    batch = Batch.collate([AtomicData.from_atoms(atoms).with_graph(cutoff)]).to(
        dtype=getattr(torch, dtype))
    for _ in range(WARMUP):
        model.predict(batch)
    eager = _median_ms(lambda: model.predict(batch), steps)
    scripted = torch.jit.load(str(exported))
    zero = torch.zeros(1, dtype=torch.float64)
    args = (batch.positions.double(), batch.numbers, batch.edge_index, batch.shifts.double(),
            len(atoms), zero, zero, False)
    with torch.jit.optimized_execution(False):
        for _ in range(WARMUP):
            scripted(*args)
        script = _median_ms(lambda: scripted(*args), steps)
    return eager, script


def _print_row(cells, widths) -> None:
    print("".join(f"{c:>{w}}" for c, w in zip(cells, widths)), flush=True)


def run_lammps_bench(sizes=(1000, 10000), width: int = 64, layers: int = 2, cutoff: float = 5.0,
                     steps: int = 10, threads: int | None = None, ranks=(2,),
                     dtypes=("float32", "float64"), fallback: bool = True,
                     efa_r_max: float = 100.0) -> dict:
    """Print and return both tables (see the module docstring): ``{"one_rank": rows,
    "scaling": rows}``, times in ms per MD step."""
    import ase.io
    import torch
    from ..lammps.build import build_plugin
    from ..lammps.export import export_lammps
    from ..lammps.ops import load_ops

    threads = threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    build_plugin()
    load_ops()
    out = {"one_rank": [], "scaling": []}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        local, efa = work / "painn.pt", work / "painn-efa.pt"
        _save_model(local, width, layers, cutoff)
        _save_model(efa, width, layers, cutoff, {"type": "efa", "r_max": efa_r_max,
                                                 "grid": 50, "d_qk": 16, "d_v": 16,
                                                 "vectors": True})
        exports = {}
        for model in (local, efa):
            for dtype in dtypes:
                for route in ("torchscript+ops", "torchscript"):
                    path = work / f"{model.stem}-{dtype}-{route.replace('+', '-')}.lmp.pt"
                    export_lammps(model, path, dtype=dtype, route=route)
                    exports[model.stem, dtype, route] = path

        print(f"1. One MPI rank, {threads} threads: PaiNN {width} × {layers}, cutoff {cutoff} Å, "
              f"rattled periodic fcc Cu; ms per MD step, median of {steps} steps after "
              f"{WARMUP} warm-up steps")
        widths = (7, 9, 9, 9, 13, 12, 9, 12)
        _print_row(("atoms", "dtype", "ASE", "LAMMPS", "LAMMPS/ASE", "LAMMPS (TS)", "eager",
                    "TS+ops call"), widths)
        datasets = {}
        for n in sizes:
            atoms = _copper(n, periodic=True)
            data = work / f"cu{len(atoms)}.data"
            ase.io.write(data, atoms, format="lammps-data", masses=True, specorder=["Cu"])
            datasets[n] = (atoms, data)
            for dtype in dtypes:
                fast = exports["painn", dtype, "torchscript+ops"]
                ase_ms = _ase_ms(local, atoms, dtype, steps)
                lmp = _lammps(work, fast, data, True, steps, threads)
                plain = (_lammps(work, exports["painn", dtype, "torchscript"], data, True, steps,
                                 threads)["ms"] if fallback else float("nan"))
                eager, script = _calls_ms(local, fast, atoms, cutoff, dtype, steps)
                row = {"atoms": len(atoms), "dtype": dtype, "ase_ms": ase_ms,
                       "lammps_ms": lmp["ms"], "ratio": lmp["ms"] / ase_ms,
                       "lammps_torchscript_ms": plain, "eager_ms": eager, "script_ms": script,
                       "route": lmp["route"]}
                out["one_rank"].append(row)
                _print_row((len(atoms), dtype, f"{ase_ms:.1f}", f"{lmp['ms']:.1f}",
                            f"{row['ratio']:.2f}×", f"{plain:.1f}", f"{eager:.1f}",
                            f"{script:.1f}"), widths)

        print(f"\n2. Strong scaling, float64: 1 rank × {threads} threads vs n ranks × 1 thread; "
              "ms per MD step; ΔE, ΔF: largest difference from 1 rank at the first step")
        widths = (22, 7, 9, 9, 9, 4, 10, 22)
        _print_row(("model", "atoms", "ASE", "1 rank", "n ranks", "n", "speed-up",
                    "ΔE/|E|, ΔF (eV/Å)"), widths)
        for name, model, periodic in (("PaiNN (local)", local, True),
                                      ("PaiNN + EFA (cluster)", efa, False)):
            for n in sizes:
                atoms = _copper(n, periodic)
                data = work / f"cu{len(atoms)}-{'p' if periodic else 'f'}.data"
                ase.io.write(data, atoms, format="lammps-data", masses=True, specorder=["Cu"])
                exported = exports[model.stem, "float64", "torchscript+ops"]
                ase_ms = _ase_ms(model, atoms, "float64", steps)
                one = _lammps(work, exported, data, periodic, steps, threads)
                for r in ranks:
                    many = _lammps(work, exported, data, periodic, steps, 1, ranks=r)
                    de = abs(many["energy"] - one["energy"]) / abs(one["energy"])
                    df = float(np.abs(many["forces"] - one["forces"]).max())
                    row = {"model": name, "atoms": len(atoms), "ase_ms": ase_ms,
                           "one_rank_ms": one["ms"], "ranks": r, "ranks_ms": many["ms"],
                           "speedup": one["ms"] / many["ms"], "energy_rel_diff": de,
                           "force_diff": df}
                    out["scaling"].append(row)
                    _print_row((name, len(atoms), f"{ase_ms:.1f}", f"{one['ms']:.1f}",
                                f"{many['ms']:.1f}", r, f"{row['speedup']:.2f}×",
                                f"{de:.1e}, {df:.1e}"), widths)
    return out
