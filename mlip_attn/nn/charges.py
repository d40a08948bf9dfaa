"""Charges where they physically sit: bonded fragments, integer fragment charges, and split-charge
equilibration (charge flows only along bonds).

Why: a total charge Q added to every atom (the old embedding) or spread by one constraint
Σ_i q_i = Q over the whole structure (charge equilibration, 4G-HDNNP) puts fractional charge on
every fragment, however far: a neutral molecule 100 Å from a cation carries part of its charge
and its energy changes by eVs. Split-charge equilibration (SQE: Nistor, Pignedoli, Kopp,
Rappe, J. Chem. Phys. 125, 094108, 2006) lets charge move only along bonds, so a fragment that
is not bonded to another keeps its charge exactly.

Definitions (all per structure b of a batch; N atoms, F features, C charge channels):

- **bonds**: atom pairs i < j of the neighbour list with a smooth covalent weight
  w_ij = smoothstep of r_ij / (R_i + R_j) from 1 below ``bond_low`` to 0 above ``bond_high``
  (covalent radii R, ASE's table; `bond_weights`). C² in the positions.
- **fragments**: connected components of the bonds with w > 0 (`fragment_labels`); atoms of
  different fragments are never bonded.
- **fragment charges**: the structure's total charge Q_b goes, whole, to one fragment: for
  Q_b > 0 the one with the lowest mean Pauling electronegativity, for Q_b < 0 the highest (ties:
  the larger fragment, then the one whose centroid is closest to the structure's, so the
  choice does not depend on the atom order); every other fragment is neutral
  (`fragment_charges`). One fragment (every training molecule): Q_f = Q_b.
- **split charges**: q = q0 + T (w ∘ π) with q0_i = Q_f/N_f (uniform in the fragment),
  T the bond incidence matrix (+1 on i, −1 on j) and π (M,) one charge-transfer variable per
  bond, minimising

      E(q, π) = Σ_i χ_i q_i + ½ qᵀ A q + ½ κ Σ_b π_b²,   A = diag(J) + k_e Γ ∘ S

  with χ_i (eV/e) and J_i > 0 (eV/e²) from the atom's features, Γ the Coulomb interaction of
  Gaussian charges of width σ (erf(r/2σ)/r, self term 1/(σ√π)), S_ij = switch(r_ij; r_max/2,
  r_max) (C²; no Coulomb coupling in the solve beyond ``r_max``) and κ > 0 (eV/e²) the bond
  hardness. The minimiser solves (W Tᵀ A T W + κ I) π = −W Tᵀ (χ + A q0), W = diag(w): one
  Cholesky factorisation per structure, C right-hand sides. Since p_b = w_b π_b, the charge a
  bond can carry goes to zero with its weight, smoothly (no 1/w, no ε).

Guarantees (tests/test_charges.py): Σ_{i ∈ f} q_i = Q_f for every fragment, exactly (to
round-off), whatever the weights; a fragment's charges do not depend on atoms of other
fragments farther than ``r_max`` (separability); charges are smooth in the positions while no
bond forms or breaks in a charged fragment. Cannot: decide by energy which of two distant
fragments carries the charge (the electronegativity rule does, or put the charge yourself:
compute the fragments apart); keep charged fragments continuous when they bond (the fragment
charge jumps then: a real charge-transfer event that the model only sees as a new fragment).

API (also for periodic electrostatics, issue 26)::

    model = SplitCharges(width=F, channels=1, r_max=10.0)
    q = model(s, graph)          # s (N, F) per-atom scalars, graph: `mlip_attn.nn.graph.Graph`
                                 # (positions, numbers, batch, edge_index, lengths, charge (B,))
                                 # -> q (N, C) in e, Σ over each fragment = its integer charge
    phi = model.potential(q, graph)   # (N, C), Σ_j Γ_ij S_ij q_j in e/Å (times k_e: volts)

`SplitCharges.forward` takes the positions of one image per atom (isolated structures); for a
periodic cell the bonds come from the periodic neighbour list (images included) and the
Coulomb part of A should come from an Ewald sum instead of Γ (pass ``coulomb=False``).
"""
import math
from typing import List, Tuple

import torch
from torch import Tensor, nn

from .fragments import fragment_charges, fragment_labels, host_scores, pauling_electronegativity
from .graph import Graph, rank_in_segment
from .placement import bond_states, expected_component_mean, placed_charges
from .switching import reach_switch, smoothstep

COULOMB = 14.399645  # k_e, eV·Å/e²
HARDNESS_MIN = 0.5   # eV/e²: keeps A positive definite for any positions
BOND_LOW, BOND_HIGH = 1.15, 1.35  # bond window, in units of R_i + R_j


def covalent_radii() -> Tensor:
    """Covalent radii (Å) by atomic number, (119,) (ASE's table, Cordero et al. 2008)."""
    from ase.data import covalent_radii as table
    return torch.tensor(table, dtype=torch.float64)


def smooth_bond_weights(lengths: Tensor, numbers: Tensor, edge_index: Tensor, radii: Tensor,
                        low: float, high: float) -> Tensor:
    """w_ij (E,) ∈ [0, 1]: 1 for r_ij ≤ low·(R_i + R_j), 0 for r_ij ≥ high·(R_i + R_j), a
    C² smoothstep between (so energies and forces stay continuous when bonds change)."""
    reference = radii[numbers[edge_index[0]]] + radii[numbers[edge_index[1]]]
    return smoothstep((lengths / reference - low) / (high - low))


def bond_weights(graph: Graph, radii: Tensor, low: float = BOND_LOW, high: float = BOND_HIGH
                 ) -> Tuple[Tensor, Tensor, Tensor]:
    """Bonds as unique pairs: (i, j, w) with i < j, w > 0 (M,) — one per pair and periodic
    image of the neighbour list (a directed list holds each pair twice; the i < j half is kept)."""
    i, j = graph.edge_index[0], graph.edge_index[1]
    w = smooth_bond_weights(graph.lengths, graph.numbers, graph.edge_index,
                            radii.to(graph.lengths.dtype), low, high)
    keep = torch.nonzero((w > 0) & (i < j)).squeeze(1)
    return i[keep], j[keep], w[keep]


def bonded_pairs(graph: Graph, radii: Tensor, low: float = BOND_LOW, high: float = BOND_HIGH
                 ) -> Tuple[Tensor, Tensor]:
    """(i, j) of every edge of the neighbour list with w_ij > 0, in whichever direction(s) the
    list holds it (enough for `fragment_labels`; a half list, as LAMMPS may pass, works too)."""
    w = smooth_bond_weights(graph.lengths, graph.numbers, graph.edge_index,
                            radii.to(graph.lengths.dtype), low, high)
    keep = torch.nonzero(w > 0).squeeze(1)
    return graph.edge_index[0][keep], graph.edge_index[1][keep]


def pad_structures(x: Tensor, batch: Tensor, num_graphs: int) -> Tuple[Tensor, Tensor, Tensor]:
    """Per-atom rows x (N, …) → (B, n_max, …) zero-padded, with ``valid`` (B, n_max) bool and
    each atom's rank in its structure (N,)."""
    counts = torch.bincount(batch, minlength=num_graphs)
    n_max = int(counts.max()) if batch.shape[0] > 0 else 0
    rank = rank_in_segment(batch, counts)
    shape = [num_graphs, n_max] + list(x.shape[1:])
    padded = x.new_zeros(shape).index_put((batch, rank), x)
    valid = torch.zeros((num_graphs, n_max), dtype=torch.bool, device=x.device).index_put(
        (batch, rank), torch.ones_like(batch, dtype=torch.bool))
    return padded, valid, rank


def gaussian_coulomb(positions: Tensor, valid: Tensor, sigma: Tensor, r_max: float = 0.0) -> Tensor:
    """Γ without its diagonal: γ_ij = erf(r_ij / 2σ) / r_ij (1/Å) for real pairs i ≠ j, zero
    elsewhere; positions (B, n, 3) Å, valid (B, n). ``r_max`` > 0 multiplies by the C² switch
    from r_max/2 to r_max (zero beyond). Smooth in the positions (masked entries take a
    constant distance, so no NaN reaches the gradient)."""
    diff = positions.unsqueeze(2) - positions.unsqueeze(1)
    r2 = (diff * diff).sum(-1)
    n = positions.shape[1]
    eye = torch.eye(n, dtype=torch.bool, device=positions.device).unsqueeze(0)
    pair = valid.unsqueeze(2) & valid.unsqueeze(1) & ~eye
    r = torch.sqrt(torch.where(pair, r2, torch.ones_like(r2)))
    gamma = torch.erf(r / (2.0 * sigma)) / r
    if r_max > 0.0:
        gamma = gamma * reach_switch(r, r_max)
    return torch.where(pair, gamma, torch.zeros_like(r2))


def equilibrate(chi: Tensor, hardness: Tensor, gamma: Tensor, valid: Tensor, total: Tensor,
                sigma: Tensor, coulomb: float = COULOMB) -> Tensor:
    """Charges q (B, n, C) minimising Σχq + ½qᵀAq under Σ_i q_ic = Q_b (charge equilibration
    over the whole structure, `mlip_attn.attention.charge_equilibration`'s first form).

    chi (B, n, C) eV/e, hardness J (B, n) eV/e² > 0, gamma (B, n, n) from `gaussian_coulomb`,
    valid (B, n), total charge Q (B,) e, σ Å, k_e ``coulomb`` (eV·Å/e²). Padding rows get A = 1,
    χ = 0 and drop out of the constraint, so their charges are 0 and they change nothing."""
    self_term = coulomb / (sigma * math.sqrt(math.pi))
    diagonal = torch.where(valid, hardness + self_term, torch.ones_like(hardness))
    a = coulomb * gamma + torch.diag_embed(diagonal)
    ones = valid.to(chi.dtype).unsqueeze(-1)                             # (B, n, 1)
    rhs = torch.cat([chi * ones, ones], dim=-1)                          # (B, n, C + 1)
    solved = torch.cholesky_solve(rhs, torch.linalg.cholesky(a))         # A⁻¹ [χ, 1]
    c = chi.shape[-1]
    a_chi, a_one = solved[..., :c], solved[..., c:]
    lam = (total.unsqueeze(-1) + a_chi.sum(1)) / a_one.sum(1)            # (B, C)
    return -a_chi + lam.unsqueeze(1) * a_one


def split_charges(chi: Tensor, a: Tensor, q0: Tensor, incidence: Tensor, kappa: Tensor) -> Tensor:
    """Split-charge equilibration for padded structures: q (B, n, C) = q0 + T π* with
    (Tᵀ A T + κ I) π = −Tᵀ (χ + A q0).

    chi (B, n, C) eV/e, a (B, n, n) eV/e² (positive definite), q0 (B, n) e, incidence
    T (B, n, m): the weighted incidence T W of the bonds (+w on i, −w on j; zero columns for
    padding bonds), κ > 0 eV/e². Padding bonds get π = 0."""
    tt = incidence.transpose(1, 2)                                       # (B, m, n)
    m = incidence.shape[2]
    lhs = tt @ a @ incidence + kappa * torch.eye(m, dtype=a.dtype, device=a.device)
    rhs = -tt @ (chi + (a @ q0.unsqueeze(-1)))                           # (B, m, C)
    pi = torch.cholesky_solve(rhs, torch.linalg.cholesky(lhs))
    return q0.unsqueeze(-1) + incidence @ pi


class SplitCharges(nn.Module):
    """Per-atom charges from features by split-charge equilibration (module docstring).

    Args:
        width: F, the per-atom scalar features' channels.
        channels: C charge distributions (own χ each, shared J, κ, A).
        r_max: Å, reach of the Coulomb coupling inside the solve (C² switch from r_max/2);
            0 = no Coulomb coupling (only hardness and bonds).
        sigma: Å, width of the Gaussian charges.
        kappa: eV/e², initial bond hardness (learned, kept positive).
        coulomb: couple the charges by Coulomb inside the solve.
        physics: the model's physics version: from 3, q0 is the expected fragment share over
            the bond states of the charged fragment (`mlip_attn.nn.placement`), continuous
            when a bond forms; from 4, a cation's charge goes by the physics-4 host rule
            (`mlip_attn.nn.fragments`).

    ``forward(s (N, F), graph) -> q (N, C)`` e; ``potential(q, graph) -> φ (N, C)`` e/Å.
    A fresh module has χ = 0, so its charges are q0 (the fragment charge spread evenly).
    """

    channels: int
    r_max: float
    coulomb: bool
    k_e: float
    hardness_min: float
    continuous: bool

    def __init__(self, width: int, channels: int = 1, r_max: float = 10.0, sigma: float = 1.0,
                 kappa: float = 0.5, coulomb: bool = True, physics: int = 2):
        super().__init__()
        self.continuous = physics >= 3
        self.channels = int(channels)
        self.r_max = float(r_max)
        self.coulomb = bool(coulomb) and r_max > 0
        self.k_e = COULOMB
        self.hardness_min = HARDNESS_MIN
        self.electronegativity = nn.Linear(width, channels)
        nn.init.zeros_(self.electronegativity.weight)
        nn.init.zeros_(self.electronegativity.bias)
        self.hardness = nn.Linear(width, 1)
        nn.init.zeros_(self.hardness.weight)
        nn.init.constant_(self.hardness.bias, math.log(math.e - 1.0))  # softplus = 1 eV/e²
        self.log_sigma = nn.Parameter(torch.tensor(math.log(sigma)))
        self.log_kappa = nn.Parameter(torch.tensor(math.log(kappa)))
        self.register_buffer("radii", covalent_radii(), persistent=False)
        self.register_buffer("hosts", host_scores(physics), persistent=False)

    def fragments(self, graph: Graph) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Bonds (i, j, w) with i < j, fragment labels (N,) and each atom's share of its
        fragment's charge q0 (N,) e (Q_f/N_f; ``continuous``: its expectation over bond
        states)."""
        i, j, w = bond_weights(graph, self.radii)
        labels, q0 = placed_charges(graph.positions.shape[0], i, j, w, graph.numbers,
                                    graph.batch, graph.positions,
                                    graph.charge.to(graph.positions.dtype), graph.num_graphs,
                                    self.hosts, self.continuous, True)
        return i, j, w, labels, q0

    def shifted(self, x: Tensor, graph: Graph) -> Tensor:
        """x (N, C) shifted so that every fragment carries its charge: q = x − mean_f(x) + q0
        (SpookyNet's correction per fragment; ``continuous``: the expectation over bond states
        of the state's components, so the shift does not jump when a bond forms)."""
        i, j, w, labels, q0 = self.fragments(graph)
        if self.continuous:
            charge = graph.charge.to(graph.positions.dtype)
            q_f = fragment_charges(labels, graph.numbers, graph.batch, charge, graph.num_graphs,
                                   self.hosts, graph.positions)
            p, state_labels, _ = bond_states(graph.positions.shape[0], i, j, w, labels, q_f,
                                             graph.numbers, graph.batch, charge,
                                             graph.num_graphs, self.hosts)
            return x - expected_component_mean(p, state_labels, x, graph.batch) \
                + q0.to(x.dtype).unsqueeze(1)
        ones = torch.ones_like(x[:, 0])
        size = torch.zeros_like(ones).index_add(0, labels, ones)
        sums = torch.zeros_like(x).index_add(0, labels, x)
        return x - sums[labels] / size[labels].unsqueeze(1) + q0.to(x.dtype).unsqueeze(1)

    def forward(self, s: Tensor, graph: Graph) -> Tensor:
        dtype = s.dtype
        batch, b = graph.batch, graph.num_graphs
        i, j, w, labels, q0 = self.fragments(graph)
        sigma = torch.exp(self.log_sigma).to(dtype)
        kappa = torch.exp(self.log_kappa).to(dtype)
        positions, valid, rank = pad_structures(graph.positions, batch, b)
        hardness = self.hardness_min + nn.functional.softplus(self.hardness(s)).squeeze(-1)
        if self.coulomb:
            gamma = self.k_e * gaussian_coulomb(positions, valid, sigma, self.r_max)
            self_term = self.k_e / (sigma * math.sqrt(math.pi))
        else:
            gamma = positions.new_zeros((b, positions.shape[1], positions.shape[1]))
            self_term = torch.zeros_like(sigma)
        diag, _, _ = pad_structures(hardness + self_term, batch, b)
        a = gamma + torch.diag_embed(torch.where(valid, diag, torch.ones_like(diag)))
        chi, _, _ = pad_structures(self.electronegativity(s), batch, b)
        q0p, _, _ = pad_structures(q0, batch, b)
        bond_batch = batch[i]
        bond_counts = torch.bincount(bond_batch, minlength=b)
        m_max = int(bond_counts.max()) if i.shape[0] > 0 else 0
        if m_max == 0:
            return q0p.unsqueeze(-1).expand(-1, -1, self.channels)[batch, rank]
        bond_rank = rank_in_segment(bond_batch, bond_counts)
        t = positions.new_zeros((b, positions.shape[1], m_max))
        t = t.index_put((bond_batch, rank[i], bond_rank), w, accumulate=True)
        t = t.index_put((bond_batch, rank[j], bond_rank), -w, accumulate=True)
        q = split_charges(chi, a, q0p, t, kappa)
        return q[batch, rank]

    def potential(self, q: Tensor, graph: Graph) -> Tensor:
        """φ_i = Σ_{j≠i} γ_ij S_ij q_j (N, C) in e/Å: the switched Coulomb potential of the other
        charges (zero beyond ``r_max``)."""
        batch, b = graph.batch, graph.num_graphs
        positions, valid, rank = pad_structures(graph.positions, batch, b)
        sigma = torch.exp(self.log_sigma).to(q.dtype)
        gamma = gaussian_coulomb(positions, valid, sigma, self.r_max)
        qp, _, _ = pad_structures(q, batch, b)
        return torch.bmm(gamma, qp)[batch, rank]


__all__: List[str] = ["SplitCharges", "bond_weights", "bonded_pairs", "fragment_labels", "fragment_charges",
                      "split_charges", "equilibrate", "gaussian_coulomb", "pad_structures",
                      "smooth_bond_weights", "covalent_radii", "pauling_electronegativity",
                      "COULOMB"]
