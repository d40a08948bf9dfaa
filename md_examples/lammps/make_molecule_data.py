"""Write the LAMMPS data files of the isolated-molecule examples (cumulene.data, sn2.data).

Geometries are analytic guesses (no quantum chemistry needed); the decks start NVE from them.
"""
from __future__ import annotations

import math
from pathlib import Path

import ase.io
from ase import Atoms

HERE = Path(__file__).resolve().parent


def cumulene(n_carbons: int = 11) -> Atoms:
    """H2C=(C=)k=CH2 along z in its ground state (ends perpendicular for an odd number of
    carbons, planar for an even one). C11H4 is a length the shipped models never saw."""
    from mlip_attn.qm import cumulene_ground_state
    return cumulene_ground_state(n_carbons, optimise=False)


def sn2_reactant_complex() -> Atoms:
    """Cl- ... CH3Cl, collinear Cl...C-Cl (ion-dipole complex, C...Cl- 3.2 Å); charge -1."""
    angle = math.radians(108.5)   # H-C-Cl
    pos = [[0.0, 0.0, -3.2], [0.0, 0.0, 0.0], [0.0, 0.0, 1.79]]
    for k in range(3):
        phi = 2 * math.pi * k / 3
        pos.append([1.09 * math.sin(angle) * math.cos(phi), 1.09 * math.sin(angle) * math.sin(phi),
                    1.09 * math.cos(angle)])
    return Atoms(["Cl", "C", "Cl", "H", "H", "H"], positions=pos)


def write(atoms: Atoms, name: str, specorder: list[str]) -> None:
    atoms = atoms.copy()
    atoms.center(vacuum=15.0)
    ase.io.write(HERE / name, atoms, format="lammps-data", specorder=specorder, masses=True,
                 atom_style="atomic")
    print(f"wrote {HERE / name} ({atoms.get_chemical_formula()}, types {specorder})")


if __name__ == "__main__":
    write(cumulene(11), "cumulene.data", ["C", "H"])
    write(sn2_reactant_complex(), "sn2.data", ["C", "H", "Cl"])
