"""Laplacian positional encodings: the ``k`` lowest non-trivial eigenvectors of the bond
graph's Laplacian L = D − A, one value per atom and eigenvector.

Eigenvectors are defined up to sign (and, for a degenerate eigenvalue such as benzene's, up to
a rotation within its eigenspace), so in training each structure's eigenvectors get random
signs (``sign_flip``), which teaches the model not to rely on them; in evaluation they are used
as ``torch.linalg.eigh`` returns them. Structures with fewer than k + 1 atoms per component get
zero columns. Rotation and translation invariant; permutation equivariant only up to those
signs and bases. **Not smooth** (the bond graph changes at distance thresholds).
"""
from __future__ import annotations

from typing import List

import torch

from ..registry import ENCODERS, PositiveInt
from .base import BondGraph, Encoder, unpack
from .graph_algorithms import lowest_laplacian_eigenvectors


@ENCODERS.register("laplacian", summary="k lowest non-trivial eigenvectors of the bond-graph "
                   "Laplacian, random sign flips in training")
class LaplacianEncoder(Encoder):
    """(species, bond graph) -> (N, k) Laplacian eigenvector entries (unit-norm eigenvectors
    scaled by √n, so entries are O(1) whatever the size of the molecule)."""

    smooth = False
    needs_bonds = True
    exportable = False

    def __init__(self, elements: List[int], k: PositiveInt = 4, sign_flip: bool = True):
        super().__init__()
        self.k = int(k)
        self.dim = self.k
        self.sign_flip = bool(sign_flip)

    def forward(self, species: torch.Tensor, bonds: BondGraph) -> torch.Tensor:
        vectors, _ = lowest_laplacian_eigenvectors(bonds.adjacency, self.k)       # (G, n, k)
        vectors = vectors * torch.sqrt(bonds.counts)[:, None, None]
        if self.training and self.sign_flip:
            signs = torch.randint(0, 2, (vectors.shape[0], 1, self.k), device=vectors.device)
            vectors = vectors * (2 * signs - 1).to(vectors.dtype)
        return unpack(vectors, bonds)
