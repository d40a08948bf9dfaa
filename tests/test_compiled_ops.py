"""The compiled ``mlip_attn`` ops (``libmlip_attn_torch.so``) and the fast LAMMPS export route.

Needs a C++ compiler (the ops are built once per torch version into the mlip-attn cache);
skipped otherwise.
"""
from __future__ import annotations

import shutil
import os

import pytest
import torch

from conftest import MODEL_CONFIGS, make_model, random_molecule, to_batch

from mlip_attn.lammps.build import PluginBuildError
from mlip_attn.nn.painn_message import message_reference

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*:DeprecationWarning")


@pytest.fixture(scope="module")
def ops():
    if shutil.which(os.environ.get("CXX", "c++")) is None and shutil.which("g++") is None:
        pytest.skip("no C++ compiler to build the mlip_attn ops")
    from mlip_attn.lammps.ops import load_ops
    try:
        return load_ops()
    except PluginBuildError as exc:
        pytest.skip(f"cannot build the mlip_attn ops here: {str(exc)[:300]}")


def message_inputs(first: bool, n=7, e=40, f=4, k=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    kw = {"dtype": torch.float64, "generator": g}
    phi = torch.randn(n, 3 * f, **kw).requires_grad_(True)
    v = torch.randn(n, 3, f, **kw).requires_grad_(not first)
    rho = torch.randn(e, k, **kw).requires_grad_(True)
    unit = torch.randn(e, 3, **kw).requires_grad_(True)
    weight = torch.randn(3 * f, k, **kw).requires_grad_(True)
    i = torch.randint(0, n, (e,), generator=g)
    j = torch.randint(0, n, (e,), generator=g)
    return (phi, v, rho, unit, weight), i, j


@pytest.mark.parametrize("first", [False, True])
@pytest.mark.parametrize("chunk", [1, 7, 1024])
def test_painn_message_op_equals_the_reference_with_gradients(ops, first, chunk):
    """Forward equals `message_reference`; first and second derivatives pass gradcheck."""
    dense, i, j = message_inputs(first)
    got = torch.ops.mlip_attn.painn_message(*dense, i, j, first, chunk)
    want = message_reference(*dense, i, j, first)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)

    def op(*x):
        return torch.ops.mlip_attn.painn_message(*x, i, j, first, chunk)
    assert torch.autograd.gradcheck(op, dense)
    assert torch.autograd.gradgradcheck(op, dense)


def test_painn_message_op_without_edges_and_in_inference_mode(ops):
    dense, i, j = message_inputs(False, e=0)
    ds, dv = torch.ops.mlip_attn.painn_message(*dense, i, j, False, 16)
    assert ds.abs().sum() == 0 and dv.abs().sum() == 0
    (ds.sum() + dv.sum()).backward()
    assert dense[2].grad.shape == (0, 5)
    dense, i, j = message_inputs(False)
    with torch.inference_mode():
        ds, _ = torch.ops.mlip_attn.painn_message(*[x.detach() for x in dense], i, j, False, 16)
    torch.testing.assert_close(ds, message_reference(*dense, i, j, False)[0].detach())


def test_bad_chunk_is_a_clear_error(ops):
    dense, i, j = message_inputs(False)
    with pytest.raises(RuntimeError, match="chunk must be positive"):
        torch.ops.mlip_attn.painn_message(*dense, i, j, False, 0)


def test_allreduce_sum_is_the_identity_outside_lammps(ops):
    """Without the plugin's MPI hook the cross-rank sum is the identity, forward and backward."""
    from mlip_attn.lammps.ops import allreduce_calls
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    y = torch.ops.mlip_attn.allreduce_sum(x)
    torch.testing.assert_close(y, x)
    (y * torch.arange(12.0, dtype=torch.float64).view(4, 3)).sum().backward()
    torch.testing.assert_close(x.grad, torch.arange(12.0, dtype=torch.float64).view(4, 3))
    assert allreduce_calls() == 0


def test_loading_twice_registers_once(ops):
    from mlip_attn.lammps.ops import load_ops, ops_registered
    assert load_ops() == ops and ops_registered()
    torch.ops.load_library(str(ops))      # the same file again: no second registration
    assert ops_registered()


@pytest.mark.parametrize("name", MODEL_CONFIGS)
def test_every_model_exports_on_the_fast_route(ops, name):
    """Every registered model family scripts with the compiled ops (PaiNN's message as the op,
    EFA's sums through the cross-rank hook) and equals the eager model in float64."""
    from mlip_attn.lammps.export import LammpsModel, use_compiled_ops
    model = make_model(name)
    atoms = random_molecule(9, seed=4)
    batch = to_batch([atoms], model.cutoff)
    want = model.predict(batch)
    scripted = torch.jit.script(LammpsModel(use_compiled_ops(make_model(name))))
    if name.startswith("painn"):
        assert "mlip_attn::painn_message" in str(scripted.inlined_graph)
    zero = torch.zeros(1, dtype=torch.float64)
    energy, atomic, forces, _ = scripted(batch.positions, batch.numbers, batch.edge_index,
                                         batch.shifts, len(atoms), zero, zero, False)
    torch.testing.assert_close(energy, want["energy"][0], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(atomic, want["energies"], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(forces, want["forces"], rtol=1e-10, atol=1e-10)


def test_export_route_auto_falls_back_with_a_warning(tmp_path, monkeypatch):
    """Where the ops cannot be built, ``route='auto'`` writes plain TorchScript and says why;
    ``route='torchscript+ops'`` refuses."""
    from mlip_attn import save_model
    from mlip_attn.lammps import export as lexport
    from mlip_attn.lammps import ops as lops
    monkeypatch.setattr(lops, "try_load_ops", lambda build=True: (False, "no C++ compiler"))
    save_model(make_model("painn"), tmp_path / "m.pt")
    with pytest.warns(RuntimeWarning, match="plain TorchScript.*no C\\+\\+ compiler"):
        out = lexport.export_lammps(tmp_path / "m.pt", tmp_path / "m-lammps.pt")
    assert lexport.read_export_metadata(out)["route"] == "torchscript"
    with pytest.raises(RuntimeError, match="compiled mlip_attn ops are not available"):
        lexport.export_lammps(tmp_path / "m.pt", tmp_path / "x.pt", route="torchscript+ops")
    with pytest.raises(ValueError, match="route must be one of"):
        lexport.export_lammps(tmp_path / "m.pt", tmp_path / "x.pt", route="aoti")


@pytest.mark.slow
def test_aoti_probe_compiles_and_matches(ops):
    """The AOTInductor option (measured by ``mlip-attn bench --lammps --aoti``): forces from
    the compiled package equal the eager model's."""
    from mlip_attn.apps.aoti_probe import run_aoti_probe
    rows = run_aoti_probe(sizes=(32,), width=8, layers=1, steps=1, threads=1,
                          dtypes=("float64",))
    assert rows[0]["force_diff"] < 1e-10 and rows[0]["aoti_ms"] > 0
