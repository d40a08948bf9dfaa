"""EGNN's chunked edge network (inference on large graphs) equals plain autograd."""
import numpy as np
import pytest
import torch

from mlip_attn.nn.policy import message_policy
from mlip_attn.nn.egnn_message import ChunkedEdgeMessages, edge_messages_reference

from conftest import make_model, predict, random_crystal, random_molecule


def _inputs(n_atoms=5, n_edges=13, width=3, basis=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    kw = dict(dtype=torch.float64, generator=g)
    tensors = [torch.randn(n_atoms, 2 * width, **kw), torch.randn(n_edges, basis, **kw),
               torch.rand(n_edges, **kw), torch.randn(width, basis, **kw),
               torch.randn(width, **kw), torch.randn(width, width, **kw),
               torch.randn(width, **kw), torch.randn(1, width, **kw), torch.randn(1, **kw)]
    tensors = [t.requires_grad_(True) for t in tensors]
    i = torch.randint(0, n_atoms, (n_edges,), generator=g)
    j = torch.randint(0, n_atoms, (n_edges,), generator=g)
    return tensors, i, j


@pytest.mark.parametrize("chunk", [1, 4, 100])
def test_chunked_edge_messages_equal_the_reference_to_second_order(chunk):
    tensors, i, j = _inputs()
    fn = lambda *t: ChunkedEdgeMessages.apply(*t, i, j, chunk)  # noqa: E731
    torch.testing.assert_close(fn(*tensors), edge_messages_reference(*tensors, i, j),
                               rtol=1e-13, atol=1e-13)
    assert torch.autograd.gradcheck(fn, tensors)
    assert torch.autograd.gradgradcheck(fn, tensors)


def test_chunked_edge_messages_with_no_edges():
    tensors, _, _ = _inputs()
    tensors[1], tensors[2] = tensors[1][:0], tensors[2][:0]
    empty = torch.zeros(0, dtype=torch.long)
    out = ChunkedEdgeMessages.apply(*tensors, empty, empty, 4)
    assert not out.abs().any()
    grads = torch.autograd.grad(out.sum(), tensors, allow_unused=True)
    assert all(g is None or not g.abs().any() for g in grads)


@pytest.mark.parametrize("structure", ["molecule", "crystal"])
def test_egnn_inference_in_chunks_equals_plain(structure):
    atoms = random_molecule(14, seed=2) if structure == "molecule" else random_crystal(1)
    model = make_model("egnn", layers=3)
    plain = predict(model, [atoms], stress=structure == "crystal")
    with message_policy(egnn_chunked_from=0):
        chunked = predict(model, [atoms], stress=structure == "crystal")
    for key in plain:
        torch.testing.assert_close(chunked[key], plain[key], rtol=1e-12, atol=1e-12)


@pytest.fixture
def chunked_egnn():
    with message_policy(egnn_chunked_from=0):
        yield


def test_egnn_chunked_forces_match_finite_differences(chunked_egnn):
    atoms = random_molecule(8, seed=4)
    model = make_model("egnn", layers=2)
    forces = predict(model, [atoms])["forces"].numpy()
    h = 1e-5
    for a, d in [(0, 0), (3, 2), (7, 1)]:
        e = []
        for sign in (1, -1):
            moved = atoms.copy()
            moved.positions[a, d] += sign * h
            e.append(float(predict(model, [moved])["energy"][0]))
        assert forces[a, d] == pytest.approx(-(e[0] - e[1]) / (2 * h), rel=1e-6, abs=1e-8)
    assert np.isfinite(forces).all()
