"""Charge equilibration: per-atom charges that sum to the structure's total charge, and the
electrostatic potential they create, as features of every atom.

Why: a total-charge embedding tells every atom *that* a structure carries a charge, not *where*
it sits. Where it sits is decided globally — by the electronegativity of every atom and the
Coulomb repulsion between the charges — and a local model cannot see that decision once the
charge is further away than its receptive field (a proton on a polyyne spreads a hole over the
whole chain, whose density at the far end falls like 1/length). Charge equilibration (QEq,
Rappé & Goddard 1991) makes that decision explicitly, as the fourth-generation
high-dimensional neural network potentials do (4G-HDNNP: Ko, Finkler, Goedecker, Behler,
Nat. Commun. 12, 398, 2021), with electronegativities and hardnesses predicted from each atom's
environment; SpookyNet (Unke et al., Nat. Commun. 12, 7273, 2021) and the latent Ewald summation
(LES: Cheng, 2024) learn such charges without charge labels, from energies and forces alone, as
here.

For each structure b (atoms i, total charge Q_b = ``graph.charge``) and each of C channels c:

    χ_ic = W_χ s_i (eV/e),   J_i = J_min + softplus(w_J · s_i + β) (eV/e²) > 0
    E(q) = Σ_i χ_i q_i + ½ Σ_i J_i q_i² + ½ k_e Σ_ij q_i q_j γ_ij,   Σ_i q_i = Q_b
    γ_ij = erf(r_ij / 2σ) / r_ij (i ≠ j),   γ_ii = 1 / (σ √π)

(k_e = 14.3996 eV·Å/e²; γ is the Coulomb interaction of Gaussian charges of width σ, Å, so
Γ is positive definite and A = diag(J) + k_e Γ too.) The minimiser solves A q = −χ + λ 1
with λ fixed by the constraint: q = −A⁻¹χ + λ A⁻¹1, λ = (Q_b + 1ᵀA⁻¹χ) / 1ᵀA⁻¹1 — one
Cholesky factorisation per structure, C + 1 right-hand sides. The potential of the other
charges, φ_i = Σ_{j≠i} γ_ij q_j (in units of k_e e/Å), then q_i, φ_i and q_i φ_i of every
channel reach the atom's scalars through a zero-initialised linear map (a fresh model equals
the local one). ``mode: shift`` replaces the solve by SpookyNet's constraint,
q_i = q̃_i + (Q_b − Σ_j q̃_j) / N_b with q̃ = W_χ s (a uniform correction, no electrostatics in
the charges themselves).

Everything is smooth in the positions (erf, a positive-definite solve), rotation and
translation invariant (distances only) and never mixes the structures of a batch. Cost: dense
per structure, memory O(B·n²) and time O(B·n³) for n atoms — for molecules and clusters (a
1,000-atom structure takes ~10 ms); it is not built for periodic cells or for 10⁴-atom
systems, which need an Ewald or particle-mesh sum instead.
"""
import math
from typing import Final, Literal, Tuple

import torch
from torch import Tensor, nn

from ..nn import charges as _charges
from ..nn.charges import SplitCharges
from ..nn.graph import Features, Graph
from ..registry import GLOBAL_BLOCKS, PositiveFloat, PositiveInt
from .base import GlobalBlock

# the solver lives in `mlip_attn.nn.charges` (shared with the fragment-charge model); these
# names stay importable from here
COULOMB = _charges.COULOMB
HARDNESS_MIN = _charges.HARDNESS_MIN
pad_structures = _charges.pad_structures
gaussian_coulomb = _charges.gaussian_coulomb
equilibrate = _charges.equilibrate


def equilibrate_reference(chi: Tensor, hardness: Tensor, positions: Tensor, total: float,
                          sigma: float) -> Tensor:
    """The same charges for one structure from the bordered (Lagrangian) system
    [[A, 1], [1ᵀ, 0]] [q; −λ] = [−χ; Q], solved directly (test reference): chi (n, C),
    hardness (n,), positions (n, 3)."""
    n, c = chi.shape
    r = torch.cdist(positions, positions)
    eye = torch.eye(n, dtype=torch.bool)
    gamma = torch.where(eye, torch.zeros_like(r),
                        torch.erf(r / (2 * sigma)) / torch.where(eye, torch.ones_like(r), r))
    a = COULOMB * gamma + torch.diag(hardness + COULOMB / (sigma * math.sqrt(math.pi)))
    border = torch.zeros((n + 1, n + 1), dtype=chi.dtype)
    border[:n, :n] = a
    border[:n, n] = 1.0
    border[n, :n] = 1.0
    rhs = torch.cat([-chi, torch.full((1, c), float(total), dtype=chi.dtype)], dim=0)
    return torch.linalg.solve(border, rhs)[:n]


@GLOBAL_BLOCKS.register(
    "charges", summary="charge equilibration: per-atom charges constrained to each bonded "
    "fragment's charge, moving only along bonds (split charges), with screened Coulomb "
    "electrostatics; q, φ and q·φ feed the scalars", presets={"charges": {}})
class ChargeEquilibration(GlobalBlock):
    """Charges and electrostatic potentials as features (see the module docstring).

    Args:
        widths: the host's channels per rotation order (only the scalars, widths[0], are read
            and written).
        channels: C, independent charge distributions (each its own χ, sharing J and the
            Coulomb matrix, so one factorisation serves all).
        sigma: width σ (Å) of the Gaussian charges that screen the Coulomb interaction at short
            range (γ → 1/r beyond ~3σ).
        learn_sigma: train σ (kept positive through its logarithm).
        mode: ``qeq`` (charge equilibration, a solve) or ``shift`` (SpookyNet's uniform
            correction of predicted charges to the total charge).
        r_max: Å, reach of the Coulomb coupling (physics 2): the solve's and the potential φ's
            Coulomb kernel is switched off between r_max/2 and r_max (C²).
        physics: set by the model, not the config. 3 (models built now): as 2, with the
            fragment charge placed continuously inside a fragment whose bonds are forming
            (`mlip_attn.nn.placement`). 2: charges per bonded
            fragment — the total charge goes to one fragment (`mlip_attn.nn.charges`), ``qeq``
            is split-charge equilibration (charge moves only along bonds, so no charge flows
            between fragments that are not bonded) and ``shift`` corrects each fragment to its
            own charge; the block's reach is r_max. 1 (model files written before): one
            constraint over the whole structure, unswitched Coulomb, unlimited reach.
    """

    not_distributed = ("its charges come from one linear solve over every atom of the "
                       "structure, which one rank's atoms and ghosts do not hold")

    channels: Final[int]
    equilibrate: Final[bool]
    fragments: Final[bool]
    coulomb: Final[float]
    hardness_min: Final[float]

    def __init__(self, widths: Tuple[int, ...], channels: PositiveInt = 4,
                 sigma: PositiveFloat = 1.0, learn_sigma: bool = True,
                 mode: Literal["qeq", "shift"] = "qeq", r_max: PositiveFloat = 10.0,
                 physics: int = 4):
        super().__init__()
        width = widths[0]
        self.fragments = physics >= 2
        self.reach = float(r_max) if self.fragments else math.inf
        self.through_space = self.reach
        self.split = SplitCharges(width, channels, r_max, sigma, physics=physics) \
            if self.fragments else None
        self.channels = int(channels)
        self.equilibrate = mode == "qeq"
        self.mode = mode
        self.coulomb = COULOMB
        self.hardness_min = HARDNESS_MIN
        self.electronegativity = nn.Linear(width, channels)
        self.hardness = nn.Linear(width, 1)
        nn.init.zeros_(self.hardness.weight)
        nn.init.constant_(self.hardness.bias, math.log(math.e - 1.0))  # softplus = 1 eV/e²
        log_sigma = torch.tensor(math.log(sigma), dtype=torch.get_default_dtype())
        if learn_sigma:
            self.log_sigma = nn.Parameter(log_sigma)
        else:
            self.register_buffer("log_sigma", log_sigma)
        self.out = nn.Linear(3 * channels, width)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def charges(self, x: Features, graph: Graph) -> Tuple[Tensor, Tensor]:
        """Charges q (N, C) in e, Σ over each structure (physics 2: each bonded fragment) = its
        total charge, and the potential of the other charges φ (N, C) in k_e·e/Å
        (φ_i = Σ_{j≠i} γ_ij q_j; physics 2: times the switch to zero at r_max)."""
        if self.fragments:
            return self._fragment_charges(x.scalars, graph)
        s = x.scalars
        batch, b = graph.batch, graph.num_graphs
        sigma = torch.exp(self.log_sigma).to(s.dtype)
        positions, valid, rank = pad_structures(graph.positions, batch, b)
        gamma = gaussian_coulomb(positions, valid, sigma)
        chi, _, _ = pad_structures(self.electronegativity(s), batch, b)
        total = graph.charge.to(s.dtype)
        if self.equilibrate:
            j = self.hardness_min + nn.functional.softplus(self.hardness(s)).squeeze(-1)
            hardness, _, _ = pad_structures(j, batch, b)
            q = equilibrate(chi, hardness, gamma, valid, total, sigma, self.coulomb)
        else:
            mask = valid.to(s.dtype).unsqueeze(-1)
            count = mask.sum(1).clamp(min=1.0)
            q = (chi + ((total.unsqueeze(-1) - chi.sum(1)) / count).unsqueeze(1)) * mask
        phi = torch.bmm(gamma, q)
        return q[batch, rank], phi[batch, rank]

    def _fragment_charges(self, s: Tensor, graph: Graph) -> Tuple[Tensor, Tensor]:
        """Physics 2: split-charge equilibration (``qeq``) or a per-fragment shift."""
        if self.equilibrate:
            q = self.split(s, graph)
        else:
            q = self.split.shifted(self.electronegativity(s), graph)
        return q, self.split.potential(q, graph)

    def forward(self, x: Features, graph: Graph) -> Features:
        q, phi = self.charges(x, graph)
        ds = self.out(torch.cat([q, phi, q * phi], dim=1))
        return Features(ds, torch.zeros_like(x.vectors), torch.zeros_like(x.tensors))
