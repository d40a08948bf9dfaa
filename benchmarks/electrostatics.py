"""Ewald vs PME: accuracy and cost of the Coulomb sum (energy + forces by autograd) on rattled
rock-salt supercells with ±1 charges, float64, one thread.

    OMP_NUM_THREADS=1 python benchmarks/electrostatics.py [--repeats 2 3 4 5 6] [--cutoff 5]
    OMP_NUM_THREADS=1 python benchmarks/electrostatics.py --mesh-sweep

Prints, per supercell, N, the number of k-vectors K, the relative energy error of each method
against Ewald at accuracy 1e-12, and the median wall time of energy + forces. ``--mesh-sweep``
prints PME's error and time for mesh spacings and interpolation orders instead.
"""
import argparse
import time

import numpy as np
import torch
from ase.build import bulk

from mlip_attn.data import AtomicData
from mlip_attn.nn.coulomb import Coulomb, ewald_vector_count


def setup(repeat, cutoff):
    atoms = bulk("NaCl", "rocksalt", a=5.64, cubic=True).repeat(repeat)
    atoms.rattle(0.1, seed=0)
    d = AtomicData.from_atoms(atoms).with_graph(cutoff)
    q = torch.tensor([1.0 if z == 11 else -1.0 for z in atoms.numbers], dtype=torch.float64)
    return d, q


def run(coulomb, d, q, forces=True):
    pos = d.positions.clone().requires_grad_(forces)
    lengths = (pos[d.edge_index[1]] - pos[d.edge_index[0]] + d.shifts).norm(dim=1)
    batch = torch.zeros(len(q), dtype=torch.long)
    e = coulomb.energy(q, coulomb(q, pos, d.cell[None], batch, d.edge_index, lengths, 1), batch, 1)
    if forces:
        torch.autograd.grad(e.sum(), pos)
    return float(e.detach())


def timed(coulomb, d, q, n=3):
    run(coulomb, d, q)
    times = []
    for _ in range(n):
        t = time.perf_counter()
        e = run(coulomb, d, q)
        times.append(time.perf_counter() - t)
    return e, 1e3 * float(np.median(times))


def mesh_sweep(repeats, accuracy):
    """PME's error (vs Ewald at ε = 1e-12) and time for mesh spacings and interpolation orders
    (`mlip_attn.nn.pme`: L / spacing points per axis, rounded up to a 2·3·5-smooth size)."""
    print(f"PME mesh sweep, r_c = 5 Å, ε = {accuracy:g}, ±1 charges, energy + forces")
    print(f"{'N':>6}{'spacing × α':>12}{'nodes':>7}{'rel. error':>12}{'ms':>9}")
    for r in repeats:
        d, q = setup(r, 5.0)
        ewald = run(Coulomb(5.0, accuracy=1e-12, method="ewald"), d, q, forces=False)
        alpha = Coulomb(5.0, accuracy=accuracy).alpha
        for spacing in (0.5, 0.4, 0.3, 0.2):
            for nodes in (4, 6, 8):
                pme = Coulomb(5.0, accuracy=accuracy, method="pme", mesh_spacing=spacing / alpha,
                              interpolation_nodes=nodes)
                e, ms = timed(pme, d, q, n=1)
                print(f"{len(q):>6}{spacing:>12}{nodes:>7}{abs(e - ewald) / abs(ewald):>12.1e}"
                      f"{ms:>9.0f}", flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, nargs="+", default=[2, 3, 4, 5, 6])
    parser.add_argument("--cutoff", type=float, default=5.0)
    parser.add_argument("--accuracy", type=float, default=1e-8)
    parser.add_argument("--max-ewald", type=float, default=6e7, help="skip Ewald above N·K")
    parser.add_argument("--mesh-sweep", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.mesh_sweep:
        return mesh_sweep(args.repeats, args.accuracy)
    print(f"cutoff {args.cutoff} Å, accuracy {args.accuracy:g}, float64, energy + forces")
    print(f"{'N':>6}{'K':>9}{'Ewald err':>11}{'Ewald ms':>10}{'PME err':>10}{'PME ms':>9}")
    for r in args.repeats:
        d, q = setup(r, args.cutoff)
        n = len(q)
        ewald = Coulomb(args.cutoff, accuracy=args.accuracy, method="ewald")
        pme = Coulomb(args.cutoff, accuracy=args.accuracy, method="pme")
        k = ewald_vector_count(d.cell, ewald.k_max)
        fits = n * k <= args.max_ewald
        ref = (run(Coulomb(args.cutoff, accuracy=1e-12, method="ewald"), d, q, forces=False)
               if n * ewald_vector_count(d.cell, Coulomb(args.cutoff, accuracy=1e-12).k_max)
               <= 2 * args.max_ewald else None)
        e_pme, t_pme = timed(pme, d, q)
        if fits:
            e_ew, t_ew = timed(ewald, d, q)
        if ref is not None:
            err_ew = f"{abs(e_ew - ref) / abs(ref):11.1e}" if fits else f"{'-':>11}"
            err_pme = f"{abs(e_pme - ref) / abs(ref):10.1e}"
        else:
            err_ew = f"{'-':>11}"
            err_pme = f"{abs(e_pme - e_ew) / abs(e_ew):10.1e}*" if fits else f"{'-':>10}"
        print(f"{n:>6}{k:>9.0f}{err_ew}{(f'{t_ew:10.0f}' if fits else f'{chr(45):>10}')}"
              f"{err_pme}{t_pme:>9.0f}", flush=True)


if __name__ == "__main__":
    main()
