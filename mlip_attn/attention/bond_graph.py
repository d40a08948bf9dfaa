"""Through-bond propagation: a global block that carries features along the covalent-bond
graph to any distance, with a sign that alternates bond by bond when it should.

Why: some long-range effects travel through bonds, not through space. In a cumulene the
π-bonds rotate by 90° from one C=C to the next, so the relative orientation that minimises the
energy of the two CH2 ends depends on the *parity* of the number of carbons between them; a
proton at one end of a polyyne changes the charges along the conjugated chain. A smooth kernel
of distance (EFA's sinc kernels, an attention bias) cannot count bonds: the parity changes the
end-to-end distance by one bond length, far below the shortest period such kernels resolve.
Counting bonds along walks on the bond graph can.

The bond graph is smooth in the positions: a bond between atoms i and j weighs
w_ij = smoothstep of r_ij / (R_i + R_j) (covalent radii R, ASE's table) from 1 below
``bond_low`` to 0 above ``bond_high``, so bonds form and break continuously.

Features travel along *non-backtracking* walks (a walk never returns along the bond it just
came by), each bond multiplying by γ_c = tanh(θ_c) ∈ (−1, 1), learned per channel:

    m_e^(1) = γ w_e X_j,   m_e^(k+1) = γ w_e Σ_{e' = (j ← k'), k' ≠ i} m_{e'}^(k) / (1 + d_j − w_e − w_e')
    Y_i = X_i + Σ_{e into i} Σ_{k=1..K} m_e^(k)

for directed bonds e = (i ← j), d_j = Σ w_j· the smooth degree (model files written before
physics 2 divide by d_j − w_e + ε instead, see `BRANCH_SOFTENING`). Dividing by the other
bonds of j averages where walks branch, so nothing grows; along a chain (one way on) a
feature crosses n bonds with weight γ^n — a diffusive walk (a random walk on the graph) would
decay like 2^-n there instead. With γ < 0 the sign is (−1)^bonds at every chain length, seen
in training or not; walks longer than K bonds (``steps``) are not followed. Scalar weights on
vectors and rank-2 tensors keep them equivariant. Cost: K products over the pairs of
consecutive bonds — dense per structure (one batched matmul per step) for molecules, over the
pair list for large structures; O(K·N·channels) either way.

X_c are linear projections of the host's features of each order (``channels`` per order); the
output returns the propagated features to the host (zero-initialised linear maps) and feeds the
invariants ⟨Y_i, C X_i⟩ (the propagated orientation against the atom's own) to its scalars.
"""
import math
from typing import Tuple

import torch
from torch import Tensor, nn

from ..nn.charges import covalent_radii, smooth_bond_weights
from ..nn.graph import Features, Graph, rank_in_segment
from ..registry import GLOBAL_BLOCKS, PositiveFloat, PositiveInt
from .base import GlobalBlock


_covalent_radii = covalent_radii  # the bond table, shared with `mlip_attn.nn.charges`

# physics 1: ε in the branch average w_e / (d_j − w_e + ε). Where a bond e' of j fades out,
# its message (∝ w_e') meets 1/(w_e' + ε) on the way on: the product w_e'/(w_e' + ε) rises from
# 0 to 1 over a bond-weight change of ~ε, a force spike of height ∝ 1/ε when a bond stretches
# through the window (70 eV/Å on C8H3+). Physics 2 divides by 1 + d_j − w_e − w_e' ≥ 1 instead
# (the other continuing bonds plus one): equal at full weights, no ε, no spike.
BRANCH_SOFTENING = 0.01


def continuing_bonds(receivers: Tensor, senders: Tensor, n_atoms: int) -> Tuple[Tensor, Tensor]:
    """Pairs of consecutive directed bonds without backtracking: (e, e') with e = (i ← j) and
    e' = (j ← k), k ≠ i — a walk that arrived at j along e' may go on to i along e.
    Returns (e indices, e' indices), built in O(pairs) from the bonds sorted by receiver."""
    n_bonds = receivers.shape[0]
    into = torch.bincount(receivers, minlength=n_atoms)               # bonds into each atom
    order = torch.argsort(receivers, stable=True)
    first = torch.cumsum(into, 0) - into
    fan = into[senders]                                                # candidates per bond
    pair_out = torch.repeat_interleave(torch.arange(n_bonds, device=receivers.device), fan)
    within = torch.arange(pair_out.shape[0], device=receivers.device) - torch.repeat_interleave(
        torch.cumsum(fan, 0) - fan, fan)
    pair_in = order[first[senders[pair_out]] + within]
    keep = senders[pair_in] != receivers[pair_out]
    return pair_out[keep], pair_in[keep]


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
        physics: set by the model. 2: the branch average without ε (see `BRANCH_SOFTENING`);
            1: as in model files written before.

    Separable: walks follow bonds only, so atoms of fragments that are not bonded never
    exchange anything, at any distance.
    """

    reach = math.inf
    through_space = 0.0   # walks follow bonds only
    periodic = True
    not_distributed = ("its walks follow the bonds through the whole molecule, which one "
                       "rank's atoms and ghosts do not hold")

    def __init__(self, widths: Tuple[int, ...], channels: PositiveInt = 8,
                 steps: PositiveInt = 24, bond_low: PositiveFloat = 1.15,
                 bond_high: PositiveFloat = 1.35, physics: int = 2):
        super().__init__()
        self.smooth_branches = physics >= 2
        if bond_high <= bond_low:
            raise ValueError(f"bond_high: must exceed bond_low ({bond_low}), got {bond_high}")
        width = widths[0]
        self.order = len(widths) - 1
        self.channels = int(channels)
        self.steps = int(steps)
        self.bond_low = float(bond_low)
        self.bond_high = float(bond_high)
        self.dense_below = 256  # atoms per structure up to which the walks are dense matrices
        self.branch_softening = BRANCH_SOFTENING
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

    def bonds(self, graph: Graph) -> Tuple[Tensor, Tensor, Tensor]:
        """Directed bonds (receivers i, senders j, weights w) of the pairs with w_ij > 0."""
        radii = self.radii.to(graph.lengths.dtype)
        w = smooth_bond_weights(graph.lengths, graph.numbers, graph.edge_index, radii,
                                self.bond_low, self.bond_high)
        bonded = torch.nonzero(w > 0).squeeze(1)
        return graph.edge_index[0][bonded], graph.edge_index[1][bonded], w[bonded]

    def propagate(self, start: Tensor, gamma: Tensor, graph: Graph) -> Tensor:
        """Y (N, C, P) from X = ``start`` (N, C, P) and γ (C, P), see the module docstring:
        dense per structure when structures are small, else over the list of bond pairs."""
        i, j, w = self.bonds(graph)
        n, c, p = start.shape
        pair_out, pair_in = continuing_bonds(i, j, n)
        degree = torch.zeros(n, dtype=w.dtype, device=w.device).index_add(0, i, w)
        if self.smooth_branches:
            step = w[pair_out] / (1.0 + degree[j[pair_out]] - w[pair_out] - w[pair_in])
        else:
            step = w[pair_out] / (degree[j[pair_out]] - w[pair_out] + self.branch_softening)
        g = gamma.reshape(1, c * p)
        x = start.reshape(n, c * p)
        batch, b = graph.batch, graph.num_graphs
        counts = torch.bincount(batch, minlength=b)
        n_max = int(counts.max()) if n > 0 else 0
        if n_max <= self.dense_below:
            return self._propagate_dense(x, g, i, j, w, pair_out, pair_in, step, graph,
                                         counts).reshape(n, c, p)
        walk = g * w[:, None] * torch.index_select(x, 0, j)                     # m^(1)
        arriving = walk
        for _ in range(self.steps - 1):
            walk = g * torch.zeros_like(walk).index_add(
                0, pair_out, step[:, None] * torch.index_select(walk, 0, pair_in))
            arriving = arriving + walk
        return (x + torch.zeros_like(x).index_add(0, i, arriving)).reshape(n, c, p)

    def _propagate_dense(self, x: Tensor, g: Tensor, i: Tensor, j: Tensor, w: Tensor,
                         pair_out: Tensor, pair_in: Tensor, step: Tensor, graph: Graph,
                         counts: Tensor) -> Tensor:
        """`propagate` with per-structure dense matrices: source S (bonds × atoms), continuation
        B (bonds × bonds) and arrival R (atoms × bonds); one batched matmul per step."""
        batch, b = graph.batch, graph.num_graphs
        rank = rank_in_segment(batch, counts)
        bond_batch = batch[i]
        bond_counts = torch.bincount(bond_batch, minlength=b)
        bond_rank = rank_in_segment(bond_batch, bond_counts)
        n_max = int(counts.max())
        e_max = int(bond_counts.max()) if i.shape[0] > 0 else 0
        source = x.new_zeros((b, e_max, n_max)).index_put(
            (bond_batch, bond_rank, rank[j]), w, accumulate=True)
        follow = x.new_zeros((b, e_max, e_max)).index_put(
            (bond_batch[pair_out], bond_rank[pair_out], bond_rank[pair_in]), step, accumulate=True)
        arrive = x.new_zeros((b, n_max, e_max)).index_put(
            (bond_batch, rank[i], bond_rank), torch.ones_like(w), accumulate=True)
        xp = x.new_zeros((b, n_max, x.shape[1])).index_put((batch, rank), x)
        walk = g * torch.bmm(source, xp)
        arriving = walk
        for _ in range(self.steps - 1):
            walk = g * torch.bmm(follow, walk)
            arriving = arriving + walk
        return x + torch.bmm(arrive, arriving)[batch, rank]

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
