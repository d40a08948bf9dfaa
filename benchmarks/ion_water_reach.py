"""How far the Na⁺'s influence reaches in the periodic ion-water system, from periodic GFN1-xTB:
the force response |F_j(Na + δx) − F_j(Na − δx)| / 2δ (eV/Å²) of every other atom j, averaged
in bins of its distance from the Na⁺ (minimum image), over a few 14-water cells (44 atoms,
L ≈ 7.8 Å). A local model with cutoff r_c and L layers has exactly zero response beyond
L·r_c; what xTB shows beyond that is what it cannot learn.

    OMP_NUM_THREADS=1 python benchmarks/ion_water_reach.py [--cells 3] [--waters 14]
"""
import argparse

import numpy as np

from mlip_attn.qm.systems.base import make_rng
from mlip_attn.qm.systems.ion_water import force_response, ion_water_cell


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=3)
    parser.add_argument("--waters", type=int, default=14)
    args = parser.parse_args(argv)
    rows = [force_response(ion_water_cell(args.waters, make_rng(4000 + k)), None)
            for k in range(args.cells)]
    bins = sorted({b for r in rows for b in r}, key=lambda s: float(s.split("-")[0]))
    print(f"force response to moving the Na⁺, periodic GFN1-xTB, {args.cells} cells of "
          f"{args.waters} waters (eV/Å², mean over atoms in the bin and cells)")
    for b in bins:
        values = [r[b] for r in rows if b in r]
        print(f"  {b:>8}: {np.mean(values):.4f}   ({len(values)} cells)")


if __name__ == "__main__":
    main()
