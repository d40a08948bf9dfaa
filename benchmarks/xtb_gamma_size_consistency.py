"""``python benchmarks/xtb_gamma_size_consistency.py [--cells 3]``: are the `ion-water` labels
(periodic GFN1-xTB in tblite, Brillouin zone sampled at Γ only) size-consistent?

For the first ``--cells`` cells of the protocol's recipe (6, 7 and 8 waters with Na⁺ and Cl⁻,
seed 0, as `mlip-attn data ion-water` makes them) it labels the cell and its 2×1×1 and 2×2×1
supercells and prints E(supercell)/n − E(cell) in meV per cell. The periodic structure is the
same, so a converged method gives 0; the numbers are the error of Γ-only sampling in cells this
small (docs/electrostatics.md, *QM-labelled periodic system*). About 10 s per cell.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from mlip_attn.qm.methods import xtb_periodic_label
from mlip_attn.qm.systems.ion_water import ion_water_structures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", type=int, default=3)
    args = parser.parse_args()
    print("atoms  L (Å)   E(2×1×1)/2 − E(cell)   E(2×2×1)/4 − E(cell)   (meV per cell)")
    for atoms in ion_water_structures(args.cells, seed=0):
        start = time.perf_counter()
        cell = xtb_periodic_label(atoms.numbers, atoms.positions, atoms.cell.array)[0]
        diffs = []
        for repeat in ((2, 1, 1), (2, 2, 1)):
            big = atoms.repeat(repeat)
            energy = xtb_periodic_label(big.numbers, big.positions, big.cell.array)[0]
            diffs.append(1e3 * (energy / np.prod(repeat) - cell))
        print(f"{len(atoms):5d}  {atoms.cell.lengths()[0]:5.2f}   {diffs[0]:+18.1f}   "
              f"{diffs[1]:+18.1f}   ({time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
