"""Separability, the contract of every model built now (physics 2), over the whole model
matrix: two fragments farther apart than the model's reach (`Potential.separation`) give
E(A + B) = E(A) + E(B) and forces on A independent of B, to float64 round-off, at 2× the reach,
100 Å and 1,000 Å, neutral and charged; inside the reach the interaction fades smoothly."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule

from conftest import MODEL_CONFIGS, make_model, predict

ROUND_OFF = 1e-10   # eV and eV/Å, relative to the energy / largest force (at least 1)
# blocks of infinite range by design: the electrostatics block's Coulomb sum between learned
# charges. Their contract is separability *plus* the exact Coulomb interaction of the two
# fragments' own charges (`test_far_fragments_interact_only_by_coulomb`)
INFINITE_RANGE = [n for n in MODEL_CONFIGS if math.isinf(make_model(n).separation)]


def fragments():
    """A = ethane, B = water: for a cation the charge goes to A (lower mean Pauling
    electronegativity), for an anion to B (`mlip_attn.nn.charges.fragment_charges`)."""
    a = molecule("C2H6")
    b = molecule("H2O")
    b.rotate(37, "z")
    return a, b


def apart(a: Atoms, b: Atoms, gap: float) -> Atoms:
    """A + B with B moved along x so that their closest atoms are ``gap`` Å apart."""
    b = b.copy()
    b.positions[:, 0] += a.positions[:, 0].max() - b.positions[:, 0].min() + gap
    d = np.linalg.norm(a.positions[:, None] - b.positions[None], axis=-1).min()
    b.positions[:, 0] += gap - d
    for _ in range(50):  # the closest pair is not along x in general: converge on the gap
        d = np.linalg.norm(a.positions[:, None] - b.positions[None], axis=-1).min()
        b.positions[:, 0] += gap - d
    return a + b


def energy_forces(model, atoms: Atoms, charge: float = 0.0):
    atoms = atoms.copy()
    atoms.info["charge"] = charge
    out = predict(model, [atoms])
    return float(out["energy"][0]), out["forces"].numpy()


@pytest.mark.parametrize("name", [n for n in MODEL_CONFIGS if n not in INFINITE_RANGE])
@pytest.mark.parametrize("charge", [0.0, 1.0, -1.0])
def test_far_fragments_do_not_interact(name, charge):
    """Neutral: E(A + B) = E(A) + E(B). Charged: E(A, q) + E(B, 0) − k_e α_B q² / (2R⁴), the tail
    of `mlip_attn.nn.tails` (R the centroid distance); forces on A to round-off either way
    after the tail's own force is taken off."""
    model = make_model(name)
    a, b = fragments()
    on_a = charge if charge > 0 else 0.0
    e_a, f_a = energy_forces(model, a, on_a)
    e_b, f_b = energy_forces(model, b, charge - on_a)
    neutral = b if charge > 0 else a
    alpha = torch.nn.functional.softplus(model.tail_alpha.detach())[
        model.species_of(torch.tensor(neutral.numbers))].sum().item()
    for gap in (2 * model.separation if math.isfinite(model.separation) else 50.0, 100.0, 1000.0):
        atoms = apart(a, b, gap)
        e, f = energy_forces(model, atoms, charge)
        # the physical tail beyond the reach: the charge's induced dipole in the neutral one,
        # E_t = −k_e α q² / (2R⁴) between the centroids, its force spread evenly over each
        c = atoms.positions[:len(a)].mean(0) - atoms.positions[len(a):].mean(0)
        r = np.linalg.norm(c)
        e = e + 14.399645 * alpha * charge ** 2 / (2 * r ** 4)
        push = 2 * 14.399645 * alpha * charge ** 2 / r ** 6 * c     # −dE_t/dc_A
        f = f.copy()
        f[:len(a)] += push / len(a)
        f[len(a):] -= push / len(b)
        e_tol = ROUND_OFF * max(1.0, abs(e))
        f_tol = ROUND_OFF * max(1.0, float(np.abs(f).max()))
        assert abs(e - e_a - e_b) < e_tol, f"{name}, {gap} Å: ΔE = {e - e_a - e_b:.3g} eV"
        assert np.abs(f[:len(a)] - f_a).max() < f_tol, f"{name}, {gap} Å: forces on A"
        assert np.abs(f[len(a):] - f_b).max() < f_tol, f"{name}, {gap} Å: forces on B"


def coulomb_between(model, a: Atoms, b: Atoms, atoms: Atoms, charge: float):
    """E_x (eV) = k_e Σ_{i∈A, j∈B} q_i q_j erf(r_ij/2σ)/r_ij and its forces (N, 3) eV/Å, with
    each fragment's charges (functions of its own positions) computed alone in ``atoms``
    (A = the first len(a) atoms; A carries a cation's charge, B an anion's)."""
    from mlip_attn.attention.electrostatics import latent_charges
    from conftest import to_batch
    on_a = charge if charge > 0 else 0.0
    charges, positions = [], []
    for frag, q in ((atoms[:len(a)], on_a), (atoms[len(a):], charge - on_a)):
        frag.info["charge"] = q
        batch = to_batch([frag], model.cutoff)
        batch.positions.requires_grad_(True)
        charges.append(latent_charges(model, batch, grad=True))
        positions.append(batch.positions)
    (q_a, q_b), (p_a, p_b) = charges, positions
    sigma = model.energy_term.coulomb.smearing
    r = torch.linalg.norm(p_a[:, None] - p_b[None, :], dim=-1)
    e = 14.399645 * (q_a[:, None] * q_b[None, :] * torch.erf(r / (2 * sigma)) / r).sum()
    g_a, g_b = torch.autograd.grad(e, (p_a, p_b))
    return float(e.detach()), -torch.cat([g_a, g_b]).numpy(), q_a.detach(), q_b.detach()


@pytest.mark.parametrize("name", INFINITE_RANGE)
@pytest.mark.parametrize("charge", [0.0, 1.0, -1.0])
def test_far_fragments_interact_only_by_coulomb(name, charge):
    """Electrostatics models: beyond the charge reach (the cutoff) the charges of each fragment
    are those it has alone (no charge flows between them; the neutral one is exactly neutral)
    and E(A + B) = E(A, q) + E(B, 0) + the Coulomb energy between the two sets of charges, with
    forces to round-off likewise: the physical tail, nothing learned across the gap."""
    from mlip_attn.attention.electrostatics import latent_charges
    from conftest import to_batch
    model = make_model(name)
    a, b = fragments()
    on_a = charge if charge > 0 else 0.0
    e_a, f_a = energy_forces(model, a, on_a)
    e_b, f_b = energy_forces(model, b, charge - on_a)
    for gap in (2 * model.cutoff, 100.0, 1000.0):
        atoms = apart(a, b, gap)
        e, f = energy_forces(model, atoms, charge)
        e_x, f_x, q_a, q_b = coulomb_between(model, a, b, atoms, charge)
        whole = atoms.copy()
        whole.info["charge"] = charge
        q = latent_charges(model, to_batch([whole], model.cutoff))
        torch.testing.assert_close(q, torch.cat([q_a, q_b]), rtol=0, atol=1e-12)
        assert abs(float(q[len(a):].sum()) - (charge - on_a)) < 1e-12   # whole charges
        assert abs(float(q[:len(a)].sum()) - on_a) < 1e-12
        e_tol = ROUND_OFF * max(1.0, abs(e))
        f_tol = ROUND_OFF * max(1.0, float(np.abs(f).max()))
        assert abs(e - e_a - e_b - e_x) < e_tol, f"{name}, {gap} Å: ΔE − E_x = {e - e_a - e_b - e_x:.3g}"
        assert np.abs(f[:len(a)] - f_x[:len(a)] - f_a).max() < f_tol, f"{name}, {gap} Å: F on A"
        assert np.abs(f[len(a):] - f_x[len(a):] - f_b).max() < f_tol, f"{name}, {gap} Å: F on B"


def test_uniform_charge_correction_and_feedback_are_not_separable():
    """The measured violations of the two electrostatics options the default does not use:
    the whole-structure (uniform) charge correction puts part of a cation's charge on a
    neutral molecule 100 Å away; the φ feedback lets the other fragment's potential change A's
    features, so E(A + B) differs from E(A) + E(B) + E_x."""
    from mlip_attn import build_model
    from mlip_attn.attention.electrostatics import latent_charges
    from conftest import to_batch
    a, b = fragments()
    atoms = apart(a, b, 100.0)
    atoms.info["charge"] = 1.0
    for option, check in (({"charges": "uniform"}, "leak"), ({"feedback": True}, "feedback")):
        torch.manual_seed(0)
        model = build_model({**MODEL_CONFIGS["painn+electrostatics"], "elements": [1, 6, 8],
                             "width": 16, "layers": 2, "cutoff": 4.0,
                             "attention": {"type": "electrostatics", **option}})
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.2 * torch.randn_like(p))
        model = model.double().eval()
        if check == "leak":
            q = latent_charges(model, to_batch([atoms], model.cutoff))
            assert abs(float(q[len(a):].sum())) > 0.01      # charge on the neutral water
        else:
            e_a, _ = energy_forces(model, a, 1.0)
            e_b, _ = energy_forces(model, b, 0.0)
            e, _ = energy_forces(model, atoms, 1.0)
            e_x = coulomb_between(model, a, b, atoms, 1.0)[0]
            assert abs(e - e_a - e_b - e_x) > 1e-8


@pytest.mark.parametrize("name", [n for n in MODEL_CONFIGS if n not in INFINITE_RANGE
                                  and make_model(n).separation > make_model(n).cutoff])
def test_interaction_fades_smoothly_toward_the_reach(name):
    """ΔE(d) = E(A + B) − E(A) − E(B) goes to zero with zero slope at d = separation: just inside
    it is a tiny fraction of its value at half the reach (a C² switch: ∝ δ³). Models whose
    reach is the cutoff fade with the backbone's cosine cutoff (C¹), not tested here."""
    model = make_model(name)
    a, b = fragments()
    e_a, _ = energy_forces(model, a)
    e_b, _ = energy_forces(model, b)
    sep = model.separation
    inside = energy_forces(model, apart(a, b, 0.5 * sep))[0] - e_a - e_b
    edge = energy_forces(model, apart(a, b, sep - 0.01))[0] - e_a - e_b
    assert abs(edge) <= 1e-6 * abs(inside) + ROUND_OFF, (name, edge, inside)


def test_legacy_forms_are_not_separable():
    """What physics 1 (model files written before) does, measured the same way: EFA's ω = 0
    mode couples fragments 1,000 Å apart, the total charge on every atom shifts a neutral
    fragment's energy."""
    from mlip_attn import build_model
    a, b = fragments()
    cfg = {**MODEL_CONFIGS["painn+efa-l0"], "elements": [1, 6, 8], "width": 16, "layers": 2,
           "cutoff": 4.0, "physics": 1}
    torch.manual_seed(0)
    model = build_model(cfg).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    assert float(model.backbone.layers[0].global_block.omega[0]) == 0.0
    e_a, _ = energy_forces(model, a, 1.0)
    e_b, _ = energy_forces(model, b, 0.0)
    e, _ = energy_forces(model, apart(a, b, 1000.0), 1.0)
    assert abs(e - e_a - e_b) > 1e-3


def test_efa_without_the_switch_is_linear_cost_and_not_separable():
    """``switch: false`` (physics 2): no ω = 0 mode, the Lebedev factorisation (equal to the exact
    kernel well inside r_max) and MPI splitting, but a kernel that never reaches zero: the
    model says so (separation inf)."""
    from mlip_attn import build_model
    from mlip_attn.nn.graph import Features
    cfg = {**MODEL_CONFIGS["painn+efa-l1"], "elements": [1, 6, 8], "width": 16, "layers": 2,
           "cutoff": 4.0}
    cfg["attention"] = {**cfg["attention"], "switch": False}
    model = build_model(cfg).double()
    block = model.backbone.layers[0].global_block
    assert float(block.omega[0]) > 0 and block.distributed and not block.separable
    assert model.separation == float("inf")
    torch.manual_seed(0)
    s = torch.randn(7, 16, dtype=torch.float64)
    v = torch.randn(7, 3, 16, dtype=torch.float64)
    x = Features(s, v, s.new_zeros((7, 5, 0)))
    pos = torch.randn(7, 3, dtype=torch.float64) * 2.0
    batch = torch.zeros(7, dtype=torch.long)
    fast = block.attend_lebedev(x, pos, batch, 1)
    exact = block.attend_exact(x, pos, batch, 1)
    for a, b in zip(fast, exact):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-8)
