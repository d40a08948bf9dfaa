"""``mlip-attn bench --lammps``: ms per MD step in LAMMPS vs ASE vs the bare model call.

A PaiNN (random weights scaled down, so MD stays stable) on rattled fcc copper, periodic, float32
and float64. LAMMPS time is its own "Loop time" over the steps; ASE time is velocity Verlet with
`AttnCalculator`. Each interface is compared with the bare call of the model it runs, on a
prebuilt neighbour list: LAMMPS runs the exported TorchScript module (called here from Python
the way the pair style calls it, optimising executor off), ASE runs the eager `Potential`
(whose PaiNN message uses a custom autograd function that TorchScript cannot hold, so the eager
call is the faster of the two).
"""
from __future__ import annotations

import re
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np


def _model(path: Path, width: int, layers: int, cutoff: float) -> None:
    import torch
    from ..models import build_model, save_model
    torch.manual_seed(0)
    model = build_model({"backbone": "painn", "elements": ["Cu"], "width": width,
                         "layers": layers, "cutoff": cutoff})
    save_model(model, path)


def _lammps_ms(work: Path, model: Path, data: Path, steps: int, threads: int) -> float:
    from ..lammps.discovery import lmp_environment, lmp_executable
    deck = work / "in.bench"
    deck.write_text(f"""units metal
atom_style atomic
read_data {data}
pair_style mlip_attn {model} threads {threads}
pair_coeff * * Cu
velocity all create 300 1
fix 1 all nve
timestep 0.001
thermo {steps}
run 2
run {steps}
""")
    run = subprocess.run([str(lmp_executable()), "-in", str(deck), "-log", "none"],
                         env=lmp_environment(), capture_output=True, text=True)
    loops = re.findall(r"Loop time of ([0-9.e+-]+) on", run.stdout)
    if run.returncode != 0 or not loops:
        raise RuntimeError(f"LAMMPS failed:\n{run.stdout[-1500:]}\n{run.stderr[-1500:]}")
    return 1e3 * float(loops[-1]) / steps


def _median_ms(call, repeats: int) -> float:
    times = []
    for _ in range(repeats + 1):
        t = time.perf_counter()
        call()
        times.append(1e3 * (time.perf_counter() - t))
    return statistics.median(times[1:])


def run_lammps_bench(sizes=(1000, 10000), width: int = 64, layers: int = 2, cutoff: float = 5.0,
                     steps: int = 10, threads: int | None = None) -> list[dict]:
    """Print and return ms/step for LAMMPS, ASE and the bare model call per size and dtype."""
    import ase.io
    import torch
    from ase import units
    from ase.build import bulk
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
    from ase.md.verlet import VelocityVerlet

    from ..calculators import AttnCalculator
    from ..data import AtomicData, Batch
    from ..models import load_model
    from ..lammps.build import build_plugin
    from ..lammps.export import export_lammps

    threads = threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    build_plugin()
    rows = []
    print(f"PaiNN width {width}, {layers} layers, cutoff {cutoff} Å on rattled fcc Cu (periodic), "
          f"{threads} threads, {steps} MD steps; ms per step")
    print(f"{'atoms':>7}{'dtype':>9}{'TorchScript':>13}{'LAMMPS':>9}{'LAMMPS +%':>11}"
          f"{'eager':>9}{'ASE':>9}{'ASE +%':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        _model(work / "cu.pt", width, layers, cutoff)
        for n in sizes:
            reps = max(1, round((n / 4) ** (1 / 3)))
            atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((reps, reps, reps))
            atoms.rattle(0.02, seed=1)
            data = work / f"cu{n}.data"
            ase.io.write(data, atoms, format="lammps-data", masses=True, specorder=["Cu"])
            for dtype in ("float32", "float64"):
                exported = work / f"cu-{dtype}.pt"
                export_lammps(work / "cu.pt", exported, dtype=dtype)
                lammps = _lammps_ms(work, exported, data, steps, threads)
                model = load_model(work / "cu.pt", dtype=dtype).requires_grad_(False)
                batch = Batch.collate([AtomicData.from_atoms(atoms).with_graph(cutoff)]).to(
                    dtype=getattr(torch, dtype))
                bare = _median_ms(lambda: model.predict(batch), steps)
                scripted = torch.jit.load(str(exported))
                args = (batch.positions.double(), batch.numbers, batch.edge_index,
                        batch.shifts.double(), len(atoms), torch.zeros(1, dtype=torch.float64),
                        torch.zeros(1, dtype=torch.float64), False)
                with torch.jit.optimized_execution(False):
                    script_ms = _median_ms(lambda: scripted(*args), steps)
                a = atoms.copy()
                a.calc = AttnCalculator(work / "cu.pt", default_dtype=dtype)
                MaxwellBoltzmannDistribution(a, temperature_K=300, rng=np.random.default_rng(0))
                dyn = VelocityVerlet(a, timestep=1 * units.fs)
                dyn.run(2)
                t = time.perf_counter()
                dyn.run(steps)
                ase_ms = 1e3 * (time.perf_counter() - t) / steps
                row = {"atoms": len(atoms), "dtype": dtype, "model_ms": bare,
                       "script_ms": script_ms, "lammps_ms": lammps, "ase_ms": ase_ms}
                rows.append(row)
                print(f"{len(atoms):>7}{dtype:>9}{script_ms:>13.1f}{lammps:>9.1f}"
                      f"{100 * (lammps / script_ms - 1):>10.0f}%{bare:>9.1f}{ase_ms:>9.1f}"
                      f"{100 * (ase_ms / bare - 1):>8.0f}%", flush=True)
    return rows
