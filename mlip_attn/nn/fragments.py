"""Bonded fragments and the fragment charge rule (`mlip_attn.nn.charges` explains both;
`mlip_attn.nn.placement` builds the continuous physics-3 placement on them).

Which fragment hosts a structure's charge: the best by a per-fragment key built from a
(3, 119) table by atomic number (`host_scores`): rows 0 and 1 the Pauling electronegativity,
row 2 the neutral atom's electron count (physics 4; zeros before). Anions: the highest mean
electronegativity. Cations: the lowest mean electronegativity, and from physics 4 two ranks
before it: a fragment of several atoms with an odd electron count first (a radical, whose
cation is closed-shell: C12H3 beside C12H2 holds the +1 as C12H3⁺), and a lone hydrogen last
(a bare proton: H's ionisation energy, 13.6 eV, is above nearly every molecule's, so a C–H
pulled out of a chain cation leaves C12H2⁺ + H, as xTB does, where electronegativity alone,
H 2.20 below C 2.55, made it C12H2 + H⁺). Mean ionisation energies were tried instead and
rejected: like every per-element mean they favour the fragment with fewer H, which put the +1
of C2H4 + C2H2 on C2H2 (ionisation energies 10.5 and 11.4 eV: it is C2H4⁺)."""
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


def pauling_electronegativity() -> Tensor:
    """Pauling electronegativities by atomic number, (119,) (mendeleev values shipped with the
    chemical encoder; 2.0 where undefined)."""
    import csv
    from pathlib import Path
    table = torch.full((119,), 2.0, dtype=torch.float64)
    path = Path(__file__).resolve().parent.parent / "encoders" / "chemical_table.csv"
    with open(path) as f:
        for row in csv.DictReader(f):
            if row["en_pauling"]:
                table[int(row["Z"])] = float(row["en_pauling"])
    return table


def host_scores(physics: int) -> Tensor:
    """(3, 119) float64: the fragment-charge rule's table (module docstring): rows 0 (cations,
    lowest mean wins) and 1 (anions, highest mean wins) the Pauling electronegativity, row 2
    the neutral atom's electron count from physics 4 (zeros before: no ranks in front)."""
    en = pauling_electronegativity()
    electrons = torch.arange(119, dtype=torch.float64) if physics >= 4 else torch.zeros_like(en)
    return torch.stack([en, en, electrons])


def host_key(hosts: Tensor, numbers: Tensor, labels: Tensor, sign: Tensor) -> Tensor:
    """(N,) float64, per fragment root (``labels``' entries): the key whose smallest value
    hosts the charge. Cations (``sign`` (N,) > 0): the mean of row 0, plus 1000 for a fragment
    that is not a many-atom radical (odd electron count, row 2) and 1000 more for a lone
    hydrogen (a table without electron counts, physics < 4, adds nothing); anions: −mean of
    row 1."""
    scores = hosts.to(torch.float64)[:, numbers]                      # (3, N)
    ones = torch.ones_like(scores[0])
    size = torch.zeros_like(ones).index_add(0, labels, ones).clamp(min=1.0)
    mean = torch.zeros_like(scores[:2]).index_add(1, labels, scores[:2]) / size
    electrons = torch.zeros_like(ones).index_add(0, labels, scores[2])
    radical = (size > 1.0) & (torch.remainder(electrons, 2.0) == 1.0)
    ranked = electrons > 0.0
    proton = (size == 1.0) & (electrons == 1.0)
    rank = (ranked & ~radical).to(torch.float64) + proton.to(torch.float64)
    return torch.where(sign > 0, mean[0] + 1000.0 * rank, -mean[1])


def _keep_best(candidate: Tensor, key: Tensor, batch: Tensor, num_graphs: int,
               tol: float) -> Tensor:
    """``candidate`` (N,) restricted, per structure, to the entries whose ``key`` is within
    ``tol`` of the smallest key among the candidates."""
    masked = torch.where(candidate, key, torch.full_like(key, float("inf")))
    best = torch.full((num_graphs,), float("inf"), dtype=key.dtype, device=key.device)
    best = best.scatter_reduce(0, batch, masked, reduce="amin")
    return candidate & (masked <= best[batch] + tol)


def fragment_charges(labels: Tensor, numbers: Tensor, batch: Tensor, charge: Tensor,
                     num_graphs: int, hosts: Tensor,
                     positions: Optional[Tensor] = None) -> Tensor:
    """Q_f(i) (N,) e: the total charge of atom i's fragment. Each structure's charge ``charge``
    (B,) goes whole to one fragment, the best by `host_key` (``hosts`` (3, 119),
    `host_scores`); ties go to the larger fragment, then (with ``positions`` (N, 3) Å) to the
    fragment whose centroid is closest to the structure's; only exact symmetry ties are left
    to the atom order."""
    n = labels.shape[0]
    dtype = charge.dtype
    ones = torch.ones(n, dtype=dtype, device=labels.device)
    size = torch.zeros(n, dtype=dtype, device=labels.device).index_add(0, labels, ones)
    candidate = labels == torch.arange(n, device=labels.device)          # one row per fragment
    key = host_key(hosts, numbers, labels, torch.sign(charge)[batch]).to(dtype)
    candidate = _keep_best(candidate, key, batch, num_graphs, 1e-9)
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
    return torch.where(labels == chosen[batch], charge[batch], torch.zeros_like(ones))


__all__: List[str] = ["fragment_labels", "fragment_charges", "host_key", "host_scores",
                      "pauling_electronegativity"]
