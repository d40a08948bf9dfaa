"""``python benchmarks/salt_error_by_defect.py [MODEL ...]``: a rigid-ion salt model's signed
energy error per ion (meV), by defect and box size, on fresh cells.

For each box (1×2×2 … 4×4×4 conventional cells) and defect (Schottky pair, Na vacancy, Cl
vacancy, none) it draws ``--cells`` fresh rattled, strained cells (seeds 5000+, not in any
training or held-out set), labels them exactly (Ewald + Born–Mayer) and prints the mean of
(E_model − E_exact) / ions for every model (default: the two shipped salt files), float64.
A bias that is constant without defects and falls as 1/ions with one is the signature of
charges of the wrong size (docs/electrostatics.md, *Charges started at their formal values*).
"""
from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np

from mlip_attn import AttnCalculator
from mlip_attn.qm.rigid_ion import salt_energy_forces_stress
from mlip_attn.qm.systems.rigid_ion_salt import DEFECTS, make_rng, salt_cell

POTENTIALS = Path(__file__).resolve().parents[1] / "potentials"
BOXES = ((1, 2, 2), (2, 2, 2), (2, 2, 3), (2, 3, 3), (3, 3, 3), (4, 4, 4))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="*", default=[
        str(POTENTIALS / "rigid-ion-salt-local.pt"),
        str(POTENTIALS / "rigid-ion-salt-electrostatics.pt")])
    parser.add_argument("--cells", type=int, default=3, help="cells per box and defect")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")   # domain warnings on cells the models were not shown
    calcs = [AttnCalculator(m, default_dtype="float64") for m in args.models]
    print("signed E error per ion (meV), mean over cells; columns: "
          + ", ".join(Path(m).stem for m in args.models))
    for box in BOXES:
        cols = []
        for k, defect in enumerate(DEFECTS):
            errors = np.zeros((args.cells, len(calcs)))
            for s in range(args.cells):
                atoms = salt_cell(box, make_rng(5000 + 10 * s + k), defect)
                exact = salt_energy_forces_stress(atoms.positions, atoms.numbers,
                                                  atoms.cell.array)[0]
                for m, calc in enumerate(calcs):
                    atoms.calc = calc
                    errors[s, m] = 1e3 * (atoms.get_potential_energy() - exact) / len(atoms)
            cols.append(f"{defect}: " + " / ".join(f"{e:+.2f}" for e in errors.mean(axis=0)))
        print("x".join(map(str, box)), "  ".join(cols), flush=True)


if __name__ == "__main__":
    main()
