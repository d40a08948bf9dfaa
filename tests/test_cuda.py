"""Every model on a CUDA device: the tests that need a GPU (skipped without one, saying so).

``benchmarks/gpu/run_gpu_checks.py`` runs them on a GPU machine. On CUDA tensors the PaiNN
message and EFA's rotation take the Triton kernels (`mlip_attn.ops.gpu`) where Triton
imports, the rest ATen; on the CPU the compiled C++ ops. So float64 equality here compares
two implementations, not one run twice. Only ``AttnCalculator`` needs ASE (skipped without it).
"""
from __future__ import annotations

import os

import pytest
import torch

from conftest import MODEL_CONFIGS, random_molecule, to_batch

from mlip_attn import build_model
from mlip_attn.nn.policy import message_policy

# MLIP_ATTN_TEST_DEVICE=cpu runs the same comparisons CPU against CPU: the GPU script's dry run
CUDA = os.environ.get("MLIP_ATTN_TEST_DEVICE", "cuda")
pytestmark = pytest.mark.skipif(CUDA.startswith("cuda") and not torch.cuda.is_available(),
                                reason="needs a CUDA device (benchmarks/gpu/run_gpu_checks.py "
                                "runs these on one)")
ROUTED = ["painn", "painn-l2", "painn+efa-l1"]   # the models the GPU kernels serve


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a − b| / max |b| (b on any device)."""
    a, b = a.detach().cpu(), b.detach().cpu()
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-300)) if b.numel() else 0.0


def model_of(name: str, dtype=torch.float64, seed: int = 0):
    """The matrix's model ``name`` (width 16, 2 layers, cutoff 4 Å), its zero-initialised
    branches randomised, in ``dtype``, eval mode, on the CPU."""
    torch.manual_seed(seed)
    model = build_model({**MODEL_CONFIGS[name], "elements": [1, 6, 8], "width": 16,
                         "layers": 2, "cutoff": 4.0})
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return model.to(dtype).eval()


def structures(dtype=torch.float64):
    return to_batch([random_molecule(9, seed=1), random_molecule(6, seed=2)], 4.0, dtype=dtype)


@pytest.mark.parametrize("name", sorted(MODEL_CONFIGS))
def test_every_model_on_cuda_equals_the_cpu_in_float64(name):
    """Energy, per-structure and forces of two molecules in one batch: CUDA (Triton kernels
    where they apply) equal to the CPU (C++ ops) to 1e-10 relative."""
    model = model_of(name)
    batch = structures()
    want = model.predict(batch, compute_forces=True)
    got = model.to(CUDA).predict(batch.to(device=CUDA), compute_forces=True)
    assert got["forces"].device.type == torch.device(CUDA).type
    for key in ("energy", "forces"):
        assert relative(got[key], want[key]) <= 1e-10, (key, relative(got[key], want[key]))


@pytest.mark.parametrize("name", ROUTED)
def test_float32_on_cuda_is_close_to_the_cpu(name):
    """float32 (the MD default): CUDA within 1e-5 relative of the CPU in energy and 1e-4 in
    forces (different summation orders, atomic adds)."""
    model = model_of(name, torch.float32)
    batch = structures(torch.float32)
    want = model.predict(batch, compute_forces=True)
    got = model.to(CUDA).predict(batch.to(device=CUDA), compute_forces=True)
    assert relative(got["energy"], want["energy"]) <= 1e-5
    assert relative(got["forces"], want["forces"]) <= 1e-4


def _force_loss_gradients(model, batch):
    """Parameter gradients of E² + Σ|F|² (a force loss: forces by create_graph, then the
    second derivative), in training mode."""
    model.train()
    pos = batch.positions.clone().requires_grad_(True)
    energy = model.atomic_energies(pos, batch.numbers, batch.batch, batch.edge_index,
                                   batch.shifts, batch.cell, batch.charge, batch.spin, -1).sum()
    (grad,) = torch.autograd.grad(energy, pos, create_graph=True)
    loss = energy.square() + grad.square().sum()
    params = [p for p in model.parameters() if p.requires_grad]
    return float(loss.detach()), torch.autograd.grad(loss, params, allow_unused=True)


@pytest.mark.parametrize("name", ROUTED)
@pytest.mark.parametrize("one_pass_below", [4096, 0])
def test_force_loss_gradients_on_cuda_equal_the_cpu(name, one_pass_below):
    """Training's double backward on CUDA equals the CPU's to 1e-10 (float64): small graphs in
    one autograd pass (4096), and every graph through the kernels' route (0: Triton forward,
    the ATen form differentiated twice)."""
    with message_policy(one_pass_below=one_pass_below):
        model = model_of(name)
        batch = structures()
        want = _force_loss_gradients(model, batch)[1]
        got = _force_loss_gradients(model.to(CUDA), batch.to(device=CUDA))[1]
    for a, b in zip(got, want):
        assert (a is None) == (b is None)
        if a is not None and b.abs().max() > 0:
            assert relative(a, b) <= 1e-10


def test_a_few_training_steps_on_cuda_lower_the_force_loss():
    model = model_of("painn+efa-l1").to(CUDA)
    batch = structures().to(device=CUDA)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(5):
        loss, grads = _force_loss_gradients(model, batch)
        for p, g in zip([p for p in model.parameters() if p.requires_grad], grads):
            p.grad = g
        optimiser.step()
        losses.append(loss)
    assert all(x == x for x in losses) and losses[-1] < losses[0], losses


def test_attn_calculator_on_cuda_equals_the_cpu():
    pytest.importorskip("ase", reason="AttnCalculator needs ASE")
    from mlip_attn import AttnCalculator
    model = model_of("painn+efa-l1")
    atoms = random_molecule(10, seed=4)
    results = []
    for device in ("cpu", CUDA):
        atoms.calc = AttnCalculator(model, device=device, default_dtype="float64")
        results.append((atoms.get_potential_energy(), atoms.get_forces()))
    assert abs(results[0][0] - results[1][0]) <= 1e-10 * max(abs(results[0][0]), 1e-300)
    assert relative(torch.as_tensor(results[1][1]), torch.as_tensor(results[0][1])) <= 1e-10
