"""`Potential`: embedding + backbone (+ global blocks) + per-element readout, conservative forces.

The forward takes tensors and returns a dict of tensors with no data-dependent Python control
flow, so it compiles with ``torch.jit.script`` for C++ (LAMMPS).
"""
from __future__ import annotations

import math
from typing import Dict, List, Tuple

import torch
from torch import nn

from ..attention.base import GlobalBlock
from ..attention.electrostatics import NoEnergyTerm
from ..data.neighbours import edge_vectors
from ..encoders.stack import EncoderStack, NoEncoders
from ..nn import ElementIndex, mlp
from ..nn.charges import bonded_pairs, covalent_radii, fragment_charges, fragment_labels, \
    bond_weights
from ..nn.fragments import host_scores
from ..nn.placement import bond_states, expected
from ..nn.graph import Graph
from ..nn.tails import fragment_tail_energies


class Potential(nn.Module):
    """Energy model. Per-atom energy E_i = scale[Z_i] · readout(s_i) + shift[Z_i] (eV).

    Args:
        backbone: a `mlip_attn.backbones.base.Backbone` (with its global blocks).
        elements: atomic numbers the model knows, in table order.
        cutoff: the local cutoff (Å) the neighbour list must use.
        model_config: the resolved ``model:`` section it was built from (saved in model files).
        shift/scale: initial per-element energy shift (eV, usually E0) and scale (eV).
        targets: names of extra per-structure scalar targets (e.g. HOMO, LUMO): predicted as
            mean + std · (structure mean of a per-atom MLP), returned as ``targets`` (B, T) in
            the targets' own units; ``target_mean``/``target_std`` initialise the affine map.
        classes: per-structure classification targets, name → number of classes C: logits
            from a head on the structure mean of the features, returned as ``class_logits``
            (B, ΣC), the targets' blocks in this order (`class_slices`).
        encoders: `mlip_attn.encoders.base.Encoder` modules whose features, projected into the
            width by a zero-initialised linear map, are added to the backbone's initial
            embedding (none: no extra modules, the model is unchanged).

    What the model can do, derived from its components (for metadata, checks and warnings):
    ``is_global`` (an atom's energy can depend on atoms beyond layers × cutoff), ``r_max`` (Å,
    the shortest reach of its global blocks; 0 when local or unlimited), ``separation`` (Å, max
    of the cutoff and every block's through-space reach: two fragments whose closest atoms are
    farther apart do not interact; inf for physics-1 global blocks), ``periodic``,
    ``conservative`` (False with direct forces), ``invariant`` (False for models that embed raw
    coordinates), ``smooth`` (False with encoders of the bond graph, whose features jump
    when a bond forms or breaks: the energy is then not continuous in MD). ``metadata`` holds
    what a model file stored about it (`load_model`).
    """

    __jit_ignored_attributes__ = ["model_config", "metadata"]

    def __init__(self, backbone: nn.Module, elements: List[int], cutoff: float,
                 model_config: dict | None = None, shift: List[float] | None = None,
                 scale: List[float] | None = None, targets: List[str] | None = None,
                 target_mean: List[float] | None = None, target_std: List[float] | None = None,
                 classes: Dict[str, int] | None = None, encoders: list | None = None):
        super().__init__()
        n = len(elements)
        width = backbone.width
        self.elements: List[int] = list(elements)
        self.cutoff = float(cutoff)
        self.model_config: dict = dict(model_config or {})
        self.metadata: dict = {}
        self.species_of = ElementIndex(elements)
        self.backbone = backbone
        blocks = [m for m in backbone.modules() if isinstance(m, GlobalBlock)]
        reaches = [b.reach for b in blocks if math.isfinite(b.reach)]
        if math.isfinite(getattr(backbone, "reach", math.inf)):  # a global backbone's reach
            reaches.append(float(backbone.reach))
        self.is_global = bool(backbone.is_global or blocks)
        self.r_max = float(min(reaches)) if reaches else 0.0
        # fragments whose closest atoms are farther apart than this do not interact (physics
        # 2; through-bond blocks follow bonds, which are shorter than the cutoff)
        spans = [b.through_space for b in blocks] + [getattr(backbone, "reach", 0.0)]
        self.separation = float(max([self.cutoff] + spans))
        self.periodic = bool(backbone.periodic and all(b.periodic for b in blocks))
        self.invariant = bool(backbone.invariant)
        self.direct_forces = bool(backbone.direct_forces)
        self.conservative = not self.direct_forces
        self.readout = mlp([width, width // 2, 1])
        self.shift = nn.Parameter(torch.tensor(shift if shift is not None else [0.0] * n,
                                               dtype=torch.get_default_dtype()))
        self.scale = nn.Parameter(torch.tensor(scale if scale is not None else [1.0] * n,
                                               dtype=torch.get_default_dtype()))
        self.force_head = mlp([width, width, 3]) if self.direct_forces else nn.Identity()
        self.target_names: List[str] = list(targets or [])
        self.num_targets = len(self.target_names)
        t = self.num_targets
        self.target_head = mlp([width, width // 2, t]) if t else nn.Identity()
        self.register_buffer("target_mean", torch.tensor(target_mean or [0.0] * t,
                                                         dtype=torch.get_default_dtype()))
        self.register_buffer("target_std", torch.tensor(target_std or [1.0] * t,
                                                        dtype=torch.get_default_dtype()))
        self.class_names: List[str] = list((classes or {}).keys())
        self.class_counts: List[int] = [int(c) for c in (classes or {}).values()]
        self.num_class_logits = int(sum(self.class_counts))
        self.class_head = (mlp([width, width // 2, self.num_class_logits])
                           if self.num_class_logits else nn.Identity())
        self.has_encoders = bool(encoders)
        if encoders:
            self.encoders = EncoderStack(list(encoders))
            self.encoder_projection = nn.Linear(self.encoders.dim, width, bias=False)
            nn.init.zeros_(self.encoder_projection.weight)
        else:
            self.encoders = NoEncoders()
            self.encoder_projection = nn.Identity()
        self.smooth = bool(not encoders or self.encoders.smooth)
        # physics 2: Coulomb + induced-dipole tails between charged fragments beyond the reach
        # (`mlip_attn.nn.tails`), with learned per-element polarisabilities α = softplus(θ) Å³
        # (none where a block already interacts at any distance: its separation is infinite)
        self.tails = int(self.model_config.get("physics", 2)) >= 2 and \
            math.isfinite(self.separation)
        # physics 3: the tails of the expected bond states inside a charged fragment
        # (`mlip_attn.nn.placement`), continuous where physics 2 steps when a bond forms
        self.continuous_placement = int(self.model_config.get("physics", 2)) >= 3
        if self.tails:
            self.tail_alpha = nn.Parameter(torch.full((n,), math.log(math.e - 1.0),
                                                      dtype=torch.get_default_dtype()))
        else:
            self.register_buffer("tail_alpha", torch.zeros(0), persistent=False)
        self.register_buffer("radii", covalent_radii().to(torch.get_default_dtype()),
                             persistent=False)
        self.register_buffer("hosts", host_scores(int(self.model_config.get("physics", 2)))
                             .to(torch.get_default_dtype()), persistent=False)
        # blocks whose real-space sums run over the model's neighbour list take its cutoff, and
        # a block with an explicit energy term (electrostatics) adds it from the final scalars
        for block in blocks:
            if hasattr(block, "use_cutoff"):
                try:
                    block.use_cutoff(self.cutoff)
                except ValueError as exc:
                    raise ValueError(f"model.attention.{exc}") from exc
        terms = [b.energy_term() for b in blocks if hasattr(b, "energy_term")]
        self.has_energy_term = bool(terms)
        self.energy_term = terms[-1] if terms else NoEnergyTerm()
        if terms and hasattr(getattr(backbone, "embedding", None), "charge_density"):
            backbone.embedding.charge_density = True   # its charges carry Q (embedding.py)

    def atomic_energies(self, positions: torch.Tensor, numbers: torch.Tensor, batch: torch.Tensor,
                        edge_index: torch.Tensor, shifts: torch.Tensor, cell: torch.Tensor,
                        charge: torch.Tensor, spin: torch.Tensor, owned: int = -1) -> torch.Tensor:
        """Per-atom energies (N,) eV. Shapes as in `Batch`; ``numbers`` must be known elements;
        ``owned`` as in `Graph` (the LAMMPS export passes the rank's local atom count)."""
        return self.energies_and_features(positions, numbers, batch, edge_index, shifts, cell,
                                          charge, spin, owned)[0]

    def energies_and_features(self, positions: torch.Tensor, numbers: torch.Tensor,
                              batch: torch.Tensor, edge_index: torch.Tensor, shifts: torch.Tensor,
                              cell: torch.Tensor, charge: torch.Tensor, spin: torch.Tensor,
                              owned: int = -1) -> Tuple[torch.Tensor, torch.Tensor]:
        """Per-atom energies (N,) eV and the backbone's scalar features (N, F)."""
        species = self.species_of(numbers)
        vectors = edge_vectors(positions, edge_index, shifts)
        num_graphs = charge.shape[0]
        encoded = self.encoders(positions, numbers, species, batch, num_graphs)
        if self.has_encoders:
            encoded = self.encoder_projection(encoded)
        graph = Graph(positions, numbers, batch, edge_index, vectors,
                      torch.linalg.norm(vectors, dim=1), shifts, cell, charge, spin, encoded,
                      num_graphs, owned)
        features = self.backbone(species, graph).scalars
        atomic = self.readout(features).squeeze(-1) * self.scale[species] + self.shift[species]
        if self.tails:
            atomic = atomic + self.tail_energies(graph, species)
        if self.has_energy_term:
            atomic = atomic + self.energy_term(features, graph)
        return atomic, features

    def tail_energies(self, graph: Graph, species: torch.Tensor) -> torch.Tensor:
        """Per-atom physical tail energies (N,) eV between charged fragments
        (`mlip_attn.nn.tails`); zero unless a structure carries a charge, and zero when the
        neighbour list crosses periodic boundaries (their electrostatics need an Ewald sum)."""
        charge = graph.charge.to(graph.positions.dtype)
        # (0 · α keeps the polarisabilities in the graph: every parameter gets a gradient)
        zero = torch.zeros_like(graph.positions[:, 0]) + 0.0 * self.tail_alpha.sum()
        if not bool((charge != 0).any()) or bool((graph.shifts != 0).any()):
            return zero
        n = graph.positions.shape[0]
        i, j = bonded_pairs(graph, self.radii)
        labels = fragment_labels(n, i, j)
        q_f = fragment_charges(labels, graph.numbers, graph.batch, charge, graph.num_graphs,
                               self.hosts, graph.positions)
        alpha = nn.functional.softplus(self.tail_alpha)[species]
        if self.continuous_placement:
            bi, bj, w = bond_weights(graph, self.radii)
            p, state_labels, state_q = bond_states(n, bi, bj, w, labels, q_f, graph.numbers,
                                                   graph.batch,
                                                   charge, graph.num_graphs, self.hosts)
            if p.shape[0] > 1:
                energies = [fragment_tail_energies(graph.positions, graph.batch, state_labels[s],
                                                   state_q[s], alpha, self.separation)
                            for s in range(p.shape[0])]
                return expected(p, torch.stack(energies), graph.batch)
        return fragment_tail_energies(graph.positions, graph.batch, labels, q_f, alpha,
                                      self.separation)

    def forward(self, positions: torch.Tensor, numbers: torch.Tensor, batch: torch.Tensor,
                edge_index: torch.Tensor, shifts: torch.Tensor, cell: torch.Tensor,
                charge: torch.Tensor, spin: torch.Tensor, compute_forces: bool = True,
                compute_stress: bool = False) -> Dict[str, torch.Tensor]:
        """Energy (B,) eV, atomic energies (N,) eV, forces (N,3) eV/Å = -dE/dr, and
        stress (B,3,3) eV/Å³ = (1/V) dE/dε (ASE sign) when asked for.

        ``cell`` (B,3,3) gives the stress volume. In training mode the graph is kept so that a
        force loss can be back-propagated.
        """
        num_graphs = charge.shape[0]
        strain = torch.zeros((num_graphs, 3, 3), dtype=positions.dtype, device=positions.device)
        gradient_forces = compute_forces and not self.direct_forces
        if gradient_forces or compute_stress:
            positions = positions.detach().requires_grad_(True)
        leaf_positions = positions
        if compute_stress:
            strain.requires_grad_(True)
            # apply a symmetric displacement ε to atoms and periodic shifts: r -> r (1 + ε)
            sym = 0.5 * (strain + strain.transpose(1, 2))
            positions = positions + torch.bmm(positions[:, None, :], sym[batch]).squeeze(1)
            shifts = shifts + torch.bmm(shifts[:, None, :], sym[batch[edge_index[0]]]).squeeze(1)
        # the cell strains too (explicit in reciprocal-space sums); its volume below does not
        strained_cell = cell + torch.bmm(cell, 0.5 * (strain + strain.transpose(1, 2)))
        atomic, features = self.energies_and_features(positions, numbers, batch, edge_index,
                                                      shifts, strained_cell, charge, spin)
        energy = torch.zeros(num_graphs, dtype=atomic.dtype, device=atomic.device)
        energy = energy.index_add(0, batch, atomic)
        out: Dict[str, torch.Tensor] = {"energy": energy, "energies": atomic}
        if compute_forces and self.direct_forces:
            out["forces"] = self.force_head(features)
        if self.num_targets > 0:
            out["targets"] = self.structure_targets(features, batch, num_graphs)
        if self.num_class_logits > 0:
            out["class_logits"] = self.structure_class_logits(features, batch, num_graphs)
        if gradient_forces or compute_stress:
            inputs: List[torch.Tensor] = [leaf_positions]
            if compute_stress:
                inputs.append(strain)
            grads = torch.autograd.grad([energy.sum()], inputs, create_graph=self.training,
                                        allow_unused=True)
            g_pos = grads[0]
            if g_pos is None:
                g_pos = torch.zeros_like(leaf_positions)
            if gradient_forces:
                out["forces"] = -g_pos
            if compute_stress:
                g_strain = grads[1]
                if g_strain is None:
                    g_strain = torch.zeros_like(strain)
                volume = torch.abs(torch.linalg.det(cell))
                out["stress"] = g_strain / volume[:, None, None]
        if not self.training:  # inference: hand back plain values, not autograd graphs
            for key in list(out.keys()):
                out[key] = out[key].detach()
        return out

    def structure_targets(self, features: torch.Tensor, batch: torch.Tensor, num_graphs: int
                          ) -> torch.Tensor:
        """Per-structure targets (B, T) in their units: affine map of a per-atom head's mean."""
        per_atom = self.target_head(features)                              # (N, T)
        sums = per_atom.new_zeros((num_graphs, self.num_targets)).index_add(0, batch, per_atom)
        counts = torch.bincount(batch, minlength=num_graphs).to(per_atom.dtype)
        return self.target_mean + self.target_std * sums / counts[:, None]

    def structure_class_logits(self, features: torch.Tensor, batch: torch.Tensor,
                               num_graphs: int) -> torch.Tensor:
        """Class logits (B, ΣC) from a head on the structure mean of the features (N, F)."""
        sums = features.new_zeros((num_graphs, features.shape[1])).index_add(0, batch, features)
        counts = torch.bincount(batch, minlength=num_graphs).to(features.dtype)
        return self.class_head(sums / counts.clamp(min=1.0)[:, None])

    @torch.jit.unused
    def class_slices(self) -> Dict[str, Tuple[int, int]]:
        """Class target name → (start, end) of its logits in ``class_logits``."""
        out, start = {}, 0
        for name, count in zip(self.class_names, self.class_counts):
            out[name] = (start, start + count)
            start += count
        return out

    @torch.jit.ignore
    def predict(self, batch, compute_forces: bool = True, compute_stress: bool = False
                ) -> Dict[str, torch.Tensor]:
        """Run on a `mlip_attn.data.Batch` (already on the model's device and dtype)."""
        return self(batch.positions, batch.numbers, batch.batch, batch.edge_index, batch.shifts,
                    batch.cell, batch.charge, batch.spin, compute_forces, compute_stress)
