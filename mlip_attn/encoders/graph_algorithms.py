"""Graph measures of packed, padded adjacency matrices in torch (TorchScript-compatible).

Every function takes ``adjacency`` A (G, n, n) float64 with 0/1 entries (one structure per
group, padding rows and columns zero) and ``valid`` (G, n) bool, and follows networkx's
definitions (tests compare them), with one difference: measures of disconnected graphs are
taken per connected component where networkx would refuse (eccentricity). Costs are O(n³)
per structure (betweenness: O(n³) memory), fine for molecules of up to a few hundred atoms.
"""
from __future__ import annotations

from typing import Tuple

import torch


def shortest_paths(adjacency: torch.Tensor, valid: torch.Tensor
                   ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Hop distances D (G, n, n) (inf between components and for padding, 0 on the valid
    diagonal) and the number of shortest paths σ (G, n, n).

    Breadth-first by walk counts: the first k with (A^k)_st > 0 is d_st, and every walk of
    length d_st is a shortest path, so σ_st = (A^{d_st})_st.
    """
    n = adjacency.shape[1]
    eye = torch.eye(n, dtype=torch.bool, device=adjacency.device)[None, :, :] & valid[:, :, None]
    distance = torch.full_like(adjacency, float("inf")).masked_fill(eye, 0.0)
    sigma = eye.to(adjacency.dtype)
    reached = eye.clone()
    walks = sigma.clone()
    for k in range(1, n):
        walks = torch.bmm(walks, adjacency)
        new = (walks > 0) & ~reached
        if not bool(new.any()):
            break
        distance = distance.masked_fill(new, float(k))
        sigma = torch.where(new, walks, sigma)
        reached = reached | new
    return distance, sigma


def degree(adjacency: torch.Tensor) -> torch.Tensor:
    """Number of bonds per atom (G, n)."""
    return adjacency.sum(dim=-1)


def closeness(distance: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Closeness centrality (G, n), Wasserman–Faust scaled for disconnected graphs:
    ((r−1)/Σ_u d_vu) · ((r−1)/(n−1)) with r the atoms reachable from v (itself included)."""
    finite = torch.isfinite(distance)
    reach = finite.to(distance.dtype).sum(dim=-1)
    total = torch.where(finite, distance, torch.zeros_like(distance)).sum(dim=-1)
    n_minus_1 = (counts - 1.0).clamp(min=1.0)[:, None]
    value = (reach - 1.0) / total.clamp(min=1e-12) * (reach - 1.0) / n_minus_1
    return torch.where(total > 0, value, torch.zeros_like(value))


def harmonic(distance: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Harmonic centrality Σ_{u≠v} 1/d_vu divided by (n − 1) (G, n), in [0, 1]."""
    positive = torch.isfinite(distance) & (distance > 0)
    inverse = torch.where(positive, 1.0 / distance.clamp(min=1.0), torch.zeros_like(distance))
    return inverse.sum(dim=-1) / (counts - 1.0).clamp(min=1.0)[:, None]


def betweenness(distance: torch.Tensor, sigma: torch.Tensor, counts: torch.Tensor
                ) -> torch.Tensor:
    """Betweenness centrality (G, n), normalised as networkx does for undirected graphs:
    Σ_{s≠v≠t} σ_st(v)/σ_st / ((n−1)(n−2)) over ordered pairs (s, t), where
    σ_st(v) = σ_sv σ_vt if d_sv + d_vt = d_st. One (G, n, n) slice per middle atom v."""
    n = distance.shape[1]
    eye = torch.eye(n, dtype=torch.bool, device=distance.device)[None, :, :]
    # σ without the diagonal: s = v and v = t drop out, as do unreachable pairs (σ = 0)
    paths = sigma.masked_fill(eye, 0.0)
    inverse = torch.where(paths > 0, 1.0 / paths.clamp(min=1.0), torch.zeros_like(paths))
    finite = torch.where(torch.isfinite(distance), distance, torch.full_like(distance, -1.0))
    values = []
    for v in range(n):
        on_path = (finite[:, :, v, None] + finite[:, None, v, :]) == finite      # (G, s, t)
        weight = paths[:, :, v, None] * paths[:, None, v, :] * inverse
        values.append(torch.where(on_path, weight, torch.zeros_like(weight)).sum(dim=(1, 2)))
    total = torch.stack(values, dim=1)
    norm = ((counts - 1.0) * (counts - 2.0)).clamp(min=1.0)[:, None]
    return torch.where(counts[:, None] > 2, total / norm, torch.zeros_like(total))


def eigenvector_centrality(adjacency: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Eigenvector centrality (G, n): the all-ones vector projected onto the eigenspace of the
    largest adjacency eigenvalue, unit norm (the limit of networkx's power iteration; unique
    and permutation-equivariant even when that eigenvalue is degenerate)."""
    lam, vec = torch.linalg.eigh(adjacency)
    top = lam[:, -1:]
    in_top = (lam >= top - 1e-8 * top.abs().clamp(min=1.0)).to(adjacency.dtype)   # (G, n)
    ones = valid.to(adjacency.dtype)
    coefficient = torch.einsum("gik,gi->gk", vec, ones) * in_top                   # (G, n)
    x = torch.einsum("gik,gk->gi", vec, coefficient) * ones
    return x / torch.linalg.norm(x, dim=1, keepdim=True).clamp(min=1e-12)


def clustering(adjacency: torch.Tensor) -> torch.Tensor:
    """Local clustering coefficient (G, n): triangles / (deg (deg − 1) / 2)."""
    deg = degree(adjacency)
    triangles = torch.diagonal(torch.bmm(torch.bmm(adjacency, adjacency), adjacency),
                               dim1=1, dim2=2) / 2.0
    pairs = deg * (deg - 1.0) / 2.0
    return torch.where(pairs > 0, triangles / pairs.clamp(min=1.0), torch.zeros_like(pairs))


def core_number(adjacency: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """k-core number (G, n): the largest k such that the atom is in a subgraph where every
    atom has at least k bonds (peeling)."""
    alive = valid.clone()
    core = torch.zeros(valid.shape, dtype=adjacency.dtype, device=adjacency.device)
    k = 1
    while bool(alive.any()):
        changed = True
        while changed:
            deg = torch.bmm(adjacency, alive.to(adjacency.dtype)[:, :, None])[:, :, 0]
            drop = alive & (deg < k)
            changed = bool(drop.any())
            alive = alive & ~drop
        core = torch.where(alive, torch.full_like(core, float(k)), core)
        k += 1
    return core


def eccentricity(distance: torch.Tensor) -> torch.Tensor:
    """Largest hop distance to an atom of the same connected component (G, n)."""
    finite = torch.where(torch.isfinite(distance), distance, torch.zeros_like(distance))
    return finite.max(dim=-1).values


def average_neighbour_degree(adjacency: torch.Tensor) -> torch.Tensor:
    """Mean degree of an atom's bonded neighbours (G, n); 0 without bonds."""
    deg = degree(adjacency)
    total = torch.bmm(adjacency, deg[:, :, None])[:, :, 0]
    return torch.where(deg > 0, total / deg.clamp(min=1.0), torch.zeros_like(deg))


def laplacian(adjacency: torch.Tensor) -> torch.Tensor:
    """Combinatorial Laplacian L = D − A (G, n, n)."""
    return torch.diag_embed(degree(adjacency)) - adjacency


def effective_resistance(adjacency: torch.Tensor) -> torch.Tensor:
    """Effective resistance R_uv = L⁺_uu + L⁺_vv − 2 L⁺_uv (G, n, n) with unit resistors on
    the bonds; a bond has R = 1 exactly when it is a bridge (on no ring), R < 1 on a ring."""
    lam, vec = torch.linalg.eigh(laplacian(adjacency))
    inverse = torch.where(lam > 1e-8, 1.0 / lam.clamp(min=1e-8), torch.zeros_like(lam))
    pinv = torch.einsum("gik,gk,gjk->gij", vec, inverse, vec)
    diag = torch.diagonal(pinv, dim1=1, dim2=2)
    return diag[:, :, None] + diag[:, None, :] - 2.0 * pinv


def lowest_laplacian_eigenvectors(adjacency: torch.Tensor, k: int
                                  ) -> Tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` eigenvectors of L = D − A with the smallest non-zero eigenvalues, (G, n, k),
    and those eigenvalues (G, k); zero columns (and eigenvalue 0) where a structure has fewer.

    Zero eigenvalues (one per connected component, and padding) are the trivial ones; signs
    (and, for degenerate eigenvalues, the basis of the eigenspace) are whatever ``eigh`` gives.
    """
    lam, vec = torch.linalg.eigh(laplacian(adjacency))
    n = lam.shape[1]
    key = torch.where(lam > 1e-8, lam, torch.full_like(lam, float("inf")))
    order = torch.argsort(key, dim=1)
    take = min(k, n)
    chosen = order[:, :take]                                                  # (G, take)
    values = torch.gather(key, 1, chosen)
    vectors = torch.gather(vec, 2, chosen[:, None, :].expand(vec.shape[0], n, take))
    present = torch.isfinite(values)
    vectors = vectors * present[:, None, :].to(vec.dtype)
    values = torch.where(present, values, torch.zeros_like(values))
    if take < k:
        vectors = torch.cat([vectors, vectors.new_zeros((vec.shape[0], n, k - take))], dim=2)
        values = torch.cat([values, values.new_zeros((vec.shape[0], k - take))], dim=1)
    return vectors, values
