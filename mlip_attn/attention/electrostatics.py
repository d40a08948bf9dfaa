"""Electrostatics: learned per-atom charges, their Coulomb energy (Ewald or PME in periodic
cells, a direct sum for isolated structures) and the potential φ they create, fed back to the
scalars.

Why: in ionic and polar condensed phases (salts, electrolytes, interfaces, water) the energy
contains Σ q_i q_j / r_ij to every distance; a local model truncates it at its receptive field.
As in the latent Ewald summation (LES: Cheng, 2024, from its paper) and SpookyNet (Unke et
al. 2021) the charges are latent: predicted from each atom's scalars and learned from energies
and forces alone, with no charge labels.

Two parts, both built from `mlip_attn.nn.coulomb.Coulomb` (k_e = 14.399645 eV·Å/e²):

- the block beside each layer (``attention: {type: electrostatics}``): charges q (N,) from the
  layer's scalars by a `ChargeHead`, φ (N,) e/Å at every atom, then q, k_e φ / (eV/e) and
  k_e q φ / eV reach the scalars through a zero-initialised linear map;
- the energy term (`ElectrostaticEnergy`, which `mlip_attn.models.potential.Potential` adds
  when a model has such a block): charges from the *final* scalars and
  E_i = ½ k_e q_i φ_i added to every atom's energy, so E(structure) gains the exact Coulomb
  energy of those charges — the physical 1/r tail at every distance, in every periodic image.

The branch into the scalars starts at zero (as every global block's), but the charge heads
start random: a fresh model's energy already contains the Coulomb energy of random charges
(of ~0.1–1 e), so, unlike the attention blocks, a fresh electrostatics model is not the local
model. Zero charges are a stationary point of the Coulomb energy (`ChargeHead`).

Periodic cells (nonzero cell) use the tin-foil Ewald sum with a neutralising background for a
net charge; the real-space part runs over the model's own neighbour list, with its cutoff
setting the splitting (`Coulomb`). Isolated structures (zero cell) take the direct sum. Forces
and stress by autograd. Costs: Ewald O(N·K) per structure; PME (torch-pme) O(N log N).
"""
import math
from typing import Final, Literal, Optional, Tuple

import torch
from torch import Tensor, nn

from ..nn.coulomb import COULOMB, Coulomb
from ..nn.graph import Features, Graph
from ..nn.mlp import mlp
from ..registry import GLOBAL_BLOCKS, PositiveFloat
from .base import GlobalBlock, LocalSums


class ChargeHead(nn.Module):
    """Per-atom charges from scalars, summing exactly to each structure's total charge.

    scalars s (N, F), batch (N,), total charge Q (B,) e → q (N,) e:

        q̃_i = MLP(s_i),   q_i = q̃_i + (Q_b − Σ_{j∈b} q̃_j) / n_b

    (the uniform correction of SpookyNet). The MLP starts with PyTorch's default (random)
    initialisation, not at zero: the Coulomb energy ½ qᵀAq is quadratic in the charges, so at
    q = 0 its gradient with respect to them vanishes: zero-initialised charges of neutral
    structures get no gradient (only charged structures, where q starts at Q_b / n_b, move
    them). Swappable: any module with this
    forward (e.g. a charge model that lets charge flow only along bonds) can replace it.
    """

    def __init__(self, width: int):
        super().__init__()
        self.net = mlp([width, width, 1])
        self.sums = LocalSums()   # split structures: Σ q̃ and n over every process

    def forward(self, scalars: Tensor, batch: Tensor, total: Tensor, owned: int = -1) -> Tensor:
        raw = self.net(scalars).squeeze(-1)
        if owned >= 0:   # one structure split over processes: owned atoms' sums, completed
            part = self.sums(torch.stack([raw[:owned].sum(), torch.ones_like(raw[:owned]).sum()]))
            return raw + (total[0].to(raw.dtype) - part[0]) / part[1].clamp(min=1.0)
        b = total.shape[0]
        sums = raw.new_zeros(b).index_add(0, batch, raw)
        counts = raw.new_zeros(b).index_add(0, batch, torch.ones_like(raw)).clamp(min=1.0)
        return raw + ((total.to(raw.dtype) - sums) / counts)[batch]


def default_smearing(cutoff: float, accuracy: float) -> float:
    """The widest Gaussian charge (Å) whose overlap the real-space cutoff still contains."""
    return cutoff / (2.0 * math.sqrt(-math.log(accuracy)))


class ElectrostaticEnergy(nn.Module):
    """Coulomb energy per atom E_i = ½ k_e q_i φ_i (N,) eV of charges from the final scalars
    (N, F) (a `ChargeHead`), for every structure of a graph."""

    k_e: Final[float]

    def __init__(self, width: int, coulomb: Coulomb):
        super().__init__()
        self.charges = ChargeHead(width)
        self.coulomb = coulomb
        self.k_e = COULOMB

    def charges_and_potential(self, scalars: Tensor, graph: Graph) -> Tuple[Tensor, Tensor]:
        """Charges q (N,) e and potentials φ (N,) e/Å."""
        q = self.charges(scalars, graph.batch, graph.charge, graph.owned)
        phi = self.coulomb(q, graph.positions, graph.cell, graph.batch, graph.edge_index,
                           graph.lengths, graph.num_graphs, graph.owned)
        return q, phi

    def forward(self, scalars: Tensor, graph: Graph) -> Tensor:
        q, phi = self.charges_and_potential(scalars, graph)
        return 0.5 * self.k_e * q * phi


class NoEnergyTerm(nn.Module):
    """Stands in where a model has no explicit energy term (zeros, TorchScript-typed)."""

    def forward(self, scalars: Tensor, graph: Graph) -> Tensor:
        return torch.zeros_like(scalars[:, 0])


@GLOBAL_BLOCKS.register(
    "electrostatics", summary="learned latent charges (sum = total charge) with their exact "
    "Coulomb energy: Ewald/PME in periodic cells, direct sum for molecules; q and φ feed the "
    "scalars", presets={"electrostatics": {}})
class Electrostatics(GlobalBlock):
    """Charges and their electrostatic potential as features (see the module docstring).

    Args:
        widths: the host's channels per rotation order (only scalars are read and written).
        smearing: Gaussian charge width σ (Å); null = r_c / (2 √(−ln accuracy)) (0.47 Å at
            r_c = 4 Å, ε = 1e-8); 0 = point charges. From that width on there is no
            real-space sum; wider is cheaper (PME mesh ∝ 1/σ³; docs/electrostatics.md).
        accuracy: ε, the relative size of the neglected Ewald terms.
        method: reciprocal sum: ``ewald``, ``pme`` (smooth PME, `mlip_attn.nn.pme`) or
            ``auto`` (Ewald while the number of atoms × k-vectors is at most ``ewald_limit``).
        ewald_limit: the switch point of ``auto`` (null: 2.5e5, the measured crossover).
    """

    __jit_ignored_attributes__ = ["options"]
    periodic = True
    needs_cell = True  # its reciprocal sum reads the cell (the LAMMPS box, export format 4)
    # split over ranks in periodic boxes: S(k) (or the PME mesh), Σq and n summed over owned
    # atoms and all-reduced (`Coulomb`, `ChargeHead`); isolated structures: one rank only
    distributed = True
    k_e: Final[float]

    def __init__(self, widths: Tuple[int, ...], smearing: Optional[float] = None,
                 accuracy: PositiveFloat = 1e-8,
                 method: Literal["auto", "ewald", "pme"] = "auto",
                 ewald_limit: Optional[float] = None):
        super().__init__()
        if not accuracy < 1.0:
            raise ValueError(f"accuracy: must be below 1, got {accuracy}")
        if smearing is not None and smearing < 0:
            raise ValueError(f"smearing: must be ≥ 0 (or null), got {smearing}")
        width = widths[0]
        self.width = width
        self.options = {"smearing": smearing, "accuracy": float(accuracy), "method": method,
                        "ewald_limit": float(ewald_limit) if ewald_limit else 0.0}
        self.k_e = COULOMB
        self.charges = ChargeHead(width)
        self.coulomb = self.make_coulomb(5.0)
        self.out = nn.Linear(3, width)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    @torch.jit.unused
    def make_coulomb(self, cutoff: float) -> Coulomb:
        """The Coulomb sum for a model whose neighbour list reaches ``cutoff`` Å."""
        o = self.options
        smearing = o["smearing"]
        if smearing is None:
            smearing = default_smearing(cutoff, o["accuracy"])
        return Coulomb(cutoff, accuracy=o["accuracy"], smearing=smearing, method=o["method"],
                       ewald_limit=o["ewald_limit"])

    @torch.jit.unused
    def use_cutoff(self, cutoff: float) -> None:
        """Set the real-space cutoff to the model's (the `Potential` calls this)."""
        self.coulomb = self.make_coulomb(cutoff)

    @torch.jit.unused
    def energy_term(self) -> ElectrostaticEnergy:
        """The Coulomb energy of charges from the final scalars, with this block's settings."""
        return ElectrostaticEnergy(self.width, self.make_coulomb(self.coulomb.cutoff))

    def forward(self, x: Features, graph: Graph) -> Features:
        s = x.scalars
        q = self.charges(s, graph.batch, graph.charge, graph.owned)
        phi = self.coulomb(q, graph.positions, graph.cell, graph.batch, graph.edge_index,
                           graph.lengths, graph.num_graphs, graph.owned)
        potential = self.k_e * phi
        ds = self.out(torch.stack([q, potential, q * potential], dim=1))
        return Features(ds, torch.zeros_like(x.vectors), torch.zeros_like(x.tensors))
