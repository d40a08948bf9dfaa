"""Neighbour lists with vesin, in the package's edge convention.

``edge_index = (i, j)`` with ``r_ij = positions[j] -
positions[i] + shifts``; messages flow from ``j`` (neighbour) to ``i`` (receiver) and are summed
at ``i``. Both directions of every pair are listed (a full list).
"""
from __future__ import annotations

import numpy as np
import torch
from vesin import NeighborList


def neighbour_list(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Full neighbour list within ``cutoff`` (Å).

    Args:
        positions: (N, 3) Å.  cell: (3, 3) Å, rows are lattice vectors.  pbc: (3,) bool.
    Returns:
        edge_index (2, E) int64 sorted by receiver ``i``; shifts (E, 3) Å (Cartesian), so that
        ``r_ij = positions[j] - positions[i] + shifts``. Works for cells smaller than twice
        the cutoff (several images of one neighbour are listed separately).
    """
    positions = np.ascontiguousarray(positions, dtype=np.float64)
    pbc = np.asarray(pbc, dtype=bool)
    cell = np.asarray(cell, dtype=np.float64)
    if len(positions) == 0:
        return np.zeros((2, 0), dtype=np.int64), np.zeros((0, 3))
    if pbc.any():
        if abs(np.linalg.det(cell)) < 1e-9:
            raise ValueError("periodic structure has a degenerate (zero-volume) cell")
        box = cell
    else:
        box = np.zeros((3, 3))
    if not _vesin_safe(positions, cell, pbc, cutoff):
        return _sparse_neighbour_list(positions, cell, pbc, cutoff)
    # vesin sorts the pairs by (i, j) itself, cheaper than sorting afterwards
    nl = NeighborList(cutoff=float(cutoff), full_list=True, sorted=True)
    i, j, s = nl.compute(points=positions, box=box, periodic=pbc.tolist(), quantities="ijS")
    shifts = s.astype(np.float64) @ cell if pbc.any() else np.zeros((len(i), 3))
    return np.stack([i, j]).astype(np.int64), shifts


# vesin's cell list kills the process (SIGFPE, an integer division by zero) when it coarsens a
# grid of too many cells (about 1e5) that has a thin axis: a flat structure 1,500 Å wide, an
# atom 1e9 Å away, a 1,500 x 1,500 x 5 Å periodic cell. Such grids go to a k-d tree (isolated)
# or ASE (periodic) instead: those that need no coarsening, or whose thinnest axis keeps at
# least two cells after a uniform coarsening, stay with vesin.
VESIN_MAX_CELLS = 50_000


def _vesin_safe(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float) -> bool:
    if pbc.any():   # the cell's heights: volume / area of the opposite face
        faces = np.linalg.norm(np.cross(cell[[1, 2, 0]], cell[[2, 0, 1]]), axis=1)
        sides = abs(np.linalg.det(cell)) / faces
    else:
        sides = np.ptp(positions, axis=0)
    cells = np.maximum(sides / cutoff, 1.0)
    coarsening = (float(np.prod(cells)) / VESIN_MAX_CELLS) ** (1 / 3)
    return coarsening <= 1.0 or float(cells.min()) >= 2.0 * coarsening


def _sparse_neighbour_list(positions, cell, pbc, cutoff):
    """`neighbour_list` for geometries vesin cannot take (same pairs, same order)."""
    if pbc.any():
        from ase.neighborlist import primitive_neighbor_list
        i, j, s = primitive_neighbor_list("ijS", pbc, cell, positions, float(cutoff),
                                          self_interaction=False)
        shifts = s.astype(np.float64) @ cell
    else:
        from scipy.spatial import cKDTree
        pairs = cKDTree(positions).query_pairs(float(cutoff), output_type="ndarray")
        i, j = np.concatenate([pairs[:, 0], pairs[:, 1]]), np.concatenate([pairs[:, 1], pairs[:, 0]])
        shifts = np.zeros((len(i), 3))
    order = np.lexsort((j, i))
    return np.stack([i[order], j[order]]).astype(np.int64), shifts[order]


class VerletList:
    """A neighbour list with a skin, for MD: pairs within ``cutoff + skin`` are found once and
    reused, filtered to the cutoff, until some atom has moved more than ``skin / 2`` since
    they were found (or the cell, periodicity or atom count changed). Until then no pair can
    have come within the cutoff unseen, so the result has a fresh `neighbour_list`'s pairs
    (sorted by receiver; the order within one receiver may differ). Call it like
    `neighbour_list`.
    """

    def __init__(self, skin: float = 1.0):
        if skin < 0:
            raise ValueError(f"skin must be >= 0 Å, got {skin}")
        self.skin = float(skin)
        self.builds = 0           # how many times the pairs were searched (for tests/benchmarks)
        self._key = None

    def __call__(self, positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float
                 ) -> tuple[np.ndarray, np.ndarray]:
        positions = np.asarray(positions, dtype=np.float64)
        cell = np.asarray(cell, dtype=np.float64)
        pbc = np.asarray(pbc, dtype=bool)
        key = (len(positions), float(cutoff), cell.tobytes(), pbc.tobytes())
        if (key != self._key or len(positions) == 0 or np.max(
                np.abs(positions - self._anchor).sum(axis=1)) > self.skin / 2):
            # |Δr|_1 >= |Δr|_2: a cheap, conservative displacement test
            self._edges, self._shifts = neighbour_list(positions, cell, pbc, cutoff + self.skin)
            self._anchor, self._key = positions.copy(), key
            self.builds += 1
        i, j = self._edges
        d = positions[j] - positions[i] + self._shifts
        keep = np.einsum("ij,ij->i", d, d) < cutoff * cutoff
        return self._edges[:, keep], self._shifts[keep]


def edge_vectors(positions: torch.Tensor, edge_index: torch.Tensor, shifts: torch.Tensor
                 ) -> torch.Tensor:
    """r_ij (E, 3) Å for ``edge_index = (i, j)`` (`index_select`: its backward is a cheap
    `index_add_`, unlike fancy indexing's `index_put_`)."""
    return (torch.index_select(positions, 0, edge_index[1])
            - torch.index_select(positions, 0, edge_index[0]) + shifts)
