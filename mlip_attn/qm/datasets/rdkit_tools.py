"""RDKit helpers of the property data sets: SMILES → 3D conformer → `ase.Atoms`.

RDKit is optional (``pip install 'mlip-attn[study]'``); only the data set recipes import it.
"""
from __future__ import annotations

from ase import Atoms

RDKIT_HINT = ("the built-in study data sets build molecules with RDKit: "
              "pip install 'mlip-attn[study]' (or pip install rdkit); or train on your own "
              "file with `mlip-attn study --data FILE --target NAME`")


def require_rdkit():
    """The ``rdkit.Chem`` module, or an ImportError that says how to install it."""
    try:
        from rdkit import Chem, RDLogger
    except ImportError as exc:
        raise ImportError(RDKIT_HINT) from exc
    RDLogger.DisableLog("rdApp.*")
    return Chem


def conformer(smiles: str, seed: int, info: dict | None = None) -> Atoms | None:
    """An ETKDG (v3) conformer of ``smiles`` with explicit hydrogens, MMFF94-relaxed (at most
    500 steps), as non-periodic `ase.Atoms` tagged with ``info``; None if embedding fails.
    Deterministic for a given RDKit version, SMILES and seed."""
    Chem = require_rdkit()
    from rdkit.Chem import AllChem
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        return None
    mol = Chem.AddHs(mol)
    params = AllChem.ETKDGv3()
    params.randomSeed = int(seed) % (2 ** 31)
    if AllChem.EmbedMolecule(mol, params) != 0:
        return None
    if AllChem.MMFFHasAllMoleculeParams(mol):
        AllChem.MMFFOptimizeMolecule(mol, maxIters=500)
    positions = mol.GetConformer().GetPositions()
    atoms = Atoms(numbers=[a.GetAtomicNum() for a in mol.GetAtoms()], positions=positions)
    atoms.info.update(info or {})
    atoms.info.update({"smiles": Chem.MolToSmiles(Chem.RemoveHs(mol)), "total_charge": 0})
    return atoms
