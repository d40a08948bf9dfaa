"""Continuous charge placement (physics 3): the fragment charge as an expectation over bond states.

Physics 2 (`mlip_attn.nn.charges.fragment_charges`) puts a structure's total charge Q on one
bonded fragment, a connected component of the bonds with smooth weight w > 0. That is a
discrete function of the positions: when an ion enters a bond window (C···Cl⁻ = 2.40 Å) the
charge jumps from the ion to the whole complex, an energy step (23 meV for the physics-2
sn2-efa, docs/longrange-physics.md). Physics 3 keeps that rule *between* fragments that are
completely apart (w = 0 between them: integer charges, separability) and makes the placement
*inside* the charged fragment L continuous:

- tight components: connected components of the bonds with w = 1;
- window bonds: the bonds of L with 0 < w < 1 between two different tight components; parallel
  ones between the same two components merge into one with w = 1 − Π(1 − w) (`window_bonds`);
- a state s: each window bond formed with probability w, independently,
  P(s) = Π_formed w · Π_unformed (1 − w). In each state the components of the formed bonds are
  the fragments and L's charge goes to one of them by the host rule of `fragment_charges`
  (anion: highest mean Pauling electronegativity; cation: lowest, from physics 4 a many-atom
  radical first and a lone hydrogen last; then the larger). Components that tie on both (the
  two Cl of the SN2 transition state Cl···C···Cl when neither C–Cl bond is formed) share the charge in proportion to 1/W_c, W_c = Π w of the
  window bonds that leave component c (`state_charges`): smooth in the positions, equal at
  symmetric geometries (physics 2's centroid tie-break is a discrete function of the
  positions), and all on the leaving ion as its last bond breaks — what the rule between
  separated fragments gives there;
- the placement is Σ_s P(s) Q_i(s) (`expected`): multilinear in the w's, so C² in the positions
  (w is a C² smoothstep), and equal to physics 2 wherever every bond has w ∈ {0, 1}.

Cost: 2^k states per structure, k = window bonds of its charged fragment (neutral structures
and structures whose charged fragment is one tight component take one state: physics 2's
numbers). k is capped at ``MAX_WINDOW_BONDS``; beyond it a clear error names the structure.

Cannot (docs/longrange-physics.md): be continuous everywhere while far fragments keep integer
charges. Where a window bond reaches w = 0 and splits L while another bond of L is still in
its window, the two sides are ranked as wholes (the physics-2 rule) but the states ranked
their components; where these disagree the placement steps, by at most the probability of the
disagreeing states. Two identical fragments separating (Cl2⁻ → Cl + Cl⁻) share the charge
equally while bonded and get it whole apart: a step no integer rule avoids.
"""
from typing import List, Tuple

import torch
from torch import Tensor

from .fragments import fragment_charges, fragment_labels, host_key

# window bonds of one structure's charged fragment above which the 2^k enumeration refuses
MAX_WINDOW_BONDS = 10


def _unique_pairs(i: Tensor, j: Tensor, w: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """The bonds (w > 0), one edge per pair from a full (both directions) neighbour list: i < j
    kept, images of a periodic pair included (as `mlip_attn.nn.charges.bond_weights`)."""
    keep = torch.nonzero((i < j) & (w > 0)).squeeze(1)
    return i[keep], j[keep], w[keep]


def window_bonds(n_atoms: int, i: Tensor, j: Tensor, w: Tensor, in_charged: Tensor
                 ) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Tight labels (N,) (components of the w = 1 bonds) and the charged fragments' window
    bonds between tight components, (a, b, w) (K,): a < b the two components' labels (atom
    indices), w = 1 − Π(1 − w) over the parallel bonds. ``i``, ``j``, ``w``: unique pairs with
    w > 0; ``in_charged`` (N,) bool: the atoms of each structure's charged fragment."""
    tight_edge = w >= 1.0
    tight = fragment_labels(n_atoms, i[tight_edge], j[tight_edge])
    ti, tj = tight[i], tight[j]
    window = (~tight_edge) & in_charged[i] & (ti != tj)
    a = torch.minimum(ti, tj)[window]
    b = torch.maximum(ti, tj)[window]
    key, inverse = torch.unique(a * n_atoms + b, return_inverse=True)
    keep = (1.0 - w[window]).new_ones(key.shape[0]).scatter_reduce(
        0, inverse, 1.0 - w[window], reduce="prod", include_self=True)
    return tight, torch.div(key, n_atoms, rounding_mode="floor"), key % n_atoms, 1.0 - keep


def state_charges(labels: Tensor, in_charged: Tensor, numbers: Tensor, batch: Tensor,
                  charge: Tensor, num_graphs: int, hosts: Tensor,
                  a: Tensor, b: Tensor, w: Tensor, formed: Tensor) -> Tensor:
    """Q_i (N,) e in one bond state: each structure's charge ``charge`` (B,) goes to the
    component(s) of its charged fragment (``labels`` (N,): the state's component labels,
    ``in_charged`` (N,) bool) with the best mean host score (``hosts`` (2, 119),
    `mlip_attn.nn.fragments.host_scores`; cation: lowest, anion: highest), then the largest. Components that tie on both
    share it in proportion to 1/W_c, W_c = Π w over the unformed window bonds (a, b, w (K,),
    ``formed`` (K,) bool) that leave c: the less bonded of two tied components (the leaving
    Cl⁻ of an SN2 exit) carries more of the charge, equal shares at symmetric geometries, and
    all of it as its last bond breaks, as the rule between separated fragments then gives."""
    n = labels.shape[0]
    ones = torch.ones(n, dtype=torch.float64, device=labels.device)
    size = torch.zeros_like(ones).index_add(0, labels, ones)
    candidate = (labels == torch.arange(n, device=labels.device)) & in_charged
    host = host_key(hosts, numbers, labels, torch.sign(charge.to(torch.float64))[batch])
    for key, tol in ((host, 1e-9), (-size, 0.5)):
        masked = torch.where(candidate, key, torch.full_like(key, float("inf")))
        best = torch.full((num_graphs,), float("inf"), dtype=key.dtype, device=key.device)
        best = best.scatter_reduce(0, batch, masked, reduce="amin")
        candidate = candidate & (masked <= best[batch] + tol)
    # −log W_c of every component: Σ −log w over the unformed window bonds leaving it
    la, lb = labels[a], labels[b]
    leaving = (~formed) & (la != lb)
    minus_log = torch.where(leaving, -torch.log(w.to(torch.float64)),
                            torch.zeros_like(w, dtype=torch.float64))
    score = torch.zeros_like(ones).index_add(0, la, minus_log).index_add(0, lb, minus_log)
    masked = torch.where(candidate, score, torch.full_like(score, -float("inf")))
    top = torch.full((num_graphs,), -float("inf"), dtype=score.dtype, device=score.device)
    top = top.scatter_reduce(0, batch, masked, reduce="amax")
    weight = torch.exp(masked - top.clamp(min=0.0)[batch])      # 0 off the candidates
    total = torch.zeros(num_graphs, dtype=torch.float64, device=labels.device).index_add(
        0, batch, weight)
    share = weight / total[batch].clamp(min=1e-300)
    placed = charge.to(torch.float64)[batch] * share[labels]
    return placed.to(charge.dtype)


def bond_states(n_atoms: int, i: Tensor, j: Tensor, w: Tensor, labels: Tensor, q_f: Tensor,
                numbers: Tensor, batch: Tensor, charge: Tensor, num_graphs: int,
                hosts: Tensor, max_bonds: int = MAX_WINDOW_BONDS
                ) -> Tuple[Tensor, Tensor, Tensor]:
    """Every bond state of every structure's charged fragment (module docstring).

    i, j, w: the edges of a full neighbour list (both directions) and their weights; labels (N,), q_f (N,): the
    physics-2 fragments and fragment charges (`fragment_labels`, `fragment_charges`: L is where
    q_f ≠ 0); charge (B,) e. Returns P (S, B) (the probability of state s of structure b; zero
    for s ≥ 2^k_b; differentiable in w), state labels (S, N) (L's atoms: the state's
    components; other atoms: their fragment) and state charges Q (S, N) e, S = 2^max_b k_b.
    Raises RuntimeError naming the structure when a charged fragment has more than
    ``max_bonds`` window bonds."""
    i, j, w = _unique_pairs(i, j, w)
    in_charged = q_f != 0
    tight, a, b, wq = window_bonds(n_atoms, i, j, w, in_charged)
    owner = batch[a]
    counts = torch.bincount(owner, minlength=num_graphs)
    k_max = int(counts.max()) if a.shape[0] > 0 else 0
    if k_max == 0:
        return (torch.ones((1, num_graphs), dtype=w.dtype, device=w.device),
                labels.unsqueeze(0), q_f.unsqueeze(0))
    if k_max > max_bonds:
        worst = int(torch.argmax(counts))
        raise RuntimeError("charge placement (physics 3): structure " + str(worst) + " of the "
                           "batch has " + str(k_max) + " window bonds (0 < w < 1) in its "
                           "charged fragment, more than the " + str(max_bonds) + " whose 2^k "
                           "bond states are enumerated; relax or un-rattle it")
    rank = torch.arange(a.shape[0], device=a.device) - (torch.cumsum(counts, 0) - counts)[owner]
    tight_i, tight_j = i[w >= 1.0], j[w >= 1.0]
    probabilities: List[Tensor] = []
    state_labels: List[Tensor] = []
    state_q: List[Tensor] = []
    for s in range(1 << k_max):
        formed = torch.bitwise_and(torch.bitwise_right_shift(torch.full_like(rank, s), rank),
                                   1) == 1
        factor = torch.where(formed, wq, 1.0 - wq)
        p = torch.ones(num_graphs, dtype=w.dtype, device=w.device).scatter_reduce(
            0, owner, factor, reduce="prod", include_self=True)
        exists = torch.bitwise_right_shift(torch.full_like(counts, s), counts) == 0
        probabilities.append(torch.where(exists, p, torch.zeros_like(p)))
        inside = fragment_labels(n_atoms, torch.cat([tight_i, a[formed]]),
                                 torch.cat([tight_j, b[formed]]))
        lab = torch.where(in_charged, inside, labels)
        state_labels.append(lab)
        state_q.append(state_charges(lab, in_charged, numbers, batch, charge, num_graphs,
                                     hosts, a, b, wq, formed))
    return torch.stack(probabilities), torch.stack(state_labels), torch.stack(state_q)


def expected(p: Tensor, values: Tensor, batch: Tensor) -> Tensor:
    """Σ_s P(s) values_s (N, …): p (S, B), values (S, N, …) per-atom values of each state."""
    weight = p[:, batch]
    while weight.dim() < values.dim():
        weight = weight.unsqueeze(-1)
    return (weight * values).sum(0)


def expected_density(p: Tensor, labels: Tensor, q: Tensor, batch: Tensor) -> Tensor:
    """Σ_s P(s) Q_f(s)/N_f(s) (N,) e: the expected per-atom share of the fragment charge."""
    ones = torch.ones_like(q[0])
    sizes = torch.stack([torch.zeros_like(ones).index_add(0, labels[s], ones)[labels[s]]
                         for s in range(labels.shape[0])])
    return expected(p, q / sizes, batch)


def expected_component_mean(p: Tensor, labels: Tensor, x: Tensor, batch: Tensor) -> Tensor:
    """Σ_s P(s) mean_{j ∈ c_s(i)} x_j (N, C): the expected mean of x (N, C) over atom i's
    component in each state (``labels`` (S, N), p (S, B))."""
    ones = torch.ones_like(x[:, 0])
    means: List[Tensor] = []
    for s in range(labels.shape[0]):
        size = torch.zeros_like(ones).index_add(0, labels[s], ones)
        sums = torch.zeros_like(x).index_add(0, labels[s], x)
        means.append((sums / size.unsqueeze(1))[labels[s]])
    return expected(p.to(x.dtype), torch.stack(means), batch)


def placed_charges(n_atoms: int, i: Tensor, j: Tensor, w: Tensor, numbers: Tensor,
                   batch: Tensor, positions: Tensor, charge: Tensor, num_graphs: int,
                   hosts: Tensor, continuous: bool, density: bool
                   ) -> Tuple[Tensor, Tensor]:
    """Fragment labels (N,) (components of the edges with w > 0) and each atom's placed charge
    (N,) e: the charge of its fragment, or with ``density`` its per-atom share Q_f/N_f.
    ``continuous`` (physics 3): the expectation over bond states (module docstring); else the
    physics-2 rule (`fragment_charges`). i, j, w (E,): the neighbour list's edges and weights;
    positions (N, 3) Å (the tie-break between fragments); charge (B,) e."""
    bonded = w > 0
    i, j, w = i[bonded], j[bonded], w[bonded]
    labels = fragment_labels(n_atoms, i, j)
    q_f = fragment_charges(labels, numbers, batch, charge, num_graphs, hosts,
                           positions)
    if continuous:
        p, state_labels, state_q = bond_states(n_atoms, i, j, w, labels, q_f, numbers, batch,
                                               charge, num_graphs, hosts)
        if density:
            return labels, expected_density(p, state_labels, state_q, batch)
        return labels, expected(p, state_q, batch)
    if density:
        size = torch.zeros_like(q_f).index_add(0, labels, torch.ones_like(q_f))
        return labels, q_f / size[labels]
    return labels, q_f


__all__: List[str] = ["placed_charges", "bond_states", "expected_component_mean", "expected", "expected_density", "state_charges",
                      "window_bonds", "MAX_WINDOW_BONDS"]
