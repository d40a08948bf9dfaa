"""Electrostatics: learned per-atom charges, their Coulomb energy (Ewald or PME in periodic
cells, a direct sum for isolated structures) and the potential φ they create, fed back to the
scalars.

Why: in ionic and polar condensed phases (salts, electrolytes, interfaces, water) the energy
contains Σ q_i q_j / r_ij to every distance; a local model truncates it at its receptive field.
As in the latent Ewald summation (LES: Cheng, 2024, from its paper) and SpookyNet (Unke et
al. 2021) the charges are latent: predicted from each atom's scalars and learned from energies
and forces alone, with no charge labels.

Two parts, both built from `mlip_attn.nn.coulomb.Coulomb` (k_e = 14.399645 eV·Å/e²):

- the energy term (`ElectrostaticEnergy`, which `mlip_attn.models.potential.Potential` adds
  when a model has such a block): charges q (N,) from the *final* scalars by a charge rule of
  `mlip_attn.nn.latent_charges` (default ``auto``: one constraint over a periodic cell, charge
  flow only within the cutoff for isolated structures), the potential φ (N,) e/Å, and
  E_i = ½ k_e q_i φ_i + χ_Z q_i + ½ J_Z q_i² (the Coulomb energy of the charges, exact in every
  periodic image, plus QEq's charging energy, J_Z started at IP − EA; docs/electrostatics.md
  says why);
- optionally (``feedback: true``) the block beside each layer: charges from that layer's
  scalars, φ, then q, k_e φ and k_e q φ into the scalars through a zero-initialised linear map.
  Off by default: it breaks separability and transferred worse to larger boxes (measured).

Models with the block embed the fragment's charge per atom (Q_f / N_f), not Q_f on every atom.
The charges start away from zero (zero is a stationary point of the Coulomb energy), so a fresh
electrostatics model is not the local model.

Periodic cells (nonzero cell) use the tin-foil Ewald sum with a neutralising background for a
net charge; the real-space part runs over the model's own neighbour list, with its cutoff
setting the splitting (`Coulomb`). Isolated structures (zero cell) take the direct sum. Forces
and stress by autograd. Costs: Ewald O(N·K) per structure; PME (`mlip_attn.nn.pme`) O(N log N).
"""
import math
from typing import Final, Literal, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from ..nn.coulomb import COULOMB, EWALD_LIMIT, Coulomb, legacy_mesh_factor
from ..nn.graph import Features, Graph
from ..nn.latent_charges import EN_SCALE, UniformCharges, charge_model
from ..registry import GLOBAL_BLOCKS, PositiveFloat
from .base import GlobalBlock


# the earlier name of the uniform rule (kept for code that imports it)
ChargeHead = UniformCharges


def legacy_smearing(cutoff: float, accuracy: float) -> float:
    """σ (Å) of ``smearing: null``, the default of model files written before the settings
    were stored explicitly: r_c / (2√(−ln ε)), the widest charge whose overlap the
    real-space cutoff contains to ε (0.74 Å at r_c = 5 Å, ε = 1e-5)."""
    return cutoff / (2.0 * math.sqrt(-math.log(accuracy)))


# the default charge width: erfc(r_c / 2σ) = SMEARING_TAIL, i.e. the part of the smeared pair
# interaction beyond the cutoff (what no local correction can represent) is 1e-4 of 1/r there
# (σ = 0.91 Å at r_c = 5 Å, independent of ε). Measured on the rigid-ion salt
# (docs/electrostatics.md, "Choosing the charge width"): 0.08 meV/ion of such error, against
# 0.43 at σ = 1 Å; cost 1.31× instead of 1.44× the local model at 10⁴ ions.
SMEARING_TAIL = 1e-4


def default_smearing(cutoff: float) -> float:
    """σ (Å) of ``smearing: auto``: r_c / (2 erfc⁻¹(`SMEARING_TAIL`))."""
    from scipy.special import erfcinv
    return cutoff / (2.0 * float(erfcinv(SMEARING_TAIL)))


# the PME settings of new models (``auto``) and of files that predate them (null)
SPLINE_ORDER = 6
LEGACY_SPLINE_ORDER = 6


# scales of the charging energy's per-element parameters (they start at zero): Adam moves a
# parameter by about the learning rate per step, so these set how fast χ_Z (eV/e) and J_Z
# (eV/e²) can follow the charges (docs/electrostatics.md, "what decided the charge model")
CHI_SCALE = 5.0
HARDNESS_SCALE = 20.0


def atomic_hardness() -> Tensor:
    """IP − EA (eV) by atomic number (119,), from the chemical encoder's table (mendeleev
    values); 0 where either is missing."""
    import csv
    from pathlib import Path
    table = torch.zeros(119, dtype=torch.float64)
    path = Path(__file__).resolve().parent.parent / "encoders" / "chemical_table.csv"
    with open(path) as f:
        for row in csv.DictReader(f):
            if row["ionisation_energy"] and row["electron_affinity"]:
                table[int(row["Z"])] = float(row["ionisation_energy"]) - float(row["electron_affinity"])
    return table


class ElectrostaticEnergy(nn.Module):
    """Electrostatic energy per atom (N,) eV of charges from the final scalars (N, F):

        E_i = ½ k_e q_i φ_i  +  χ_Z q_i + ½ J_Z q_i²   (the second part with ``self_energy``)

    The charging (self) energy is QEq's: per-element electronegativity χ_Z (eV/e) and hardness
    J_Z (eV/e²), learned, starting at zero. Why it is there: the per-element energies E0 are fit
    to the reference energies before training, so they already contain the Madelung energy of
    the true charges, and the Coulomb term counts it again, ∝ q². Without a term ∝ q_i² the
    cheapest way for the fit to remove the double count is to shrink the charges (the ±0.2–0.3 e
    seen on the rigid-ion salt); J_Z q_i²/2 removes it at any charge scale, and χ_Z q_i breaks
    the q → −q symmetry of neutral cells."""

    k_e: Final[float]
    self_energy: Final[bool]
    chi_scale: Final[float]
    hardness_scale: Final[float]

    def __init__(self, charges: nn.Module, coulomb: Coulomb, self_energy: bool = True):
        super().__init__()
        self.chi_scale = CHI_SCALE
        self.hardness_scale = HARDNESS_SCALE
        self.charges = charges
        self.coulomb = coulomb
        self.k_e = COULOMB
        self.self_energy = bool(self_energy)
        if self.self_energy:
            self.chi = nn.Parameter(torch.zeros(119))
            # J_Z starts at the atom's chemical hardness, ionisation energy − electron affinity
            # (eV; Parr–Pearson, the QEq hardness; 0 where the table has no value)
            self.hardness = nn.Parameter(atomic_hardness().float() / HARDNESS_SCALE)
        else:   # not parameters, not saved: the model file is that of a block without them
            self.register_buffer("chi", torch.zeros(119), persistent=False)
            self.register_buffer("hardness", torch.zeros(119), persistent=False)

    def charges_and_potential(self, scalars: Tensor, graph: Graph) -> Tuple[Tensor, Tensor]:
        """Charges q (N,) e and potentials φ (N,) e/Å."""
        q = self.charges(scalars, graph)
        phi = self.coulomb(q, graph.positions, graph.cell, graph.batch, graph.edge_index,
                           graph.lengths, graph.num_graphs, graph.owned)
        return q, phi

    def charging_energy(self, q: Tensor, numbers: Tensor) -> Tensor:
        """χ_Z q_i + ½ J_Z q_i² (N,) eV (zero without ``self_energy``)."""
        if not self.self_energy:
            return torch.zeros_like(q)
        chi = self.chi_scale * self.chi.to(q.dtype)[numbers]
        hardness = self.hardness_scale * self.hardness.to(q.dtype)[numbers]
        return chi * q + 0.5 * hardness * q * q

    def forward(self, scalars: Tensor, graph: Graph) -> Tensor:
        q, phi = self.charges_and_potential(scalars, graph)
        return 0.5 * self.k_e * q * phi + self.charging_energy(q, graph.numbers)


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

    Settings that have a default rule (``smearing``, ``mesh_factor``, ``spline_order``,
    ``ewald_limit``) take ``auto``, the rule of the current version, which `resolve_settings`
    turns into a number when a model is built: the model file stores that number, so a later
    change of a default never changes what an existing file computes. ``null`` is the rule of
    files written before the settings were stored (`legacy_smearing`, `legacy_mesh_factor`,
    order 6, 2.5e5); `STORED_DEFAULTS` fills keys such files lack.

    Args:
        widths: the host's channels per rotation order (only scalars are read and written).
        smearing: Gaussian charge width σ (Å); ``auto`` = r_c / (2 erfc⁻¹(1e-4)) (0.91 Å at
            r_c = 5 Å, `default_smearing`); null = r_c / (2 √(−ln accuracy)) (older files);
            0 = point charges. From r_c / (2 √(−ln accuracy)) on there is no real-space sum;
            wider is cheaper (PME mesh ∝ 1/σ³; docs/electrostatics.md).
        accuracy: ε, the relative size of the neglected Ewald terms (default 1e-5: PME's
            energy error ~4e-6 relative and force error ~5e-5 eV/Å for ±1 e charges, far
            below a fitted model's; 1e-8 costs a 5× finer mesh; docs/electrostatics.md).
        method: reciprocal sum: ``ewald``, ``pme`` (smooth PME, `mlip_attn.nn.pme`) or
            ``auto`` (Ewald while the number of atoms × k-vectors is at most ``ewald_limit``).
        mesh_factor: PME mesh spacing × α; ``auto``/null: by accuracy (0.35 for ε ≥ 1e-5, 0.3
            down to 1e-6, 0.2 below; `legacy_mesh_factor`, measured).
        spline_order: PME B-spline order (4, 6 or 8); ``auto``/null: 6.
        ewald_limit: the switch point of ``auto`` in atoms × k-vectors (``auto``/null: 2.5e5,
            the measured crossover).
        charges: the charge rule: ``auto`` (one constraint over a periodic cell, the flow
            rule for isolated structures; `CellOrFragmentCharges`), ``flow`` (charge moves
            only between atoms closer than ``charge_reach``, fragment charges by issue 25's
            rule, also in cells; `FlowCharges`; one process only) or ``uniform`` (the earlier
            whole-structure correction, which leaks charge between far fragments; kept for
            comparison).
        charge_reach: r_q (Å) of ``flow``; null = the model cutoff.
        en_scale: ``flow``'s per-element offsets start at en_scale × Pauling electronegativity
            (e per unit); 0 = start at zero.
        feedback: feed q, k_e φ and k_e q φ of every layer back to the scalars (the φ feedback);
            false: the block only adds the Coulomb energy of charges from the final scalars
            (one Coulomb sum per evaluation instead of one per layer plus one, and the
            features stay local, so fragments beyond the reach interact only by Coulomb).
        self_energy: add the charging energy χ_Z q + ½ J_Z q² (`ElectrostaticEnergy`).
        physics: set by the model, not the config. 3 (models built now): the fragment charge
            of isolated structures is placed continuously (`mlip_attn.nn.placement`).
    """

    __jit_ignored_attributes__ = ["options"]
    # what a model file written before these keys existed computed with (see the class)
    STORED_DEFAULTS = {"mesh_factor": None, "spline_order": None}
    periodic = True
    needs_cell = True  # its reciprocal sum reads the cell (the LAMMPS box, export format 4)
    # split over ranks in periodic boxes: S(k) (or the PME mesh), Σq and n summed over owned
    # atoms and all-reduced (`Coulomb`, the charge models' ``sums``); isolated structures and
    # the 'flow' rule: one rank only
    distributed = True
    k_e: Final[float]
    feedback: Final[bool]

    def __init__(self, widths: Tuple[int, ...],
                 smearing: Union[float, None, Literal["auto"]] = "auto",
                 accuracy: PositiveFloat = 1e-5,
                 method: Literal["auto", "ewald", "pme"] = "auto",
                 mesh_factor: Union[PositiveFloat, None, Literal["auto"]] = "auto",
                 spline_order: Union[Literal[4, 6, 8], None, Literal["auto"]] = "auto",
                 ewald_limit: Union[float, None, Literal["auto"]] = "auto",
                 charges: Literal["auto", "flow", "uniform"] = "auto",
                 charge_reach: Optional[float] = None, en_scale: float = EN_SCALE,
                 feedback: bool = False, self_energy: bool = True, physics: int = 4):
        super().__init__()
        if not accuracy < 1.0:
            raise ValueError(f"accuracy: must be below 1, got {accuracy}")
        if isinstance(smearing, (int, float)) and smearing < 0:
            raise ValueError(f"smearing: must be ≥ 0 (or auto, or null), got {smearing}")
        if isinstance(ewald_limit, (int, float)) and ewald_limit <= 0:
            raise ValueError(f"ewald_limit: must be positive (or auto, or null), got "
                             f"{ewald_limit}")
        if charge_reach is not None and charge_reach <= 0:
            raise ValueError(f"charge_reach: must be positive (or null), got {charge_reach}")
        width = widths[0]
        self.width = width
        self.options = {"smearing": smearing, "accuracy": float(accuracy), "method": method,
                        "mesh_factor": mesh_factor, "spline_order": spline_order,
                        "ewald_limit": ewald_limit,
                        "charges": charges, "charge_reach": float(charge_reach or 0.0),
                        "en_scale": float(en_scale), "self_energy": bool(self_energy),
                        "physics": int(physics)}
        self.k_e = COULOMB
        self.feedback = bool(feedback)
        # without feedback its features are zero: the backbone skips the call
        self.adds_features = self.feedback
        # without feedback the per-layer charges are never evaluated: a width-1 stand-in keeps
        # the forward scriptable without adding unused parameters to the count
        self.charges = self.make_charges(width) if self.feedback else UniformCharges(1)
        self.coulomb = self.make_coulomb(5.0)
        self.out = nn.Linear(3, width, bias=self.feedback)
        nn.init.zeros_(self.out.weight)
        self.out.weight.requires_grad_(self.feedback)
        if self.out.bias is not None:
            nn.init.zeros_(self.out.bias)

    @torch.jit.unused
    def make_charges(self, width: int) -> nn.Module:
        o = self.options
        return charge_model(o["charges"], width, o["charge_reach"], o["en_scale"],
                            o["physics"])

    @classmethod
    def resolve_settings(cls, options: dict, cutoff: float) -> dict:
        """``options`` (resolved by the registry) with every ``auto`` setting replaced by its
        number for a model of ``cutoff`` Å (what the model file stores; null stays null)."""
        out = dict(options)
        accuracy = float(out["accuracy"])
        rules = {"smearing": lambda: default_smearing(cutoff),
                 "mesh_factor": lambda: legacy_mesh_factor(accuracy),
                 "spline_order": lambda: SPLINE_ORDER,
                 "ewald_limit": lambda: EWALD_LIMIT}
        for key, rule in rules.items():
            if out.get(key, "auto") == "auto":
                out[key] = rule()
        return out

    @torch.jit.unused
    def make_coulomb(self, cutoff: float) -> Coulomb:
        """The Coulomb sum for a model whose neighbour list reaches ``cutoff`` Å."""
        o = self.resolve_settings(self.options, cutoff)
        smearing = o["smearing"]
        if smearing is None:
            smearing = legacy_smearing(cutoff, o["accuracy"])
        order = LEGACY_SPLINE_ORDER if o["spline_order"] is None else int(o["spline_order"])
        return Coulomb(cutoff, accuracy=o["accuracy"], smearing=float(smearing),
                       method=o["method"], mesh_factor=float(o["mesh_factor"] or 0.0),
                       interpolation_nodes=order, ewald_limit=float(o["ewald_limit"] or 0.0))

    @torch.jit.unused
    def use_cutoff(self, cutoff: float) -> None:
        """Set the real-space cutoff (and the charge reach) to the model's (the `Potential`
        calls this)."""
        self.coulomb = self.make_coulomb(cutoff)
        self.charges.use_cutoff(cutoff)

    @torch.jit.unused
    def energy_term(self) -> ElectrostaticEnergy:
        """The Coulomb energy of charges from the final scalars, with this block's settings."""
        charges = self.make_charges(self.width)
        charges.use_cutoff(self.coulomb.cutoff)
        return ElectrostaticEnergy(charges, self.make_coulomb(self.coulomb.cutoff),
                                   self.options["self_energy"])

    def forward(self, x: Features, graph: Graph) -> Features:
        s = x.scalars
        if not self.feedback:
            return Features(torch.zeros_like(s), torch.zeros_like(x.vectors),
                            torch.zeros_like(x.tensors))
        q = self.charges(s, graph)
        phi = self.coulomb(q, graph.positions, graph.cell, graph.batch, graph.edge_index,
                           graph.lengths, graph.num_graphs, graph.owned)
        potential = self.k_e * phi
        ds = self.out(torch.stack([q, potential, q * potential], dim=1))
        return Features(ds, torch.zeros_like(x.vectors), torch.zeros_like(x.tensors))


@torch.jit.unused
def latent_charges(model, batch, grad: bool = False) -> Tensor:
    """The charges q (N,) e of a model's Coulomb energy term for a `mlip_attn.data.Batch`:
    what the model puts on each atom, for analysis and tests (``grad``: keep the graph, so
    that q can be differentiated with respect to ``batch.positions``)."""
    if not getattr(model, "has_energy_term", False):
        raise ValueError("latent_charges: the model has no electrostatics block")
    args = (batch.positions, batch.numbers, batch.batch, batch.edge_index, batch.shifts,
            batch.cell, batch.charge, batch.spin)
    with torch.set_grad_enabled(grad):
        _, features = model.energies_and_features(*args)
        i, j = batch.edge_index[0], batch.edge_index[1]
        vectors = batch.positions[j] - batch.positions[i] + batch.shifts
        graph = Graph(batch.positions, batch.numbers, batch.batch, batch.edge_index, vectors,
                      torch.linalg.norm(vectors, dim=1), batch.shifts, batch.cell, batch.charge,
                      batch.spin, features.new_zeros((features.shape[0], 0)),
                      int(batch.charge.shape[0]))
        return model.energy_term.charges(features, graph)
