"""Latent charges for the electrostatics block: charge flows only between atoms within a finite
reach, so that one rule serves isolated molecules and periodic condensed phases.

For a structure with N atoms, scalars s (N, F) and a neighbour list (edges i ← j, lengths r_ij,
images included in periodic cells), the charges (N,) in e are

    q_i = Q_f(i) / N_f(i)  +  Σ_j w_ij (a_j − a_i),     a_i = MLP(s_i) + χ_{Z_i}

- w_ij = switch(r_ij; r_q/2, r_q) (C², 1 below r_q/2, exactly 0 beyond the reach r_q; the
  model cutoff by default): charge moves only along edges closer than r_q, in amounts that
  vanish smoothly as a pair leaves the reach. The flow term is antisymmetric in (i, j), so it
  adds nothing to the charge of any connected set of atoms.
- fragments: connected components of the edges with w > 0 (`fragment_labels`). Atoms of two
  fragments are ≥ r_q apart: no charge flows between them, at any distance.
- Q_f: the structure's total charge Q goes whole to one fragment (`fragment_charges`, the
  electronegativity rule of issue 25); every other fragment is neutral. Σ_{i∈f} q_i = Q_f
  exactly.
- a_i: a latent "electronegativity" (e): an MLP of the atom's scalars (PyTorch's default
  random start, so neutral structures do not start at the stationary point q = 0 of the
  Coulomb energy) plus a learned per-element offset χ_Z, started at ``en_scale`` × the Pauling
  electronegativity (charge flows from Na to Cl from the first step).

What this gives:
- isolated molecules: a neutral molecule ≥ r_q from a charged one stays exactly neutral, and
  its charges do not depend on the other molecule at all (separable charges);
- periodic cells: a condensed phase is one fragment (its atoms are closer than r_q), so ions
  carry charge (ions in water, a salt) and a charged cell spreads Q over the cell;
- smoothness: q is C² in the positions while the fragments stay the same. ``continuous``
  (physics 3): Q_f/N_f is the expectation over the states of the charged fragment's edges in
  their window r_q/2 < r < r_q (`mlip_attn.nn.placement`), so it does not jump when a charged
  fragment splits; otherwise (physics 2) it jumps there. A neutral structure's fragments are
  all neutral: its charges never jump.

Cost O(E), one scatter; no linear solve (unlike split-charge equilibration, whose bond-space
solve is O(M³) per structure and impractical for condensed phases with ~40 pairs per atom).
"""
from typing import List

import torch
from torch import Tensor, nn

from .charges import pauling_electronegativity
from .fragments import host_scores
from .placement import placed_charges
from .graph import Graph
from .mlp import mlp
from .switching import switch

EN_SCALE = 0.05  # e per unit of Pauling electronegativity: Δχ(Na, Cl) = 2.23 → 0.11 e per pair


class FlowCharges(nn.Module):
    """Charges q (N,) e from scalars (N, F): local flow within ``reach`` Å plus the fragment
    charge (module docstring). ``reach`` ≤ 0: take the model cutoff (`use_cutoff`)."""

    reach: float
    continuous: bool

    def __init__(self, width: int, reach: float = 0.0, en_scale: float = EN_SCALE,
                 physics: int = 2):
        super().__init__()
        self.reach = float(reach)
        self.continuous = physics >= 3
        self.net = mlp([width, width, 1])
        self.offset = nn.Parameter(en_scale * pauling_electronegativity().float())
        self.register_buffer("hosts", host_scores(physics), persistent=False)
        # split structures (LAMMPS ranks): per-structure sums over this process's owned atoms
        # in, sums over every process out (identity here; the export swaps in an all-reduce)
        self.sums = nn.Identity()

    @torch.jit.unused
    def use_cutoff(self, cutoff: float) -> None:
        if self.reach <= 0.0 or self.reach > cutoff:
            self.reach = float(cutoff)

    def weights(self, graph: Graph) -> Tensor:
        """w_ij (E,) on the neighbour list's edges."""
        return switch(graph.lengths, 0.5 * self.reach, self.reach)

    def latent(self, scalars: Tensor, graph: Graph) -> Tensor:
        """a (N,) e: the latent electronegativity of every atom."""
        return self.net(scalars).squeeze(-1) + self.offset.to(scalars.dtype)[graph.numbers]

    def forward(self, scalars: Tensor, graph: Graph) -> Tensor:
        return self.flow(self.latent(scalars, graph), graph)

    def cell_constrained(self, a: Tensor, graph: Graph) -> Tensor:
        """q_i = −a_i + (Q_b + Σ_{j∈b} a_j) / n_b (N,) e: one constraint per structure; a
        split structure (``graph.owned`` ≥ 0) sums its owned atoms and completes the sums
        through ``sums``."""
        if graph.owned >= 0:
            own = a[:graph.owned]
            part = self.sums(torch.stack([own.sum(), torch.ones_like(own).sum()]))
            return -a + (graph.charge[0].to(a.dtype) + part[0]) / part[1].clamp(min=1.0)
        b = graph.num_graphs
        sums = a.new_zeros(b).index_add(0, graph.batch, a)
        counts = a.new_zeros(b).index_add(0, graph.batch, torch.ones_like(a)).clamp(min=1.0)
        return -a + ((graph.charge.to(a.dtype) + sums) / counts)[graph.batch]

    def flow(self, a: Tensor, graph: Graph) -> Tensor:
        """The flow rule's charges (N,) e from the latent a (N,)."""
        return self.flow_with(a, graph, graph.charge.to(a.dtype))

    def flow_with(self, a: Tensor, graph: Graph, charge: Tensor) -> Tensor:
        """The flow rule's charges (N,) e from the latent a (N,) for total charges ``charge``
        (B,) e."""
        if graph.owned >= 0:
            raise RuntimeError("the 'flow' charge rule places a structure's charge on one "
                               "fragment of the whole structure: it runs in one process "
                               "(charges: auto splits periodic cells over ranks)")
        i, j = graph.edge_index[0], graph.edge_index[1]
        w = self.weights(graph)
        n = a.shape[0]
        flow = torch.zeros_like(a).index_add(0, i, w * (a[j] - a[i]))
        _, q0 = placed_charges(n, i, j, w, graph.numbers, graph.batch, graph.positions,
                               charge, graph.num_graphs, self.hosts, self.continuous, True)
        return q0 + flow


class CellOrFragmentCharges(FlowCharges):
    """``auto``: periodic structures (nonzero cell) take one cell-wide constraint,
    q_i = −a_i + (Q_b + Σ_{j∈b} a_j) / n_b, so a charged defect keeps the charge its
    neighbours do not compensate (measured: with the flow rule a vacancy is locally neutral
    and its energy does not follow the box size); isolated structures take the flow rule
    (`FlowCharges`: no charge between fragments ≥ the reach apart). Same latent a_i (larger a:
    more negative charge in both)."""

    def forward(self, scalars: Tensor, graph: Graph) -> Tensor:
        a = self.latent(scalars, graph)
        cell = self.cell_constrained(a, graph)
        if graph.owned >= 0:   # split structures are periodic cells (LAMMPS refuses others)
            return cell
        periodic = graph.cell.reshape(graph.num_graphs, 9).abs().sum(dim=1) > 0
        # periodic cells take the cell-wide charges: their flow part is computed neutral
        charge = torch.where(periodic, torch.zeros_like(graph.charge), graph.charge).to(a.dtype)
        flow = self.flow_with(a, graph, charge)
        return torch.where(periodic[graph.batch], cell, flow)


class UniformCharges(nn.Module):
    """The earlier rule, kept for comparison (docs/electrostatics.md): q̃ = MLP(s) and
    q_i = q̃_i + (Q_b − Σ_{j∈b} q̃_j) / n_b over the whole structure (SpookyNet's uniform
    correction; charge leaks between fragments at any distance)."""

    def __init__(self, width: int):
        super().__init__()
        self.net = mlp([width, width, 1])
        self.sums = nn.Identity()   # split structures: as `FlowCharges.sums`

    @torch.jit.unused
    def use_cutoff(self, cutoff: float) -> None:
        pass

    def forward(self, scalars: Tensor, graph: Graph) -> Tensor:
        raw = self.net(scalars).squeeze(-1)
        if graph.owned >= 0:   # one structure split over processes: owned atoms' sums, completed
            own = raw[:graph.owned]
            part = self.sums(torch.stack([own.sum(), torch.ones_like(own).sum()]))
            return raw + (graph.charge[0].to(raw.dtype) - part[0]) / part[1].clamp(min=1.0)
        b = graph.num_graphs
        sums = raw.new_zeros(b).index_add(0, graph.batch, raw)
        counts = raw.new_zeros(b).index_add(0, graph.batch, torch.ones_like(raw)).clamp(min=1.0)
        return raw + ((graph.charge.to(raw.dtype) - sums) / counts)[graph.batch]


CHARGE_RULES = {"flow": FlowCharges, "auto": CellOrFragmentCharges, "uniform": UniformCharges}


def charge_model(rule: str, width: int, reach: float = 0.0, en_scale: float = EN_SCALE,
                 physics: int = 2):
    """A charge model by name: ``flow`` (`FlowCharges`), ``auto`` (`CellOrFragmentCharges`)
    or ``uniform`` (`UniformCharges`); ``physics``: the model's physics version (3: the
    continuous fragment placement, 4: the physics-4 cation host rule)."""
    if rule == "flow":
        return FlowCharges(width, reach, en_scale, physics)
    if rule == "auto":
        return CellOrFragmentCharges(width, reach, en_scale, physics)
    if rule == "uniform":
        return UniformCharges(width)
    raise ValueError(f"charges: {rule!r} is not one of {sorted(CHARGE_RULES)}")


__all__: List[str] = ["FlowCharges", "CellOrFragmentCharges", "UniformCharges", "charge_model", "EN_SCALE"]
