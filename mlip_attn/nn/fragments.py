"""Bonded fragments and the physics-2 fragment charge rule (`mlip_attn.nn.charges` explains
both; `mlip_attn.nn.placement` builds the continuous physics-3 placement on them)."""
from typing import List, Optional

import torch
from torch import Tensor


def fragment_labels(n_atoms: int, i: Tensor, j: Tensor) -> Tensor:
    """Connected components of the bonds (i, j): each atom's label is the lowest atom index of
    its fragment, (N,) int64. Label propagation, one pass per bond of the longest path."""
    labels = torch.arange(n_atoms, device=i.device)
    if i.shape[0] == 0:
        return labels
    changed = True
    while changed:
        low = torch.minimum(labels[i], labels[j])
        new = labels.scatter_reduce(0, i, low, reduce="amin").scatter_reduce(0, j, low, reduce="amin")
        new = new[new]  # pointer jumping: follow labels to their roots
        changed = bool((new != labels).any())
        labels = new
    return labels


def _keep_best(candidate: Tensor, key: Tensor, batch: Tensor, num_graphs: int,
               tol: float) -> Tensor:
    """``candidate`` (N,) restricted, per structure, to the entries whose ``key`` is within
    ``tol`` of the smallest key among the candidates."""
    masked = torch.where(candidate, key, torch.full_like(key, float("inf")))
    best = torch.full((num_graphs,), float("inf"), dtype=key.dtype, device=key.device)
    best = best.scatter_reduce(0, batch, masked, reduce="amin")
    return candidate & (masked <= best[batch] + tol)


def fragment_charges(labels: Tensor, numbers: Tensor, batch: Tensor, charge: Tensor,
                     num_graphs: int, electronegativity: Tensor,
                     positions: Optional[Tensor] = None) -> Tensor:
    """Q_f(i) (N,) e: the total charge of atom i's fragment. Each structure's charge ``charge``
    (B,) goes whole to one fragment: for a cation the lowest mean Pauling electronegativity
    (``electronegativity`` (119,) by atomic number), for an anion the highest; ties go to the
    larger fragment, then (with ``positions`` (N, 3) Å) to the fragment whose centroid is
    closest to the structure's; only exact symmetry ties are left to the atom order."""
    n = labels.shape[0]
    dtype = charge.dtype
    en = electronegativity.to(dtype)[numbers]
    ones = torch.ones_like(en)
    size = torch.zeros(n, dtype=dtype, device=labels.device).index_add(0, labels, ones)
    mean_en = torch.zeros(n, dtype=dtype, device=labels.device).index_add(0, labels, en) \
        / size.clamp(min=1.0)
    candidate = labels == torch.arange(n, device=labels.device)          # one row per fragment
    sign = torch.sign(charge)[batch]
    candidate = _keep_best(candidate, sign * mean_en, batch, num_graphs, 1e-9)
    candidate = _keep_best(candidate, -size, batch, num_graphs, 0.5)
    if positions is not None:
        pos = positions.to(dtype)
        sums = torch.zeros((num_graphs, 3), dtype=dtype, device=pos.device).index_add(0, batch, pos)
        counts = torch.zeros(num_graphs, dtype=dtype, device=pos.device).index_add(0, batch, ones)
        centre = sums / counts.clamp(min=1.0)[:, None]
        frag = torch.zeros((n, 3), dtype=dtype, device=pos.device).index_add(0, labels, pos) \
            / size.clamp(min=1.0)[:, None]
        distance = torch.linalg.norm(frag - centre[batch], dim=1)
        candidate = _keep_best(candidate, distance, batch, num_graphs, 1e-9)
    index = torch.where(candidate, torch.arange(n, device=labels.device),
                        torch.full_like(labels, n))
    chosen = torch.full((num_graphs,), n, dtype=labels.dtype, device=labels.device)
    chosen = chosen.scatter_reduce(0, batch, index, reduce="amin")
    return torch.where(labels == chosen[batch], charge[batch], torch.zeros_like(en))


__all__: List[str] = ["fragment_labels", "fragment_charges"]
