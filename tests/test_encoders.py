"""Encoders (chemical, topological, Laplacian): known values against networkx and closed
forms, invariances, sign flips, zero-initialised projection, model files, TorchScript."""
from __future__ import annotations

import math

import networkx as nx
import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule
from scipy.spatial.transform import Rotation

from conftest import to_batch
from mlip_attn import build_model, load_model, save_model
from mlip_attn.encoders.base import BondGraphBuilder
from mlip_attn.encoders.chemical import DESCRIPTORS, raw_table, standardised_table
from mlip_attn.encoders.graph_algorithms import lowest_laplacian_eigenvectors
from mlip_attn.encoders.topological import ATOM_FEATURES, BOND_FEATURES, topological_features
from mlip_attn.lammps.export import script
from mlip_attn.registry import ENCODERS

ALL = ["chemical", "topological", "laplacian"]


def bond_graph(atoms_list):
    b = to_batch(atoms_list, 4.0)
    return BondGraphBuilder()(b.positions, b.numbers, b.batch, len(atoms_list)), b


def raw_features(atoms):
    bonds, _ = bond_graph([atoms])
    return topological_features(bonds)[0, :len(atoms)].numpy()


def nx_graph(atoms):
    from ase.data import covalent_radii
    g = nx.Graph()
    g.add_nodes_from(range(len(atoms)))
    d = atoms.get_all_distances()
    r = covalent_radii[atoms.numbers]
    for i in range(len(atoms)):
        for j in range(i + 1, len(atoms)):
            if d[i, j] < 1.2 * (r[i] + r[j]):
                g.add_edge(i, j)
    return g


def chain(n: int, spacing: float = 1.3) -> Atoms:
    """A linear carbon chain: its bond graph is the path graph P_n."""
    return Atoms(f"C{n}", positions=[[0.0, 0.0, spacing * k] for k in range(n)])


def encode(model, atoms_list, train=False):
    b = to_batch(atoms_list, model.cutoff)
    model.train(train)
    species = model.species_of(b.numbers)
    return model.encoders(b.positions, b.numbers, species, b.batch, len(atoms_list))


def encoder_model(encoders=ALL, backbone="painn", **extra):
    torch.manual_seed(0)
    return build_model({"backbone": backbone, "elements": [1, 6, 7, 8], "width": 16,
                        "layers": 2, "cutoff": 4.0, "encoders": encoders, **extra}).double().eval()


# ------------------------------------------------------------------ known values

@pytest.mark.parametrize("name", ["C6H6", "CH3CH2OH", "isobutane", "CH3COOH", "C5H5N", "bicyclobutane"])
def test_topological_features_match_networkx(name):
    atoms = molecule(name)
    f = raw_features(atoms)
    g = nx_graph(atoms)
    n = len(atoms)
    column = {k: f[:, i] for i, k in enumerate(ATOM_FEATURES + BOND_FEATURES)}
    ref = {
        "degree": [g.degree[i] for i in range(n)],
        "closeness": [nx.closeness_centrality(g)[i] for i in range(n)],
        "harmonic": [nx.harmonic_centrality(g)[i] / (n - 1) for i in range(n)],
        "betweenness": [nx.betweenness_centrality(g)[i] for i in range(n)],
        "eigenvector": [nx.eigenvector_centrality_numpy(g)[i] for i in range(n)],
        "clustering": [nx.clustering(g)[i] for i in range(n)],
        "core_number": [nx.core_number(g)[i] for i in range(n)],
        "eccentricity": [nx.eccentricity(g)[i] for i in range(n)],
        "neighbour_degree": [nx.average_neighbor_degree(g)[i] for i in range(n)],
    }
    for key, values in ref.items():
        assert np.allclose(column[key], values, atol=1e-8), (name, key, column[key], values)
    bridges = {frozenset(e) for e in nx.bridges(g)}
    ring = [np.mean([frozenset((i, j)) not in bridges for j in g[i]]) for i in range(n)]
    assert np.allclose(column["ring"], ring)


def test_benzene_degrees_and_centralities():
    atoms = molecule("C6H6")
    f = raw_features(atoms)
    carbon, hydrogen = atoms.numbers == 6, atoms.numbers == 1
    col = {k: f[:, i] for i, k in enumerate(ATOM_FEATURES + BOND_FEATURES)}
    assert np.all(col["degree"][carbon] == 3) and np.all(col["degree"][hydrogen] == 1)
    # unordered pairs whose shortest paths pass a ring C: its H with the 10 others (10), the
    # ortho atoms C/H with each other (4), the two meta–para families, half the paths (2 + 2):
    # 18 of (11 · 10) / 2
    assert np.allclose(col["betweenness"][carbon], 18 / 55)
    assert np.allclose(col["betweenness"][hydrogen], 0.0)
    # distances from a C: 1 (H, 2 C), 2 (2 C, 2 H), 3 (1 C, 2 H), 4 (1 H) -> sum 24 over 11
    assert np.allclose(col["closeness"][carbon], 11 / 24)
    assert np.allclose(col["eccentricity"][carbon], 4) and np.allclose(col["eccentricity"][hydrogen], 5)
    assert np.allclose(col["core_number"][carbon], 2) and np.allclose(col["core_number"][hydrogen], 1)
    assert np.allclose(col["clustering"], 0.0)
    # ring bonds of a 6-ring have effective resistance 5/6, C–H bridges 1
    assert np.allclose(col["resistance"][carbon], (2 * 5 / 6 + 1) / 3)
    assert np.allclose(col["ring"][carbon], 2 / 3) and np.allclose(col["ring"][hydrogen], 0)


@pytest.mark.parametrize("n", [2, 5, 8])
def test_chain_laplacian_eigenvectors_are_cosines(n):
    """Path graph P_n: λ_k = 2 − 2cos(πk/n), v_k(j) ∝ cos(πk(j + ½)/n), k = 1 … n − 1."""
    bonds, _ = bond_graph([chain(n)])
    k = 4
    vectors, values = lowest_laplacian_eigenvectors(bonds.adjacency, k)
    for q in range(k):
        if q + 1 >= n:  # fewer non-trivial eigenvectors than asked: zero columns
            assert torch.all(vectors[0, :, q] == 0) and values[0, q] == 0
            continue
        assert math.isclose(float(values[0, q]), 2 - 2 * math.cos(math.pi * (q + 1) / n),
                            abs_tol=1e-10)
        expected = np.cos(np.pi * (q + 1) * (np.arange(n) + 0.5) / n)
        expected /= np.linalg.norm(expected)
        got = vectors[0, :, q].numpy()
        assert min(np.abs(got - expected).max(), np.abs(got + expected).max()) < 1e-8


def test_chemical_table_is_standardised_and_stored_in_the_model(tmp_path):
    table = standardised_table()
    raw = raw_table()
    assert len(DESCRIPTORS) == 15 and sorted(table) == list(range(1, 87))
    column = np.array([table[z] for z in sorted(table)])
    assert np.allclose(column.mean(axis=0), 0.0, atol=0.05)  # missing values sit at the mean
    # carbon: group 14, period 2, p block, 4 valence electrons, Pauling 2.55
    assert raw[6][1:5] == [14.0, 2.0, 1.0, 4.0] and raw[6][7] == 2.55
    model = encoder_model(["chemical"])
    save_model(model, tmp_path / "m.pt")
    content = torch.load(tmp_path / "m.pt", weights_only=True)
    stored = content["state_dict"]["encoders.encoders.0.descriptors"]
    assert stored.shape == (4, 15)
    assert torch.allclose(stored.double(), torch.tensor([table[z] for z in (1, 6, 7, 8)]).double())


# ------------------------------------------------------------------ invariances

def _rotated_translated(atoms, seed=0):
    out = atoms.copy()
    out.positions = out.positions @ Rotation.random(random_state=seed).as_matrix().T + [3.0, -1, 2]
    return out


def test_encoders_are_rotation_translation_and_permutation_invariant():
    model = encoder_model(["chemical", "topological"])
    for name in ("C6H6", "CH3CH2OH", "CH3COOH"):
        atoms = molecule(name)
        ref = encode(model, [atoms])
        assert torch.allclose(encode(model, [_rotated_translated(atoms)]), ref)
        perm = np.random.default_rng(1).permutation(len(atoms))
        assert torch.allclose(encode(model, [atoms[perm]]), ref[perm])
    # a batch gives each structure the features it has alone
    a, b = molecule("C6H6"), molecule("CH3CH2OH")
    both = encode(model, [a, b])
    assert torch.allclose(both[:len(a)], encode(model, [a]))
    assert torch.allclose(both[len(a):], encode(model, [b]))


def test_laplacian_encoding_is_invariant_up_to_sign_and_flips_signs_in_training():
    model = encoder_model([{"type": "laplacian", "k": 3}])
    atoms = chain(7)
    ref = encode(model, [atoms])
    perm = np.random.default_rng(0).permutation(len(atoms))
    for other, order in ((_rotated_translated(atoms), np.arange(len(atoms))), (atoms[perm], perm)):
        got = encode(model, [other])
        for q in range(3):  # non-degenerate spectrum: equal up to one sign per eigenvector
            a, b = got[:, q], ref[order, q]
            assert torch.allclose(a, b) or torch.allclose(a, -b)
    torch.manual_seed(0)
    flips = torch.stack([encode(model, [atoms], train=True) / ref for _ in range(20)])
    assert torch.allclose(flips.abs(), torch.ones_like(flips))
    assert torch.all(flips == flips[:, :1, :])  # one sign per eigenvector of a structure
    assert (flips < 0).any() and (flips > 0).any()
    model_no_flip = encoder_model([{"type": "laplacian", "k": 3, "sign_flip": False}])
    assert torch.equal(encode(model_no_flip, [atoms], train=True), encode(model_no_flip, [atoms]))


@pytest.mark.parametrize("backbone", ["painn", "egnn", "transformer"])
def test_model_with_encoders_is_invariant_and_starts_as_the_model_without(backbone):
    plain = encoder_model([], backbone)
    model = encoder_model(ALL, backbone)
    atoms = molecule("CH3CH2OH")
    b = to_batch([atoms], 4.0)
    assert torch.equal(model.predict(b)["energy"], plain.predict(b)["energy"])
    with torch.no_grad():
        model.encoder_projection.weight.normal_()
    e = model.predict(b)["energy"]
    assert not torch.allclose(e, plain.predict(b)["energy"])
    rotated = to_batch([_rotated_translated(atoms)], 4.0)
    assert torch.allclose(model.predict(rotated)["energy"], e, atol=1e-10)


def test_float32_and_float64():
    atoms = molecule("C6H6")
    for dtype in (torch.float32, torch.float64):
        model = encoder_model(ALL).to(dtype)
        out = model.predict(to_batch([atoms], 4.0, dtype=dtype))
        assert out["energy"].dtype == dtype and torch.isfinite(out["forces"]).all()


# ------------------------------------------------------------------ model files, export, MD

def test_encoders_round_trip_script_and_metadata(tmp_path):
    model = encoder_model(ALL)
    with torch.no_grad():
        model.encoder_projection.weight.normal_()
    save_model(model, tmp_path / "m.pt")
    loaded = load_model(tmp_path / "m.pt", dtype=torch.float64)
    meta = loaded.metadata
    assert meta["encoders"] == ALL and meta["smooth"] is False and meta["force_field_safe"] is False
    b = to_batch([molecule("C6H6"), molecule("CH3COOH")], 4.0)
    ref = model.predict(b)
    assert torch.allclose(loaded.predict(b)["energy"], ref["energy"], atol=1e-12, rtol=0)
    scripted = script(loaded)
    out = scripted(b.positions, b.numbers, b.batch, b.edge_index, b.shifts, b.cell, b.charge,
                   b.spin, True, False)
    assert torch.allclose(out["energy"], ref["energy"]) and torch.allclose(out["forces"], ref["forces"])
    chemical_only = encoder_model(["chemical"])
    save_model(chemical_only, tmp_path / "c.pt")
    assert load_model(tmp_path / "c.pt").metadata["force_field_safe"] is True


def test_calculator_warns_and_lammps_export_refuses_bond_graph_encoders(tmp_path):
    from mlip_attn import AttnCalculator
    from mlip_attn.lammps.export import export_lammps
    save_model(encoder_model(ALL), tmp_path / "m.pt")
    with pytest.warns(UserWarning, match="not a force field"):
        AttnCalculator(tmp_path / "m.pt")
    with pytest.raises(ValueError, match="bond-graph encoders .*not exported to LAMMPS"):
        export_lammps(tmp_path / "m.pt", tmp_path / "m.lmp.pt")


def test_energy_jumps_where_a_bond_breaks_and_is_smooth_with_chemical_only():
    """Stretch H2 through the bond threshold 1.2 (0.31 + 0.31) = 0.744 Å."""
    def energies(model):
        out = []
        for r in (0.744 - 1e-7, 0.744 + 1e-7):
            model.eval()
            out.append(float(model.predict(to_batch([Atoms("H2", [[0, 0, 0], [0, 0, r]])], 4.0))["energy"]))
        return out
    for encoders, jumps in ((["topological"], True), (["chemical"], False)):
        model = encoder_model(encoders)
        with torch.no_grad():
            model.encoder_projection.weight.normal_()
        a, b = energies(model)
        assert (abs(a - b) > 1e-4) == jumps, (encoders, a, b)


def test_old_model_files_load_bit_identically(tmp_path):
    """A model file written before encoders existed (no ``encoders`` key in its model_config)
    loads with the same state, bit for bit. The file is made here: the shipped potentials are
    re-trained over time and need not be old."""
    from conftest import make_model
    model = make_model("painn", dtype=torch.float32)
    save_model(model, tmp_path / "new.pt")
    content = torch.load(tmp_path / "new.pt", weights_only=True)
    content["model_config"].pop("encoders", None)
    torch.save(content, tmp_path / "old.pt")
    loaded = load_model(tmp_path / "old.pt")
    state = loaded.state_dict()
    assert set(state) == set(content["state_dict"])
    assert all(torch.equal(state[k], v) for k, v in content["state_dict"].items())


def test_bad_encoder_configs_name_the_key():
    with pytest.raises(ValueError, match=r"model.encoders\[1\].type: 'spectral' is not one of"):
        encoder_model(["chemical", "spectral"])
    with pytest.raises(ValueError, match=r"model.encoders\[0\].k: must be a positive integer"):
        encoder_model([{"type": "laplacian", "k": 0}])
    with pytest.raises(ValueError, match="listed twice"):
        encoder_model(["chemical", "chemical"])
    with pytest.raises(ValueError, match="model.encoders: a list"):
        encoder_model("chemical")
    assert set(ALL) <= set(ENCODERS.names())
