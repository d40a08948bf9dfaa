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
    from mlip_attn.ops.library import load_ops
    try:
        return load_ops()
    except PluginBuildError as exc:
        pytest.skip(f"cannot build the mlip_attn ops here: {str(exc)[:300]}")


def message_inputs(first: bool, n=7, e=40, f=4, k=5, lmax=1, seed=0):
    """(phi, rho, weight), the orders' (features, geometry), receivers, senders, with
    gradients: vectors (N, 3, F) with û-like (E, 3), and with ``lmax`` 2 rank-2 tensors of one
    channel fewer (N, 5, F - 1) with (E, 5) (widths may differ by order)."""
    g = torch.Generator().manual_seed(seed)
    kw = {"dtype": torch.float64, "generator": g}
    widths = [f, f - 1][:lmax]
    channels = f + 2 * sum(widths)
    dense = tuple(torch.randn(*shape, **kw).requires_grad_(True)
                  for shape in ((n, channels), (e, k), (channels, k)))
    features = [torch.randn(n, m, w, **kw).requires_grad_(not first)
                for m, w in zip((3, 5), widths)]
    geometry = [torch.randn(e, m, **kw).requires_grad_(True) for m in (3, 5)[:lmax]]
    i = torch.randint(0, n, (e,), generator=g)
    j = torch.randint(0, n, (e,), generator=g)
    return dense, features, geometry, i, j


def call_op(dense, features, geometry, i, j, first, chunk):
    """``painn_message_orders`` on the inputs; a flat tuple (Δs, Δf per order)."""
    phi, rho, weight = dense
    ds, out = torch.ops.mlip_attn.painn_message_orders(phi, features, geometry, rho, weight, i,
                                                        j, first, chunk)
    return (ds, *out)


@pytest.mark.parametrize("lmax", [1, 2])
@pytest.mark.parametrize("first", [False, True])
@pytest.mark.parametrize("chunk", [1, 7, 1024])
def test_painn_message_op_equals_the_reference(ops, first, chunk, lmax):
    """Forward and first derivatives equal `message_reference` for ℓ ≤ 1 and ℓ = 2 (unequal
    widths per order), for any chunk size."""
    dense, features, geometry, i, j = message_inputs(first, lmax=lmax)
    phi, rho, weight = dense
    got = call_op(dense, features, geometry, i, j, first, chunk)
    ds, out = message_reference(phi, features, geometry, rho, weight, i, j, first)
    want = (ds, *out)
    assert len(got) == 1 + lmax
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    inputs = (*dense, *[f for f in features if f.requires_grad], *geometry)
    weights = [torch.randn_like(t) for t in want]
    g_got = torch.autograd.grad(sum((w * t).sum() for w, t in zip(weights, got)), inputs)
    g_want = torch.autograd.grad(sum((w * t).sum() for w, t in zip(weights, want)), inputs)
    for a, b in zip(g_got, g_want):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("lmax", [1, 2])
@pytest.mark.parametrize("first", [False, True])
def test_painn_message_op_first_and_second_derivatives(ops, first, lmax):
    """gradcheck and gradgradcheck of the op (small sizes, several chunks)."""
    dense, features, geometry, i, j = message_inputs(first, n=5, e=12, f=2, k=3, lmax=lmax)
    chunk = 5
    grad_inputs = (*dense, *[f for f in features if f.requires_grad], *geometry)

    def op(*x):
        d, rest = x[:3], x[3:]
        fs = list(rest[:lmax]) if not first else features
        gs = list(rest[lmax:]) if not first else list(rest)
        return call_op(d, fs, gs, i, j, first, chunk)
    assert torch.autograd.gradcheck(op, grad_inputs)
    assert torch.autograd.gradgradcheck(op, grad_inputs)


@pytest.mark.parametrize("sort", [True, False])
def test_fused_loops_on_several_threads_equal_the_reference(ops, sort):
    """Enough edges for one part per thread (the fused loops' threading): receivers sorted (each
    part owns its receivers' rows) or not (private sums added at the end), an odd edge count
    (the last edge has no pair), every gradient including the weight's."""
    dense, features, geometry, i, j = message_inputs(False, n=60, e=2049, f=6, k=4, lmax=2)
    if sort:
        i = torch.sort(i).values
    phi, rho, weight = dense
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        got = call_op(dense, features, geometry, i, j, False, 64)
        weights = [torch.randn_like(t) for t in got]
        inputs = (*dense, *features, *geometry)
        g_got = torch.autograd.grad(sum((w * t).sum() for w, t in zip(weights, got)), inputs)
    finally:
        torch.set_num_threads(before)
    ds, out = message_reference(phi, features, geometry, rho, weight, i, j, False)
    for a, b in zip(got, (ds, *out)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    g_want = torch.autograd.grad(sum((w * t).sum() for w, t in zip(weights, (ds, *out))), inputs)
    for a, b in zip(g_got, g_want):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_fused_and_differentiable_backwards_agree_in_float32(ops):
    """The first derivatives of the fused loops (no create_graph) and of the differentiable ATen
    route (create_graph, what a force loss takes) agree in float32 at PaiNN's own widths."""
    dense, features, geometry, i, j = message_inputs(False, n=30, e=700, f=32, k=21, lmax=2)
    dense = tuple(t.detach().float().requires_grad_(True) for t in dense)
    features = [t.detach().float().requires_grad_(True) for t in features]
    geometry = [t.detach().float().requires_grad_(True) for t in geometry]
    got = call_op(dense, features, geometry, torch.sort(i).values, j, False, 128)
    weights = [torch.randn_like(t) for t in got]
    loss = sum((w * t).sum() for w, t in zip(weights, got))
    inputs = (*dense, *features, *geometry)
    fused = torch.autograd.grad(loss, inputs, retain_graph=True)
    differentiable = torch.autograd.grad(loss, inputs, create_graph=True)
    for a, b in zip(fused, differentiable):
        torch.testing.assert_close(a, b.detach(), rtol=1e-4, atol=1e-4)


def test_kernels_name_their_instruction_set(ops):
    assert torch.ops.mlip_attn.kernel_instruction_set() in ("avx512", "avx2", "generic")


CLONE_CHECK = """
import sys, torch
sys.path.insert(0, {tests!r})
from test_compiled_ops import call_op, message_inputs
from mlip_attn.ops.library import load_ops
from mlip_attn.nn.painn_message import message_reference
load_ops(build=False)
torch.set_num_threads(2)
for first in (False, True):
    dense, features, geometry, i, j = message_inputs(first, n=40, e=1501, f=9, k=5, lmax=2)
    got = call_op(dense, features, geometry, torch.sort(i).values, j, first, 64)
    want = message_reference(dense[0], features, geometry, dense[1], dense[2],
                             torch.sort(i).values, j, first)
    for a, b in zip(got, (want[0], *want[1])):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    inputs = (*dense, *geometry)
    g_got = torch.autograd.grad(sum(t.square().sum() for t in got), inputs)
    g_want = torch.autograd.grad(want[0].square().sum() + sum(t.square().sum() for t in want[1]),
                                 inputs)
    for a, b in zip(g_got, g_want):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-11)
print(torch.ops.mlip_attn.kernel_instruction_set())
"""


@pytest.mark.parametrize("isa", ["generic", "avx2"])
def test_every_instruction_set_clone_equals_the_reference(ops, isa):
    """The clones this CPU would not pick (MLIP_ATTN_KERNEL_ISA asks for a lesser one), in a
    fresh process: the same forward and gradients as the reference, widths that are not a
    multiple of the vector width (the column tails)."""
    import subprocess
    import sys
    from pathlib import Path
    env = {**os.environ, "MLIP_ATTN_KERNEL_ISA": isa, "OMP_NUM_THREADS": "2"}
    code = CLONE_CHECK.format(tests=str(Path(__file__).parent))
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    said = run.stdout.split()[-1]
    assert said == isa or (isa == "avx2" and said == "generic")   # a CPU without AVX2


def test_painn_eager_route_takes_the_compiled_op_with_the_same_answer(ops):
    """PaiNN (ℓ = 2) in eval mode calls the compiled op by default; energy and forces equal the
    Python route's (``message_policy(route="python")``) in float64."""
    from mlip_attn.nn import policy
    model = make_model("painn-l2")
    batch = to_batch([random_molecule(12, seed=3)], model.cutoff, torch.float64)
    assert policy.compiled_message_available()
    assert policy.describe().startswith("compiled: fused per-edge loops")
    with torch.profiler.profile() as prof:
        got = model.predict(batch, compute_forces=True)
    calls = [e.count for e in prof.key_averages() if e.key == "mlip_attn::painn_message_orders"]
    assert calls == [2]     # one per layer
    with policy.message_policy(route="python"):
        assert not policy.compiled_message_available()
        want = model.predict(batch, compute_forces=True)
    for key in ("energy", "forces"):
        torch.testing.assert_close(got[key], want[key], rtol=1e-11, atol=1e-11)


def test_painn_message_op_without_edges_and_in_inference_mode(ops):
    dense, features, geometry, i, j = message_inputs(False, e=0, lmax=2)
    ds, dv, dt = call_op(dense, features, geometry, i, j, False, 16)
    assert ds.abs().sum() == 0 and dv.abs().sum() == 0 and dt.abs().sum() == 0
    (ds.sum() + dv.sum() + dt.sum()).backward()
    assert dense[1].grad.shape == (0, 5) and geometry[1].grad.shape == (0, 5)
    dense, features, geometry, i, j = message_inputs(False, lmax=2)
    phi, rho, weight = dense
    with torch.inference_mode():
        got = call_op(tuple(x.detach() for x in dense), [f.detach() for f in features],
                      [g.detach() for g in geometry], i, j, False, 16)
    ds, out = message_reference(phi, features, geometry, rho, weight, i, j, False)
    for a, b in zip(got, (ds, *out)):
        torch.testing.assert_close(a, b.detach())


def test_bad_arguments_are_clear_errors(ops):
    dense, features, geometry, i, j = message_inputs(False, lmax=2)
    bad = j.clone()
    bad[3] = 7     # 7 atoms: indices 0-6
    with pytest.raises(RuntimeError, match="edge 3 joins atoms .* and 7, but there are 7 atoms"):
        call_op(dense, features, geometry, i, bad, False, 16)
    with pytest.raises(RuntimeError, match="chunk must be positive"):
        call_op(dense, features, geometry, i, j, False, 0)
    with pytest.raises(RuntimeError, match="one geometry tensor per feature order"):
        call_op(dense, features, geometry[:1], i, j, False, 7)


def test_allreduce_sum_is_the_identity_outside_lammps(ops):
    """Without the plugin's MPI hook the cross-rank sum is the identity, forward and backward."""
    from mlip_attn.ops.library import allreduce_calls
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    y = torch.ops.mlip_attn.allreduce_sum(x)
    torch.testing.assert_close(y, x)
    (y * torch.arange(12.0, dtype=torch.float64).view(4, 3)).sum().backward()
    torch.testing.assert_close(x.grad, torch.arange(12.0, dtype=torch.float64).view(4, 3))
    assert allreduce_calls() == 0
    assert torch.ops.mlip_attn.sums_across_processes() is False


def test_loading_twice_registers_once(ops):
    from mlip_attn.ops.library import load_ops, ops_registered
    assert load_ops() == ops and ops_registered()
    torch.ops.load_library(str(ops))      # the same file again: no second registration
    assert ops_registered()


@pytest.mark.parametrize("name", MODEL_CONFIGS)
def test_every_model_exports_on_the_fast_route(ops, name):
    """Every registered model family (PaiNN ℓ = 2 and bond-graph included) scripts with the
    compiled ops (PaiNN's message as the op, EFA's sums through the cross-rank hook) and
    equals the eager model in float64."""
    from mlip_attn.lammps.export import script_model, use_compiled_ops
    model = make_model(name)
    atoms = random_molecule(9, seed=4)
    batch = to_batch([atoms], model.cutoff)
    want = model.predict(batch)
    scripted = script_model(use_compiled_ops(make_model(name)), compiled_ops=True)
    # the plugin turns TorchScript's optimising executor off in this process, and without it
    # inlined_graph keeps the submodules' calls: look inside with it on
    with torch.jit.optimized_execution(True):
        graph = str(scripted.inlined_graph)
    assert "mlip_attn::sums_across_processes" in graph
    if name.startswith("painn"):
        assert "mlip_attn::painn_message_orders" in graph
    zero = torch.zeros(1, dtype=torch.float64)
    energy, atomic, forces, _ = scripted(batch.positions, batch.numbers, batch.edge_index,
                                         batch.shifts, len(atoms), zero, zero, False,
                                         torch.zeros(3, 3, dtype=torch.float64))
    torch.testing.assert_close(energy, want["energy"][0], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(atomic, want["energies"], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(forces, want["forces"], rtol=1e-10, atol=1e-10)


def test_export_route_auto_falls_back_with_a_warning(tmp_path, monkeypatch):
    """Where the ops cannot be built, ``route='auto'`` writes plain TorchScript and says why;
    ``route='torchscript+ops'`` refuses."""
    from mlip_attn import save_model
    from mlip_attn.lammps import export as lexport
    from mlip_attn.ops import library as lops
    monkeypatch.setattr(lops, "try_load_ops", lambda build=True: (False, "no C++ compiler"))
    save_model(make_model("painn"), tmp_path / "m.pt")
    with pytest.warns(RuntimeWarning, match="plain TorchScript.*no C\\+\\+ compiler"):
        out = lexport.export_lammps(tmp_path / "m.pt", tmp_path / "m-lammps.pt")
    assert lexport.read_export_metadata(out)["route"] == "torchscript"
    with pytest.raises(RuntimeError, match="compiled mlip_attn ops are not available"):
        lexport.export_lammps(tmp_path / "m.pt", tmp_path / "x.pt", route="torchscript+ops")
    with pytest.raises(RuntimeError, match="compiled mlip_attn ops are not available"):
        lexport.export_lammps(tmp_path / "m.pt", tmp_path / "x.pt2", route="aoti")
    with pytest.raises(ValueError, match="route must be one of"):
        lexport.export_lammps(tmp_path / "m.pt", tmp_path / "x.pt", route="onnx")


@pytest.mark.slow
def test_aoti_benchmark_runs_and_agrees(ops):
    """``python benchmarks/aoti_vs_torchscript.py`` at a tiny size: both routes give the same
    forces (float64) and positive times."""
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "aoti_vs_torchscript.py"
    spec = importlib.util.spec_from_file_location("aoti_vs_torchscript", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rows = bench.run(sizes=(32,), width=8, layers=1, steps=1, dtypes=("float64",),
                     models=("painn",), lammps=False)
    assert rows[0]["force_diff"] < 1e-10 and rows[0]["aoti_call_ms"] > 0

def test_library_cache_is_per_torch_installation(monkeypatch, tmp_path):
    """The compiled libraries are cached per torch (and lammps) installation, not only per
    version: one linked against a removed virtual environment's libtorch fails to load
    ("libtorch_cpu.so: cannot open shared object file"), so a new environment builds its own."""
    from mlip_attn.lammps import build as lammps_build
    from mlip_attn.ops import build as ops_build
    real = ops_build._package_dir
    first = (ops_build.torch_library_dir(), lammps_build.default_plugin_dir())
    assert first == (ops_build.torch_library_dir(), lammps_build.default_plugin_dir())
    monkeypatch.setattr(ops_build, "_package_dir", lambda name: tmp_path / "elsewhere" / name
                        if name == "torch" else real(name))
    moved = (ops_build.torch_library_dir(), lammps_build.default_plugin_dir())
    assert moved[0] != first[0] and moved[1] != first[1]
    assert moved[0].name.rsplit("-", 1)[0] == first[0].name.rsplit("-", 1)[0]   # same sources
