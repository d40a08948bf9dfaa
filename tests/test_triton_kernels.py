"""The Triton kernels of `mlip_attn.ops.gpu` against the ATen reference forms.

On a machine with a CUDA device (and without ``TRITON_INTERPRET`` set) the kernels run on the
GPU; elsewhere ``TRITON_INTERPRET=1`` is set while this module's tests run, and Triton's
interpreter runs them on CPU tensors (numpy): the same kernel code, checked for its
arithmetic and indexing, not for GPU timing or atomics under contention. Sizes are small: the
interpreter runs every program of the grid in Python. Skipped, saying so, without Triton.
"""
from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import warnings

import pytest
import torch

ON_GPU = torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET", "0") in ("", "0")

from conftest import MODEL_CONFIGS, random_molecule, to_batch

from mlip_attn import build_model
from mlip_attn.attention.efa import _rotations, lebedev_grid
from mlip_attn.nn.painn_message import message_reference
from mlip_attn.ops import gpu

DEVICE = "cuda" if ON_GPU else "cpu"
needs_triton = pytest.mark.skipif(not gpu.available(), reason=f"no Triton: {gpu.why_not()}")
TOL = {torch.float64: 1e-10, torch.float32: 1e-5}


@pytest.fixture(autouse=True, scope="module")
def interpreter_off_the_gpu():
    """Triton's interpreter for this module's tests where there is no GPU: Triton reads
    ``TRITON_INTERPRET`` when a kernel is defined and when it runs, so it is set while these
    tests run, and restored afterwards (other modules never see it)."""
    before = os.environ.get("TRITON_INTERPRET")
    if not ON_GPU:
        os.environ["TRITON_INTERPRET"] = "1"
    yield
    if before is None:
        os.environ.pop("TRITON_INTERPRET", None)
    else:
        os.environ["TRITON_INTERPRET"] = before


def _kernels():
    """The kernel modules, (re)imported so that ``@triton.jit`` made them for this machine:
    compiled on a GPU, interpreted elsewhere."""
    from mlip_attn.ops.gpu import efa_triton, painn_triton
    interpreted = type(painn_triton._message_forward).__name__ == "InterpretedFunction"
    if interpreted == ON_GPU:   # imported earlier in this process under the other mode
        painn_triton, efa_triton = importlib.reload(painn_triton), importlib.reload(efa_triton)
    return painn_triton, efa_triton


def close(a, b, dtype):
    """|a − b| ≤ tol · max|b| (float64 1e-10, float32 1e-5)."""
    scale = b.detach().abs().max().clamp(min=1e-30)
    err = float((a.detach() - b.detach()).abs().max() / scale) if b.numel() else 0.0
    assert err <= TOL[dtype], f"relative error {err:.3g} > {TOL[dtype]}"


def message_inputs(dtype, lmax=2, first=False, n=7, e=40, f=5, widths=(3, 2), k=4, seed=0):
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape):
        return torch.randn(*shape, dtype=dtype, generator=g).to(DEVICE).requires_grad_(True)

    widths = widths[:lmax]
    c = f + 2 * sum(widths)
    features = [rnd(n, 3 if o == 0 else 5, w) for o, w in enumerate(widths)]
    geometry = [rnd(e, 3 if o == 0 else 5) for o in range(len(widths))]
    receivers = torch.sort(torch.randint(0, n, (e,), generator=g)).values.to(DEVICE)
    senders = torch.randint(0, n, (e,), generator=g).to(DEVICE)
    return rnd(n, c), features, geometry, rnd(e, k), rnd(c, k), receivers, senders, first


def _inputs_of(args):
    phi, features, geometry, rho, weight, *_ = args
    return [phi, rho, weight, *features, *geometry]


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("lmax,first", [(1, False), (2, False), (2, True)])
def test_painn_message_and_its_gradients_equal_the_aten_form(dtype, lmax, first):
    painn, _ = _kernels()
    args = message_inputs(dtype, lmax, first)
    ds, out = painn.painn_message_triton(*args, reference=message_reference)
    ref_ds, ref_out = message_reference(*args)
    for a, b in zip([ds, *out], [ref_ds, *ref_out]):
        close(a, b, dtype)
    cotangents = [torch.randn_like(t) for t in [ds, *out]]
    inputs = _inputs_of(args)
    got = torch.autograd.grad([ds, *out], inputs, cotangents, allow_unused=True)
    want = torch.autograd.grad([ref_ds, *ref_out], inputs, cotangents, allow_unused=True)
    for name, a, b in zip(["phi", "rho", "weight", "features", "features2", "geometry",
                           "geometry2"], got, want):
        assert (a is None) == (b is None), name   # no feature gradient on a first layer
        if a is not None:
            close(a, b, dtype)


@needs_triton
def test_painn_message_second_derivatives_take_the_aten_form():
    """``create_graph`` (a force loss, a Hessian): the backward differentiates the ATen form,
    so second derivatives equal the reference's."""
    painn, _ = _kernels()
    args = message_inputs(torch.float64, 2, False, e=25)
    inputs = _inputs_of(args)
    results = []
    for call in (lambda: painn.painn_message_triton(*args, reference=message_reference),
                 lambda: message_reference(*args)):
        ds, out = call()
        energy = (ds.square().sum() + sum(o.square().sum() for o in out))
        first = torch.autograd.grad(energy, inputs, create_graph=True)
        results.append(torch.autograd.grad(sum(g.square().sum() for g in first), inputs))
    for a, b in zip(*results):
        close(a, b, torch.float64)


@needs_triton
def test_painn_message_without_edges_and_with_an_unused_output():
    painn, _ = _kernels()
    args = list(message_inputs(torch.float64, 1, False, e=0))
    ds, out = painn.painn_message_triton(*args, reference=message_reference)
    assert float(ds.detach().abs().sum()) == float(out[0].detach().abs().sum()) == 0.0
    args = message_inputs(torch.float64, 2, False, e=20)
    ds, out = painn.painn_message_triton(*args, reference=message_reference)
    (g,) = torch.autograd.grad(out[1].sum(), [args[0]])   # ds and out[0] unused
    (h,) = torch.autograd.grad(message_reference(*args)[1][1].sum(), [args[0]])
    close(g, h, torch.float64)
    with pytest.raises(TypeError, match="float32 or float64"):
        painn.painn_message_triton(*[a.half() if a.is_floating_point() else a
                                     for a in args[:1]], *args[1:], reference=message_reference)


def rotation_inputs(dtype, n=6, c=4, d=6, grid=14, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, d, dtype=dtype, generator=g).to(DEVICE).requires_grad_(True)
    y = torch.randn(n, c, d, dtype=dtype, generator=g).to(DEVICE).requires_grad_(True)
    centred = (2.0 * torch.randn(n, 3, dtype=dtype, generator=g)).to(DEVICE).requires_grad_(True)
    dirs, lam = lebedev_grid(grid)
    omega = torch.arange(1, d // 2 + 1, dtype=torch.float64) * 0.3
    return x, y, centred, dirs.to(DEVICE), omega.to(DEVICE), lam.to(DEVICE)


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_efa_rotation_and_its_gradients_equal_the_aten_form(dtype):
    """The Triton rotation of queries (quadrature weights folded in) and keys equals EFA's own
    `_rotations`, and so do the gradients for both and for the positions."""
    _, efa = _kernels()
    from mlip_attn.attention.efa_ops import rotations_triton
    q, k, centred, dirs, omega, lam = rotation_inputs(dtype)
    got = rotations_triton(q, k, centred, dirs, omega, lam)
    want = _rotations(q, k, centred, dirs.to(dtype), omega.to(dtype), lam.to(dtype))
    for a, b in zip(got, want):
        close(a, b, dtype)
    cot = [torch.randn_like(t) for t in got]
    g = torch.autograd.grad(got, [q, k, centred], cot)
    h = torch.autograd.grad(want, [q, k, centred], cot)
    for a, b in zip(g, h):
        close(a, b, dtype)
    close(efa.efa_rotate_triton(q, centred, dirs, omega, lam),
          efa.rotate_reference(q, centred, dirs, omega, lam), dtype)


@needs_triton
def test_efa_rotation_second_derivatives_and_bad_shapes():
    _, efa = _kernels()
    q, _, centred, dirs, omega, lam = rotation_inputs(torch.float64, n=4, grid=6)
    results = []
    w = torch.randn(q.shape[0], dirs.shape[0] * q.shape[1] * q.shape[2], dtype=q.dtype,
                    device=DEVICE)   # |rotated|² would not depend on the positions
    for fn in (efa.efa_rotate_triton, efa.rotate_reference):
        out = fn(q, centred, dirs, omega, lam)
        energy = ((out * w).sum(dim=1) ** 2).sum()
        first = torch.autograd.grad(energy, [q, centred], create_graph=True)
        results.append(torch.autograd.grad(sum(g.square().sum() for g in first), [q, centred]))
    for a, b in zip(*results):
        close(a, b, torch.float64)
    with pytest.raises(ValueError, match="2K"):
        efa.efa_rotate_triton(q[:, :, :5], centred, dirs, omega, lam)
    with pytest.raises(ValueError, match="centred"):
        efa.efa_rotate_triton(q, centred[:, :2], dirs, omega, lam)


def _model(preset: str):
    torch.manual_seed(0)
    cfg = dict(MODEL_CONFIGS[preset]) if preset in MODEL_CONFIGS else {"backbone": preset}
    if "attention" in cfg:
        cfg["attention"] = {**cfg["attention"], "switch": False}
    model = build_model({**cfg, "elements": [1, 6, 8], "width": 8, "layers": 2, "cutoff": 3.5})
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return model.to(torch.float64).eval()


@needs_triton
@pytest.mark.parametrize("preset", ["painn", "painn-l2", "painn+efa-l1"])
def test_models_route_through_the_triton_kernels_with_the_same_answer(preset, monkeypatch):
    """A whole model on the dispatch path the GPU takes (here: CPU tensors admitted to it under
    the interpreter): every message and every EFA rotation calls a Triton kernel, and energy
    and forces equal the ATen route's to 1e-10 (float64)."""
    painn, efa = _kernels()
    import mlip_attn.attention.efa_ops as efa_ops
    import mlip_attn.nn.painn_message as pm
    model = _model(preset).to(DEVICE)
    batch = to_batch([random_molecule(6, seed=1), random_molecule(5, seed=2)], model.cutoff)
    batch = batch.to(device=DEVICE)
    from mlip_attn.nn.policy import message_policy
    with message_policy(route="python"):
        want = model.predict(batch, compute_forces=True)
    calls = {"message": 0, "rotate": 0}
    message, rotate = painn.painn_message_triton, efa.efa_rotate_triton

    def count_message(*a, **kw):
        calls["message"] += 1
        return message(*a, **kw)

    def count_rotate(*a, **kw):
        calls["rotate"] += 1
        return rotate(*a, **kw)

    monkeypatch.setattr(painn, "painn_message_triton", count_message)
    monkeypatch.setattr(efa, "efa_rotate_triton", count_rotate)
    if not ON_GPU:   # the GPU's dispatch, opened to CPU tensors under the interpreter
        monkeypatch.setattr(pm, "triton_kernels_for", gpu.runs_on)
        monkeypatch.setattr(efa_ops, "triton_kernels_for", gpu.runs_on)
    got = model.predict(batch, compute_forces=True)
    assert calls["message"] == 2 and calls["rotate"] == (4 if "efa" in preset else 0)
    close(got["energy"], want["energy"], torch.float64)
    close(got["forces"], want["forces"], torch.float64)


def test_cuda_tensors_without_triton_warn_once_and_take_the_aten_form(monkeypatch):
    """A CUDA tensor on a machine where Triton does not import: a RuntimeWarning that says why
    and how to install it, once per process; the route is then the ATen form."""
    from mlip_attn.nn import policy

    class FakeCuda:
        is_cuda = True
        device = "cuda:0"

    monkeypatch.setattr(gpu, "_state", {"ok": False, "why": "triton does not import (test)"})
    monkeypatch.setattr(policy, "_gpu_warned", [])
    with pytest.warns(RuntimeWarning, match="no GPU kernels for cuda:0: triton does not import"):
        assert not policy.triton_kernels_for(FakeCuda())
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # a second warning would raise
        assert not policy.triton_kernels_for(FakeCuda())
        with policy.message_policy(route="python"):
            assert not policy.triton_kernels_for(FakeCuda())


def test_the_package_imports_and_runs_without_triton():
    """Triton is optional: with it unimportable, the models build and run on the CPU."""
    code = ("import sys; sys.modules['triton'] = None\n"
            "import torch, mlip_attn.nn.painn_message, mlip_attn.attention.efa\n"
            "from mlip_attn.ops import gpu\n"
            "assert not gpu.available() and 'pip install mlip-attn[gpu]' in gpu.why_not()\n"
            "from mlip_attn import build_model\n"
            "m = build_model({'backbone': 'painn', 'elements': [1, 8], 'width': 8, 'layers': 1})\n"
            "print('ok')\n")
    env = {**os.environ, "MLIP_ATTN_KERNELS": "python", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


COMPILE = r'''
import json, re, sys
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from mlip_attn.ops.gpu import efa_triton, painn_triton

def signature(kernel, floats, constexprs):
    types = {}
    for name in kernel.arg_names:
        if name in constexprs:
            types[name] = "constexpr"
        elif name in ("receivers", "senders"):
            types[name] = "*i64"
        elif name[0].isupper() or name in ("col_a", "col_b", "width"):
            types[name] = "i32"
        else:
            types[name] = "*" + floats
    return types

variants = []
for fp in ("fp64", "fp32"):
    for M, first in ((0, True), (3, False), (5, True)):
        variants.append(("message_forward", painn_triton._message_forward, fp,
                         dict(M=M, FIRST=first, BLOCK_E=32, BLOCK_C=64)))
    variants.append(("message_backward", painn_triton._message_backward, fp,
                     dict(M=3, FIRST=False, NEED_PHI=True, NEED_RHO=True, NEED_W=True,
                          NEED_F=True, NEED_G=True, BLOCK_E=32, BLOCK_C=64)))
    variants.append(("message_backward_scalars", painn_triton._message_backward, fp,
                     dict(M=0, FIRST=True, NEED_PHI=True, NEED_RHO=True, NEED_W=False,
                          NEED_F=False, NEED_G=False, BLOCK_E=32, BLOCK_C=16)))
    variants.append(("rotate_forward", efa_triton._rotate_forward, fp,
                     dict(BLOCK_N=16, BLOCK_P=64)))
    variants.append(("rotate_backward", efa_triton._rotate_backward, fp,
                     dict(NEED_X=True, NEED_R=True, BLOCK_N=16, BLOCK_P=64)))
out = {}
for name, kernel, fp, constexprs in variants:
    src = ASTSource(fn=kernel, signature=signature(kernel, fp, constexprs), constexprs=constexprs)
    compiled = triton.compile(src, target=GPUTarget("cuda", int(sys.argv[1]), 32))
    ptx = compiled.asm["ptx"]
    out[f"{name}/{fp}/{constexprs.get('M', '')}"] = {
        "cubin": len(compiled.asm["cubin"]),
        "f64_atomics": re.search(r"\b(atom|red)\.[a-z_.]*add\.f64", ptx) is not None}
print(json.dumps(out))
'''


@pytest.mark.skipif(not gpu.available(), reason=f"no Triton: {gpu.why_not()}")
@pytest.mark.skipif(ON_GPU, reason="on a GPU the kernels are compiled and run by the tests above")
def test_every_kernel_compiles_to_an_h100_binary():
    """Beyond the interpreter: each kernel variant (float64/float32, scalars and orders,
    forward and backward) compiles ahead of time for sm_90 (an H100) down to a cubin with
    Triton's own ptxas, no GPU needed; float64 sums compile to native f64 atomic adds."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, "-c", COMPILE, "90"], capture_output=True, text=True,
                         env={**env, "TRITON_DEFAULT_FP_FUSION": "1"}, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert len(result) == 14 and all(v["cubin"] > 1000 for v in result.values()), result
    assert all(v["f64_atomics"] for k, v in result.items()
               if "/fp64/" in k and "rotate_forward" not in k), result


@needs_triton
def test_several_column_and_pair_blocks_sum_like_one():
    """Widths beyond one block (64 columns, 64 channel pairs): the per-edge g_geometry and
    g_rho, and the positions' gradient, are summed over column blocks (atomic adds)."""
    painn, efa = _kernels()
    args = message_inputs(torch.float64, 2, False, n=5, e=40, f=70, widths=(66, 3), k=3)
    ds, out = painn.painn_message_triton(*args, reference=message_reference)
    ref_ds, ref_out = message_reference(*args)
    cot = [torch.randn_like(t) for t in [ds, *out]]
    got = torch.autograd.grad([ds, *out], _inputs_of(args), cot)
    want = torch.autograd.grad([ref_ds, *ref_out], _inputs_of(args), cot)
    for a, b in zip([ds, *out, *got], [ref_ds, *ref_out, *want]):
        close(a, b, torch.float64)
    q, _, centred, dirs, omega, lam = rotation_inputs(torch.float64, n=5, c=9, d=16, grid=6)
    a, b = (efa.efa_rotate_triton(q, centred, dirs, omega, lam),
            efa.rotate_reference(q, centred, dirs, omega, lam))
    cot = torch.randn_like(a)
    close(a, b, torch.float64)
    for g, h in zip(torch.autograd.grad(a, [q, centred], cot),
                    torch.autograd.grad(b, [q, centred], cot)):
        close(g, h, torch.float64)
