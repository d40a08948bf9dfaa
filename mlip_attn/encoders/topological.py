"""Topological encoder: per-atom and per-bond measures of the covalent bond graph.

The bond graph (`mlip_attn.encoders.base.BondGraphBuilder`: r_ij < 1.2 (r_cov,i + r_cov,j),
ASE covalent radii) is rebuilt from the positions in every forward. Per atom (networkx
definitions, scaled to O(1) by the fixed factors in brackets):

 0 degree [/4] · 1 closeness centrality · 2 harmonic centrality [/(n−1)] · 3 betweenness
 centrality (normalised) · 4 eigenvector centrality · 5 clustering coefficient · 6 k-core
 number [/3] · 7 eccentricity [/10] · 8 mean neighbour degree [/4]

Per bond u–v, averaged over the atom's bonds (0 for an atom without bonds), because the
backbones' messages take distances only and the encoders enter the atom embedding:

 9 effective resistance R_uv (1 for a bridge, < 1 on a ring) · 10 on a ring (R_uv < 1) ·
 11 bond degree (deg_u + deg_v − 2) [/6] · 12 degree difference |deg_u − deg_v| [/4]

Invariant to rotations, translations and permutations (graph measures of a graph built from
distances). **Not smooth**: a bond appears or breaks at a distance threshold, and the features
jump there — fine for property models, not for MD (the model file records
``force_field_safe: false``).
"""
from __future__ import annotations

from typing import List

import torch

from ..registry import ENCODERS
from . import graph_algorithms as ga
from .base import BondGraph, Encoder, unpack

ATOM_FEATURES = ("degree", "closeness", "harmonic", "betweenness", "eigenvector",
                 "clustering", "core_number", "eccentricity", "neighbour_degree")
BOND_FEATURES = ("resistance", "ring", "bond_degree", "degree_difference")


def topological_features(bonds: BondGraph) -> torch.Tensor:
    """Raw (unscaled) features (G, n, 13) in the order of `ATOM_FEATURES` + `BOND_FEATURES`."""
    a, valid, counts = bonds.adjacency, bonds.valid, bonds.counts
    distance, sigma = ga.shortest_paths(a, valid)
    deg = ga.degree(a)
    atom = [deg, ga.closeness(distance, counts), ga.harmonic(distance, counts),
            ga.betweenness(distance, sigma, counts), ga.eigenvector_centrality(a, valid),
            ga.clustering(a), ga.core_number(a, valid), ga.eccentricity(distance),
            ga.average_neighbour_degree(a)]
    resistance = ga.effective_resistance(a)
    ring = (resistance < 1.0 - 1e-6).to(a.dtype)
    bond_degree = deg[:, :, None] + deg[:, None, :] - 2.0
    difference = (deg[:, :, None] - deg[:, None, :]).abs()
    per_bond = [resistance, ring, bond_degree, difference]
    n_bonds = deg.clamp(min=1.0)
    pooled = [(a * b).sum(dim=-1) / n_bonds for b in per_bond]
    return torch.stack(atom + pooled, dim=-1) * valid[:, :, None].to(a.dtype)


@ENCODERS.register("topological", summary="bond-graph measures per atom (degree, centralities, "
                   "clustering, k-core, eccentricity) and per bond (resistance, ring), from "
                   "covalent radii")
class TopologicalEncoder(Encoder):
    """(species, bond graph) -> (N, 13) scaled topological features (see the module docstring)."""

    dim = len(ATOM_FEATURES) + len(BOND_FEATURES)
    smooth = False
    needs_bonds = True
    exportable = False

    def __init__(self, elements: List[int]):
        super().__init__()
        scale = [1 / 4, 1.0, 1.0, 1.0, 1.0, 1.0, 1 / 3, 1 / 10, 1 / 4, 1.0, 1.0, 1 / 6, 1 / 4]
        self.register_buffer("scale", torch.tensor(scale, dtype=torch.float64), persistent=False)

    def forward(self, species: torch.Tensor, bonds: BondGraph) -> torch.Tensor:
        return unpack(topological_features(bonds) * self.scale, bonds)
