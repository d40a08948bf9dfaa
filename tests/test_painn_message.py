"""The chunked PaiNN message (inference path) equals the plain autograd one, to second order, on
both eager routes (the compiled op and Python)."""
import pytest
import torch

from mlip_attn.nn.painn_message import message_in_chunks, message_reference, painn_message

from conftest import make_model, predict, random_molecule
from mlip_attn.lammps.export import script


@pytest.fixture(params=["compiled", "python"], autouse=True)
def message_route(request):
    """Every test on both routes of the eager message: the compiled op (fused loops; the ATen
    chunks where a backward must be differentiable) and the Python `ChunkedMessage`; training
    steps never take the one plain pass (small test graphs would otherwise)."""
    from mlip_attn.nn import policy
    if request.param == "compiled" and not policy.compiled_message_available():
        pytest.skip(f"no compiled message here: {policy.describe()}")
    route = "python" if request.param == "python" else "auto"
    with policy.message_policy(route=route, one_pass_below=0):
        yield request.param


def _inputs(n_atoms=7, n_edges=30, width=4, basis=5, seed=0, lmax=2):
    """(phi, rho, weight, v, û, [t, y2]) with gradients, receivers, senders; the tensors have
    one channel fewer than the scalars and vectors (widths may differ by order)."""
    g = torch.Generator().manual_seed(seed)
    kw = dict(dtype=torch.float64, generator=g)
    widths = [width, width - 1][:lmax]
    channels = width + 2 * sum(widths)
    tensors = [torch.randn(n_atoms, channels, **kw), torch.randn(n_edges, basis, **kw),
               torch.randn(channels, basis, **kw)]
    for m, w in zip((3, 5), widths):
        tensors += [torch.randn(n_atoms, m, w, **kw), torch.randn(n_edges, m, **kw)]
    tensors = tuple(t.requires_grad_(True) for t in tensors)
    receivers = torch.randint(0, n_atoms, (n_edges,), generator=g)
    senders = torch.randint(0, n_atoms, (n_edges,), generator=g)
    return tensors, receivers, senders


def _call(fn, tensors, i, j, first, *chunk):
    """Call a message function on the flat ``_inputs`` tuple; returns a flat tuple of outputs."""
    phi, rho, weight, *orders = tensors
    ds, out = fn(phi, list(orders[0::2]), list(orders[1::2]), rho, weight, i, j, first, *chunk)
    return (ds, *out)


@pytest.mark.parametrize("lmax", [1, 2])
@pytest.mark.parametrize("first", [False, True])
@pytest.mark.parametrize("chunk", [1, 7, 30, 1000])
def test_chunked_message_equals_reference(first, chunk, lmax):
    tensors, i, j = _inputs(lmax=lmax)
    ref = _call(message_reference, tensors, i, j, first)
    out = _call(painn_message, tensors, i, j, first, chunk)
    assert len(ref) == len(out) == 1 + lmax
    for a, b in zip(ref, out):
        torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-13)
    # first-order gradients against the reference's
    weights = [torch.randn_like(t) for t in ref]
    g_ref = torch.autograd.grad(sum((w * t).sum() for w, t in zip(weights, ref)), tensors,
                                allow_unused=True)
    g_out = torch.autograd.grad(sum((w * t).sum() for w, t in zip(weights, out)), tensors,
                                allow_unused=True)
    for a, b in zip(g_ref, g_out):
        if a is None:  # the features are unused in the first layer
            assert b is None or not b.abs().any()
        else:
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("lmax", [1, 2])
@pytest.mark.parametrize("first", [False, True])
def test_chunked_message_first_and_second_derivatives(first, lmax):
    tensors, i, j = _inputs(n_atoms=5, n_edges=12, width=2, basis=3, lmax=lmax)
    fn = lambda *t: _call(painn_message, t, i, j, first, 5)  # noqa: E731
    assert torch.autograd.gradcheck(fn, tensors)
    assert torch.autograd.gradgradcheck(fn, tensors)


@pytest.mark.parametrize("lmax", [1, 2])
@pytest.mark.parametrize("first", [False, True])
def test_scripted_chunk_loop_equals_reference(first, lmax):
    """The TorchScript (LAMMPS) path: plain autograd over edge chunks."""
    tensors, i, j = _inputs(lmax=lmax)
    scripted = script(message_in_chunks)
    ref = _call(message_reference, tensors, i, j, first)
    out = _call(scripted, tensors, i, j, first, 7)
    for a, b in zip(ref, out):
        torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-13)
    g_ref = torch.autograd.grad(ref[0].sum() + sum(r.square().sum() for r in ref[1:]), tensors,
                                allow_unused=True)
    g_out = torch.autograd.grad(out[0].sum() + sum(o.square().sum() for o in out[1:]), tensors,
                                allow_unused=True)
    for a, b in zip(g_ref, g_out):
        assert (a is None) == (b is None) or not (a if a is not None else b).abs().any()
        if a is not None and b is not None:
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_chunked_message_with_no_edges():
    tensors, _, _ = _inputs()
    empty = torch.zeros(0, dtype=torch.long)
    phi, rho, weight, v, unit, t, y2 = tensors
    tensors = (phi, rho[:0], weight, v, unit[:0], t, y2[:0])
    out = _call(painn_message, tensors, empty, empty, False, 1024)
    assert not any(o.abs().any() for o in out)
    grads = torch.autograd.grad(sum(o.sum() for o in out), tensors, allow_unused=True)
    assert all(g is None or not g.abs().any() for g in grads)


@pytest.mark.parametrize("name", ["painn", "painn-l2"])
def test_force_training_gradients_equal_the_plain_path(monkeypatch, name):
    """A force loss's parameter gradients (second derivatives) through the chunked message
    equal those through plain autograd (what TorchScript runs)."""
    from mlip_attn.backbones.painn import PaiNNLayer
    atoms = random_molecule(12, seed=3)

    def loss_and_grads():
        model = make_model(name, layers=3).train()
        out = predict(model, [atoms])
        loss = out["energy"].square().sum() + out["forces"].square().sum()
        return loss.detach(), torch.autograd.grad(loss, list(model.parameters()))

    loss, grads = loss_and_grads()
    monkeypatch.setattr(PaiNNLayer, "_chunked_message",
                        lambda self, *a: message_reference(*a, self.first))
    ref_loss, ref_grads = loss_and_grads()
    torch.testing.assert_close(loss, ref_loss, rtol=1e-12, atol=1e-12)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-9, atol=1e-10)


def test_frozen_weights_give_the_same_forces():
    """The calculator freezes weights (the backward then skips their gradients)."""
    model = make_model("painn")
    atoms = random_molecule(10, seed=1)
    before = predict(model, [atoms])["forces"]
    model.requires_grad_(False)
    torch.testing.assert_close(predict(model, [atoms])["forces"], before, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("name", ["painn", "painn-l2"])
def test_inference_path_equals_the_training_path(name):
    """Eval mode (the chunked message at every size, in several chunks) gives the training
    path's (plain pass on a small graph) energies and forces."""
    from mlip_attn.nn.policy import message_policy
    atoms = random_molecule(12, seed=5)
    model = make_model(name, layers=3)
    with message_policy(one_pass_below=4096):
        plain = predict(model.train(), [atoms])
    with message_policy(edges_per_thread=16):   # several chunks on 12 atoms
        chunked = predict(model.eval(), [atoms])
    for key in ("energy", "forces"):
        torch.testing.assert_close(chunked[key], plain[key].detach(), rtol=1e-12, atol=1e-12)
