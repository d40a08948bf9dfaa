"""A charged vacancy in rock salt: its energy depends on the box size, which a local model cannot
see; then the NVE energy drift of both models.

    python md_examples/salt_vacancy_box_size.py                     # shipped potentials
    python md_examples/salt_vacancy_box_size.py --local A.pt --efa B.pt --nve-ps 10

1. E_v(L) = E(box with one Na removed, total charge −1) − E(perfect box), unrelaxed, in cubic
   n×n×n boxes of the rigid-ion salt (`mlip-attn data rigid-ion-salt`) for n = 2..``--max-box``.
   The exact value grows with L (the vacancy's interaction with its images and the background,
   ∝ 1/L, Makov–Payne): 6.09, 6.69, 6.98 eV for n = 2, 3, 4 (`benchmarks/salt_reach.py`).
   Every ion sees the same surroundings within 8 Å in all these boxes, so a local model gives
   one value for all of them. Printed: exact, local and global, and the plot
   ``salt_vacancy_box_size.png``.
2. With ``--nve-ps T``: velocity Verlet (``--timestep`` fs, 2 by default) for T ps from 600 K
   Maxwell–Boltzmann velocities on a 3×3×3 box with a Na vacancy (215 ions, Q = −1), for
   both models; the drift is the slope of a line fitted to the total energy (meV/atom/ps).

The global model defaults to ``potentials/rigid-ion-salt-electrostatics.pt`` (``--efa``: any
model file, named so for the other examples' interface).
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from example_models import POTENTIALS, add_model_arguments, model_paths, output_file

SYSTEM = "rigid-ion-salt"


def vacancy_energies(calc, sizes, exact=False):
    """E_v (eV) per box size: Na 0 removed, total charge −1 (``calc`` None + ``exact``: the
    reference labels)."""
    from ase.build import bulk
    from mlip_attn.qm.rigid_ion import salt_energy_forces_stress
    from mlip_attn.qm.systems.rigid_ion_salt import LATTICE_A
    out = []
    for n in sizes:
        bulk_box = bulk("NaCl", "rocksalt", a=LATTICE_A, cubic=True).repeat(n)
        vac = bulk_box.copy()
        del vac[0]
        vac.info["charge"] = -1.0
        energies = []
        for atoms in (vac, bulk_box):
            if exact:
                energies.append(salt_energy_forces_stress(atoms.positions, atoms.numbers,
                                                          atoms.cell.array)[0])
            else:
                atoms.calc = calc
                energies.append(atoms.get_potential_energy())
        out.append(energies[0] - energies[1])
    return np.array(out)


def nve_drift(calc, ps: float, timestep_fs: float, seed: int = 0):
    """(drift meV/atom/ps, max |E − E0| meV/atom, atoms, seconds) of an NVE run."""
    from ase import units
    from ase.build import bulk
    from ase.md.velocitydistribution import Stationary, thermalize_momenta
    from ase.md.verlet import VelocityVerlet
    from mlip_attn.qm.systems.rigid_ion_salt import LATTICE_A
    atoms = bulk("NaCl", "rocksalt", a=LATTICE_A, cubic=True).repeat(3)
    del atoms[0]
    atoms.info["charge"] = -1.0
    atoms.calc = calc
    thermalize_momenta(atoms, temperature_K=600, rng=np.random.default_rng(seed))
    Stationary(atoms)
    steps = max(1, int(round(ps * 1000 / timestep_fs)))
    dyn = VelocityVerlet(atoms, timestep_fs * units.fs)
    times, totals = [], []

    def record():
        times.append(dyn.nsteps * timestep_fs / 1000)
        totals.append(atoms.get_total_energy())

    dyn.attach(record, interval=max(1, steps // 200))
    start = time.perf_counter()
    dyn.run(steps)
    seconds = time.perf_counter() - start
    e = (np.array(totals) - totals[0]) / len(atoms) * 1e3
    slope = np.polyfit(times, e, 1)[0] if len(times) > 2 else float("nan")
    return slope, float(np.abs(e).max()), len(atoms), seconds


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(parser, SYSTEM)
    parser.add_argument("--max-box", type=int, default=5, help="largest n of the n×n×n boxes")
    parser.add_argument("--nve-ps", type=float, default=0.0, help="NVE length (ps; 0: skip)")
    parser.add_argument("--timestep", type=float, default=2.0, help="fs")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    args = parser.parse_args(argv)
    if args.efa is None:
        args.efa = str(POTENTIALS / f"{SYSTEM}-electrostatics.pt")
    paths = model_paths(args, SYSTEM)
    from mlip_attn.calculators import AttnCalculator
    names = {"local": "local", "efa": "global"}
    calcs = {names[name]: AttnCalculator(path, default_dtype=args.dtype)
             for name, path in paths.items()}
    sizes = list(range(2, args.max_box + 1))
    exact = vacancy_energies(None, sizes, exact=True)
    rows = {name: vacancy_energies(calc, sizes) for name, calc in calcs.items()}
    print(f"{'box':>6}{'L (Å)':>8}{'exact eV':>10}" + "".join(f"{n + ' eV':>12}" for n in rows))
    from mlip_attn.qm.systems.rigid_ion_salt import LATTICE_A
    for k, n in enumerate(sizes):
        print(f"{n}x{n}x{n}:{n * LATTICE_A:8.2f}{exact[k]:10.3f}"
              + "".join(f"{v[k]:12.3f}" for v in rows.values()))
    for name, v in rows.items():
        print(f"{name}: E_v(largest) − E_v(smallest) = {v[-1] - v[0]:.3f} eV "
              f"(exact {exact[-1] - exact[0]:.3f}); mean |error| {np.abs(v - exact).mean():.3f} eV")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot([n * LATTICE_A for n in sizes], exact, "k-o", label="exact (Ewald)")
    for name, v in rows.items():
        ax.plot([n * LATTICE_A for n in sizes], v, "--s", label=name)
    ax.set_xlabel("box edge L (Å)")
    ax.set_ylabel("Na vacancy energy (eV)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(output_file(args, "salt_vacancy_box_size.png"), dpi=120)
    if args.nve_ps > 0:
        for name, calc in calcs.items():
            slope, worst, n_atoms, seconds = nve_drift(calc, args.nve_ps, args.timestep)
            print(f"NVE {name}: {n_atoms} ions, {args.nve_ps:g} ps at {args.timestep:g} fs "
                  f"({args.dtype}): drift {slope:+.4f} meV/atom/ps, max |ΔE| {worst:.3f} "
                  f"meV/atom, {seconds:.0f} s")


if __name__ == "__main__":
    main()
