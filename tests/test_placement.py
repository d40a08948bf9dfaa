"""Continuous charge placement (physics 3, `mlip_attn.nn.placement`): no energy step where an ion
enters a bond window (physics 2 steps there), physics 2's numbers wherever every bond is fully
formed or broken, integer charges on separated fragments, forces = finite differences inside the
window, smooth ties at the SN2 transition state and exit, a clear error beyond the state cap,
batches = singles, TorchScript = eager. Float64 throughout."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule

from mlip_attn import build_model
from mlip_attn.data import AtomicData, Batch
from mlip_attn.lammps.export import script
from mlip_attn.nn.latent_charges import FlowCharges
from mlip_attn.nn.placement import MAX_WINDOW_BONDS

ELEMENTS = ["H", "C", "O", "Cl"]


def model(physics: int, attention=None, seed: int = 0):
    """A small random model (weights perturbed so that charge and tails matter)."""
    torch.manual_seed(seed)
    m = build_model({"backbone": "painn", "width": 8, "layers": 1, "cutoff": 4.0,
                     "elements": ELEMENTS, "attention": attention, "physics": physics})
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return m.double()


def batch_of(structures: list[Atoms]) -> Batch:
    return Batch.collate([AtomicData.from_atoms(a).with_graph(4.0) for a in structures]).to(
        dtype=torch.float64)


def evaluate(m, structures: list[Atoms]):
    b = batch_of(structures)
    out = m(b.positions, b.numbers, b.batch, b.edge_index, b.shifts, b.cell, b.charge, b.spin)
    return out["energy"].detach().numpy(), out["forces"].detach().numpy()


def charged(atoms: Atoms, charge: float = -1.0) -> Atoms:
    atoms.info["charge"] = charge
    return atoms


def chloride_approach(r: float) -> Atoms:
    """Cl⁻ on the backside axis of CH3Cl, ``r`` Å from the carbon (the C–Cl window is
    2.05–2.40 Å)."""
    base = molecule("CH3Cl")
    c, cl = base.positions[0], base.positions[1]
    axis = (c - cl) / np.linalg.norm(c - cl)
    return charged(base + Atoms("Cl", positions=[c + r * axis]))


def sn2_pair(x1: float, x2: float) -> Atoms:
    """Planar CH3 between two Cl at −x1 and +x2 on the x axis (SN2 transition-state region)."""
    ch3 = [[0.0, 0.0, 0.0]] + [[0.0, 1.08 * np.cos(t), 1.08 * np.sin(t)]
                               for t in (0.0, 2 * np.pi / 3, 4 * np.pi / 3)]
    return charged(Atoms("CH3Cl2", positions=ch3 + [[-x1, 0, 0], [x2, 0, 0]]))


def step_residual(m, path, tangent) -> float:
    """max |ΔE − ∫ dE/dt dt| between consecutive points of a path (trapezoid rule): an energy
    step shows up whole, a smooth energy leaves the O(h³) quadrature error."""
    energies, forces = evaluate(m, path)
    slope = np.array([-(f * t).sum() for f, t in zip(np.split(forces, len(path)), tangent)])
    return float(np.abs(np.diff(energies) - 0.5 * (slope[1:] + slope[:-1])).max())


def approach_steps(attention) -> dict:
    """step_residual of physics 2 and 3 (same weights) along Cl⁻ → CH3Cl through the C–Cl
    window, 0.005 Å a point (a smooth energy leaves ~1e-5 eV here, shrinking as h³)."""
    rs = np.arange(2.30, 2.50, 0.005)
    path = [chloride_approach(r) for r in rs]
    along = np.zeros((6, 3))
    along[5] = path[1].positions[5] - path[0].positions[5]      # the ion moves, 0.005 Å a step
    p2, p3 = model(2, attention), model(3, attention)
    p3.load_state_dict(p2.state_dict())
    return {physics: step_residual(m, path, [along] * len(path))
            for physics, m in ((2, p2), (3, p3))}


@pytest.mark.parametrize("attention", [None, {"type": "efa", "r_max": 12.0}],
                         ids=["local+tails", "efa"])
def test_ion_entering_a_bond_window_is_no_energy_step(attention):
    steps = approach_steps(attention)
    assert steps[2] > 0.1           # physics 2: the charge jumps at 2.40 Å
    assert steps[3] < 1e-4          # physics 3: the quadrature error of a smooth energy


def test_placement_equals_physics_2_when_every_bond_is_formed_or_broken():
    p2, p3 = model(2, {"type": "efa", "r_max": 12.0}), model(3, {"type": "efa", "r_max": 12.0})
    p3.load_state_dict(p2.state_dict())
    structures = [chloride_approach(3.2), chloride_approach(1.9),
                  charged(molecule("CH3Cl") + Atoms("O", positions=[[0, 0, 9.0]]), 1.0)]
    for a, b in zip(evaluate(p2, structures), evaluate(p3, structures)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)


def _embedded(m, atoms: Atoms) -> np.ndarray:
    from mlip_attn.nn.graph import Graph
    b = batch_of([atoms])
    vectors = b.positions[b.edge_index[1]] - b.positions[b.edge_index[0]] + b.shifts
    g = Graph(b.positions, b.numbers, b.batch, b.edge_index, vectors,
              torch.linalg.norm(vectors, dim=1), b.shifts, b.cell, b.charge, b.spin,
              b.positions.new_zeros((len(atoms), 0)), 1)
    return m.backbone.embedding.atom_charges(g).detach().numpy()


def test_separated_fragments_keep_integer_charges():
    m = model(3)
    # Cl⁻ in the C–Cl window (fractional inside the complex), a methane 12 Å away: exactly 0
    methane = molecule("CH4")
    methane.positions += [0.0, 0.0, 12.0]
    q = _embedded(m, chloride_approach(2.3) + methane)
    assert np.all(q[-5:] == 0.0)
    assert q[5] == -1.0 and 0.0 < -q[0] < 1.0       # the ion's fragment, or the complex: P = w
    # a CH3Cl with its C–Cl bond in the window, 6 Å from a Cl⁻: the ion's charge stays whole
    stretched = molecule("CH3Cl")
    stretched.positions[1] += (stretched.positions[1] - stretched.positions[0]) * 0.25
    ion = charged(stretched + Atoms("Cl", positions=[[0.0, 0.0, -6.0]]))
    q = _embedded(m, ion)
    assert q[-1] == -1.0 and np.all(q[:-1] == 0.0)


def test_physics_4_leaves_a_cations_charge_on_the_chain_when_a_c_h_breaks():
    """A C–H pulled out of C2H5⁺ through its window (1.23–1.44 Å × (R_C + R_H)) to broken:
    physics 3 (Pauling electronegativity: H 2.20 < C 2.55) hands the charge to the bare proton,
    physics 4 (a lone hydrogen hosts last) keeps it on C2H4, as xTB does; both continuously,
    and identical to each other while the bond is whole."""
    base = molecule("C2H6")
    c, h = 0, 2
    direction = (base.positions[h] - base.positions[c]) / np.linalg.norm(
        base.positions[h] - base.positions[c])

    def pulled(r: float) -> Atoms:
        atoms = base.copy()
        atoms.positions[h] = atoms.positions[c] + r * direction
        return charged(atoms, 1.0)
    m3, m4 = model(3), model(4)
    q3, q4 = _embedded(m3, pulled(1.09)), _embedded(m4, pulled(1.09))
    np.testing.assert_array_equal(q3, q4)                  # one fragment: the same charge
    broken3, broken4 = _embedded(m3, pulled(2.6)), _embedded(m4, pulled(2.6))
    assert broken3[h] == 1.0 and np.all(np.delete(broken3, h) == 0.0)
    assert broken4[h] == 0.0 and np.all(np.delete(broken4, h) == 1.0)
    path = np.array([_embedded(m4, pulled(r))[h] for r in np.arange(1.0, 2.6, 0.01)])
    assert path.max() <= 1.0 and np.abs(np.diff(path)).max() < 0.1   # no step


@pytest.mark.parametrize("fragments, charge, physics_3, physics_4", [
    ([[6] * 12 + [1] * 3, [6] * 12 + [1] * 2], 1.0, 0, 0),   # C12H3 + C12H2: the radical
    ([[6] * 12 + [1] * 2, [1]], 1.0, 1, 0),                  # C12H2 + H: the chain (xTB)
    ([[6, 1, 1, 1], [6, 1, 1, 1, 1]], 1.0, 1, 0),            # CH3 + CH4: the radical
    ([[6, 6, 1, 1, 1, 1], [6, 6, 1, 1]], 1.0, 0, 0),         # C2H4 + C2H2: IP 10.5 < 11.4 eV
    ([[8, 1, 1], [1]], 1.0, 1, 0),                           # H2O + H: H2O⁺ + H, not H⁺
    ([[11], [8, 1, 1]], 1.0, 0, 0),                          # Na + H2O: Na
    ([[17], [6, 17, 1, 1, 1]], -1.0, 0, 0),                  # Cl + CH3Cl, anion: Cl
])
def test_which_fragment_hosts_the_charge(fragments, charge, physics_3, physics_4):
    """The host rule (`mlip_attn.nn.fragments`): physics 4 gives a cation's charge to a
    many-atom radical first and to a lone hydrogen last, else by the lowest mean
    electronegativity as physics 3; anions are unchanged."""
    from mlip_attn.nn.fragments import fragment_charges, host_scores
    numbers = torch.tensor([z for f in fragments for z in f])
    starts = np.cumsum([0] + [len(f) for f in fragments])
    labels = torch.tensor([int(starts[k]) for k, f in enumerate(fragments) for _ in f])
    batch = torch.zeros(len(numbers), dtype=torch.long)
    total = torch.tensor([charge], dtype=torch.float64)
    for physics, host in ((3, physics_3), (4, physics_4)):
        q = fragment_charges(labels, numbers, batch, total, 1, host_scores(physics))
        assert [float(q[s]) for s in starts[:-1]] == [charge if k == host else 0.0
                                                      for k in range(len(fragments))], physics


def test_forces_are_the_energy_gradient_inside_the_window():
    m = model(3, {"type": "efa", "r_max": 12.0})
    for atoms in (chloride_approach(2.25), sn2_pair(2.2, 2.35)):
        atoms.positions += np.random.default_rng(0).normal(0.0, 0.02, atoms.positions.shape)
        _, forces = evaluate(m, [atoms])
        h = 1e-5
        for k in (0, len(atoms) - 1):
            for d in range(3):
                plus, minus = atoms.copy(), atoms.copy()
                plus.positions[k, d] += h
                minus.positions[k, d] -= h
                fd = -(evaluate(m, [plus])[0][0] - evaluate(m, [minus])[0][0]) / (2 * h)
                assert abs(fd - forces[k, d]) < 1e-7


def test_sn2_transition_state_and_exit_are_smooth():
    """Both C–Cl in the window: crossing the symmetric point (the two Cl tie) and the leaving
    Cl passing 2.40 Å while the other is still forming (the rule between fragments takes over)."""
    m = model(3, {"type": "efa", "r_max": 12.0})
    h = 0.002
    move = np.zeros((6, 3))
    move[4, 0], move[5, 0] = -h, -h                   # CH3 moves toward Cl2: Cl1 −x, Cl2 −x
    ts = np.arange(-0.04, 0.04 + 1e-9, h)
    assert step_residual(m, [sn2_pair(2.3 + t, 2.3 - t) for t in ts], [move] * len(ts)) < 2e-5
    leave = np.zeros((6, 3))
    leave[5, 0] = h
    xs = np.arange(2.36, 2.44 + 1e-9, h)
    for forming in (2.15, 2.3):
        path = [sn2_pair(forming, x) for x in xs]
        assert step_residual(m, path, [leave] * len(xs)) < 2e-5


def test_more_window_bonds_than_the_cap_is_a_clear_error():
    n = MAX_WINDOW_BONDS + 2                          # H chain, every neighbour in its window
    chain = charged(Atoms(f"H{n}", positions=[[0.78 * k, 0, 0] for k in range(n)]), 1.0)
    neutral = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]])
    with pytest.raises(RuntimeError, match=f"structure 1 of the batch has {n - 1} window bonds"):
        evaluate(model(3), [neutral, chain])
    chain.info["charge"] = 0.0
    evaluate(model(3), [chain])                       # neutral structures enumerate nothing


def test_batch_equals_single_structures():
    m = model(3, {"type": "efa", "r_max": 12.0})
    structures = [chloride_approach(2.3), sn2_pair(2.2, 2.35), chloride_approach(3.0),
                  molecule("H2O"), charged(molecule("CH3Cl"), 1.0)]
    energies, forces = evaluate(m, structures)
    offset = 0
    for k, a in enumerate(structures):
        e, f = evaluate(m, [a])
        assert abs(e[0] - energies[k]) < 1e-10
        np.testing.assert_allclose(f, forces[offset:offset + len(a)], atol=1e-10)
        offset += len(a)


@pytest.mark.parametrize("attention", [{"type": "efa", "r_max": 12.0}, {"type": "charges"},
                                       {"type": "electrostatics", "charges": "flow",
                                        "feedback": True}], ids=["efa", "charges", "flow"])
def test_torchscript_equals_eager(attention):
    m = model(3, attention)
    b = batch_of([sn2_pair(2.2, 2.35), chloride_approach(2.3)])
    args = (b.positions, b.numbers, b.batch, b.edge_index, b.shifts, b.cell, b.charge, b.spin)
    eager, scripted = m(*args), script(m)(*args)
    assert torch.allclose(eager["energy"], scripted["energy"], atol=1e-12, rtol=0)
    assert torch.allclose(eager["forces"], scripted["forces"], atol=1e-12, rtol=0)


@pytest.mark.parametrize("attention", [{"type": "charges"}, {"type": "charges", "mode": "shift"},
                                       {"type": "electrostatics", "charges": "flow",
                                        "feedback": True}], ids=["qeq", "shift", "flow"])
def test_charge_blocks_place_continuously_too(attention):
    steps = approach_steps(attention)
    assert steps[2] > 0.1 and steps[3] < 1e-4


def test_flow_charges_keep_fragment_totals_and_do_not_jump_at_the_reach():
    """FlowCharges' fragments are the pairs within its reach r_q: physics 3 spreads the ion's
    charge continuously as it leaves the reach; each separated fragment keeps its own total."""
    from mlip_attn.nn.graph import Graph
    torch.manual_seed(0)
    flow = {p == 3: FlowCharges(8, reach=4.0, physics=p).double() for p in (2, 3)}
    flow[True].load_state_dict(flow[False].state_dict())
    s = torch.randn(6, 8, dtype=torch.float64)

    def charges(r, continuous):
        b = batch_of([chloride_approach(r)])
        vectors = b.positions[b.edge_index[1]] - b.positions[b.edge_index[0]] + b.shifts
        g = Graph(b.positions, b.numbers, b.batch, b.edge_index, vectors,
                  torch.linalg.norm(vectors, dim=1), b.shifts, b.cell, b.charge, b.spin,
                  b.positions.new_zeros((6, 0)), 1)
        return flow[continuous](s, g).detach().numpy()
    for continuous in (False, True):
        q = charges(8.0, continuous)                  # the ion is beyond every pair's reach
        assert abs(q[5] + 1.0) < 1e-12 and abs(q[:5].sum()) < 1e-12
    # the ion leaves the reach of the nearest H (4 Å) near r ≈ 4.3–4.4 Å from the carbon
    rs = np.arange(3.5, 5.5, 0.01)
    jumps = {c: np.abs(np.diff([charges(r, c)[5] for r in rs])).max() for c in (False, True)}
    assert jumps[False] > 0.05 and jumps[True] < 0.02
