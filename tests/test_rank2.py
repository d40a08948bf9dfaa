"""Rank-2 (ℓ = 2) features: the basis, equivariance of the products, and what they let a
local model see that vectors cannot (the twist of an allene's ends through its middle atom)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from conftest import make_model, predict
from mlip_attn.nn.rank2 import (BASIS, matrix_vector, outer_of_unit, rotation_matrix,
                                symmetric_product, to_matrix)

F64 = torch.float64


def test_basis_is_orthonormal_symmetric_and_traceless():
    gram = torch.einsum("iab,jab->ij", BASIS, BASIS)
    torch.testing.assert_close(gram, torch.eye(5, dtype=F64))
    torch.testing.assert_close(BASIS, BASIS.transpose(1, 2))
    assert BASIS.diagonal(dim1=1, dim2=2).sum(-1).abs().max() < 1e-15


def test_components_rebuild_the_matrices():
    u = torch.nn.functional.normalize(torch.randn(7, 3, dtype=F64), dim=1)
    expected = u[:, :, None] * u[:, None, :] - torch.eye(3, dtype=F64) / 3
    torch.testing.assert_close(to_matrix(outer_of_unit(u)), expected)
    a, b = torch.randn(4, 3, 2, dtype=F64), torch.randn(4, 3, 2, dtype=F64)
    outer = torch.einsum("naf,nbf->nfab", a, b)
    sym = 0.5 * (outer + outer.transpose(-1, -2))
    sym = sym - torch.eye(3, dtype=F64) * sym.diagonal(dim1=-2, dim2=-1).sum(-1)[..., None, None] / 3
    torch.testing.assert_close(to_matrix(symmetric_product(a, b).transpose(1, 2)), sym)
    t = torch.randn(4, 5, 2, dtype=F64)
    mv = torch.einsum("nfab,nbf->naf", to_matrix(t.transpose(1, 2)), a)
    torch.testing.assert_close(matrix_vector(t, a), mv)


def test_products_are_rotation_equivariant():
    R = torch.tensor(Rotation.random(random_state=0).as_matrix(), dtype=F64)
    D = rotation_matrix(R)
    torch.testing.assert_close(D @ D.T, torch.eye(5, dtype=F64))
    u = torch.nn.functional.normalize(torch.randn(6, 3, dtype=F64), dim=1)
    torch.testing.assert_close(outer_of_unit(u @ R.T), outer_of_unit(u) @ D.T)
    a, b = torch.randn(3, 3, 4, dtype=F64), torch.randn(3, 3, 4, dtype=F64)
    turn_v = lambda v: torch.einsum("ij,njf->nif", R, v)  # noqa: E731
    turn_t = lambda t: torch.einsum("ij,njf->nif", D, t)  # noqa: E731
    torch.testing.assert_close(symmetric_product(turn_v(a), turn_v(b)),
                               turn_t(symmetric_product(a, b)))
    t = torch.randn(3, 5, 4, dtype=F64)
    torch.testing.assert_close(matrix_vector(turn_t(t), turn_v(a)), turn_v(matrix_vector(t, a)))
    # the check can fail: the components do turn
    assert (outer_of_unit(u @ R.T) - outer_of_unit(u)).abs().max() > 1e-3


def _allene(twist_deg: float):
    """H2C=C=CH2 along z with the second CH2 turned by ``twist_deg`` (ideal, symmetric)."""
    from ase import Atoms
    c, s = np.cos(np.radians(twist_deg)), np.sin(np.radians(twist_deg))
    h = [[0.93, 0.0, -0.55], [-0.93, 0.0, -0.55],
         [0.93 * c, 0.93 * s, 3.17], [-0.93 * c, -0.93 * s, 3.17]]
    return Atoms("C3H4", positions=[[0, 0, 0], [0, 0, 1.31], [0, 0, 2.62], *h])


@pytest.mark.parametrize("name, sees", [("painn", False), ("painn-l2", True)])
def test_local_rank2_model_sees_an_allene_twist_that_vectors_cannot(name, sees):
    """Cutoff 3 Å: no H of one end is a neighbour of an H of the other, so the twist reaches
    the energy only through the middle carbon. Its vector messages from a CH2 end cancel
    (opposite in-plane directions); the rank-2 messages add up to the plane's orientation."""
    model = make_model(name, elements=(1, 6), width=16, layers=2, cutoff=3.0)
    energies = [float(predict(model, [_allene(t)])["energy"]) for t in (0.0, 30.0, 60.0, 90.0)]
    spread = max(energies) - min(energies)
    if sees:
        assert spread > 1e-7   # random weights: small, but 10⁶ × float64 noise
    else:
        assert spread < 1e-12
