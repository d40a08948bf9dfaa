"""The electrostatics block inside models: exact total charge, the Coulomb energy term of the
charges it predicts, periodic invariances (supercells, rotations, translations), stress, Ewald
against PME, and clear errors. The generic model tests (tests/test_models.py) run on it too."""
import math

import numpy as np
import pytest
import torch
from ase.build import bulk
from scipy.spatial.transform import Rotation

from mlip_attn import build_model
from mlip_attn.attention.electrostatics import ChargeHead, Electrostatics
from mlip_attn.nn.coulomb import COULOMB, Coulomb

from conftest import predict, to_batch


def salt_model(method="ewald", seed=0, layers=2, cutoff=4.0, backbone="painn", **options):
    torch.manual_seed(seed)
    model = build_model({"backbone": backbone, "elements": [11, 17], "width": 16,
                         "layers": layers, "cutoff": cutoff,
                         "attention": {"type": "electrostatics", "method": method, **options}})
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return model.double().eval()


def rattled_salt(repeat=(1, 1, 1), seed=0, rattle=0.1):
    atoms = bulk("NaCl", "rocksalt", a=5.64, cubic=True).repeat(repeat)
    atoms.rattle(rattle, seed=seed)
    return atoms


def graph_of(atoms_list, cutoff=4.0, charges=None):
    """The model-side `Graph` of some structures (no encoders)."""
    from mlip_attn.nn.graph import Graph
    b = to_batch(atoms_list, cutoff)
    if charges is not None:
        b.charge = torch.tensor(charges, dtype=torch.float64)
    i, j = b.edge_index
    vectors = b.positions[j] - b.positions[i] + b.shifts
    return Graph(b.positions, b.numbers, b.batch, b.edge_index, vectors, vectors.norm(dim=1),
                 b.shifts, b.cell, b.charge, b.spin, b.positions.new_zeros((len(b.numbers), 0)),
                 len(atoms_list))


def random_head(rule, width=8, seed=0):
    from mlip_attn.nn.latent_charges import charge_model
    torch.manual_seed(seed)
    head = charge_model(rule, width, reach=4.0).double()
    with torch.no_grad():
        for p in head.parameters():
            p.add_(torch.randn_like(p))
    return head


@pytest.mark.parametrize("rule", ["flow", "uniform"])
def test_charges_sum_to_each_structures_total_charge(rule):
    from ase.build import molecule
    structures = [molecule("CH4"), molecule("H2O"), molecule("C2H6")]
    graph = graph_of(structures, charges=[1.0, -2.0, 0.0])
    s = torch.randn(len(graph.numbers), 8, dtype=torch.float64)
    q = random_head(rule)(s, graph)
    sums = torch.zeros(3, dtype=torch.float64).index_add(0, graph.batch, q)
    torch.testing.assert_close(sums, graph.charge, rtol=0, atol=1e-13)
    assert float(q.detach().abs().min()) > 1e-3      # not trivially uniform


def test_fresh_charges_are_not_zero():
    """Zero charges are a stationary point of the Coulomb energy (its gradient in q is A q = 0):
    a fresh head must start away from it, yet sum exactly to the total charge."""
    from ase.build import molecule
    from mlip_attn.nn.latent_charges import FlowCharges
    torch.manual_seed(0)
    head = FlowCharges(4, reach=4.0).double()
    graph = graph_of([molecule("CH3OH")])
    q = head(torch.randn(6, 4, dtype=torch.float64), graph)
    assert float(q.detach().abs().max()) > 1e-2
    assert abs(float(q.detach().sum())) < 1e-12


def test_flow_charges_stay_on_their_fragment_and_vanish_smoothly_with_the_reach():
    """Two molecules: no charge moves between them once every pair is ≥ the reach apart (each
    keeps its own charges exactly, the neutral one 0 e); as they separate through the reach
    the charges change continuously and reach those of the separated pair at the reach."""
    from ase.build import molecule
    head = random_head("flow")
    a, b = molecule("CH3OH"), molecule("H2O")
    s = torch.randn(len(a) + len(b), 8, dtype=torch.float64)

    def charges(gap, total=1.0):
        bb = b.copy()
        bb.positions[:, 0] += a.positions[:, 0].max() - bb.positions[:, 0].min() + gap
        graph = graph_of([a + bb], charges=[total])
        d = np.linalg.norm(a.positions[:, None] - bb.positions[None], axis=-1).min()
        return head(s, graph).detach(), d

    far, d_far = charges(30.0)
    assert d_far > 4.0
    alone = head(s[:len(a)], graph_of([a], charges=[1.0])).detach()
    torch.testing.assert_close(far[:len(a)], alone, rtol=0, atol=1e-12)
    assert abs(float(far[len(a):].sum())) < 1e-12
    # continuity through the switch (neutral: no fragment charge to jump): 0.01 Å steps change
    # the charges by < 1 % of their size, and at the reach they are those of the far pair
    gaps = np.linspace(1.5, 5.0, 351)
    qs = torch.stack([charges(g, total=0.0)[0] for g in gaps])
    far0 = charges(30.0, total=0.0)[0]
    assert float((qs[1:] - qs[:-1]).abs().max()) < 0.01 * float(qs.abs().max())
    torch.testing.assert_close(qs[-1], far0, rtol=0, atol=1e-12)   # ≥ reach: as far apart


def test_flow_charges_put_opposite_charges_on_the_ions_of_a_neutral_salt():
    """A periodic rock-salt cell is one fragment (neighbours closer than the reach): the fresh
    per-element offsets (Pauling electronegativity) already make Na positive and Cl negative,
    and the cell stays exactly neutral; a cell with Q = −1 carries exactly −1 e."""
    from mlip_attn.nn.latent_charges import FlowCharges
    head = FlowCharges(8, reach=4.0).double()
    with torch.no_grad():
        for p in head.net.parameters():
            p.zero_()
    atoms = rattled_salt((1, 1, 1), seed=0)
    graph = graph_of([atoms])
    q = head(torch.zeros(len(atoms), 8, dtype=torch.float64), graph).detach()
    na = torch.tensor(atoms.numbers == 11)
    assert float(q[na].min()) > 0.05 and float(q[~na].max()) < -0.05
    assert abs(float(q.sum())) < 1e-12
    del atoms[0]
    q = head(torch.zeros(len(atoms), 8, dtype=torch.float64),
             graph_of([atoms], charges=[-1.0])).detach()
    assert abs(float(q.sum()) + 1.0) < 1e-12


def test_energy_term_is_the_coulomb_energy_of_its_charges():
    """Model energy − the same model without the term = ½ k_e Σ q φ + Σ (χ_Z q + ½ J_Z q²),
    with φ from an independent, more accurate Ewald (other splitting) and the charging energy
    written out here (at ε = 1e-8; the default 1e-5 leaves ~2e-5 eV here)."""
    model = salt_model(accuracy=1e-8)
    atoms = rattled_salt(seed=1)
    batch = to_batch([atoms], model.cutoff)
    args = (batch.positions, batch.numbers, batch.batch, batch.edge_index, batch.shifts,
            batch.cell, batch.charge, batch.spin)
    with torch.no_grad():
        atomic, features = model.energies_and_features(*args)
        model.has_energy_term = False
        without, _ = model.energies_and_features(*args)
        model.has_energy_term = True
    from mlip_attn.attention.electrostatics import latent_charges
    q = latent_charges(model, batch)
    wide = to_batch([atoms], 7.0)
    lengths = (wide.positions[wide.edge_index[1]] - wide.positions[wide.edge_index[0]]
               + wide.shifts).norm(dim=1)
    smearing = model.energy_term.coulomb.smearing
    reference = Coulomb(7.0, accuracy=1e-12, smearing=smearing, method="ewald")
    phi = reference(q, wide.positions, wide.cell, wide.batch, wide.edge_index, lengths, 1)
    expected = 0.5 * COULOMB * float((q * phi).sum())
    term = model.energy_term
    z = batch.numbers
    chi, hardness = 5.0 * term.chi.detach()[z], 20.0 * term.hardness.detach()[z]
    charging = float((chi * q + 0.5 * hardness * q * q).sum())
    assert abs(charging) > 1e-2       # the randomised χ and J are in play
    expected = expected + charging
    assert abs(float((atomic - without).sum()) - expected) < 1e-6 * max(1, abs(expected))
    assert abs(expected) > 1e-2


@pytest.mark.parametrize("options", [{}, {"feedback": True}, {"charges": "uniform"}])
def test_supercell_energy_is_extensive_and_forces_periodic(options):
    """A 2×1×1 supercell of a periodic cell: twice the energy, the same forces (both Ewald
    sums are exact to ε, with different k-vector sets); with every charge option."""
    model = salt_model(**options)
    atoms = rattled_salt(seed=2)
    one = predict(model, [atoms], stress=True)
    two = predict(model, [atoms.repeat((2, 1, 1))], stress=True)
    assert abs(float(two["energy"]) - 2 * float(one["energy"])) < 1e-7 * abs(float(one["energy"]))
    torch.testing.assert_close(two["forces"][:len(atoms)], one["forces"], rtol=0, atol=1e-7)
    torch.testing.assert_close(two["stress"], one["stress"], rtol=0, atol=1e-9)


def test_periodic_rotation_and_translation_invariance():
    model = salt_model(backbone="egnn")
    atoms = rattled_salt(seed=3)
    ref = predict(model, [atoms])
    moved = atoms.copy()
    R = Rotation.random(random_state=4).as_matrix()
    moved.set_cell(atoms.cell.array @ R.T)
    moved.positions = atoms.positions @ R.T + np.array([0.7, -1.3, 2.2])
    moved.wrap()
    out = predict(model, [moved])
    assert abs(float(out["energy"] - ref["energy"])) < 1e-9 * abs(float(ref["energy"]))
    torch.testing.assert_close(out["forces"], ref["forces"] @ torch.tensor(R.T),
                               rtol=0, atol=1e-9)


def test_charged_periodic_cell_has_a_splitting_free_energy():
    """A net charge (one Na removed, Q = −1): the neutralising background keeps the Coulomb
    term independent of α; the model runs, forces are finite and the charge matters."""
    model = salt_model()
    atoms = rattled_salt(seed=5)
    del atoms[0]
    atoms.info["charge"] = -1.0
    out = predict(model, [atoms], stress=True)
    neutral = atoms.copy()
    neutral.info["charge"] = 0.0
    assert abs(float(out["energy"]) - float(predict(model, [neutral])["energy"])) > 1e-3
    assert torch.isfinite(out["forces"]).all() and torch.isfinite(out["stress"]).all()


def test_ewald_and_pme_models_agree():
    atoms = rattled_salt((2, 2, 2), seed=6)
    ewald, pme = predict(salt_model("ewald"), [atoms]), predict(salt_model("pme"), [atoms])
    assert abs(float(ewald["energy"] - pme["energy"])) < 1e-5 * abs(float(ewald["energy"]))
    scale = float(ewald["forces"].abs().max())
    assert float((ewald["forces"] - pme["forces"]).abs().max()) < 1e-4 * scale, scale  # 2.2e-5 seen


def test_smearing_wider_than_the_cutoff_takes_no_real_space():
    """σ beyond r_c / 2√(−ln ε): α = 1/2σ and the smeared interaction is the reciprocal sum
    alone (it once was an error; tests/test_coulomb_split.py checks the energy)."""
    model = build_model({"backbone": "painn", "elements": [1], "width": 8, "cutoff": 3.0,
                         "attention": {"type": "electrostatics", "smearing": 2.0}})
    assert not model.energy_term.coulomb.real_space
    assert abs(model.energy_term.coulomb.alpha - 0.25) < 1e-12


def test_real_space_cutoff_is_the_models():
    model = salt_model(cutoff=5.0)
    blocks = [m for m in model.modules() if isinstance(m, Electrostatics)]
    assert blocks and all(b.coulomb.cutoff == 5.0 for b in blocks)
    assert model.energy_term.coulomb.cutoff == 5.0
    # the default charge width (0.91 Å at r_c = 5 Å) is wider than the real-space sum needs:
    # α = 1/2σ; point charges split at the cutoff, α = √(−ln ε) / r_c
    from mlip_attn.attention.electrostatics import default_smearing
    assert abs(model.energy_term.coulomb.alpha - 1 / (2 * default_smearing(5.0))) < 1e-12
    point = salt_model(cutoff=5.0, smearing=0.0)
    alpha = math.sqrt(-math.log(1e-5)) / 5.0
    assert abs(point.energy_term.coulomb.alpha - alpha) < 1e-12


def test_auto_rule_is_flow_for_molecules_and_cell_wide_in_periodic_cells():
    """``charges: auto``: an isolated structure gets exactly the flow rule's charges; a periodic
    cell one constraint over the cell, so removing an ion leaves its charge uncompensated
    (the flow rule's neighbours would make up for it)."""
    from ase.build import molecule
    from mlip_attn.nn.latent_charges import CellOrFragmentCharges, FlowCharges
    torch.manual_seed(0)
    auto = CellOrFragmentCharges(8, reach=4.0).double()
    flow = FlowCharges(8, reach=4.0).double()
    flow.load_state_dict(auto.state_dict())
    mol = graph_of([molecule("CH3OH")], charges=[1.0])
    s = torch.randn(6, 8, dtype=torch.float64)
    torch.testing.assert_close(auto(s, mol), flow(s, mol), rtol=0, atol=0)
    with torch.no_grad():
        for p in auto.net.parameters():
            p.zero_()
    atoms = rattled_salt((1, 1, 1), seed=0)
    q_bulk = auto(torch.zeros(len(atoms), 8, dtype=torch.float64), graph_of([atoms])).detach()
    na = torch.tensor(atoms.numbers == 11)
    assert float(q_bulk[na].min()) > 0 and float(q_bulk[~na].max()) < 0
    del atoms[0]
    q = auto(torch.zeros(len(atoms), 8, dtype=torch.float64),
             graph_of([atoms], charges=[-1.0])).detach()
    assert abs(float(q.sum()) + 1.0) < 1e-12
    # every remaining ion keeps its bulk charge, shifted by the same −(1 − q_Na)/n
    shift = (-1.0 + float(q_bulk[0])) / len(atoms)
    torch.testing.assert_close(q, q_bulk[1:] + shift, rtol=0, atol=1e-12)
