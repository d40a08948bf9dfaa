"""Euclidean fast attention (EFA): linear-cost global attention with rotary
position encodings on a Lebedev grid (Frank, Chmiela, Müller, Unke,
arXiv:2412.08541). Written from the paper's mathematics; no code from the
authors' JAX/e3x implementation is used. (The authors declare a patent
application on the method.)

Maths in one line: for grid direction u_j (weight λ_j, Σλ = 1) rotate channel
pair k of q_m and k_n by θ = ω_k (u_j · r), then

    y_m = 1/√D Σ_j λ_j q̃_{m,j}ᵀ S_{j,b(m)},   S_{j,b} = Σ_{n ∈ b} k̃_{n,j} v_nᵀ

which equals (up to quadrature error) the O(N²) kernel form

    y_m = 1/√D Σ_n Σ_k sinc(ω_k r_mn) ⟨q_m^(k), k_n^(k)⟩ v_n .

Memory strategy (see ``_segment_attention``): the rotated queries and keys are
flattened to (N, P) with P = G·C·D_qk (C = 1, or 4 with ℓ = 1 channels); atoms
are scattered into a zero-padded (B, N_max, P) layout, S = K̃ᵀV is one batched
matmul giving (B, P, D_v), and Y = Q̃ S another. Peak memory is
O(B·N_max·P + B·P·D_v) — O(N·G·D_qk) for batches of similar-sized structures —
and an (N, G, D_qk, D_v) tensor is never formed. For a single structure
(num_graphs == 1) the padding copy is skipped.

Units: positions and r_max in Å, frequencies ω in 1/Å, b_max dimensionless
(radians).
"""

import math
from typing import Dict, Final, Literal, Optional, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from ..nn.graph import Features, Graph, centred_positions, rank_in_segment
from ..nn.switching import reach_switch
from ..registry import GLOBAL_BLOCKS, PositiveFloat, PositiveInt
from .base import GlobalBlock, LocalSums
from .efa_ops import kernels_enabled, rotations_triton, triton_kernels

__all__ = [
    "EuclideanFastAttention",
    "lebedev_grid",
    "lebedev_points",
    "b_max_for_grid",
    "measure_b_max",
    "structure_extent",
    "B_MAX_TABLE",
]

# Lebedev point count -> scipy.integrate.lebedev_rule order (precision degree).
_LEBEDEV_ORDERS: Dict[int, int] = {
    6: 3, 14: 5, 26: 7, 38: 9, 50: 11, 74: 13, 86: 15, 110: 17, 146: 19,
    170: 21, 194: 23, 230: 25, 266: 27, 302: 29, 350: 31, 434: 35, 590: 41,
    770: 47, 974: 53, 1202: 59, 1454: 65, 1730: 71, 2030: 77, 2354: 83,
    2702: 89, 3074: 95, 3470: 101, 3890: 107, 4334: 113, 4802: 119,
    5294: 125, 5810: 131,
}

# b_max / π: the largest ω_max·r_max with quadrature error of the invariant integrand
# exp(i b u·r̂) below 1e-5, measured by ``measure_b_max`` (the tests reproduce it).
B_MAX_TABLE: Dict[int, float] = {
    50: 1.27, 86: 2.2, 110: 2.64, 146: 3.17, 194: 4.13,
    302: 5.72, 434: 7.36, 590: 9.03, 974: 12.47,
}


def lebedev_points() -> Tuple[int, ...]:
    """Supported Lebedev grid sizes (number of points)."""
    return tuple(sorted(_LEBEDEV_ORDERS))


def _lebedev_numpy(points: int) -> Tuple[np.ndarray, np.ndarray]:
    if points not in _LEBEDEV_ORDERS:
        raise ValueError(
            f"no Lebedev grid with {points} points; supported: {lebedev_points()}"
        )
    from scipy.integrate import lebedev_rule  # SciPy >= 1.15

    x, w = lebedev_rule(_LEBEDEV_ORDERS[points])
    x = np.ascontiguousarray(x.T, dtype=np.float64)  # (G, 3)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    w = np.asarray(w, dtype=np.float64)
    return x, w / w.sum()


def lebedev_grid(points: int, dtype: torch.dtype = torch.float64) -> Tuple[Tensor, Tensor]:
    """Lebedev grid on the unit sphere.

    Returns ``directions`` (G, 3), unit vectors, and ``weights`` (G,) with
    Σ weights = 1 (so Σ_j λ_j f(u_j) ≈ the sphere *average* of f).
    """
    x, w = _lebedev_numpy(points)
    return torch.tensor(x, dtype=dtype), torch.tensor(w, dtype=dtype)


def b_max_for_grid(points: int, vectors: bool = False) -> float:
    """Default reach b_max (radians) of a G-point grid: `B_MAX_TABLE`, minus 0.1π when ℓ = 1
    channels are used (``vectors=True``: their integrands lose about that much)."""
    if points not in B_MAX_TABLE:
        raise ValueError(
            f"no tabulated b_max for a {points}-point grid; supported: "
            f"{sorted(B_MAX_TABLE)} (or pass b_max explicitly, see measure_b_max)"
        )
    b = B_MAX_TABLE[points] * math.pi
    return b - 0.1 * math.pi if vectors else b


def measure_b_max(
    points: int,
    tol: float = 1e-5,
    n_dirs: int = 500,
    step: float = 0.01 * math.pi,
    seed: int = 0,
) -> float:
    """Numerically measure the reach of a Lebedev grid (radians).

    Scans b upward in steps of ``step`` and returns the last b before the
    quadrature Σ_j λ_j exp(i b u_j·r̂) first deviates from the exact sphere
    average sinc(b) = sin(b)/b by more than ``tol`` for any of ``n_dirs``
    random unit directions r̂. The imaginary part vanishes exactly (Lebedev
    grids contain u and −u); the grids have octahedral symmetry, so r̂ is
    folded into the fundamental domain |x| ≥ |y| ≥ |z| for denser coverage.
    """
    x, w = _lebedev_numpy(points)
    rng = np.random.default_rng(seed)
    d = rng.normal(size=(n_dirs, 3))
    d = -np.sort(-np.abs(d / np.linalg.norm(d, axis=1, keepdims=True)), axis=1)
    proj = d @ x.T  # (R, G)
    # cos/sin(b·proj) advanced by the angle-addition recursion (cheaper than cos)
    c_step, s_step = np.cos(step * proj), np.sin(step * proj)
    cos_b, sin_b = c_step.copy(), s_step.copy()
    b, last = step, 0.0
    while b < 1e3:
        err = np.abs((cos_b * w).sum(axis=1) - math.sin(b) / b).max()
        if err > tol:
            return last
        last = b
        cos_b, sin_b = cos_b * c_step - sin_b * s_step, sin_b * c_step + cos_b * s_step
        b += step
    return last


def structure_extent(positions: Tensor, batch: Tensor, num_graphs: int) -> float:
    """Conservative O(N) bound (Å) on the largest intra-structure distance.

    Returns max over structures of 2 × (largest distance of an atom from its
    structure's centroid). This is ≥ the true largest pair distance and at most
    twice it (exact for two atoms, or pairs symmetric about the centroid).
    """
    centred = centred_positions(positions, batch, num_graphs)
    if centred.numel() == 0:
        return 0.0
    return 2.0 * float(torch.linalg.vector_norm(centred, dim=-1).max())


def _segment_attention(q: Tensor, k: Tensor, val: Tensor, batch: Tensor, num_graphs: int) -> Tensor:
    """Y_m = q_m · Σ_{n in b(m)} k_n ⊗ val_n for flat q, k (N, P) and val (N, Dv).

    Padded batched matmuls, associated whichever way is cheaper for the largest structure
    (same result): (q kᵀ) val costs N²(P + Dv) per structure, q (kᵀ val) costs 2 N P Dv, so
    small molecules take the first and large systems the second, which keeps time and memory
    linear in N (never an N·P·Dv tensor, and no N×N matrix once N is large).
    """
    p, dv = q.shape[1], val.shape[1]
    if num_graphs == 1:
        n = q.shape[0]
        if n * (p + dv) < 2 * p * dv:
            return (q @ k.transpose(0, 1)) @ val
        return q @ (k.transpose(0, 1) @ val)
    counts = torch.bincount(batch, minlength=num_graphs)
    n_max = int(counts.max())
    rank = rank_in_segment(batch, counts)
    idx = (batch, rank)
    qp = q.new_zeros((num_graphs, n_max, p)).index_put(idx, q)
    kp = k.new_zeros((num_graphs, n_max, p)).index_put(idx, k)
    vp = val.new_zeros((num_graphs, n_max, dv)).index_put(idx, val)
    if n_max * (p + dv) < 2 * p * dv:
        y = torch.bmm(torch.bmm(qp, kp.transpose(1, 2)), vp)  # (B, N, N) first
    else:
        y = torch.bmm(qp, torch.bmm(kp.transpose(1, 2), vp))  # (B, P, Dv) first
    return y[batch, rank]


def _dense_attention(q: Tensor, k: Tensor, val: Tensor, positions: Tensor, omega: Tensor,
                     batch: Tensor, num_graphs: int, r_max: float = 0.0) -> Tensor:
    """The exact kernel form y_m = Σ_{n in b(m)} Σ_k sinc(ω_k r_mn) ⟨q_m^(k), k_n^(k)⟩ val_n
    (n = m included) for q, k (N, C, d_qk), val (N, Dv), positions (N, 3) Å, ω (K,) 1/Å.
    ``r_max`` > 0 multiplies each pair by the C² switch S(r_mn) from r_max/2 to r_max (zero
    beyond: the separable form).

    Structures are padded to (B, n_max, …); padding rows have q = k = 0, so they add nothing.
    Cost O(B·n_max²·(C·d_qk + K + Dv)): cheaper than the Lebedev factorisation for small
    structures, and free of quadrature error.
    """
    n, c, d = q.shape
    if num_graphs == 1:
        qp, kp, vp, pp = q[None], k[None], val[None], positions[None]
        rank = torch.arange(n, device=q.device)
    else:
        counts = torch.bincount(batch, minlength=num_graphs)
        n_max = int(counts.max())
        rank = rank_in_segment(batch, counts)
        idx = (batch, rank)
        qp = q.new_zeros((num_graphs, n_max, c, d)).index_put(idx, q)
        kp = k.new_zeros((num_graphs, n_max, c, d)).index_put(idx, k)
        vp = val.new_zeros((num_graphs, n_max, val.shape[1])).index_put(idx, val)
        pp = positions.new_zeros((num_graphs, n_max, 3)).index_put(idx, positions)
    b, m = qp.shape[0], qp.shape[1]
    qk = torch.einsum("bmcki,bncki->bmnk", qp.reshape(b, m, c, d // 2, 2),
                      kp.reshape(b, m, c, d // 2, 2))                           # (B, n, n, K)
    diff = pp.unsqueeze(2) - pp.unsqueeze(1)
    r2 = (diff * diff).sum(-1)                                                  # (B, n, n)
    att = (_sinc_sq(r2.unsqueeze(-1) * omega * omega) * qk).sum(-1)
    if r_max > 0.0:
        # √ of r² + 1 on the diagonal and padding keeps the gradient finite; S(0) = 1 there
        r = torch.sqrt(torch.where(r2 > 0, r2, torch.ones_like(r2)))
        att = att * torch.where(r2 > 0, reach_switch(r, r_max), torch.ones_like(r2))
    y = torch.bmm(att, vp)
    return y[0] if num_graphs == 1 else y[batch, rank]


def _rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """ERoPE: rotate channel pairs (a, b) = (2k, 2k+1) of x (N, C, d_qk) by the
    angles whose cos and sin (N, G, K) are given (optionally times a quadrature
    weight): (a cos − b sin, a sin + b cos). Returns the rotated features
    flattened to (N, G·C·d_qk). The same angle acts on all C components
    (scalar + xyz). Real arithmetic on purpose: with complex tensors, models
    compiled by TorchScript's profiling executor returned wrong forces from
    the second call on."""
    n, c, d = x.shape
    pairs = x.reshape(n, 1, c, d // 2, 2)
    a, b = pairs[..., 0], pairs[..., 1]  # (N, 1, C, K)
    cos, sin = cos.unsqueeze(2), sin.unsqueeze(2)  # (N, G, 1, K)
    rotated = torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1)
    return rotated.reshape(n, cos.shape[1] * c * d)  # explicit: n may be 0 (an empty rank)


def _rotations(q: Tensor, k: Tensor, centred: Tensor, dirs: Tensor, omega: Tensor,
               lam: Tensor) -> Tuple[Tensor, Tensor]:
    """q and k (N, C, d_qk) rotated on the grid (directions (G, 3), weights λ (G,)) at the
    centred positions (N, 3) Å: (N, G·C·d_qk) each, the quadrature weights folded into q."""
    theta = (centred @ dirs.transpose(0, 1)).unsqueeze(-1) * omega  # (N, G, K)
    cos, sin = torch.cos(theta), torch.sin(theta)
    lam = lam.view(1, -1, 1)
    return _rotate(q, cos * lam, sin * lam), _rotate(k, cos, sin)


def _rms_normalised(v: Tensor) -> Tensor:
    """v (N, 3, F) divided by each atom's RMS vector norm over channels, sqrt(⟨|v_f|²⟩_f + ε²)
    with ε = 1e-3: rotation equivariant and smooth. The rank-2 channels are products of four
    vector features, so without this their signal starts ~|v|⁴ ≈ 1e-7 and barely trains."""
    scale = torch.sqrt((v * v).sum(dim=1).mean(dim=1, keepdim=True) + 1e-6)  # (N, 1)
    return v / scale.unsqueeze(1)


def _sinc_sq(x2: Tensor) -> Tensor:
    """sin(x)/x as a function of x² ≥ 0, smooth (finite gradients) at 0."""
    small = x2 < 1e-4
    x = torch.sqrt(torch.where(small, torch.ones_like(x2), x2))
    series = 1.0 - x2 / 6.0 + x2 * x2 / 120.0 - x2 * x2 * x2 / 5040.0
    return torch.where(small, series, torch.sin(x) / x)


EFA_PRESET = {"grid": 50, "d_qk": 16, "d_v": 16}


@GLOBAL_BLOCKS.register(
    "efa", summary="Euclidean fast attention: global attention with rotary encodings (Frank "
    "et al. 2024); switched to zero at r_max (separable, O(n²)), or with switch: false the "
    "linear-cost Lebedev factorisation",
    presets={"efa-l0": {**EFA_PRESET, "vectors": False},
             "efa-l1": {**EFA_PRESET, "vectors": True},
             "efa-l2": {**EFA_PRESET, "vectors": True, "tensors": True}})
class EuclideanFastAttention(GlobalBlock):
    """EFA branch for an invariant (EGNN, ``vectors=False``) or ℓ = 0/1
    (PaiNN, ``vectors=True``) host network.

    Args:
        widths: the host's channels per rotation order: F = widths[0] scalars, then
            vectors and rank-2 tensors if it has them (``vectors`` needs a host with vectors).
        r_max: largest distance (Å) expected between two atoms of one
            structure; ω_k = linspace(0, b_max, D_qk/2) / r_max.
        grid: Lebedev grid size G (see ``lebedev_points()``).
        d_qk: query/key channels (even; K = d_qk/2 rotary frequencies).
        d_v: value channels (per scalar / per vector part).
        vectors: also use and return ℓ = 1 (vector) channels.
        tensors: also attend over rank-2 values. With a host that carries rank-2 features
            (three widths, e.g. PaiNN with ``lmax: 2``) the values are those features
            (A t_j, 5 components each), the invariants ⟨Y_i, C t_i⟩ feed the scalars and the
            output Y_i feeds the host's tensors. Otherwise the values are built from vectors,
            T_j = (A v̂_j) ⊗ (B v̂_j) (ℓ = 0, 1, 2 parts; needs ``vectors``), and the invariants
            c_iᵀ Y_i d_i (c = C v̂_i, d = D v̂_i) feed the scalars; v̂ is v over its per-atom
            RMS norm (`_rms_normalised`). A symmetric pair of atoms (the two H of a CH2 end)
            has opposite in-plane vectors that cancel in any sum of vectors but not in their
            rank-2 parts, so these channels carry the plane's orientation across the
            structure; the energy gets (v_i · v_j)²-like terms (a cos² torsion).
        b_max: reach in radians; default ``b_max_for_grid(grid, vectors)``.
        feature_map: Ψ on scalar queries/keys: "identity", "silu" or "gelu".
            Vector queries/keys/values are linear in ``v`` (no nonlinearity).
        switch: (physics 2) multiply the kernel by the C² switch to zero at r_max (separable
            to round-off, O(n²) per structure, one process). False: no switch, the
            linear-cost Lebedev factorisation and MPI splitting for large systems; without the
            ω = 0 mode the kernel decays like 1/(ω_1 r) but never reaches zero, so fragments
            beyond r_max still interact weakly (not separable to round-off). The switched form
            costs O(pairs within r_max): the compiled pair kernel (`efa_ops`) keeps its memory
            O(N); the Python form builds N×N×K tensors (9.5 GB at 4,000 atoms). Measured
            costs: docs/results/performance.md ("EFA beside the local model").
        physics: set by the model, not the config (`mlip_attn.models.builder`). 2 (models
            built now): the separable form — frequencies ω_k = k·b_max/(K·r_max), k = 1..K
            (no ω = 0 channel, which couples every pair at any distance), and the exact kernel
            times the C² switch S(r) from r_max/2 to r_max, so atoms farther apart than r_max
            never interact (E(A + B) = E(A) + E(B) to round-off) and interactions fade
            smoothly toward r_max. Cost O(n²) per structure (the switch does not factorise
            over the Lebedev grid), single process. 1 (model files written before):
            ω_0 = 0 and the unswitched kernel, Lebedev factorisation for large structures and
            several MPI ranks.

    ``forward`` returns the branch output (ds, dv, dt) = MLP(Dense(EFA(x)) + x)
    whose last layers are zero-initialised: a fresh block returns zeros. The
    host adds it. ``attend`` gives the raw attention output.

    Every structure, of any size, takes the Lebedev factorisation (one function on every
    path). Distributed (``graph.owned`` ≥ 0, one structure split over MPI ranks): its sum over
    atoms factorises, so each process adds
    only its owned atoms into the centroid and S = K̃ᵀV, the ``sums`` hook (identity here; an
    MPI all-reduce in the LAMMPS export) completes them, and every node, ghosts included, gets
    q̃ S.

    Grid directions/weights and frequencies are float64 buffers, cast to the
    input dtype in forward, so ``.double()`` keeps the grid exact (rotation
    symmetry to ~1e-12). Note ``.float()``/``.to(float32)`` rounds them to
    float32 like any buffer; a later ``.double()`` then only gives ~1e-7
    symmetry, so convert a float32 model by rebuilding it, not by ``.double()``.

    Normalisation: 1/√D with D = C·d_qk (C = 4 with vectors). The value has
    d_v scalar channels (+ 3·d_v for the vector channels).
    """

    separable: Final[bool]
    compiled_message: Final[bool]  # TorchScript: call the compiled EFA ops (set by the export)
    envelope_r_max: float
    vectors: Final[bool]  # Final: TorchScript drops the unused branch
    tensors: Final[bool]
    host_tensors: Final[bool]
    distributed = True
    d_qk: int
    d_v: int
    n_comp: int
    r_max: float
    b_max: float

    def __init__(
        self,
        widths: Tuple[int, ...],
        r_max: PositiveFloat,
        grid: int = 50,
        d_qk: PositiveInt = 16,
        d_v: PositiveInt = 32,
        vectors: bool = False,
        b_max: Optional[PositiveFloat] = None,
        feature_map: Literal["identity", "silu", "gelu"] = "identity",
        tensors: bool = False,
        switch: bool = True,
        physics: int = 2,
    ) -> None:
        super().__init__()
        width, host_order = widths[0], len(widths) - 1
        if vectors and host_order < 1:
            raise ValueError("vectors: vector (ℓ = 1) channels need a backbone with vector "
                             "features (e.g. painn)")
        if tensors and not vectors and host_order < 2:
            raise ValueError("tensors: rank-2 channels are built from vector features unless "
                             "the backbone carries rank-2 features (painn with lmax: 2); "
                             "set vectors: true as well")
        if d_qk % 2:
            raise ValueError(f"d_qk must be even, got {d_qk}")
        if r_max <= 0:
            raise ValueError(f"r_max must be positive, got {r_max}")
        maps = {"identity": nn.Identity, "silu": nn.SiLU, "gelu": nn.GELU}
        if feature_map not in maps:
            raise ValueError(f"feature_map must be one of {sorted(maps)}, got {feature_map!r}")
        self.width = int(width)
        self.r_max = float(r_max)
        self.grid = int(grid)
        self.d_qk = int(d_qk)
        self.d_v = int(d_v)
        self.vectors = bool(vectors)
        self.tensors = bool(tensors)
        self.host_tensors = self.tensors and host_order >= 2
        self.order = 2 if self.host_tensors else (1 if vectors else 0)
        self.reach = self.r_max
        self.n_comp = 4 if vectors else 1  # scalar + 3 Cartesian components
        self.b_max = float(b_max) if b_max is not None else b_max_for_grid(grid, vectors)
        self.feature_map = feature_map
        # physics 2 (the separable form): no ω = 0 channel, the exact kernel times a C² switch
        # to zero at r_max; physics 1: the form of model files written before it
        self.separable = physics >= 2 and bool(switch)
        self.envelope_r_max = self.r_max if self.separable else 0.0
        self.switch = bool(switch)
        self.compiled_message = False
        self.distributed = not self.separable
        # physics 1 (ω = 0) or no switch (a 1/r tail): coupled at any distance
        self.through_space = self.r_max if self.separable else math.inf
        if self.separable:
            self.not_distributed = ("the separable form (physics 2) multiplies every pair by a "
                                    "switch of its distance, which no per-rank sum carries")

        dirs, weights = lebedev_grid(grid, torch.float64)
        if physics >= 2:  # K frequencies b_max·k/K, k = 1..K: no ω = 0 mode
            omega = torch.linspace(0.0, self.b_max, d_qk // 2 + 1, dtype=torch.float64)[1:]
        else:
            omega = torch.linspace(0.0, self.b_max, d_qk // 2, dtype=torch.float64)
        omega = omega / self.r_max
        # derived from the config, so not saved: loading a float32 model into float64 keeps
        # the grid at full precision
        self.register_buffer("directions", dirs, persistent=False)  # (G, 3)
        self.register_buffer("weights", weights, persistent=False)  # (G,), sums to 1
        self.register_buffer("omega", omega, persistent=False)  # (K,), 1/Å

        # attention projections
        self.psi = maps[feature_map]()
        self.proj_s = nn.Linear(width, 2 * d_qk + d_v)  # q, k, val from scalars
        self.proj_v: Optional[nn.Linear] = (
            nn.Linear(width, 2 * d_qk + d_v, bias=False) if vectors else None
        )
        # branch: MLP(Dense(EFA(x)) + x), last layers zero-initialised
        self.out_s = nn.Linear(d_v, width)
        self.mlp_hidden = nn.Linear(width, width)
        self.mlp_out = nn.Linear(width, width)
        nn.init.zeros_(self.mlp_out.weight)
        nn.init.zeros_(self.mlp_out.bias)
        self.out_v: Optional[nn.Linear] = nn.Linear(d_v, width, bias=False) if vectors else None
        self.vec_lin: Optional[nn.Linear] = nn.Linear(width, width, bias=False) if vectors else None
        self.vec_gate: Optional[nn.Linear] = nn.Linear(width, width) if vectors else None
        # invariants <W y_v, W' v>: orientation information reaches the scalars (and the
        # energy) in the same layer; without them the ℓ = 1 output only becomes visible to a
        # later layer's update
        self.vec_dot: Optional[nn.Linear] = nn.Linear(width, width, bias=False) if vectors else None
        if self.vec_gate is not None:
            nn.init.zeros_(self.vec_gate.weight)
            nn.init.zeros_(self.vec_gate.bias)
        # rank-2 values: (A v) ⊗ (B v) with the contraction (C v)ᵀ Y (D v), or from the host's
        # tensors A t with the contraction ⟨Y, C t⟩; d_v channels each
        source = widths[2] if self.host_tensors else width  # channels the values come from
        self.proj_t: Optional[nn.Linear] = (
            nn.Linear(source, (2 if self.host_tensors else 4) * d_v, bias=False)
            if tensors else None)
        self.out_t: Optional[nn.Linear] = nn.Linear(d_v, width, bias=False) if tensors else None
        # the host's tensors get Y back as vectors do: a linear map gated by scalars
        self.out_tt: Optional[nn.Linear] = (
            nn.Linear(d_v, source, bias=False) if self.host_tensors else None)
        self.ten_lin: Optional[nn.Linear] = (
            nn.Linear(source, source, bias=False) if self.host_tensors else None)
        self.ten_gate: Optional[nn.Linear] = nn.Linear(width, source) if self.host_tensors else None
        if self.ten_gate is not None:
            nn.init.zeros_(self.ten_gate.weight)
            nn.init.zeros_(self.ten_gate.bias)
        # per-structure sums of owned atoms -> sums over all processes (see GlobalBlock)
        self.sums: nn.Module = LocalSums()

    @torch.jit.ignore
    def extra_repr(self) -> str:
        return (
            f"width={self.width}, r_max={self.r_max}, grid={self.grid}, d_qk={self.d_qk}, "
            f"d_v={self.d_v}, vectors={self.vectors}, tensors={self.tensors}, b_max={self.b_max / math.pi:.3f}π, "
            f"feature_map={self.feature_map!r}"
        )

    @torch.jit.export
    def check_extent(self, positions: Tensor, batch: Tensor, num_graphs: int) -> float:
        """Conservative bound (Å) on the largest intra-structure distance,
        2 × max distance from the centroid; compare with ``self.r_max``."""
        return structure_extent(positions, batch, num_graphs)

    def _project(self, x: Features) -> Tuple[Tensor, Tensor, Tensor]:
        """q, k (N, C, d_qk) and val (N, d_v·(C + R)) with C = 1 (scalars) or 4 (scalar + xyz of
        the ℓ = 1 channels) and R rank-2 rows (9 built from vectors, 5 from the host, or 0)."""
        s, v = x.scalars, x.vectors
        d_qk, d_v = self.d_qk, self.d_v
        h = self.proj_s(s)
        q = self.psi(h[:, :d_qk]).unsqueeze(1)
        k = self.psi(h[:, d_qk : 2 * d_qk]).unsqueeze(1)
        val = h[:, 2 * d_qk :]
        if self.vectors:
            hv = self.proj_v(v)  # (N, 3, 2 d_qk + d_v), linear over features: equivariant
            q = torch.cat([q, hv[:, :, :d_qk]], dim=1)
            k = torch.cat([k, hv[:, :, d_qk : 2 * d_qk]], dim=1)
            val = torch.cat([val, hv[:, :, 2 * d_qk :].reshape(hv.shape[0], 3 * d_v)], dim=1)
        if self.host_tensors:
            a = self._tensor_projection(x, 0)  # (N, 5, d_v)
            val = torch.cat([val, a.reshape(a.shape[0], 5 * d_v)], dim=1)
        elif self.tensors:
            ab = self._tensor_projection(x, 0)  # (N, 3, 2 d_v): a, b
            outer = ab[:, :, None, :d_v] * ab[:, None, :, d_v:]  # (N, 3, 3, d_v)
            val = torch.cat([val, outer.reshape(ab.shape[0], 9 * d_v)], dim=1)
        return q, k, val

    def _tensor_projection(self, x: Features, half: int) -> Tensor:
        """Half 0: the rank-2 values' factors, half 1: the contraction's, one half of
        ``proj_t``'s rows each, none computed twice. From the host's tensors: A t or C t
        (N, 5, d_v); from vectors: (A v̂, B v̂) or (C v̂, D v̂), (N, 3, 2 d_v)."""
        rows = (1 if self.host_tensors else 2) * self.d_v
        weight = self.proj_t.weight[half * rows : (half + 1) * rows]
        if self.host_tensors:
            return torch.nn.functional.linear(x.tensors, weight)
        return torch.nn.functional.linear(_rms_normalised(x.vectors), weight)

    def _split(self, y: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """y_s (N, d_v), y_v (N, 3, d_v) ((N, 3, 0) without vectors) and the rank-2 rows y_t
        (N, 9 or 5, d_v) ((N, 0, d_v) without tensors). y_v and y_t are contiguous copies: a
        linear layer on a strided (N, rows, d_v) view runs as N tiny batched products (0.7 ms
        against 0.06 ms per call at 1,000 atoms)."""
        d_v = self.d_v
        n = y.shape[0]
        y_s = y[:, :d_v]
        start = d_v
        if self.vectors:
            y_v = y[:, d_v : 4 * d_v].reshape(n, 3, d_v).contiguous()
            start = 4 * d_v
        else:
            y_v = y.new_zeros((n, 3, 0))
        rows = (y.shape[1] - start) // d_v
        return y_s, y_v, y[:, start:].reshape(n, rows, d_v).contiguous()

    def attend(self, x: Features, positions: Tensor, batch: Tensor, num_graphs: int,
               owned: int = -1) -> Tuple[Tensor, Tensor, Tensor]:
        """Raw EFA output: always the Lebedev factorisation (`attend_lebedev`), whatever the
        structure's size and however it is split, so the model is one function on every path
        (one process or several, ASE or LAMMPS, a molecule or a crystal): the same quadrature
        everywhere, equal to rounding. The exact kernel form (`attend_exact`) is the test
        reference it approximates (~1e-12 well inside r_max).

        x: the host's features (vectors and tensors used as configured), positions (N, 3) Å,
        batch (N,) int64 in [0, num_graphs). Returns y_s, y_v, y_t (see `_split`).
        ``owned`` ≥ 0: one structure split over processes, of whose atoms this process owns
        the first ``owned`` nodes (see the class docstring): its sums run over the owned nodes
        and are completed by ``sums``.
        """
        if self.separable and owned < 0:   # the exact switched kernel: one process only
            return self.attend_exact(x, positions, batch, num_graphs)
        return self.attend_lebedev(x, positions, batch, num_graphs, owned)

    def attend_lebedev(self, x: Features, positions: Tensor, batch: Tensor, num_graphs: int,
                       owned: int = -1) -> Tuple[Tensor, Tensor, Tensor]:
        """EFA via the Lebedev factorisation, O(N·G·d_qk·d_v) time; see `attend` (``owned``
        too)."""
        q, k, val = self._project(x)
        dtype = q.dtype
        dirs = self.directions.to(dtype)
        lam = self.weights.to(dtype)
        omega = self.omega.to(dtype)
        if owned >= 0:
            centred = positions - self._split_centroid(positions, num_graphs, owned)
        else:
            centred = centred_positions(positions, batch, num_graphs)
        if torch.jit.is_scripting():   # the export's choice, a constant (one branch compiled)
            if self.compiled_message:
                y = self._grid_fused(q, k, val, centred, batch, num_graphs, owned)
            else:
                q_rot, k_rot = _rotations(q, k, centred, dirs, omega, lam)
                y = self._grid_products(q_rot, k_rot, val, batch, num_graphs, owned)
        elif self._triton_kernels(q):   # CUDA tensors: Triton kernels (`efa_ops`)
            q_rot, k_rot = self._rotations_triton(q, k, centred)
            y = self._grid_products(q_rot, k_rot, val, batch, num_graphs, owned)
        elif self._eager_kernels():
            y = self._grid_fused(q, k, val, centred, batch, num_graphs, owned)
        else:
            q_rot, k_rot = _rotations(q, k, centred, dirs, omega, lam)
            y = self._grid_products(q_rot, k_rot, val, batch, num_graphs, owned)
        return self._split(y / math.sqrt(self.n_comp * self.d_qk))

    def _grid_products(self, q_rot: Tensor, k_rot: Tensor, val: Tensor, batch: Tensor,
                       num_graphs: int, owned: int) -> Tensor:
        """y = q̃ S with S = K̃ᵀV per structure, from the rotated q̃, k̃ (N, G·C·d_qk); ``owned`` ≥ 0:
        S over the owned nodes, completed across processes by ``sums``."""
        if owned >= 0:
            return q_rot @ self.sums(k_rot[:owned].transpose(0, 1) @ val[:owned])
        return _segment_attention(q_rot, k_rot, val, batch, num_graphs)

    def _grid_fused(self, q: Tensor, k: Tensor, val: Tensor, centred: Tensor, batch: Tensor,
                    num_graphs: int, owned: int) -> Tensor:
        """`_grid_products` of the rotated q, k by the compiled ops (float64 grid). On the CPU
        ``mlip_attn::efa_grid_sums`` / ``efa_grid_apply``: the rotation fused into the grid
        sums, tiles of atoms whose rotated rows never leave the cache (S (B, P, V) in the ops'
        own layout of P); elsewhere ``efa_rotate`` (the device's kernel) and matmuls."""
        if q.device.type != "cpu":
            q_rot, k_rot = self._rotations_fused(q, k, centred)
            return self._grid_products(q_rot, k_rot, val, batch, num_graphs, owned)
        one = torch.ones_like(self.weights)
        if owned >= 0:   # one structure (checked by _split_centroid): S of the owned nodes
            sums = self.sums(torch.ops.mlip_attn.efa_grid_sums(
                k[:owned], centred[:owned], self.directions, self.omega, one, val[:owned],
                batch[:owned], 1))
        else:
            sums = torch.ops.mlip_attn.efa_grid_sums(k, centred, self.directions, self.omega,
                                                     one, val, batch, num_graphs)
        return torch.ops.mlip_attn.efa_grid_apply(q, centred, self.directions, self.omega,
                                                  self.weights, sums, batch)

    def _split_centroid(self, positions: Tensor, num_graphs: int, owned: int) -> Tensor:
        """(1, 3) centroid (Å) of one structure split over processes: this process's owned
        positions summed with their count, completed across processes by ``sums``."""
        if num_graphs != 1:
            raise ValueError("EFA over a structure split between processes (graph.owned >= 0) "
                             "takes one structure per call")
        # the count as a sum of ones: a tracer keeps ``owned`` a symbolic size (a float of it
        # would fix it to the example's)
        local = torch.nn.functional.pad(positions[:owned], (0, 1), value=1.0).sum(
            dim=0, keepdim=True)                                                # (1, 4)
        total = self.sums(local)
        return total[:, :3] / total[:, 3:].clamp(min=1.0)

    def attend_exact(self, x: Features, positions: Tensor, batch: Tensor, num_graphs: int
                     ) -> Tuple[Tensor, Tensor, Tensor]:
        """The exact kernel form of EFA, y_m = 1/√D Σ_n Σ_k sinc(ω_k r_mn) ⟨q_m^(k), k_n^(k)⟩
        val_n over n in m's structure (n = m included), D = C·d_qk — the limit the Lebedev
        quadrature approximates; O(n²) per structure (`_dense_attention`)."""
        q, k, val = self._project(x)
        omega = self.omega.to(q.dtype)
        if torch.jit.is_scripting():   # the export's choice, a constant (one branch compiled)
            if self.compiled_message:
                y = torch.ops.mlip_attn.efa_pair_attention(q, k, val, positions, batch, omega,
                                                           self.envelope_r_max)
            else:
                y = _dense_attention(q, k, val, positions, omega, batch, num_graphs,
                                     self.envelope_r_max)
        elif self._eager_kernels():   # pairs within r_max, O(N) memory (`efa_ops`)
            y = torch.ops.mlip_attn.efa_pair_attention(q, k, val, positions, batch, omega,
                                                       self.envelope_r_max)
        else:
            y = _dense_attention(q, k, val, positions, omega, batch, num_graphs,
                                 self.envelope_r_max)
        return self._split(y / math.sqrt(self.n_comp * self.d_qk))

    @torch.jit.unused
    def _eager_kernels(self) -> bool:
        """Whether eager EFA takes the compiled ops now (`efa_ops.kernels_enabled`);
        TorchScript takes them where the export set ``compiled_message``."""
        return kernels_enabled(self.training)

    @torch.jit.unused
    def _triton_kernels(self, q: Tensor) -> bool:
        """Whether eager EFA rotates ``q``'s device on Triton (`efa_ops.triton_kernels`)."""
        return triton_kernels(q, self.training)

    @torch.jit.unused
    def _rotations_triton(self, q: Tensor, k: Tensor, centred: Tensor) -> Tuple[Tensor, Tensor]:
        """`_rotations` by the Triton kernels (`efa_ops.rotations_triton`)."""
        return rotations_triton(q, k, centred, self.directions, self.omega, self.weights)

    def _rotations_fused(self, q: Tensor, k: Tensor, centred: Tensor) -> Tuple[Tensor, Tensor]:
        """`_rotations` by the compiled op ``mlip_attn::efa_rotate`` (float64 grid)."""
        one = torch.ones_like(self.weights)
        return (torch.ops.mlip_attn.efa_rotate(q, centred, self.directions, self.omega,
                                               self.weights),
                torch.ops.mlip_attn.efa_rotate(k, centred, self.directions, self.omega, one))

    def _branch(self, y_s: Tensor, y_v: Tensor, y_t: Tensor, x: Features) -> Features:
        """MLP(Dense(y) + x): scalars by a 2-layer SiLU MLP, vectors (and the host's tensors)
        by a linear map gated by scalars; last layers zero-initialised."""
        s, v, t = x.scalars, x.vectors, x.tensors
        h_s = self.out_s(y_s) + s
        h_v = v
        h_t = t
        if self.host_tensors:
            c = self._tensor_projection(x, 1)  # (N, 5, d_v)
            h_s = h_s + self.out_t((y_t * c).sum(dim=1))  # ⟨Y_i, C t_i⟩: rotation invariant
            h_t = self.out_tt(y_t) + t
        elif self.tensors:
            d_v = self.d_v
            y_m = y_t.reshape(y_t.shape[0], 3, 3, d_v)
            cd = self._tensor_projection(x, 1)  # (N, 3, 2 d_v): c, d
            t_inv = (cd[:, :, None, :d_v] * y_m * cd[:, None, :, d_v:]).sum(dim=(1, 2))
            h_s = h_s + self.out_t(t_inv)  # c_iᵀ Y_i d_i: rotation invariant
        if self.vectors:
            h_v = self.out_v(y_v) + v
            h_s = h_s + (h_v * self.vec_dot(h_v)).sum(dim=1)  # rotation-invariant couplings
        hidden = torch.nn.functional.silu(self.mlp_hidden(h_s))
        ds = self.mlp_out(hidden)
        dv = self.vec_lin(h_v) * self.vec_gate(hidden).unsqueeze(1) if self.vectors \
            else torch.zeros_like(v)
        dt = self.ten_lin(h_t) * self.ten_gate(hidden).unsqueeze(1) if self.host_tensors \
            else torch.zeros_like(t)
        return Features(ds, dv, dt)

    def exact_pairwise(self, x: Features, graph: Graph) -> Features:
        """Same as ``forward`` but with the O(N²) sinc kernel (test reference)."""
        y_s, y_v, y_t = self.attend_exact(x, graph.positions, graph.batch, graph.num_graphs)
        return self._branch(y_s, y_v, y_t, x)

    def forward(self, x: Features, graph: Graph) -> Features:
        """Branch output for the host's features ``x`` and the structures' positions (Å) in
        ``graph``: scalars (N, F), vectors (zeros when vectors=False; (N, 3, 0) in a scalar
        host) and tensors (zeros unless the host's rank-2 features are attended)."""
        y_s, y_v, y_t = self.attend(x, graph.positions, graph.batch, graph.num_graphs,
                                    graph.owned)
        return self._branch(y_s, y_v, y_t, x)
