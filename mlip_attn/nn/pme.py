"""Smooth particle-mesh Ewald (SPME, Essmann et al. 1995): the reciprocal-space potential of
point charges in a periodic cell on a mesh, in plain torch (TorchScript-compatible, autograd
through positions and the cell) and split-able over processes.

For charges q_j (e) at r_j (Å) in the cell (3, 3) (rows = lattice vectors a_d), Ewald
splitting α (1/Å):

    φ_rec(r_i) = (4π/V) Σ_{k≠0} e^{−k²/4α²}/k² Re(e^{−ik·r_i} S(k)),   S(k) = Σ_j q_j e^{ik·r_j}

SPME spreads each charge on a mesh of M_0 × M_1 × M_2 points with cardinal B-splines of
order p (``order``) at its scaled fractional coordinates u_d = M_d (r · b_d) (b_d the rows of
cell⁻ᵀ), convolves the mesh with the influence function

    G(m) = (4π/V) e^{−k²/4α²}/k² · Π_d |b_d(m_d)|²,   k = 2π Σ_d m_d b_d,  G(0) = 0

by FFT, and interpolates the result back at every atom with the same B-splines. The error
falls as (h α)^p with the mesh spacing h (`mesh_shape`).

Split over processes: the mesh is a sum over atoms. Each process spreads only the charges it
owns; the caller completes the mesh (one all-reduce) before `mesh_potential` and interpolates
at every node it holds (owned or ghost). The mesh is then the same on every process, so the
potential agrees with one process to rounding.
"""
import math
from typing import List, Tuple

import torch
from torch import Tensor


def fft_size(n: int) -> int:
    """The smallest integer ≥ n (≥ 1) whose only prime factors are 2, 3 and 5."""
    m = max(int(n), 1)
    smooth = False
    while not smooth:
        k = m
        for p in (2, 3, 5):
            while k % p == 0:
                k = k // p
        smooth = k == 1
        if not smooth:
            m += 1
    return m


def mesh_shape(cell: Tensor, spacing: float, order: int) -> List[int]:
    """Mesh points per lattice direction: |a_d| / h (h = ``spacing``, Å) rounded up to an
    FFT-friendly size, at least ``order`` points."""
    lengths = torch.linalg.norm(cell.detach(), dim=1)
    h = spacing
    out: List[int] = []
    for d in range(3):
        out.append(fft_size(max(int(math.ceil(float(lengths[d]) / h)), order)))
    return out


def bspline_weights(w: Tensor, order: int) -> Tensor:
    """Cardinal B-spline weights M_p(w + k), k = 0 … p−1, (…, p), for fractional offsets
    w ∈ [0, 1) (…): the weight of mesh point ⌊u⌋ − k for an atom at scaled coordinate u."""
    weights: List[Tensor] = [w, 1.0 - w]             # M_2(w), M_2(w + 1)
    for n in range(3, order + 1):
        new: List[Tensor] = []
        for k in range(n):
            x = w + k
            value = torch.zeros_like(w)
            if k < n - 1:
                value = value + x / (n - 1) * weights[k]
            if k > 0:
                value = value + (n - x) / (n - 1) * weights[k - 1]
            new.append(value)
        weights = new
    return torch.stack(weights, dim=-1)


def bspline_moduli(size: int, order: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """|b(m)|² (size,) of the SPME B-spline correction for m in FFT order (0 … size−1)."""
    # M_p at the integers 1 … p−1
    grid = torch.zeros(1, dtype=torch.float64)
    values = bspline_weights(grid, order)[0]          # M_p(0 + k), k = 0 … p−1
    m = torch.arange(size, dtype=torch.float64)
    denom_re = torch.zeros(size, dtype=torch.float64)
    denom_im = torch.zeros(size, dtype=torch.float64)
    for k in range(order - 1):
        angle = 2.0 * math.pi * m * k / size
        denom_re = denom_re + values[k + 1] * torch.cos(angle)
        denom_im = denom_im + values[k + 1] * torch.sin(angle)
    modulus = denom_re * denom_re + denom_im * denom_im
    return (1.0 / modulus.clamp(min=1e-30)).to(dtype=dtype, device=device)


def spline_stencil(positions: Tensor, cell: Tensor, shape: List[int], order: int
                   ) -> Tuple[Tensor, Tensor]:
    """Flat mesh indices (n, p³) and weights (n, p³) of the atoms at ``positions`` (n, 3) Å;
    the weights are differentiable in positions and cell."""
    m0, m1, m2 = shape[0], shape[1], shape[2]
    sizes = torch.tensor(shape, dtype=positions.dtype, device=positions.device)
    u = (positions @ torch.linalg.inv(cell)) * sizes                    # (n, 3) scaled fractional
    base = torch.floor(u.detach())
    w = bspline_weights(u - base, order)                                 # (n, 3, p)
    offsets = torch.arange(order, device=positions.device)
    idx = base.to(torch.long).unsqueeze(-1) - offsets                    # (n, 3, p)
    i0 = torch.remainder(idx[:, 0], m0)
    i1 = torch.remainder(idx[:, 1], m1)
    i2 = torch.remainder(idx[:, 2], m2)
    flat = (i0[:, :, None, None] * m1 + i1[:, None, :, None]) * m2 + i2[:, None, None, :]
    weight = w[:, 0, :, None, None] * w[:, 1, None, :, None] * w[:, 2, None, None, :]
    n = positions.shape[0]
    return flat.reshape(n, -1), weight.reshape(n, -1)


def spread(q: Tensor, flat: Tensor, weight: Tensor, shape: List[int]) -> Tensor:
    """The charge mesh (M_0·M_1·M_2,) of charges q (n,) with their stencils."""
    size = shape[0] * shape[1] * shape[2]
    return q.new_zeros(size).index_add(0, flat.reshape(-1), (q.unsqueeze(1) * weight).reshape(-1))


def influence(cell: Tensor, alpha: float, shape: List[int], order: int) -> Tensor:
    """G(m) (M_0, M_1, M_2 // 2 + 1) for ``torch.fft.rfftn``'s layout, differentiable in the
    cell (k vectors and volume)."""
    dtype, device = cell.dtype, cell.device
    recip = torch.linalg.inv(cell).transpose(0, 1)                      # rows b_d (no 2π)
    f0 = torch.fft.fftfreq(shape[0], 1.0 / shape[0], dtype=dtype, device=device)
    f1 = torch.fft.fftfreq(shape[1], 1.0 / shape[1], dtype=dtype, device=device)
    f2 = torch.fft.rfftfreq(shape[2], 1.0 / shape[2], dtype=dtype, device=device)
    # k² = 4π² Σ_de m_d m_e (b_d · b_e), built from broadcast 1-d pieces (no (M³, 3) tensor)
    metric = (4.0 * math.pi * math.pi) * (recip @ recip.transpose(0, 1))
    a0, a1, a2 = f0[:, None, None], f1[None, :, None], f2[None, None, :]
    k2 = (metric[0, 0] * a0 * a0 + 2.0 * metric[0, 1] * a0 * a1 + metric[1, 1] * a1 * a1) \
        + (2.0 * metric[0, 2] * a0 + 2.0 * metric[1, 2] * a1 + metric[2, 2] * a2) * a2
    zero = k2 == 0
    k2 = torch.where(zero, torch.ones_like(k2), k2)
    volume = torch.abs(torch.linalg.det(cell))
    g = (4.0 * math.pi / volume) * torch.exp(-k2 / (4.0 * alpha * alpha)) / k2
    g = torch.where(zero, torch.zeros_like(g), g)
    b0 = bspline_moduli(shape[0], order, dtype, device)
    b1 = bspline_moduli(shape[1], order, dtype, device)
    b2 = bspline_moduli(shape[2], order, dtype, device)[: shape[2] // 2 + 1]
    return g * b0[:, None, None] * b1[None, :, None] * b2[None, None, :]


def mesh_potential(mesh: Tensor, g: Tensor, shape: List[int]) -> Tensor:
    """The reciprocal potential on the mesh (M_0·M_1·M_2,) e/Å of a charge mesh, with the
    influence function ``g`` (`influence`)."""
    grid = mesh.reshape(shape[0], shape[1], shape[2])
    total = shape[0] * shape[1] * shape[2]
    conv = torch.fft.rfftn(grid) * g
    return total * torch.fft.irfftn(conv, s=[shape[0], shape[1], shape[2]]).reshape(-1)


def interpolate(potential: Tensor, flat: Tensor, weight: Tensor) -> Tensor:
    """φ (n,) at the atoms of the stencils from the mesh potential."""
    return (potential[flat] * weight).sum(1)
