"""Per-atom input embeddings: element type and the charge and spin of the structure."""
from __future__ import annotations

import torch
from torch import nn

from .charges import bond_weights, covalent_radii
from .fragments import host_scores
from .graph import Graph
from .placement import placed_charges


class ElementIndex(nn.Module):
    """Maps atomic numbers to rows 0..len(elements)-1 of per-element tables; unknown → -1."""

    def __init__(self, elements: list[int]):
        super().__init__()
        table = torch.full((119,), -1, dtype=torch.long)
        table[torch.tensor(elements, dtype=torch.long)] = torch.arange(len(elements))
        self.register_buffer("table", table)

    def forward(self, numbers: torch.Tensor) -> torch.Tensor:
        return self.table[numbers]


class AtomEmbedding(nn.Module):
    """s_i = E[type_i] + W [Q_i, S_b] for atom i of structure b: (N,) -> (N, width).

    ``physics`` 2 (models built now): Q_i is the charge of atom i's bonded fragment
    (`mlip_attn.nn.charges.fragment_charges`: the structure's total charge goes whole to one
    fragment, every other fragment is neutral), so a neutral molecule far from an ion is
    embedded as neutral and E(A⁺ + B) = E(A⁺) + E(B) beyond the model's reach. For a
    structure that is one bonded fragment (a molecule) this is the structure's total charge,
    as before. ``physics`` 3 (models built now): inside the charged fragment the placement
    is continuous, the expectation over the states of its bonds in their window
    (`mlip_attn.nn.placement`), so an ion entering a bond window is no energy step; physics 2
    (model files written before it) places the charge discretely. ``physics`` 1 (model files
    written before both): Q_i = Q_b for every atom.
    S_b is the structure's spin, on every atom (a constant per atom: it does not couple
    fragments, but the spin of A + B is not split between them).
    """

    def __init__(self, num_elements: int, width: int, physics: int = 4):
        super().__init__()
        self.element = nn.Embedding(num_elements, width)
        self.charge_spin = nn.Linear(2, width, bias=False)
        self.fragment_charges = physics >= 2
        self.continuous = physics >= 3
        # per-atom charge density Q_f / N_f instead of Q_f (set by `Potential` for models with
        # an electrostatics block, whose charges carry Q: a Q on every atom of a periodic cell
        # is an extensive knob that extrapolates as N, measured in docs/electrostatics.md)
        self.charge_density = False
        # split structures (LAMMPS ranks): the atom count over every process (identity here;
        # the export swaps in an all-reduce), for the charge density of a split periodic cell
        self.sums = nn.Identity()
        self.register_buffer("radii", covalent_radii(), persistent=False)
        self.register_buffer("hosts", host_scores(physics), persistent=False)

    def atom_charges(self, graph: Graph) -> torch.Tensor:
        """Q_i (N,) e, the charge each atom is embedded with (see the class docstring)."""
        total = graph.charge.to(graph.positions.dtype)
        if self.charge_density and graph.owned >= 0:
            # a periodic cell split over processes (open boxes run in one): the electrostatics
            # block constrains charge cell-wide there, so Q spreads over every process's atoms
            n = self.sums(graph.positions.new_full((1,), float(graph.owned)))
            return (total[0] / n.clamp(min=1.0)).expand(graph.positions.shape[0])
        if self.fragment_charges and bool((total != 0).any()):
            if 0 <= graph.owned < graph.positions.shape[0]:
                raise RuntimeError("a charged structure needs all its atoms in one process "
                                   "without ghost copies: its charge is placed on one bonded "
                                   "fragment of the whole structure (physics ≥ 2)")
            i, j, w = bond_weights(graph, self.radii)
            periodic = graph.cell.reshape(graph.num_graphs, 9).abs().sum(dim=1) > 0
            placed = total
            if self.charge_density:  # periodic cells take the cell-wide share below: no work
                placed = torch.where(periodic, torch.zeros_like(total), total)
            _, q = placed_charges(graph.positions.shape[0], i, j, w, graph.numbers, graph.batch,
                                  graph.positions, placed, graph.num_graphs, self.hosts,
                                  self.continuous, self.charge_density)
            if self.charge_density:
                # periodic cells: Q over the cell (the block's cell-wide charge constraint)
                counts = torch.zeros_like(total).index_add(0, graph.batch, torch.ones_like(q))
                cell_wide = (total / counts.clamp(min=1.0))[graph.batch]
                return torch.where(periodic[graph.batch], cell_wide, q)
            return q
        if self.charge_density:
            counts = torch.zeros_like(total).index_add(0, graph.batch,
                                                      torch.ones_like(graph.positions[:, 0]))
            return (total / counts.clamp(min=1.0))[graph.batch]
        return total[graph.batch]

    def forward(self, species: torch.Tensor, graph: Graph) -> torch.Tensor:
        charge = self.atom_charges(graph).to(self.charge_spin.weight.dtype)
        state = torch.stack([charge, graph.spin[graph.batch].to(charge.dtype)], dim=1)  # (N, 2)
        return self.element(species) + self.charge_spin(state)
