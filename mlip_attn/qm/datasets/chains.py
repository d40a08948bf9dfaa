"""The *long-range* property data set: push–pull chains D–(CH=CH)ₙ–A and D–(C≡C)ₙ–A.

A donor D and an acceptor A at the two ends of a conjugated chain of n = 1–10 units (up to
~30 Å): the HOMO–LUMO gap falls with the length and with the donor–acceptor pair together
(charge transfer across the whole chain), the dipole grows with the distance between the ends
and their strength, the polarisability per atom grows with the conjugation length. A 3-layer,
4 Å model sees 12 Å from an atom: from n ≈ 4 on, no atom sees both ends.

All C/H/N/O; polyenes all-trans (E) by their SMILES; conformers by ETKDG + MMFF94
(`rdkit_tools.conformer`), ``conformers`` per molecule with different seeds.
"""
from __future__ import annotations

from itertools import product

from ase import Atoms

from .rdkit_tools import conformer, require_rdkit

DONORS = {"H": "", "methyl": "C", "amino": "N", "hydroxy": "O", "dimethylamino": "CN(C)",
          "methoxy": "CO"}
ACCEPTORS = {"H": "", "formyl": "C=O", "cyano": "C#N", "nitro": "[N+](=O)[O-]",
             "carboxy": "C(=O)O", "acetyl": "C(C)=O"}
BACKBONES = ("polyene", "polyyne")
LENGTHS = tuple(range(1, 11))


def chain_smiles(donor: str, acceptor: str, units: int, backbone: str) -> str:
    """SMILES of D–(CH=CH)ₙ–A (all-trans) or D–(C≡C)ₙ–A."""
    d, a = DONORS[donor], ACCEPTORS[acceptor]
    if backbone == "polyene":
        body = "/C=C" * units + "/"
        return f"{d or '[H]'}{body}{a or '[H]'}"
    return f"{d}{'C#C' * units}{a}"


def push_pull_chains(seed: int = 0, conformers: int = 1, lengths=LENGTHS) -> list[Atoms]:
    """Every (backbone, length, donor, acceptor) combination × ``conformers`` geometries, in a
    fixed order (2 × 10 × 6 × 6 = 720 molecules by default); deterministic for a seed."""
    Chem = require_rdkit()
    out = []
    combinations = product(BACKBONES, lengths, DONORS, ACCEPTORS)
    for m, (backbone, units, donor, acceptor) in enumerate(combinations):
        smiles = Chem.MolToSmiles(Chem.MolFromSmiles(chain_smiles(donor, acceptor, units, backbone)))
        for c in range(conformers):  # conformer c of molecule m: the same whatever the count
            atoms = conformer(smiles, seed * 1_000_003 + 10_000 * c + 100 * units + m, {
                "config_type": "push_pull_chain", "system": "longrange", "backbone": backbone,
                "units": units, "donor": donor, "acceptor": acceptor})
            if atoms is not None:
                out.append(atoms)
    return out
