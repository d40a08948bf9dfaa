"""Symmetric traceless rank-2 tensors (ℓ = 2 features) in an orthonormal 5-component basis.

A symmetric traceless 3 × 3 matrix M is stored as its coordinates m_k = ⟨M, B_k⟩_F in the basis

    B_1 = (xy + yx)/√2,  B_2 = (yz + zy)/√2,  B_3 = (xz + zx)/√2,
    B_4 = (xx − yy)/√2,  B_5 = (2zz − xx − yy)/√6,

which is orthonormal under the Frobenius product, so ⟨M, N⟩_F = Σ_k m_k n_k is rotation
invariant and a rotation acts on (m_1 … m_5) by an orthogonal 5 × 5 matrix. Features carry the
component index in dimension 1: (N, 5, F), like vectors (N, 3, F).

Why ℓ = 2: the orientation of a plane (a CH2 group: two H with opposite in-plane directions)
cancels in every sum of vectors but not in the sum of the outer products û ûᵀ of its bonds.
"""
import math

import torch
from torch import Tensor

_S2, _S6 = 1.0 / math.sqrt(2.0), 1.0 / math.sqrt(6.0)
# BASIS[k] = B_{k+1}, (5, 3, 3)
BASIS = torch.tensor([
    [[0.0, _S2, 0.0], [_S2, 0.0, 0.0], [0.0, 0.0, 0.0]],
    [[0.0, 0.0, 0.0], [0.0, 0.0, _S2], [0.0, _S2, 0.0]],
    [[0.0, 0.0, _S2], [0.0, 0.0, 0.0], [_S2, 0.0, 0.0]],
    [[_S2, 0.0, 0.0], [0.0, -_S2, 0.0], [0.0, 0.0, 0.0]],
    [[-_S6, 0.0, 0.0], [0.0, -_S6, 0.0], [0.0, 0.0, 2.0 * _S6]],
], dtype=torch.float64)


def outer_of_unit(u: Tensor) -> Tensor:
    """Components (E, 5) of û ûᵀ − I/3 for unit vectors ``u`` (E, 3) (norm √(2/3) each)."""
    s2, s6 = 0.7071067811865476, 0.4082482904638631     # 1/√2, 1/√6 (TorchScript: no globals)
    x, y, z = u[:, 0], u[:, 1], u[:, 2]
    return torch.stack([2.0 * s2 * x * y, 2.0 * s2 * y * z, 2.0 * s2 * x * z,
                        s2 * (x * x - y * y), s6 * (3.0 * z * z - 1.0)], dim=1)


def symmetric_product(a: Tensor, b: Tensor) -> Tensor:
    """Components (N, 5, F) of the symmetric traceless part of a_f ⊗ b_f for vectors
    a, b (N, 3, F), channel by channel."""
    s2, s6 = 0.7071067811865476, 0.4082482904638631
    ax, ay, az = a[:, 0], a[:, 1], a[:, 2]
    bx, by, bz = b[:, 0], b[:, 1], b[:, 2]
    return torch.stack([s2 * (ax * by + ay * bx), s2 * (ay * bz + az * by),
                        s2 * (ax * bz + az * bx), s2 * (ax * bx - ay * by),
                        s6 * (2.0 * az * bz - ax * bx - ay * by)], dim=1)


def matrix_vector(t: Tensor, v: Tensor) -> Tensor:
    """M_f v_f (N, 3, F) for tensors t (N, 5, F) (components of M_f) and vectors v (N, 3, F)."""
    s2, s6 = 0.7071067811865476, 0.4082482904638631
    t1, t2, t3, t4, t5 = t[:, 0], t[:, 1], t[:, 2], t[:, 3], t[:, 4]
    vx, vy, vz = v[:, 0], v[:, 1], v[:, 2]
    xx, yy, zz = s2 * t4 - s6 * t5, -s2 * t4 - s6 * t5, 2.0 * s6 * t5
    xy, yz, xz = s2 * t1, s2 * t2, s2 * t3
    return torch.stack([xx * vx + xy * vy + xz * vz, xy * vx + yy * vy + yz * vz,
                        xz * vx + yz * vy + zz * vz], dim=1)


def to_matrix(t: Tensor) -> Tensor:
    """The 3 × 3 matrices (..., 3, 3) of components t (..., 5) (the last axis)."""
    return torch.einsum("...k,kab->...ab", t, BASIS.to(dtype=t.dtype, device=t.device))


def rotation_matrix(rotation: Tensor) -> Tensor:
    """The orthogonal 5 × 5 matrix D with m' = D m when every vector turns as r' = R r
    (``rotation`` R, (3, 3)): M' = R M Rᵀ in components."""
    basis = BASIS.to(dtype=rotation.dtype, device=rotation.device)
    turned = rotation @ basis @ rotation.transpose(0, 1)              # (5, 3, 3)
    return torch.einsum("jab,kab->jk", basis, turned)
