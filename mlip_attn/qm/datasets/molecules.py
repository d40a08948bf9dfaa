"""The *local* property data set: small organic molecules of C, H, N, O (3–9 heavy atoms,
QM9-like), drawn by a seeded random graph generator and checked by RDKit.

Generator: a random tree of heavy atoms (C 60 %, N 20 %, O 20 %) grown one single bond at a
time onto atoms with free valence (C 4, N 3, O 2), then with probability 0.5 one ring closure
between two atoms four or five bonds apart (5- and 6-rings) and with probability 0.25 one
closure three bonds apart (4-rings are rarer), then bonds promoted to double (p = 0.25 per
bond) or triple (p = 0.05) where both atoms have free valence and neither has a multiple bond
yet (no allenes). No O–O, N–O or N–N bonds, no 3-rings.
Molecules are deduplicated by canonical SMILES; each gets one ETKDG conformer relaxed with
MMFF94 (`rdkit_tools.conformer`). Every property of these molecules is set within a few
bonds: a 3-layer, 4 Å model already sees all of a molecule from any atom.
"""
from __future__ import annotations

import numpy as np
from ase import Atoms

from .rdkit_tools import conformer, require_rdkit

VALENCE = {6: 4, 7: 3, 8: 2}
ELEMENTS = (6, 7, 8)
ELEMENT_P = (0.6, 0.2, 0.2)
FORBIDDEN = {frozenset((8, 8)), frozenset((7, 8)), frozenset((7, 7))}


def _random_graph(rng: np.random.Generator, max_heavy: int):
    """(elements, {(i, j): bond order}) of one random heavy-atom graph, or None."""
    n = int(rng.integers(3, max_heavy + 1))
    z = [int(rng.choice(ELEMENTS, p=ELEMENT_P)) for _ in range(n)]
    bonds: dict[tuple[int, int], int] = {}
    used = [0] * n

    def free(i):
        return VALENCE[z[i]] - used[i]

    def add(i, j, order=1):
        key = (min(i, j), max(i, j))
        if frozenset((z[i], z[j])) in FORBIDDEN:
            return False
        bonds[key] = bonds.get(key, 0) + order
        used[i] += order
        used[j] += order
        return True

    for k in range(1, n):
        hosts = [i for i in range(k) if free(i) > 0 and frozenset((z[i], z[k])) not in FORBIDDEN]
        if not hosts:
            return None
        add(int(rng.choice(hosts)), k)
    distance = _hops(n, bonds)
    for span, p in ((4, 0.3), (5, 0.3), (3, 0.25)):
        if rng.random() < p:
            pairs = [(i, j) for i in range(n) for j in range(i + 1, n)
                     if distance[i][j] == span and free(i) > 0 and free(j) > 0]
            if pairs:
                add(*pairs[int(rng.integers(len(pairs)))])
                distance = _hops(n, bonds)
    multiple = [False] * n  # at most one double/triple bond per atom: no allenes
    for (i, j) in list(bonds):
        r = rng.random()
        extra = 2 if r < 0.05 else 1 if r < 0.30 else 0
        extra = min(extra, free(i), free(j)) if not (multiple[i] or multiple[j]) else 0
        multiple[i] = multiple[i] or bool(extra)
        multiple[j] = multiple[j] or bool(extra)
        if extra and bonds[(i, j)] == 1:
            bonds[(i, j)] += extra
            used[i] += extra
            used[j] += extra
    return z, bonds


def _hops(n, bonds):
    inf = 10 ** 6
    d = [[0 if i == j else inf for j in range(n)] for i in range(n)]
    for i, j in bonds:
        d[i][j] = d[j][i] = 1
    for k in range(n):
        for i in range(n):
            for j in range(n):
                if d[i][k] + d[k][j] < d[i][j]:
                    d[i][j] = d[i][k] + d[k][j]
    return d


def _smiles(z, bonds):
    Chem = require_rdkit()
    mol = Chem.RWMol()
    for element in z:
        mol.AddAtom(Chem.Atom(int(element)))
    kinds = {1: Chem.BondType.SINGLE, 2: Chem.BondType.DOUBLE, 3: Chem.BondType.TRIPLE}
    for (i, j), order in bonds.items():
        mol.AddBond(i, j, kinds[order])
    try:
        m = mol.GetMol()
        Chem.SanitizeMol(m)
    except Exception:  # noqa: BLE001 - RDKit rejects strained or odd valence graphs
        return None
    ring_sizes = [len(r) for r in m.GetRingInfo().AtomRings()]
    if any(s < 4 for s in ring_sizes) or Chem.GetFormalCharge(m) != 0:
        return None
    return Chem.MolToSmiles(m)


def small_molecules(n: int, seed: int = 0, max_heavy: int = 9) -> list[Atoms]:
    """``n`` distinct small C/H/N/O molecules with one conformer each (see the module
    docstring); deterministic for a seed (and RDKit version)."""
    require_rdkit()
    rng = np.random.default_rng(seed)
    seen: set[str] = set()
    out: list[Atoms] = []
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 200 * n + 1000:
            raise RuntimeError(f"local data set: only {len(out)} distinct molecules after "
                               f"{attempts} draws (ask for fewer)")
        graph = _random_graph(rng, max_heavy)
        smiles = _smiles(*graph) if graph else None
        if smiles is None or smiles in seen:
            continue
        seen.add(smiles)
        atoms = conformer(smiles, seed * 1_000_003 + len(out),
                          {"config_type": "small_molecule", "system": "local"})
        if atoms is not None:
            out.append(atoms)
    return out
