"""EFA's compiled ops (``mlip_attn::efa_rotate``, the grid sums with the rotation fused in,
``efa_grid_sums`` / ``efa_grid_apply``, ``mlip_attn::efa_pair_attention`` and their backward ops,
`mlip_attn.attention.efa_ops`): the same function as the Python forms to round-off in float64, first and second derivatives, threads, instruction-set clones, the eager model,
TorchScript and the traced (``torch.export``) forces graph with the fake kernels.

Needs a C++ compiler (the ops are built once per torch version and sources); skipped otherwise.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from conftest import MODEL_CONFIGS, random_molecule, to_batch
from test_compiled_ops import ops  # noqa: F401  (the compiled library, built once, or a skip)

from mlip_attn import build_model
from mlip_attn.attention.efa import (_dense_attention, _rotations, _segment_attention,
                                    lebedev_grid)
from mlip_attn.attention.efa_ops import efa_kernels, kernels_enabled

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*:DeprecationWarning")
F64 = torch.float64


def rotation_inputs(n=6, c=4, d=8, grid=14, seed=0, physics=2):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, d, dtype=F64, generator=g).requires_grad_(True)
    centred = (2.0 * torch.randn(n, 3, dtype=F64, generator=g)).requires_grad_(True)
    dirs, lam = lebedev_grid(grid)
    k = d // 2
    omega = torch.arange(1 if physics >= 2 else 0, k + (1 if physics >= 2 else 0),
                         dtype=F64) * 0.3
    return x, centred, dirs, omega, lam


def pair_inputs(sizes=(9, 6), c=4, d=8, v=5, spread=4.0, seed=0):
    """q, k (N, c, d), val (N, v), positions spread over ~3·spread Å (several cells for a small
    r_max), batch of len(sizes) structures."""
    g = torch.Generator().manual_seed(seed)
    n = sum(sizes)
    q = torch.randn(n, c, d, dtype=F64, generator=g).requires_grad_(True)
    k = torch.randn(n, c, d, dtype=F64, generator=g).requires_grad_(True)
    val = torch.randn(n, v, dtype=F64, generator=g).requires_grad_(True)
    pos = (spread * torch.randn(n, 3, dtype=F64, generator=g)).requires_grad_(True)
    batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    return q, k, val, pos, batch


def omega_of(d, physics=2, scale=0.4):
    return torch.arange(1 if physics >= 2 else 0, d // 2 + (1 if physics >= 2 else 0),
                        dtype=F64) * scale


def scaled_close(a, b, tol=1e-10):
    """|a − b| ≤ tol · max|b| (the ≤ 1e-10 contract between paths)."""
    scale = b.detach().abs().max().clamp(min=1e-300)
    assert float((a.detach() - b.detach()).abs().max() / scale) <= tol


# ------------------------------------------------------------------ the rotation


@pytest.mark.parametrize("physics", [1, 2])
def test_rotate_op_equals_the_python_rotation_and_its_gradients(ops, physics):
    x, centred, dirs, omega, lam = rotation_inputs(physics=physics)
    fused = torch.ops.mlip_attn.efa_rotate(x, centred, dirs, omega, lam)
    ref = _rotations(x, x, centred, dirs, omega, lam)[0]
    scaled_close(fused, ref, 1e-13)
    g = torch.randn_like(ref)
    want = torch.autograd.grad(ref, (x, centred), g)
    got = torch.autograd.grad(fused, (x, centred), g)
    for a, b in zip(got, want):
        scaled_close(a, b, 1e-13)


def test_rotate_op_first_and_second_derivatives(ops):
    x, centred, dirs, omega, lam = rotation_inputs(n=4, grid=6)
    f = lambda x, r: torch.ops.mlip_attn.efa_rotate(x, r, dirs, omega, lam)  # noqa: E731
    assert torch.autograd.gradcheck(f, (x, centred))
    assert torch.autograd.gradgradcheck(f, (x, centred))


def test_rotate_op_aten_form_beyond_the_fused_width(ops):
    """More than 64 frequencies take the ATen form inside the op (as a GPU does): the same
    function and gradients."""
    x, centred, dirs, omega, lam = rotation_inputs(n=3, c=1, d=132, grid=6)
    f = lambda x, r: torch.ops.mlip_attn.efa_rotate(x, r, dirs, omega, lam)  # noqa: E731
    scaled_close(f(x, centred), _rotations(x, x, centred, dirs, omega, lam)[0], 1e-13)
    assert torch.autograd.gradcheck(f, (x, centred))


# ------------------------------------------------------------------ the grid sums (rotation fused)


def grid_reference(q, k, val, centred, batch, dirs, omega, lam, num_graphs):
    """The Python Lebedev form: rotated q (weights folded in), k, and S = K̃ᵀV per structure."""
    q_rot, k_rot = _rotations(q, k, centred, dirs, omega, lam)
    return _segment_attention(q_rot, k_rot, val, batch, num_graphs)


def grid_fused(q, k, val, centred, batch, dirs, omega, lam, num_graphs):
    sums = torch.ops.mlip_attn.efa_grid_sums(k, centred, dirs, omega, torch.ones_like(lam), val,
                                             batch, num_graphs)
    return torch.ops.mlip_attn.efa_grid_apply(q, centred, dirs, omega, lam, sums, batch)


def grid_inputs(sizes=(9, 6), c=4, d=8, v=5, grid=14, physics=2, seed=0):
    q, k, val, pos, batch = pair_inputs(sizes, c, d, v, seed=seed)
    dirs, lam = lebedev_grid(grid)
    return q, k, val, pos, batch, dirs, omega_of(d, physics), lam, len(sizes)


@pytest.mark.parametrize("c", [1, 4])
@pytest.mark.parametrize("physics", [1, 2])
def test_grid_ops_equal_the_python_lebedev_form(ops, c, physics):
    """Two structures in a batch, ℓ = 0 (c = 1) and ℓ = 1 channels, ω from 0 (physics 1) or Δ:
    y and its gradients with respect to q, k, val and the positions equal the Python form
    (`_rotations` + `_segment_attention`) to 1e-12."""
    args = grid_inputs(c=c, d=10, physics=physics)
    got, want = grid_fused(*args), grid_reference(*args)
    scaled_close(got, want, 1e-12)
    g = torch.randn_like(want)
    for a, b in zip(torch.autograd.grad(got, args[:4], g), torch.autograd.grad(want, args[:4], g)):
        scaled_close(a, b, 1e-12)


@pytest.mark.parametrize("d", [2, 8])
def test_grid_ops_with_any_frequencies(ops, d):
    """Frequencies that are not arithmetic (or one alone) take one sincos per angle instead of
    the angle-addition recursion: the same function and gradients."""
    q, k, val, pos, batch, dirs, _, lam, graphs = grid_inputs(c=4, d=d, grid=50)
    omega = torch.rand(d // 2, dtype=F64, generator=torch.Generator().manual_seed(3)) + 0.05
    args = (q, k, val, pos, batch, dirs, omega, lam, graphs)
    got, want = grid_fused(*args), grid_reference(*args)
    scaled_close(got, want, 1e-12)
    g = torch.randn_like(want)
    for a, b in zip(torch.autograd.grad(got, args[:4], g), torch.autograd.grad(want, args[:4], g)):
        scaled_close(a, b, 1e-12)


def test_grid_ops_first_and_second_derivatives(ops):
    q, k, val, pos, batch, dirs, omega, lam, b = grid_inputs(sizes=(3, 2), c=2, d=4, v=2, grid=6)
    sums = lambda k, r, v: torch.ops.mlip_attn.efa_grid_sums(  # noqa: E731
        k, r, dirs, omega, lam, v, batch, b)
    S = sums(k, pos, val).detach().requires_grad_(True)
    apply = lambda q, r, S: torch.ops.mlip_attn.efa_grid_apply(  # noqa: E731
        q, r, dirs, omega, lam, S, batch)
    for f, x in ((sums, (k, pos, val)), (apply, (q, pos, S))):
        assert torch.autograd.gradcheck(f, x)
        assert torch.autograd.gradgradcheck(f, x)


def test_grid_ops_aten_form_beyond_the_fused_width(ops):
    """More than 64 frequencies take the ATen form inside the ops (as a GPU would)."""
    args = grid_inputs(sizes=(3, 2), c=1, d=132, v=2, grid=6)
    scaled_close(grid_fused(*args), grid_reference(*args), 1e-12)
    q, k, val, pos, batch, dirs, omega, lam, b = args
    f = lambda *x: grid_fused(*x, batch, dirs, omega, lam, b)  # noqa: E731
    assert torch.autograd.gradcheck(f, (q, k, val, pos))


def test_grid_ops_on_two_threads_equal_one(ops):
    """Tiles of 64 atoms spread over threads, each adding into sums of its own."""
    args = grid_inputs(sizes=(150, 90))
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            y = grid_fused(*args)
            results.append((y, *torch.autograd.grad(y.square().sum(), args[:4])))
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(*results):
        scaled_close(a, b, 1e-13)


def test_grid_ops_split_over_processes_equal_the_python_form(ops):
    """The block's owned-sums path (one structure split over processes, ``owned`` ≥ 0): S over
    the first ``owned`` nodes, y for every node (ghosts included), kernels on and off."""
    from mlip_attn.attention.efa import EuclideanFastAttention
    from mlip_attn.nn.graph import Features
    torch.manual_seed(0)
    block = EuclideanFastAttention((16, 16), r_max=8.0, grid=50, d_qk=8, d_v=4, vectors=True,
                                   switch=False, physics=1).to(F64).eval()
    n = 12
    x = Features(torch.randn(n, 16, dtype=F64), torch.randn(n, 3, 16, dtype=F64),
                 torch.zeros(n, 5, 0, dtype=F64))
    pos = (2.0 * torch.randn(n, 3, dtype=F64)).requires_grad_(True)
    batch = torch.zeros(n, dtype=torch.long)
    assert "mlip_attn::efa_grid_sums" in _op_names(lambda: block.attend(x, pos, batch, 1, 7))
    for owned in (12, 7):
        outs = []
        for on in (True, False):
            with efa_kernels(on):
                y_s, y_v, _ = block.attend(x, pos, batch, 1, owned)   # no rank-2 rows
                energy = y_s.square().sum() + y_v.square().sum()
                outs.append((y_s, y_v, torch.autograd.grad(energy, pos)[0]))
        for a, b in zip(*outs):
            scaled_close(a, b, 1e-12)


def test_grid_ops_bad_inputs_are_clear_errors(ops):
    q, k, val, pos, batch, dirs, omega, lam, b = grid_inputs()
    with pytest.raises(RuntimeError, match="efa_grid_sums: x"):
        torch.ops.mlip_attn.efa_grid_sums(k, pos[:3], dirs, omega, lam, val, batch, b)
    with pytest.raises(RuntimeError, match="batch entries must be in"):
        torch.ops.mlip_attn.efa_grid_sums(k, pos, dirs, omega, lam, val, batch, 1)
    sums = torch.ops.mlip_attn.efa_grid_sums(k, pos, dirs, omega, lam, val, batch, b)
    with pytest.raises(RuntimeError, match="efa_grid_apply: sums"):
        torch.ops.mlip_attn.efa_grid_apply(q[:, :2], pos, dirs, omega, lam, sums, batch)


# ------------------------------------------------------------------ the pairwise exact form


@pytest.mark.parametrize("r_max", [0.0, 3.0, 7.0, 100.0])
@pytest.mark.parametrize("physics", [1, 2])
def test_pair_attention_equals_the_dense_form(ops, r_max, physics):
    """Within r_max (several cells at 3 Å), unswitched (r_max = 0) and beyond every distance;
    two structures: values and all four gradients equal the dense N×N×K form to 1e-12."""
    q, k, val, pos, batch = pair_inputs()
    assert_pairs_equal_dense(q, k, val, pos, batch, omega_of(q.shape[2], physics), r_max)


def assert_pairs_equal_dense(q, k, val, pos, batch, omega, r_max):
    """efa_pair_attention's values and all four gradients equal the dense form to 1e-12."""
    got = torch.ops.mlip_attn.efa_pair_attention(q, k, val, pos, batch, omega, r_max)
    want = _dense_attention(q, k, val, pos, omega, batch, int(batch.max()) + 1, r_max)
    scaled_close(got, want, 1e-12)
    g = torch.randn_like(want)
    for a, b in zip(torch.autograd.grad(got, (q, k, val, pos), g),
                    torch.autograd.grad(want, (q, k, val, pos), g)):
        scaled_close(a, b, 1e-12)


@pytest.mark.parametrize("r_max", [0.0, 1e-200, 2.5, 9.0])
@pytest.mark.parametrize("c, d, scale", [(4, 8, 0.4), (1, 132, 0.02)])
def test_pair_attention_over_many_tiles_and_interleaved_structures(ops, r_max, c, d, scale):
    """Structures of 37, 16 and 1 atoms whose atoms are interleaved in the batch (not
    consecutive); the first in two clusters 40 Å apart, so that with r_max > 0 whole tile pairs
    lie beyond r_max (the plan skips them): values and gradients equal the dense form, on the
    fused loops (d = 8) and on the ATen form's pair list from the same tiles (d = 132).
    r_max = 1e-200 (its square underflows to 0): only each atom with itself."""
    q, k, val, pos, batch = pair_inputs(sizes=(37, 16, 1), c=c, d=d, v=20, spread=2.0, seed=3)
    with torch.no_grad():
        pos[18:37, 0] += 40.0
    order = torch.randperm(len(batch), generator=torch.Generator().manual_seed(1))
    q, k, val, pos = (t.detach()[order].requires_grad_(True) for t in (q, k, val, pos))
    assert_pairs_equal_dense(q, k, val, pos, batch[order], omega_of(d, scale=scale), r_max)


@pytest.mark.parametrize("wanted", [(0,), (1,), (2,), (3,), (2, 3), (0, 1, 3)])
def test_pair_attention_gradients_of_some_inputs(ops, wanted):
    """Only some of q, k, val, positions need gradients (the backward op's `needs`): each wanted
    gradient equals the dense form's, across tiles whose pairs are visited from one end."""
    q, k, val, pos, batch = pair_inputs(sizes=(40, 9), c=4, d=8, v=20, spread=2.0, seed=5)
    inputs = [t.detach().requires_grad_(i in wanted) for i, t in enumerate((q, k, val, pos))]
    omega = omega_of(8)
    got = torch.ops.mlip_attn.efa_pair_attention(*inputs, batch, omega, 6.0)
    want = _dense_attention(*inputs, omega, batch, 2, 6.0)
    scaled_close(got, want, 1e-12)
    g = torch.randn_like(want)
    chosen = [inputs[i] for i in wanted]
    for a, b in zip(torch.autograd.grad(got, chosen, g), torch.autograd.grad(want, chosen, g)):
        scaled_close(a, b, 1e-12)


@pytest.mark.parametrize("r_max", [0.0, 5.0])
def test_pair_attention_first_and_second_derivatives(ops, r_max):
    q, k, val, pos, batch = pair_inputs(sizes=(5, 3), c=2, d=4, v=3, spread=2.5)
    omega = omega_of(4)
    f = lambda *a: torch.ops.mlip_attn.efa_pair_attention(*a, batch, omega, r_max)  # noqa: E731
    assert torch.autograd.gradcheck(f, (q, k, val, pos))
    assert torch.autograd.gradgradcheck(f, (q, k, val, pos))


@pytest.mark.parametrize("threads, columns_mb", [(2, None), (3, None), (3, "0")])
def test_pair_attention_on_more_threads_equals_one(ops, threads, columns_mb, monkeypatch):
    """Threads take shares of the row tiles; each share writes its rows and adds its partners'
    terms into column sums of its own, summed into the outputs afterwards (3: shares of
    unequal tile counts; MLIP_ATTN_PAIR_COLUMNS_MB=0: no room for column sums beyond one
    share's, so one share takes every row tile)."""
    if columns_mb is not None:
        monkeypatch.setenv("MLIP_ATTN_PAIR_COLUMNS_MB", columns_mb)
    q, k, val, pos, batch = pair_inputs(sizes=(120, 80), spread=5.0)
    omega = omega_of(q.shape[2])
    before = torch.get_num_threads()
    results = []
    try:
        for n in (1, threads):
            torch.set_num_threads(n)
            y = torch.ops.mlip_attn.efa_pair_attention(q, k, val, pos, batch, omega, 6.0)
            results.append((y, *torch.autograd.grad(y.square().sum(), (q, k, val, pos))))
    finally:
        torch.set_num_threads(before)
    for a, b in zip(*results):
        scaled_close(a, b, 1e-13)
    # one share sums in one thread's order; several shares add their column sums apart
    assert all(torch.equal(a, b) for a, b in zip(*results)) == (columns_mb == "0")


def test_pair_attention_aten_form_beyond_the_fused_width(ops):
    q, k, val, pos, batch = pair_inputs(sizes=(4, 3), c=1, d=132, v=2)
    omega = omega_of(132, scale=0.02)
    got = torch.ops.mlip_attn.efa_pair_attention(q, k, val, pos, batch, omega, 6.0)
    scaled_close(got, _dense_attention(q, k, val, pos, omega, batch, 2, 6.0), 1e-12)
    f = lambda *a: torch.ops.mlip_attn.efa_pair_attention(*a, batch, omega, 6.0)  # noqa: E731
    assert torch.autograd.gradcheck(f, (q, k, val, pos))


def test_pair_attention_aten_form_over_chunks_of_pairs(ops):
    """The ATen form (GPU tensors, or channels beyond the fused loops) takes its pair list in
    chunks of 2^23 / (C·D) pairs (63,550 at 132 channels): 270 atoms, every pair attending, is
    two chunks; values and gradients equal the dense form."""
    q, k, val, pos, batch = pair_inputs(sizes=(270,), c=1, d=132, v=3, spread=3.0, seed=2)
    assert 270 ** 2 > 2 ** 23 // 132
    assert_pairs_equal_dense(q, k, val, pos, batch, omega_of(132, scale=0.02), 0.0)


def test_bad_shapes_are_clear_errors(ops):
    q, k, val, pos, batch = pair_inputs()
    with pytest.raises(RuntimeError, match="efa_pair_attention: q, k"):
        torch.ops.mlip_attn.efa_pair_attention(q, k, val, pos[:3], batch, omega_of(8), 5.0)
    x, centred, dirs, omega, lam = rotation_inputs()
    with pytest.raises(RuntimeError, match="efa_rotate: x"):
        torch.ops.mlip_attn.efa_rotate(x, centred, dirs, omega[:2], lam)


CLONE_CHECK = """
import sys, torch
sys.path.insert(0, {tests!r})
from test_efa_kernels import (pair_inputs, rotation_inputs, omega_of, scaled_close, grid_inputs,
                              grid_fused, grid_reference)
from mlip_attn.attention.efa import _dense_attention, _rotations
from mlip_attn.ops import load_ops
load_ops()
q, k, val, pos, batch = pair_inputs(d=10)
omega = omega_of(10)
scaled_close(torch.ops.mlip_attn.efa_pair_attention(q, k, val, pos, batch, omega, 4.0),
             _dense_attention(q, k, val, pos, omega, batch, 2, 4.0), 1e-12)
x, centred, dirs, omega, lam = rotation_inputs(d=10)
scaled_close(torch.ops.mlip_attn.efa_rotate(x, centred, dirs, omega, lam),
             _rotations(x, x, centred, dirs, omega, lam)[0], 1e-13)
args = grid_inputs(sizes=(70, 5), c=4, d=10, grid=50)
scaled_close(grid_fused(*args), grid_reference(*args), 1e-12)
print("ok")
"""


@pytest.mark.parametrize("isa", ["generic", "avx2"])
def test_every_instruction_set_clone_equals_the_reference(ops, isa):
    """The clones this CPU would not pick (MLIP_ATTN_KERNEL_ISA), in a fresh process, with
    channel counts that are not a multiple of the vector width."""
    env = {**os.environ, "MLIP_ATTN_KERNEL_ISA": isa, "OMP_NUM_THREADS": "1"}
    code = CLONE_CHECK.format(tests=os.path.dirname(__file__))
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0 and run.stdout.split()[-1] == "ok", run.stderr[-3000:]


# ------------------------------------------------------------------ the models


def efa_model(preset: str, switch: bool, r_max: float = 40.0, seed: int = 0):
    """PaiNN (width 16, 2 layers) with an EFA preset, its zero-initialised branches
    randomised, float64, eval mode."""
    torch.manual_seed(seed)
    cfg = dict(MODEL_CONFIGS[f"painn+{preset}"])
    cfg["attention"] = {**cfg["attention"], "switch": switch, "r_max": r_max}
    model = build_model({**cfg, "elements": [1, 6, 8], "width": 16, "layers": 2,
                         "cutoff": 4.0})
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return model.to(F64).eval()


def _op_names(fn) -> set:
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return {e.key for e in prof.key_averages()}


@pytest.mark.parametrize("preset", ["efa-l0", "efa-l1", "efa-l2"])
@pytest.mark.parametrize("switch", [True, False])
def test_eager_models_take_the_kernels_with_the_same_answer(ops, preset, switch):
    """Eval mode calls the ops (forward and backward); energy and forces of two structures in
    one batch equal the Python forms' to 1e-10 (r_max 6 Å: the switch acts inside them)."""
    model = efa_model(preset, switch, r_max=6.0)
    batch = to_batch([random_molecule(11, seed=1), random_molecule(7, seed=2)], model.cutoff)
    op = "mlip_attn::efa_pair_attention" if switch else "mlip_attn::efa_grid_apply"
    names = _op_names(lambda: model.predict(batch, compute_forces=True))
    assert op in names and f"{op}_backward" in names
    if not switch:
        assert {"mlip_attn::efa_grid_sums", "mlip_attn::efa_grid_sums_backward"} <= names
    got = model.predict(batch, compute_forces=True)
    with efa_kernels(False):
        assert op not in _op_names(lambda: model.predict(batch, compute_forces=True))
        want = model.predict(batch, compute_forces=True)
    scaled_close(got["energy"], want["energy"])
    scaled_close(got["forces"], want["forces"])


def test_training_keeps_plain_autograd_and_the_python_route_is_honoured(ops):
    """Training (a force loss differentiates twice) and ``route='python'`` skip the ops."""
    from mlip_attn.nn.policy import message_policy
    assert kernels_enabled(False) and not kernels_enabled(True)
    with message_policy(route="python"):
        assert not kernels_enabled(False)
    with efa_kernels(False):
        assert not kernels_enabled(False)


def test_force_gradients_through_the_ops_equal_the_python_forms(ops):
    """A second derivative through the ops (``create_graph``, as a Hessian or a force loss in
    eval mode takes it) takes their differentiable ATen backward: equal to the Python form."""
    for switch in (True, False):
        model = efa_model("efa-l1", switch, r_max=6.0)
        batch = to_batch([random_molecule(8, seed=3)], model.cutoff)
        results = []
        for on in (True, False):
            with efa_kernels(on):
                pos = batch.positions.clone().requires_grad_(True)
                energy = model.atomic_energies(pos, batch.numbers, batch.batch,
                                               batch.edge_index, batch.shifts, batch.cell,
                                               batch.charge, batch.spin, -1).sum()
                (g,) = torch.autograd.grad(energy, pos, create_graph=True)
                results.append(torch.autograd.grad(g.square().sum(), pos)[0])
        scaled_close(results[0], results[1])


@pytest.mark.parametrize("switch", [True, False])
def test_torchscript_export_calls_the_ops_with_the_same_answer(ops, switch):
    from mlip_attn.lammps.export import script_model, use_compiled_ops
    model = efa_model("efa-l1", switch, r_max=6.0)
    atoms = random_molecule(9, seed=4)
    batch = to_batch([atoms], model.cutoff)
    with efa_kernels(False):
        want = model.predict(batch)
    scripted = script_model(use_compiled_ops(efa_model("efa-l1", switch, r_max=6.0)),
                            compiled_ops=True)
    with torch.jit.optimized_execution(True):
        graph = str(scripted.inlined_graph)
    assert ("mlip_attn::efa_pair_attention" if switch else "mlip_attn::efa_grid_apply") in graph
    zero = torch.zeros(1, dtype=F64)
    energy, _, forces, _ = scripted(batch.positions, batch.numbers, batch.edge_index,
                                    batch.shifts, len(atoms), zero, zero, False,
                                    torch.zeros(3, 3, dtype=torch.float64))   # format 4: the box
    scaled_close(energy, want["energy"][0])
    scaled_close(forces, want["forces"])


@pytest.mark.parametrize("switch", [True, False])
def test_traced_forces_graph_holds_the_ops_and_agrees(ops, switch):
    """The ``.pt2`` route's trace (make_fx + torch.export with dynamic atom counts, through the
    fake kernels) records forward and backward ops as nodes; the exported program run eagerly
    equals the Python forms to 1e-10."""
    from mlip_attn.lammps.aoti import AotiLammpsModel, example_inputs, trace
    model = efa_model("efa-l1", switch, r_max=6.0)
    # physics 2's embedding and charged tails ask whether the total charge is non-zero
    # (data-dependent branches a trace cannot take; found here, left to their owners): the
    # inputs are neutral, where both branches give zero, so trace the neutral ones
    model.tails = False
    for module in model.modules():
        if hasattr(module, "fragment_charges"):
            module.fragment_charges = False
    module = AotiLammpsModel(model.requires_grad_(False), split=not switch)
    args = example_inputs(model)
    program = trace(module, args)
    graph = str(program.graph)
    op = "efa_pair_attention" if switch else "efa_grid_apply"
    assert f"mlip_attn.{op}.default" in graph and f"mlip_attn.{op}_backward.default" in graph
    got = program.module()(*args)
    with efa_kernels(False):
        want = module(*args)
    for a, b in zip(got, want):
        scaled_close(a, b)


@pytest.mark.slow
def test_pt2_package_with_the_ops_equals_one_without(ops, tmp_path):
    """AOTInductor compiles the ops into a ``.pt2`` (physics 1: the Lebedev form split over
    ranks, whose trace has no data-dependent charge branches): called with and without ghost
    nodes (the owned-sums path), it equals a package traced with EFA in ATen to 1e-10."""
    from conftest import make_model
    from mlip_attn import save_model
    from mlip_attn.lammps.aoti import load_aoti, split_inputs
    from mlip_attn.lammps.export import export_lammps
    model = make_model("painn+efa-l1", width=8, layers=1, physics=1)
    save_model(model, tmp_path / "m.pt")
    fused = load_aoti(export_lammps(tmp_path / "m.pt", tmp_path / "a.pt2", route="aoti"))
    with efa_kernels(False):
        aten = load_aoti(export_lammps(tmp_path / "m.pt", tmp_path / "b.pt2", route="aoti"))
    batch = to_batch([random_molecule(9, seed=2)], model.cutoff)
    args = (batch.positions, batch.numbers, batch.edge_index, batch.shifts)
    zero = torch.zeros(1, dtype=F64)
    for n_local in (9, 6, 1):
        for a, b in zip(fused(*split_inputs(*args, n_local, zero, zero)),
                        aten(*split_inputs(*args, n_local, zero, zero))):
            scaled_close(a, b)
