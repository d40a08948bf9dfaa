"""Coulomb energy of point (or Gaussian-smeared) charges: Ewald or particle-mesh Ewald (PME) in
periodic cells, a direct sum for isolated structures.

For each structure with charges q_i (e) at r_i (Å) the module returns the electrostatic
potential at every atom φ_i (e/Å, the potential of all the *other* charges and their periodic
images), so that the Coulomb energy is

    E = ½ k_e Σ_i q_i φ_i   (eV, k_e = 14.399645 eV·Å/e²),   E_i = ½ k_e q_i φ_i per atom.

Isolated structures (zero cell): φ_i = Σ_{j≠i} q_j γ(r_ij), γ(r) = erf(r / 2σ) / r, the
interaction of two Gaussian charges of width σ (Å); σ = 0 gives point charges, γ = 1/r.
The smearing removes the 1/r singularity at short range, which the local model describes.

Periodic structures (tin-foil boundary), Ewald splitting α (1/Å):

    φ_i = Σ_{j,T}' q_j [erfc(α r) − erfc(r / 2σ)] / r        (real space, pairs within the cutoff)
        + (4π/V) Σ_{k≠0} e^{−k²/4α²}/k² Re(e^{−ik·r_i} S(k)),  S(k) = Σ_j q_j e^{ik·r_j}
        − 2α q_i / √π − π Q / (V α²)

(the last term is the neutralising background of a net charge Q = Σ q). The real-space pairs
are the model's own neighbour list (edge_index, lengths), so they never reach beyond its
cutoff r_c: α = √(−ln ε) / r_c makes erfc(α r_c) ≈ ε, and the reciprocal sum keeps every
k with |k| ≤ k_max = 2α √(−ln ε) (ε: ``accuracy``). Gaussian charges at least r_c / (2√(−ln ε))
wide take α = 1/2σ instead: then erfc(αr) − erfc(r/2σ) ≡ 0, there is no real-space part, and
the smeared interaction is the reciprocal sum alone (cheaper the wider σ: k_max = √(−ln ε)/σ).

Two reciprocal-space methods (`method`):
- ``ewald``: the k-sum above, exact to ε, cost O(N · K) with K ∝ V k_max³ vectors — at a fixed
  real-space cutoff, O(N²); best for small cells.
- ``pme``: smooth particle-mesh Ewald (`mlip_attn.nn.pme`: charges spread on a mesh with
  B-splines, FFT), cost O(N p³ + M log M); its error is set by the mesh spacing.
``auto`` takes Ewald while N · K ≤ ``ewald_limit`` and PME above.

Forces and stress follow by autograd (positions, and the cell through k, V and the fractional
coordinates). Both paths are TorchScript-compatible, and both split over processes (LAMMPS
ranks): S(k), or the charge mesh, is a sum over atoms (`Coulomb`, ``owned``).
"""
import math
from typing import List, Tuple

import torch
from torch import Tensor, nn

from . import pme

COULOMB = 14.399645  # eV·Å/e²
# PME mesh spacing × α (measured: benchmarks/electrostatics.py --mesh-sweep) and the N·K
# above which `auto` takes PME (measured: docs/electrostatics.md)
MESH_FACTOR_COARSE = 0.35   # accuracy ≥ 1e-5
MESH_FACTOR = 0.3           # 1e-6 ≤ accuracy < 1e-5
MESH_FACTOR_FINE = 0.2      # accuracy < 1e-6
EWALD_LIMIT = 2.5e5


def legacy_mesh_factor(accuracy: float) -> float:
    """PME mesh spacing × α by accuracy (the measured table above)."""
    return (MESH_FACTOR_FINE if accuracy < 1e-6 else MESH_FACTOR if accuracy < 1e-5
            else MESH_FACTOR_COARSE)


def ewald_splitting(cutoff: float, accuracy: float) -> Tuple[float, float]:
    """α (1/Å) and k_max (1/Å) for a real-space cutoff (Å) and a relative accuracy ε ∈ (0, 1)."""
    if not 0.0 < accuracy < 1.0:
        raise ValueError(f"accuracy must lie in (0, 1), got {accuracy}")
    if cutoff <= 0.0:
        raise ValueError(f"cutoff must be positive, got {cutoff}")
    x = math.sqrt(-math.log(accuracy))
    alpha = x / cutoff
    return alpha, 2.0 * alpha * x


def reciprocal_vectors(cell: Tensor, k_max: float) -> Tensor:
    """Half of the nonzero reciprocal lattice vectors with |k| ≤ k_max (one of each ±k pair),
    (K, 3) in 1/Å, differentiable in ``cell`` (3, 3), rows = lattice vectors (Å)."""
    recip = 2.0 * math.pi * torch.linalg.inv(cell).transpose(0, 1)      # rows b_i, a_i·b_j = 2πδ
    lengths = torch.linalg.norm(cell.detach(), dim=1)
    n = torch.ceil(lengths * k_max / (2.0 * math.pi)).to(torch.long)     # |n_i| ≤ |k| |a_i| / 2π
    n0, n1, n2 = int(n[0]), int(n[1]), int(n[2])
    r0 = torch.arange(0, n0 + 1, device=cell.device)
    r1 = torch.arange(-n1, n1 + 1, device=cell.device)
    r2 = torch.arange(-n2, n2 + 1, device=cell.device)
    grid = torch.cartesian_prod(r0, r1, r2)
    half = (grid[:, 0] > 0) | ((grid[:, 0] == 0) & (grid[:, 1] > 0)) | \
        ((grid[:, 0] == 0) & (grid[:, 1] == 0) & (grid[:, 2] > 0))
    grid = grid[half].to(cell.dtype)
    k = grid @ recip
    inside = (k.detach() * k.detach()).sum(1) <= k_max * k_max
    return k[inside]


def direct_potential(q: Tensor, positions: Tensor, smearing: float) -> Tensor:
    """φ (n,) e/Å of isolated charges q (n,) at positions (n, 3) Å: Σ_{j≠i} q_j γ(r_ij)."""
    n = positions.shape[0]
    diff = positions.unsqueeze(1) - positions.unsqueeze(0)
    eye = torch.eye(n, dtype=torch.bool, device=positions.device)
    r2 = torch.where(eye, torch.ones_like(diff[..., 0]), (diff * diff).sum(-1))
    r = torch.sqrt(r2)
    if smearing > 0.0:
        gamma = torch.erf(r / (2.0 * smearing)) / r
    else:
        gamma = 1.0 / r
    gamma = torch.where(eye, torch.zeros_like(gamma), gamma)
    return gamma @ q


def real_space_potential(q: Tensor, receivers: Tensor, senders: Tensor, lengths: Tensor,
                         n: int, alpha: float, smearing: float) -> Tensor:
    """Real-space Ewald part φ (n,) e/Å over the pairs of a full neighbour list."""
    kernel = torch.erfc(alpha * lengths)
    if smearing > 0.0:
        kernel = kernel - torch.erfc(lengths / (2.0 * smearing))
    return q.new_zeros(n).index_add(0, receivers, q[senders] * kernel / lengths)


def structure_factor(q: Tensor, positions: Tensor, k: Tensor) -> Tuple[Tensor, Tensor]:
    """Re and Im of S(k) = Σ_j q_j e^{ik·r_j}, each (K,), and cos/sin(k·r) (n, K)."""
    kr = positions @ k.transpose(0, 1)
    cos, sin = torch.cos(kr), torch.sin(kr)
    return q @ cos, q @ sin


def reciprocal_potential(q: Tensor, positions: Tensor, cell: Tensor, alpha: float,
                         k_max: float) -> Tensor:
    """Reciprocal-space Ewald potential + self term + neutralising background, φ (n,) e/Å."""
    volume = torch.abs(torch.linalg.det(cell))
    k = reciprocal_vectors(cell, k_max)
    k2 = (k * k).sum(1)
    weight = (8.0 * math.pi / volume) * torch.exp(-k2 / (4.0 * alpha * alpha)) / k2  # ±k: 2 × 4π/V
    kr = positions @ k.transpose(0, 1)
    cos, sin = torch.cos(kr), torch.sin(kr)
    s_re, s_im = q @ cos, q @ sin
    phi = cos @ (weight * s_re) + sin @ (weight * s_im)
    total = q.sum()
    return (phi - (2.0 * alpha / math.sqrt(math.pi)) * q
            - math.pi * total / (volume * alpha * alpha))


def ewald_terms(positions: Tensor, cell: Tensor, alpha: float, k_max: float
                ) -> Tuple[Tensor, Tensor, Tensor]:
    """Ewald's weights (8π/V) e^{−k²/4α²}/k² (K,) over half of the k-vectors and cos, sin(k·r)
    (n, K) of the atoms at ``positions`` (n, 3)."""
    volume = torch.abs(torch.linalg.det(cell))
    k = reciprocal_vectors(cell, k_max)
    k2 = (k * k).sum(1)
    weight = (8.0 * math.pi / volume) * torch.exp(-k2 / (4.0 * alpha * alpha)) / k2
    kr = positions @ k.transpose(0, 1)
    return weight, torch.cos(kr), torch.sin(kr)


_SHARED: dict = {}


def _shared_lookup(key, positions: Tensor, cell: Tensor):
    """The value stored by `_shared_store` under ``key`` for the same positions tensor (held
    there, so its identity cannot be reused; unchanged since) and an equal cell, else None.
    The Coulomb sums of one forward pass (every layer's block and the energy term) read the
    same atoms, so their stencils, k-vectors and phases are computed once. Eager only
    (TorchScript recomputes); autograd flows through the shared tensors as through any."""
    entry = _SHARED.get(key)
    if (entry is not None and entry["positions"] is positions
            and entry["version"] == positions._version
            and entry["cell"].shape == cell.shape and torch.equal(entry["cell"], cell.detach())
            and entry["grad"] == (positions.requires_grad, cell.requires_grad)):
        return entry["value"]
    return None


def _shared_store(key, positions: Tensor, cell: Tensor, value) -> None:
    """Keep ``value`` for `_shared_lookup` (one structure at a time: older entries go)."""
    _SHARED.clear()
    _SHARED[key] = {"positions": positions, "version": positions._version,
                    "cell": cell.detach().clone(), "value": value,
                    "grad": (positions.requires_grad, cell.requires_grad)}


def ewald_vector_count(cell: Tensor, k_max: float) -> float:
    """Estimated number of half-space k-vectors, V k_max³ / (12π²)."""
    volume = float(torch.abs(torch.linalg.det(cell.detach())))
    return volume * k_max ** 3 / (12.0 * math.pi ** 2)


class Coulomb(nn.Module):
    """Electrostatic potential at every atom of a batch (see the module docstring).

    Args:
        cutoff: real-space cutoff r_c (Å) — at most the cutoff of the neighbour list passed in.
        accuracy: ε, the relative size of the neglected terms (sets α and k_max).
        smearing: Gaussian charge width σ (Å); 0 for point charges. From σ ≥ r_c / (2√(−ln ε))
            on the splitting is α = 1/(2σ) and the real-space part vanishes identically (the
            smeared interaction *is* the reciprocal sum): wider charges cost fewer k-vectors.
        method: ``ewald``, ``pme`` (smooth PME, `mlip_attn.nn.pme`) or ``auto`` (Ewald while
            N · K ≤ ``ewald_limit``, PME above).
        mesh_spacing: PME mesh spacing h (Å); 0 = ``mesh_factor`` / α.
        mesh_factor: h × α when ``mesh_spacing`` is 0; 0 = by accuracy (`legacy_mesh_factor`).
        interpolation_nodes: PME B-spline order p (even, 4 … 8).
        ewald_limit: the switch point of ``auto`` in N · K (0: the measured default, see
            docs/electrostatics.md).

    Split structures (``owned`` ≥ 0 in `forward`: one periodic structure whose first ``owned``
    nodes this process owns, the rest ghost copies): S(k), or the PME charge mesh, and the net
    charge are summed over the owned nodes and completed by ``sums`` (identity here; the
    LAMMPS export swaps in an all-reduce over MPI ranks, whose backward all-reduces the
    gradient). Every node then gets its potential; the real-space part runs over the edges
    given, which must be complete for the nodes whose potential matters.
    """

    def __init__(self, cutoff: float, accuracy: float = 1e-8, smearing: float = 0.0,
                 method: str = "auto", mesh_spacing: float = 0.0, interpolation_nodes: int = 6,
                 ewald_limit: float = 0.0, mesh_factor: float = 0.0):
        super().__init__()
        if method not in ("ewald", "pme", "auto"):
            raise ValueError(f"method must be 'ewald', 'pme' or 'auto', got {method!r}")
        if smearing < 0.0:
            raise ValueError(f"smearing must be ≥ 0, got {smearing}")
        if interpolation_nodes not in (4, 6, 8):
            raise ValueError(f"interpolation_nodes (PME B-spline order) must be 4, 6 or 8, got "
                             f"{interpolation_nodes}")
        self.cutoff = float(cutoff)
        self.accuracy = float(accuracy)
        alpha, _ = ewald_splitting(self.cutoff, self.accuracy)
        x = math.sqrt(-math.log(self.accuracy))
        self.smearing = float(smearing)
        # σ at least r_c / 2x: α = 1/2σ ≤ x / r_c, erfc(αr) − erfc(r/2σ) ≡ 0, no real space
        self.real_space = not (smearing > 0.0 and 1.0 / (2.0 * smearing) <= alpha * (1 + 1e-9))
        self.alpha = alpha if self.real_space else 1.0 / (2.0 * self.smearing)
        self.k_max = 2.0 * self.alpha * x
        self.method = method
        self.order = int(interpolation_nodes)
        # measured (benchmarks/electrostatics.py --mesh-sweep, docs/electrostatics.md)
        if mesh_factor < 0.0:
            raise ValueError(f"mesh_factor must be positive (or 0: by accuracy), got "
                             f"{mesh_factor}")
        self.mesh_factor = float(mesh_factor) if mesh_factor > 0 else \
            legacy_mesh_factor(self.accuracy)
        self.mesh_spacing = float(mesh_spacing) if mesh_spacing > 0 else \
            self.mesh_factor / self.alpha
        self.ewald_limit = float(ewald_limit) if ewald_limit > 0 else EWALD_LIMIT
        self.sums = nn.Identity()

    def uses_pme(self, n: int, cell: Tensor) -> bool:
        """Whether a structure of n atoms in ``cell`` takes the PME path."""
        if self.method == "auto":
            return n * ewald_vector_count(cell, self.k_max) > self.ewald_limit
        return self.method == "pme"

    def switch_count(self, q: Tensor, owned: int) -> int:
        """The atom count that `auto` compares: the whole structure's, also when it is split
        over processes (``owned`` ≥ 0: this process's owned atoms, completed by ``sums``, one
        scalar all-reduce), so that the method, and its ~1e-6 error, does not depend on the
        decomposition."""
        if owned < 0:
            return q.shape[0]
        if self.method != "auto":
            return owned
        return int(self.sums(q.new_full((1,), float(owned)).detach())[0])

    def periodic_potential(self, q: Tensor, positions: Tensor, cell: Tensor, owned: int
                           ) -> Tensor:
        """Reciprocal + self + background potential φ (n,) e/Å of one periodic structure;
        ``owned`` ≥ 0: only the first ``owned`` nodes are this process's (see the class)."""
        n_sum = owned if owned >= 0 else q.shape[0]
        volume = torch.abs(torch.linalg.det(cell))
        if self.uses_pme(self.switch_count(q, owned), cell):
            shape = pme.mesh_shape(cell, self.mesh_spacing, self.order)
            if torch.jit.is_scripting():
                flat, weight = pme.spline_stencil(positions, cell, shape, self.order)
                g = pme.influence(cell, self.alpha, shape, self.order)
            else:
                flat, weight, g = self._shared_mesh(positions, cell, shape)
            mesh = pme.spread(q[:n_sum], flat[:n_sum], weight[:n_sum], shape)
            total = q[:n_sum].sum().unsqueeze(0)
            if owned >= 0:   # two all-reduces: no copy of the mesh into a joint buffer
                mesh = self.sums(mesh)
                total = self.sums(total)
            phi = pme.interpolate(pme.mesh_potential(mesh, g, shape), flat, weight)
            total = total[0]
        else:
            if torch.jit.is_scripting():
                weight, cos, sin = ewald_terms(positions, cell, self.alpha, self.k_max)
            else:
                weight, cos, sin = self._shared_ewald(positions, cell)
            partial = torch.cat([q[:n_sum] @ cos[:n_sum], q[:n_sum] @ sin[:n_sum],
                                 q[:n_sum].sum().unsqueeze(0)])
            if owned >= 0:
                partial = self.sums(partial)
            nk = weight.shape[0]
            phi = cos @ (weight * partial[:nk]) + sin @ (weight * partial[nk:2 * nk])
            total = partial[-1]
        return (phi - (2.0 * self.alpha / math.sqrt(math.pi)) * q
                - math.pi * total / (volume * self.alpha * self.alpha))

    @torch.jit.unused
    def _shared_mesh(self, positions: Tensor, cell: Tensor, shape: List[int]
                     ) -> Tuple[Tensor, Tensor, Tensor]:
        """PME stencils and influence function, shared by the Coulomb sums of one forward
        (the blocks beside every layer and the energy term: same atoms, same cell)."""
        key = ("mesh", self.alpha, self.order, tuple(shape))
        value = _shared_lookup(key, positions, cell)
        if value is None:
            flat, weight = pme.spline_stencil(positions, cell, shape, self.order)
            value = (flat, weight, pme.influence(cell, self.alpha, shape, self.order))
            _shared_store(key, positions, cell, value)
        return value

    @torch.jit.unused
    def _shared_ewald(self, positions: Tensor, cell: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """Ewald's k weights and cos/sin(k·r), shared like `_shared_mesh`."""
        key = ("ewald", self.alpha, self.k_max)
        value = _shared_lookup(key, positions, cell)
        if value is None:
            value = ewald_terms(positions, cell, self.alpha, self.k_max)
            _shared_store(key, positions, cell, value)
        return value

    def forward(self, q: Tensor, positions: Tensor, cell: Tensor, batch: Tensor,
                edge_index: Tensor, lengths: Tensor, num_graphs: int, owned: int = -1
                ) -> Tensor:
        """φ (N,) e/Å for charges q (N,) e, positions (N, 3) Å, cell (B, 3, 3) Å (a zero cell:
        isolated), batch (N,), the full neighbour list edge_index (2, E) (receiver, sender)
        with its lengths (E,) Å; ``owned`` ≥ 0: one periodic structure split over processes
        (see the class docstring)."""
        periodic = torch.abs(torch.linalg.det(cell.detach())) > 1e-12
        if owned >= 0:
            if num_graphs != 1 or not bool(periodic[0]):
                raise ValueError("Coulomb over a structure split between processes needs one "
                                 "periodic structure (the direct sum of an isolated one has "
                                 "no per-process form)")
            phi = self.periodic_potential(q, positions, cell[0], owned)
            if self.real_space:
                phi = phi + real_space_potential(q, edge_index[0], edge_index[1], lengths,
                                                 q.shape[0], self.alpha, self.smearing)
            return phi
        phi = torch.zeros_like(q)
        receivers, senders = edge_index[0], edge_index[1]
        local = torch.full_like(batch, -1)
        for b in range(num_graphs):
            atoms = torch.nonzero(batch == b).flatten()
            n = atoms.shape[0]
            if n == 0:
                continue
            # one structure: the positions tensor itself (its sums are shared, `_shared`)
            qb, rb = (q, positions) if num_graphs == 1 else (q[atoms], positions[atoms])
            if not bool(periodic[b]):
                phi = phi.index_put((atoms,), direct_potential(qb, rb, self.smearing))
                continue
            part = self.periodic_potential(qb, rb, cell[b], -1)
            if self.real_space:
                local = local.index_put((atoms,), torch.arange(n, device=q.device))
                edges = torch.nonzero(batch[receivers] == b).flatten()
                part = part + real_space_potential(qb, local[receivers[edges]],
                                                   local[senders[edges]], lengths[edges], n,
                                                   self.alpha, self.smearing)
            phi = phi.index_put((atoms,), part)
        return phi

    def energy(self, q: Tensor, phi: Tensor, batch: Tensor, num_graphs: int) -> Tensor:
        """Coulomb energy per structure (B,) eV from charges q (N,) and potentials φ (N,)."""
        return (0.5 * COULOMB * q * phi).new_zeros(num_graphs).index_add(
            0, batch, 0.5 * COULOMB * q * phi)
