"""How far the long-range effect of the rigid-ion salt reaches: the energy of a charged Na
vacancy and of a Schottky pair (Na and Cl vacancies at the largest separation in the box) in
perfect rock-salt boxes of growing size. Every ion's environment within 8 Å is the same in all
boxes, so a local model predicts one value per defect; the reference changes with the box.

    OMP_NUM_THREADS=1 python benchmarks/salt_reach.py
"""
import numpy as np
from ase.build import bulk

from mlip_attn.qm.systems.rigid_ion_salt import LATTICE_A, salt_energy_forces_stress


def energy(atoms):
    return salt_energy_forces_stress(atoms.positions, atoms.numbers, atoms.cell.array)[0]


def main():
    print(f"{'box':>6}{'L (Å)':>8}{'E(Na vac) − E(bulk) eV':>25}{'E(Schottky) − E(bulk) eV':>27}"
          f"{'pair d (Å)':>12}")
    for r in (2, 3, 4):
        atoms = bulk("NaCl", "rocksalt", a=LATTICE_A, cubic=True).repeat(r)
        e0 = energy(atoms)
        vac = atoms.copy()
        del vac[0]
        # the Cl farthest from Na 0 under the minimum image convention
        d = atoms.get_distances(0, range(len(atoms)), mic=True)
        cl = int(np.argmax(np.where(atoms.numbers == 17, d, -1)))
        pair = atoms.copy()
        del pair[[0, cl]]
        print(f"{r}x{r}x{r}:{r * LATTICE_A:8.2f}{energy(vac) - e0:25.4f}{energy(pair) - e0:27.4f}"
              f"{d[cl]:12.2f}", flush=True)


if __name__ == "__main__":
    main()
