"""Tests for Euclidean fast attention (mlip_attn.attention.efa)."""

import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation
import torch

from conftest import call_block, call_exact
from mlip_attn.nn.graph import Features, graph_without_edges

from mlip_attn.lammps.export import script
from mlip_attn.attention.efa import (
    EuclideanFastAttention,
    b_max_for_grid,
    lebedev_grid,
    measure_b_max,
    structure_extent,
)

F64 = torch.float64
WIDTH = 8
R_MAX = 6.0


# the Lebedev factorisation and its agreement with the exact kernel are the physics-1 form (model
# files written before the separable form, and several MPI ranks); tests/test_separability.py
# covers the physics-2 form (no ω = 0, switched to zero at r_max, always the exact kernel)
PHYSICS = 1


def make_block(vectors: bool, feature_map: str = "silu", random: bool = True,
               **kw) -> EuclideanFastAttention:
    """float64 block (EFA always takes the Lebedev factorisation); ``random`` re-initialises
    every parameter (incl. the zero-initialised output layers) so that all paths contribute."""
    torch.manual_seed(1)
    blk = EuclideanFastAttention(physics=PHYSICS, widths=(WIDTH, WIDTH), r_max=R_MAX,
                                 vectors=vectors, feature_map=feature_map, **kw).double()
    if random:
        with torch.no_grad():
            for p in blk.parameters():
                p.normal_(0.0, 0.4)
    return blk


def feats(s, v):
    """`Features` of scalars s (N, F) and vectors v (N, 3, F|0), no tensors."""
    return Features(s, v, s.new_zeros((s.shape[0], 5, 0)))


def make_structures(sizes, extent: float, seed: int = 0, shuffle: bool = True):
    """Random structures whose largest pair distance is below ``extent`` (Å),
    scattered far apart in space; atoms of different structures interleaved."""
    g = torch.Generator().manual_seed(seed)
    pos = []
    for n in sizes:
        while True:
            x = torch.rand(n, 3, generator=g, dtype=F64) * extent / math.sqrt(3.0)
            if torch.pdist(x).max() < extent:
                break
        pos.append(x + 20.0 * torch.randn(3, generator=g, dtype=F64))
    pos = torch.cat(pos)
    batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    if shuffle:
        perm = torch.randperm(len(batch), generator=g)
        pos, batch = pos[perm], batch[perm]
    return pos, batch


def make_features(n: int, vectors: bool, seed: int = 0):
    g = torch.Generator().manual_seed(seed + 100)
    s = torch.randn(n, WIDTH, generator=g, dtype=F64)
    v = torch.randn(n, 3, WIDTH if vectors else 0, generator=g, dtype=F64)
    return s, v


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-300))


def random_rotation(seed: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=F64))
    q = q * torch.sign(torch.diagonal(r))
    if torch.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


# ---------------------------------------------------------------- grid / reach


def test_lebedev_grid_sizes_and_normalisation():
    for points in (50, 86, 110, 146, 194, 302, 434, 590, 974):
        d, w = lebedev_grid(points, F64)
        assert d.shape == (points, 3) and w.shape == (points,)
        assert abs(float(w.sum()) - 1.0) < 1e-13
        assert torch.allclose(d.norm(dim=1), torch.ones(points, dtype=F64), atol=1e-14)
        # the grid contains -u for each u (odd moments vanish)
        assert float((w[:, None] * d).sum(0).abs().max()) < 1e-14
    with pytest.raises(ValueError, match="no Lebedev grid with 51 points"):
        lebedev_grid(51)


def _scipy_lebedev(points: int):
    """Unit directions (G, 3) and weights summing to 1 straight from scipy, found by point
    count (independent of the package's order table)."""
    from scipy.integrate import lebedev_rule
    for order in range(3, 132, 2):
        try:
            x, w = lebedev_rule(order)
        except NotImplementedError:
            continue
        if x.shape[1] == points:
            return x.T, w / w.sum()
    raise AssertionError(f"scipy has no {points}-point Lebedev rule")


def _quadrature_errors(points: int, b_values, n_dirs: int = 300):
    """Largest error of the grid's sphere averages against the exact ones, per b:
    ⟨cos(b u·r̂)⟩ = sinc(b) (scalars) and ⟨u sin(b u·r̂)⟩ = j1(b) r̂ (ℓ = 1 channels)."""
    u, w = _scipy_lebedev(points)
    rng = np.random.default_rng(0)
    r = rng.normal(size=(n_dirs, 3))
    r /= np.linalg.norm(r, axis=1, keepdims=True)
    scalar, vector = [], []
    for b in b_values:
        phase = b * r @ u.T
        scalar.append(np.abs(np.cos(phase) @ w - np.sin(b) / b).max())
        j1 = np.sin(b) / b**2 - np.cos(b) / b
        vector.append(np.abs((np.sin(phase) * w) @ u - j1 * r).max())
    return np.array(scalar), np.array(vector)


@pytest.mark.parametrize("points", [50, 86, 110, 146, 194, 302])
def test_tabulated_b_max_is_the_grids_reach(points):
    """The reach b_max_for_grid claims, checked against the exact sphere averages with scipy's
    own grid: the quadrature holds to 1e-5 (ℓ = 1: 1.5e-5) up to it, and fails 0.15π beyond
    it (the table is not needlessly cautious either)."""
    b_max, b_vec = b_max_for_grid(points), b_max_for_grid(points, vectors=True)
    scalar, _ = _quadrature_errors(points, np.linspace(0.01, b_max, 40))
    _, vector = _quadrature_errors(points, np.linspace(0.01, b_vec, 40))
    assert scalar.max() <= 1e-5 and vector.max() <= 1.5e-5
    beyond, _ = _quadrature_errors(points, [b_max + 0.15 * math.pi])
    assert beyond[0] > 1e-5
    # the package's own scan finds the same reach
    assert abs(measure_b_max(points, tol=1e-5) - b_max) <= 0.05 * math.pi


# ---------------------------------------------------------------- fast vs exact


@pytest.mark.parametrize("vectors", [False, True])
@pytest.mark.parametrize("feature_map", ["identity", "silu", "gelu"])
def test_fast_matches_exact_pairwise(vectors, feature_map):
    blk = make_block(vectors, feature_map)
    pos, batch = make_structures([6, 9, 4], extent=R_MAX)
    s, v = make_features(len(batch), vectors)
    fast = blk.attend_lebedev(feats(s, v), pos, batch, 3)
    exact = blk.attend_exact(feats(s, v), pos, batch, 3)
    assert rel_err(fast[0], exact[0]) < 1e-6
    if vectors:
        assert fast[1].shape == (len(batch), 3, blk.d_v)
        assert rel_err(fast[1], exact[1]) < 1e-6
    out, ref = call_block(blk, s, v, pos, batch, 3), call_exact(blk, s, v, pos, batch, 3)
    assert rel_err(out[0], ref[0]) < 1e-6
    if vectors:
        assert rel_err(out[1], ref[1]) < 1e-6


def test_every_size_takes_the_lebedev_sums():
    """One model, one function: a molecule of 3 atoms and a batch of small structures take
    the same Lebedev sums as large systems (never the exact form, which differs from them by
    the quadrature error), so no atom count switches the function the model computes."""
    blk = make_block(True)
    s, v = make_features(12, True)
    calls = []
    blk.attend_exact = lambda *a: calls.append("exact") or EuclideanFastAttention.attend_exact(blk, *a)
    blk.attend_lebedev = lambda *a: calls.append("lebedev") or EuclideanFastAttention.attend_lebedev(blk, *a)
    pos, batch = make_structures([6, 4], extent=R_MAX)
    small = blk.attend(feats(s[:10], v[:10]), pos, batch, 2)
    pos, batch = make_structures([3], extent=R_MAX)
    blk.attend(feats(s[:3], v[:3]), pos, batch, 1)
    assert calls == ["lebedev", "lebedev"]
    assert small[0].shape == (10, blk.d_v)
    assert not hasattr(blk, "dense_below")


def test_exact_reference_detects_out_of_range():
    """Sanity check of the comparison: with ω_max·r far beyond the grid's
    reach the quadrature is wrong, and the test above would notice."""
    blk = make_block(False, b_max=10.0 * math.pi)  # G = 50 reaches only ~1.27π
    pos, batch = make_structures([8], extent=R_MAX, shuffle=False)
    s, v = make_features(8, False)
    assert rel_err(blk.attend_lebedev(feats(s, v), pos, batch, 1)[0], blk.attend_exact(feats(s, v), pos, batch, 1)[0]) > 1e-3


def test_exact_pairwise_self_term_and_gradient_finite():
    blk = make_block(True)
    pos, batch = make_structures([5], extent=R_MAX, shuffle=False)
    pos.requires_grad_(True)
    s, v = make_features(5, True)
    ds, dv = call_exact(blk, s, v, pos, batch, 1)
    (g,) = torch.autograd.grad(ds.sum() + dv.sum(), pos)
    assert torch.isfinite(g).all()
    ds_f, dv_f = call_block(blk, s, v, pos, batch, 1)
    (g_f,) = torch.autograd.grad(ds_f.sum() + dv_f.sum(), pos)
    assert rel_err(g_f, g) < 1e-5


# ---------------------------------------------------------------- symmetries


@pytest.mark.parametrize("vectors", [False, True])
def test_rotation_invariance_and_equivariance(vectors):
    """Well inside the reach (extent 0.3 r_max) the quadrature error is
    ~1e-12, so ds is invariant and dv equivariant to ~1e-10."""
    blk = make_block(vectors)
    rot = random_rotation()
    pos, batch = make_structures([7, 5], extent=0.3 * R_MAX)
    s, v = make_features(len(batch), vectors)
    ds, dv = call_block(blk, s, v, pos, batch, 2)
    ds_r, dv_r = call_block(blk, s, torch.einsum("ij,njf->nif", rot, v), pos @ rot.T, batch, 2)
    assert rel_err(ds_r, ds) < 1e-10
    if vectors:
        assert rel_err(dv_r, torch.einsum("ij,njf->nif", rot, dv)) < 1e-10


@pytest.mark.parametrize("vectors", [False, True])
def test_rotation_at_full_range_is_quadrature_limited(vectors):
    """At extent ≈ r_max the orientation dependence is bounded by the
    quadrature tolerance (1e-5 per kernel)."""
    blk = make_block(vectors)
    rot = random_rotation(5)
    pos, batch = make_structures([9], extent=R_MAX, shuffle=False)
    s, v = make_features(9, vectors)
    ds, dv = call_block(blk, s, v, pos, batch, 1)
    ds_r, dv_r = call_block(blk, s, torch.einsum("ij,njf->nif", rot, v), pos @ rot.T, batch, 1)
    assert rel_err(ds_r, ds) < 1e-5
    if vectors:
        assert rel_err(dv_r, torch.einsum("ij,njf->nif", rot, dv)) < 1e-5


@pytest.mark.parametrize("vectors", [False, True])
def test_translation_invariance(vectors):
    blk = make_block(vectors)
    pos, batch = make_structures([6, 4], extent=R_MAX)
    s, v = make_features(len(batch), vectors)
    ds, dv = call_block(blk, s, v, pos, batch, 2)
    shift = torch.tensor([13.0, -7.5, 31.25], dtype=F64)
    per_structure = torch.tensor([[1.0, 2.0, -3.0], [-4.0, 0.5, 6.0]], dtype=F64)
    ds_t, dv_t = call_block(blk, s, v, pos + shift + per_structure[batch], batch, 2)
    assert rel_err(ds_t, ds) < 1e-12
    if vectors:
        assert rel_err(dv_t, dv) < 1e-12


@pytest.mark.parametrize("vectors", [False, True])
def test_batch_isolation(vectors):
    blk = make_block(vectors)
    pos, batch = make_structures([6, 8], extent=R_MAX)
    s, v = make_features(len(batch), vectors)
    ds, dv = call_block(blk, s, v, pos, batch, 2)
    other = batch == 1
    pos2, s2, v2 = pos.clone(), s.clone(), v.clone()
    pos2[other] += torch.randn(int(other.sum()), 3, dtype=F64)
    s2[other] = torch.randn_like(s2[other])
    v2[other] = torch.randn_like(v2[other])
    ds2, dv2 = call_block(blk, s2, v2, pos2, batch, 2)
    keep = ~other
    assert rel_err(ds2[keep], ds[keep]) < 1e-12
    assert not torch.allclose(ds2[other], ds[other])
    # the same structure alone (num_graphs == 1 fast path) gives the same output
    ds1, dv1 = call_block(blk, s[keep], v[keep], pos[keep], torch.zeros(int(keep.sum()), dtype=torch.long), 1)
    assert rel_err(ds1, ds[keep]) < 1e-12
    if vectors:
        assert rel_err(dv2[keep], dv[keep]) < 1e-12
        assert rel_err(dv1, dv[keep]) < 1e-12


# ---------------------------------------------------------------- init, grads, dtype


@pytest.mark.parametrize("vectors", [False, True])
def test_fresh_block_returns_zeros(vectors):
    torch.manual_seed(0)
    blk = EuclideanFastAttention(physics=PHYSICS, widths=(WIDTH, WIDTH), r_max=R_MAX, vectors=vectors)
    pos, batch = make_structures([5, 3], extent=R_MAX)
    s, v = make_features(len(batch), vectors)
    ds, dv = call_block(blk, s.float(), v.float(), pos.float(), batch, 2)
    assert ds.shape == (8, WIDTH) and dv.shape == v.shape
    assert torch.count_nonzero(ds) == 0 and torch.count_nonzero(dv) == 0
    # ... but the raw attention is not trivially zero
    assert blk.attend_lebedev(feats(s.float(), v.float()), pos.float(), batch, 2)[0].abs().max() > 0


@pytest.mark.parametrize("vectors", [False, True])
def test_position_gradient_matches_finite_differences(vectors):
    blk = make_block(vectors)
    pos, batch = make_structures([4, 3], extent=R_MAX)
    s, v = make_features(len(batch), vectors)

    def energy(p):
        ds, dv = call_block(blk, s, v, p, batch, 2)
        return ds.sum() + (dv * dv).sum()

    p = pos.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(energy(p), p)
    h = 1e-4
    numeric = torch.zeros_like(pos)
    for i in range(pos.shape[0]):
        for j in range(3):
            step = torch.zeros_like(pos)
            step[i, j] = h
            numeric[i, j] = (energy(pos + step) - energy(pos - step)) / (2 * h)
    assert grad.abs().max() > 0
    assert rel_err(grad, numeric) < 1e-6


def test_float32_and_float64_buffers():
    blk = EuclideanFastAttention(physics=PHYSICS, widths=(WIDTH, WIDTH), r_max=R_MAX, grid=86, d_qk=8, d_v=4)
    assert blk.directions.dtype == F64 and blk.omega.shape == (4,)
    assert float(blk.omega[-1]) == pytest.approx(b_max_for_grid(86) / R_MAX)
    assert float(blk.omega[0]) == 0.0
    pos, batch = make_structures([5], extent=R_MAX, shuffle=False)
    s, v = make_features(5, False)
    y32 = blk.attend_lebedev(feats(s.float(), v.float()), pos.float(), batch, 1)[0]
    y64 = blk.double().attend_lebedev(feats(s, v), pos, batch, 1)[0]
    assert y32.dtype == torch.float32 and y64.dtype == F64
    assert rel_err(y32.double(), y64) < 1e-4


def test_invalid_arguments():
    with pytest.raises(ValueError, match="d_qk must be even"):
        EuclideanFastAttention(physics=PHYSICS, widths=(4, 4), r_max=5.0, d_qk=7)
    with pytest.raises(ValueError, match="feature_map must be one of"):
        EuclideanFastAttention(physics=PHYSICS, widths=(4, 4), r_max=5.0, feature_map="relu")
    with pytest.raises(ValueError, match="51-point grid"):
        EuclideanFastAttention(physics=PHYSICS, widths=(4, 4), r_max=5.0, grid=51)


def test_check_extent_bounds_pair_distance():
    pos, batch = make_structures([7, 12], extent=R_MAX)
    blk = EuclideanFastAttention(physics=PHYSICS, widths=(4, 4), r_max=R_MAX)
    bound = blk.check_extent(pos, batch, 2)
    dmax = max(float(torch.pdist(pos[batch == b]).max()) for b in range(2))
    assert dmax <= bound + 1e-12 <= 2.0 * dmax + 1e-12
    assert structure_extent(pos, batch, 2) == bound
    assert blk.r_max == R_MAX


# ---------------------------------------------------------------- TorchScript


@pytest.mark.parametrize("vectors", [False, True])
def test_torchscript_matches_eager(vectors):
    blk = make_block(vectors)
    scripted = script(blk)
    pos, batch = make_structures([5, 6], extent=R_MAX)
    s, v = make_features(len(batch), vectors)
    for b, p in ((2, pos), (1, pos[batch == 0])):
        idx = slice(None) if b == 2 else batch == 0
        bt = batch if b == 2 else torch.zeros(int((batch == 0).sum()), dtype=torch.long)
        eager = call_block(blk, s[idx], v[idx], p, bt, b)
        # as the LAMMPS runner runs it: the optimising executor off (its fusions round
        # differently; whether it is on otherwise depends on what ran before in the process)
        with torch.jit.optimized_execution(False):
            got = call_block(scripted, s[idx], v[idx], p, bt, b)
        assert torch.equal(eager[0], got[0]) and torch.equal(eager[1], got[1])
    assert scripted.check_extent(pos, batch, 2) == pytest.approx(blk.check_extent(pos, batch, 2))


# ---------------------------------------------------------------- memory

_MEMORY_SCRIPT = textwrap.dedent(
    """
    import resource, sys, torch
    sys.path.insert(0, {root!r})
    from mlip_attn.attention.efa import EuclideanFastAttention
    from mlip_attn.nn.graph import Features, graph_without_edges
    torch.manual_seed(0)
    torch.set_num_threads(2)
    n, width = 20000, 32
    blk = EuclideanFastAttention(physics=1, widths=(width, width), r_max=60.0, grid=50, d_qk=16, d_v=32)
    with torch.no_grad():
        for p in blk.parameters():
            p.normal_(0.0, 0.1)
    batch = torch.arange(2).repeat_interleave(n // 2)
    pos = (torch.rand(n, 3) * 30.0).requires_grad_(True)
    s = torch.randn(n, width, requires_grad=True)
    x = Features(s, torch.zeros(n, 3, 0), torch.zeros(n, 5, 0))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    ds = blk(x, graph_without_edges(pos, batch, 2)).scalars
    ds.square().sum().backward()
    assert torch.isfinite(pos.grad).all()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print((after - before) * 1024)
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ru_maxrss in KiB on Linux")
def test_memory_is_linear_not_n_g_dqk_dv():
    """Forward + backward for 20 000 atoms (2 structures) in a fresh process:
    peak-RSS growth must stay far below one N×G×d_qk×d_v float64 tensor
    (4.1 GB; a per-atom gather of S in float32 alone would be 2 GB)."""
    root = str(Path(__file__).resolve().parents[1])
    res = subprocess.run(
        [sys.executable, "-c", _MEMORY_SCRIPT.format(root=root)],
        capture_output=True, text=True, timeout=300,
    )
    assert res.returncode == 0, res.stderr
    growth = int(res.stdout.strip().splitlines()[-1])
    forbidden = 20000 * 50 * 16 * 32 * 8
    assert growth < forbidden / 4, f"peak RSS grew by {growth / 1e6:.0f} MB"


# ---------------------------------------------------------------- rank-2 channels


def test_tensor_channels_match_exact_and_rotate_as_rank_two():
    blk = make_block(True, tensors=True)
    pos, batch = make_structures([6, 9, 4], extent=R_MAX)
    s, v = make_features(len(batch), True)
    fast, exact = blk.attend_lebedev(feats(s, v), pos, batch, 3), blk.attend_exact(feats(s, v), pos, batch, 3)
    assert fast[2].shape == (len(batch), 9, blk.d_v)
    assert rel_err(fast[2], exact[2]) < 1e-6
    rot = torch.tensor(Rotation.random(random_state=3).as_matrix(), dtype=F64)
    turned = blk.attend_lebedev(feats(s, torch.einsum("ab,nbf->naf", rot, v)), pos @ rot.T, batch, 3)[2]
    y_t = fast[2].reshape(-1, 3, 3, blk.d_v)
    expected = torch.einsum("ab,nbcf,dc->nadf", rot, y_t, rot)
    assert rel_err(turned.reshape(-1, 3, 3, blk.d_v), expected) < 1e-6
    out, ref = call_block(blk, s, v, pos, batch, 3), call_exact(blk, s, v, pos, batch, 3)
    assert rel_err(out[0], ref[0]) < 1e-6 and rel_err(out[1], ref[1]) < 1e-6


def test_host_rank2_channels_match_exact_and_rotate():
    """With a host that carries rank-2 features, EFA attends over them (5 components) and
    writes tensors back: fast = exact, and every output turns as its order demands."""
    from mlip_attn.nn.rank2 import rotation_matrix
    torch.manual_seed(2)
    blk = EuclideanFastAttention(physics=PHYSICS, widths=(WIDTH,) * 3, r_max=R_MAX, vectors=True,
                                 tensors=True, feature_map="silu").double()
    with torch.no_grad():
        for p in blk.parameters():
            p.normal_(0.0, 0.4)
    pos, batch = make_structures([6, 9, 4], extent=R_MAX)
    s, v = make_features(len(batch), True)
    t = torch.randn(len(batch), 5, WIDTH, dtype=F64)
    x = Features(s, v, t)
    fast, exact = blk.attend_lebedev(x, pos, batch, 3), blk.attend_exact(x, pos, batch, 3)
    assert fast[2].shape == (len(batch), 5, blk.d_v)
    assert all(rel_err(a, b) < 1e-6 for a, b in zip(fast, exact))
    graph = graph_without_edges(pos, batch, 3)
    out, ref = blk(x, graph), blk.exact_pairwise(x, graph)
    assert all(rel_err(a, b) < 1e-6 for a, b in zip(out, ref))
    assert out.tensors.abs().max() > 0
    # well inside the reach the quadrature error is ~1e-12 (see the rotation tests above)
    pos = pos * 0.3
    out = blk(x, graph_without_edges(pos, batch, 3))
    rot = torch.tensor(Rotation.random(random_state=5).as_matrix(), dtype=F64)
    D = rotation_matrix(rot)
    turned_x = Features(s, torch.einsum("ab,nbf->naf", rot, v), torch.einsum("ab,nbf->naf", D, t))
    turned = blk(turned_x, graph_without_edges(pos @ rot.T, batch, 3))
    assert rel_err(turned.scalars, out.scalars) < 1e-10
    assert rel_err(turned.vectors, torch.einsum("ab,nbf->naf", rot, out.vectors)) < 1e-10
    assert rel_err(turned.tensors, torch.einsum("ab,nbf->naf", D, out.tensors)) < 1e-10


def test_tensor_channels_see_the_twist_between_two_distant_ch2_groups():
    """Two CH2 groups 9 Å apart (beyond a 4 Å cutoff and 2 layers): the symmetric H pair
    cancels in vector sums, so only the rank-2 channels tell a planar from a twisted pair."""
    from ase import Atoms
    from conftest import make_model, predict

    def pair(twist_deg):
        c, s = np.cos(np.radians(twist_deg)), np.sin(np.radians(twist_deg))
        h = [[-0.55, 0.93, 0.0], [-0.55, -0.93, 0.0]]
        far = [[9.55, 0.93 * c, 0.93 * s], [9.55, -0.93 * c, -0.93 * s]]
        return Atoms("CH2CH2", positions=[[0, 0, 0], *h, [9.0, 0, 0], *far])

    def twist_effect(name):
        model = make_model(name, elements=(1, 6), width=16, layers=2, cutoff=4.0)
        e = [float(predict(model, [pair(t)])["energy"]) for t in (0.0, 45.0, 90.0)]
        return max(e) - min(e)

    local = twist_effect("painn")
    assert local < 1e-10  # nothing reaches across 9 Å
    assert twist_effect("painn+efa-l2") > 1e3 * max(local, 1e-12)


@pytest.mark.parametrize("p, dv", [(64, 64), (4, 2)])  # (q kᵀ) v first, and kᵀ v first
@pytest.mark.parametrize("sizes", [[5], [5, 3, 7]])
def test_segment_attention_either_association_equals_dense(p, dv, sizes):
    from mlip_attn.attention.efa import _segment_attention
    g = torch.Generator().manual_seed(0)
    n = sum(sizes)
    q, k = torch.randn(n, p, generator=g, dtype=F64), torch.randn(n, p, generator=g, dtype=F64)
    val = torch.randn(n, dv, generator=g, dtype=F64)
    batch = torch.cat([torch.full((m,), b) for b, m in enumerate(sizes)])
    perm = torch.randperm(n, generator=g)  # atoms of a structure need not be contiguous
    out = _segment_attention(q[perm], k[perm], val[perm], batch[perm], len(sizes))
    same = (batch[:, None] == batch[None, :]).to(F64)
    ref = ((q @ k.T) * same) @ val
    assert rel_err(out, ref[perm]) < 1e-12
