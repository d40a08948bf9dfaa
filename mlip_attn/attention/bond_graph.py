"""Through-bond propagation: a global block that carries features along the covalent-bond
graph to any distance, with a sign that alternates bond by bond when it should.

Why: some long-range effects travel through bonds, not through space. In a cumulene the
π-bonds rotate by 90° from one C=C to the next, so the relative orientation that minimises the
energy of the two CH2 ends depends on the *parity* of the number of carbons between them; a
proton at one end of a polyyne changes the charges along the conjugated chain. A smooth kernel
of distance (EFA's sinc kernels, an attention bias) cannot count bonds: the parity changes the
end-to-end distance by one bond length, far below the shortest period such kernels resolve.
Counting walks on the bond graph can.

The bond graph is smooth in the positions: a bond between atoms i and j weighs
w_ij = smoothstep of r_ij / (R_i + R_j) (covalent radii R, ASE's table) from 1 below
``bond_low`` to 0 above ``bond_high``, so bonds form and break continuously. With the
normalised adjacency Â = D^{-1/2} W D^{-1/2} (D_i = ε + Σ_j w_ij, spectral radius < 1), each
channel c of each rotation order is propagated as the truncated resolvent

    Y_c = Σ_{k=0}^{K} (γ_c Â)^k X_c,      γ_c = tanh(θ_c) ∈ (−1, 1) learned,

i.e. a sum over walks on the bond graph weighted by γ_c^length. On a bipartite graph (chains,
trees, alternant π-systems) every walk between two atoms has the same parity as their bond
distance, so a negative γ_c gives contributions of sign (−1)^bonds at every chain length,
seen or not in training. Scalar weights on vectors and rank-2 tensors keep them equivariant.
Cost: K products with Â — dense per structure (one batched matmul per step) for molecules,
over the bonded pairs (a few per atom) for large structures; O(K·N·channels) either way.

X_c are linear projections of the host's features of each order (``channels`` per order); the
output returns the propagated features to the host (zero-initialised linear maps) and feeds the
invariants ⟨Y_i, C X_i⟩ (the propagated orientation against the atom's own) to its scalars.
"""
import math
from typing import Tuple

import torch
from torch import Tensor, nn

from ..nn.graph import Features, Graph, rank_in_segment
from ..registry import GLOBAL_BLOCKS, PositiveFloat, PositiveInt
from .base import GlobalBlock


def _covalent_radii() -> Tensor:
    """Covalent radii (Å) by atomic number, (119,) (ASE's table, Cordero et al. 2008)."""
    from ase.data import covalent_radii
    return torch.tensor(covalent_radii, dtype=torch.float64)


def smooth_bond_weights(lengths: Tensor, numbers: Tensor, edge_index: Tensor, radii: Tensor,
                        low: float, high: float) -> Tensor:
    """w_ij (E,) ∈ [0, 1]: 1 for r_ij ≤ low·(R_i + R_j), 0 for r_ij ≥ high·(R_i + R_j), a
    C² smoothstep between (so energies and forces stay continuous when bonds change)."""
    reference = radii[numbers[edge_index[0]]] + radii[numbers[edge_index[1]]]
    x = ((lengths / reference - low) / (high - low)).clamp(0.0, 1.0)
    return 1.0 - x * x * x * (x * (6.0 * x - 15.0) + 10.0)


@GLOBAL_BLOCKS.register(
    "bond-graph", summary="through-bond propagation along the smooth covalent-bond graph "
    "(walk sums with learned, possibly alternating signs): bond-counting effects such as "
    "cumulene parity, at any chain length", presets={"bond-graph": {}})
class BondGraphPropagation(GlobalBlock):
    """Through-bond global block (see the module docstring).

    Args:
        widths: the host's channels per rotation order (every order present is propagated).
        channels: propagated channels per order.
        steps: K, the longest walk (in bonds) that contributes.
        bond_low, bond_high: the smooth bond switch, in units of the sum of covalent radii.
    """

    reach = math.inf
    periodic = True

    def __init__(self, widths: Tuple[int, ...], channels: PositiveInt = 16,
                 steps: PositiveInt = 32, bond_low: PositiveFloat = 1.15,
                 bond_high: PositiveFloat = 1.35):
        super().__init__()
        if bond_high <= bond_low:
            raise ValueError(f"bond_high: must exceed bond_low ({bond_low}), got {bond_high}")
        width = widths[0]
        self.order = len(widths) - 1
        self.channels = int(channels)
        self.steps = int(steps)
        self.bond_low = float(bond_low)
        self.bond_high = float(bond_high)
        self.dense_below = 256  # atoms per structure up to which Â is dense per structure
        self.register_buffer("radii", _covalent_radii(), persistent=False)
        # one γ per channel and order, spread over (−0.9, 0.9) at the start: some channels
        # alternate in sign bond by bond, some do not
        start = torch.linspace(-0.9, 0.9, channels).repeat(len(widths), 1)
        self.theta = nn.Parameter(torch.atanh(start))                          # (L + 1, P)
        self.project = nn.ModuleList([nn.Linear(w, channels, bias=False) for w in widths])
        self.contract = nn.ModuleList([nn.Linear(w, channels, bias=False) for w in widths])
        self.invariants = nn.Linear(len(widths) * channels, width)
        self.back = nn.ModuleList([nn.Linear(channels, w, bias=False) for w in widths])
        nn.init.zeros_(self.invariants.weight)
        nn.init.zeros_(self.invariants.bias)
        for lin in self.back:
            nn.init.zeros_(lin.weight)

    def propagation_weights(self, graph: Graph) -> Tuple[Tensor, Tensor, Tensor]:
        """(receivers, senders, Â_ij) of the bonded pairs (w_ij > 0)."""
        radii = self.radii.to(graph.lengths.dtype)
        w = smooth_bond_weights(graph.lengths, graph.numbers, graph.edge_index, radii,
                                self.bond_low, self.bond_high)
        bonded = torch.nonzero(w > 0).squeeze(1)
        i, j, w = graph.edge_index[0][bonded], graph.edge_index[1][bonded], w[bonded]
        n = graph.positions.shape[0]
        degree = torch.full((n,), 1e-3, dtype=w.dtype, device=w.device).index_add(0, i, w)
        return i, j, w * torch.rsqrt(degree[i] * degree[j])

    def propagate(self, start: Tensor, gamma: Tensor, graph: Graph) -> Tensor:
        """Σ_{k ≤ K} (γ Â)^k X for X = ``start`` (N, C, P), γ (C, P): as K batched matmuls with
        a dense Â per structure when structures are small, else K sums over bonded pairs."""
        i, j, a = self.propagation_weights(graph)
        n, c, p = start.shape
        batch, b = graph.batch, graph.num_graphs
        counts = torch.bincount(batch, minlength=b)
        n_max = int(counts.max()) if n > 0 else 0
        if n_max <= self.dense_below:
            rank = rank_in_segment(batch, counts)
            adjacency = start.new_zeros((b, n_max, n_max)).index_put(
                (batch[i], rank[i], rank[j]), a, accumulate=True)
            walk = start.new_zeros((b, n_max, c * p)).index_put((batch, rank), start.reshape(n, -1))
            total = walk
            g = gamma.reshape(1, 1, c * p)
            for _ in range(self.steps):
                walk = g * torch.bmm(adjacency, walk)
                total = total + walk
            return total[batch, rank].reshape(n, c, p)
        walk = start
        total = start
        for _ in range(self.steps):
            walk = gamma * torch.zeros_like(walk).index_add(
                0, i, a[:, None, None] * torch.index_select(walk, 0, j))
            total = total + walk
        return total

    def forward(self, x: Features, graph: Graph) -> Features:
        inputs = [x.scalars[:, None, :], x.vectors, x.tensors][:self.order + 1]
        start_parts = []
        gamma_parts = []
        for k, proj in enumerate(self.project):
            start_parts.append(proj(inputs[k]))
            gamma_parts.append(torch.tanh(self.theta[k]).expand(inputs[k].shape[1], -1))
        start = torch.cat(start_parts, dim=1)                                   # (N, C, P)
        gamma = torch.cat(gamma_parts, dim=0)                                   # (C, P)
        total = self.propagate(start, gamma, graph)
        invariant = []
        out = []
        offset = 0
        for k, contract in enumerate(self.contract):
            m = inputs[k].shape[1]                                              # 1, 3, 5
            part = total[:, offset:offset + m]
            offset += m
            invariant.append((part * contract(inputs[k])).sum(dim=1))
            out.append(part)
        back = [lin(out[k]) for k, lin in enumerate(self.back)]
        ds = back[0][:, 0] + self.invariants(torch.cat(invariant, dim=1))
        dv = back[1] if self.order >= 1 else torch.zeros_like(x.vectors)
        dt = back[2] if self.order >= 2 else torch.zeros_like(x.tensors)
        return Features(ds, dv, dt)
