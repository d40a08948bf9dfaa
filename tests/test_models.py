"""Symmetry, gradient, batching, save/load and export checks for every model (float64)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from mlip_attn import build_model, load_model, save_model
from mlip_attn.models import ModelFileError

from conftest import MODEL_CONFIGS, make_model, predict, random_crystal, random_molecule, to_batch
from mlip_attn.lammps.export import script

MODELS = sorted(MODEL_CONFIGS)


def rel(a, b):
    a, b = a.detach(), b.detach()
    return float((a - b).detach().abs().max() / (b.detach().abs().max() + 1e-300))


@pytest.mark.parametrize("name", MODELS)
def test_rotation_translation_invariance(name):
    model = make_model(name)
    atoms = random_molecule(9, seed=1)
    ref = predict(model, [atoms])
    R = Rotation.random(random_state=3).as_matrix()
    moved = atoms.copy()
    moved.positions = atoms.positions @ R.T + np.array([3.0, -1.0, 2.5])
    out = predict(model, [moved])
    assert rel(out["energy"], ref["energy"]) < 1e-10
    assert rel(out["energies"], ref["energies"]) < 1e-10
    rotated_ref = ref["forces"] @ torch.tensor(R.T)
    assert rel(out["forces"], rotated_ref) < 1e-10
    # the check can fail: a reflection-free rotation of forces must not leave them unchanged
    assert rel(out["forces"], ref["forces"]) > 1e-3


@pytest.mark.parametrize("name", MODELS)
def test_permutation_invariance(name):
    model = make_model(name)
    atoms = random_molecule(9, seed=2)
    perm = np.random.default_rng(0).permutation(len(atoms))
    ref = predict(model, [atoms])
    out = predict(model, [atoms[perm]])
    assert rel(out["energy"], ref["energy"]) < 1e-10
    assert rel(out["forces"], ref["forces"][perm]) < 1e-10


@pytest.mark.parametrize("name", MODELS)
def test_forces_are_minus_energy_gradient(name):
    """Forces against central differences, Richardson-extrapolated (error O(h⁴)): the test
    molecule holds two isolated atom pairs, where ℓ = 1 norms of channels near zero have a
    large (smooth) curvature that a plain O(h²) difference with h = 1e-5 would not resolve."""
    model = make_model(name)
    atoms = random_molecule(6, seed=4)
    forces = predict(model, [atoms])["forces"].numpy()

    def central(i, c, h):
        plus, minus = atoms.copy(), atoms.copy()
        plus.positions[i, c] += h
        minus.positions[i, c] -= h
        return -(float(predict(model, [plus])["energy"])
                 - float(predict(model, [minus])["energy"])) / (2 * h)

    h = 1e-5
    for i in range(len(atoms)):
        for c in range(3):
            fd = (4 * central(i, c, h / 2) - central(i, c, h)) / 3
            assert abs(fd - forces[i, c]) < 1e-6 * max(1.0, abs(fd)), (i, c, fd, forces[i, c])


@pytest.mark.parametrize("name", [m for m in MODELS if "efa" not in m])
def test_periodic_stress_matches_finite_differences(name):
    model = make_model(name)
    atoms = random_crystal(seed=5)
    stress = predict(model, [atoms], stress=True)["stress"][0].numpy()
    volume = atoms.get_volume()
    h = 1e-6
    for a in range(3):
        for b in range(3):
            eps = np.zeros((3, 3))
            eps[a, b] = eps[b, a] = h / 2 if a != b else h
            energies = []
            for sign in (1, -1):
                strained = atoms.copy()
                strained.set_cell(atoms.cell.array @ (np.eye(3) + sign * eps), scale_atoms=True)
                energies.append(float(predict(model, [strained])["energy"]))
            fd = (energies[0] - energies[1]) / (2 * h) / volume
            assert abs(fd - stress[a, b]) < 1e-6 * max(1.0, abs(fd)), (a, b, fd, stress[a, b])


@pytest.mark.parametrize("name", MODELS)
def test_batch_equals_single_structures(name):
    model = make_model(name)
    structures = [random_molecule(n, seed=n) for n in (5, 9, 3)]
    together = predict(model, structures)
    offset = 0
    for k, atoms in enumerate(structures):
        alone = predict(model, [atoms])
        assert rel(together["energy"][k:k + 1], alone["energy"]) < 1e-12
        n = len(atoms)
        assert rel(together["forces"][offset:offset + n], alone["forces"]) < 1e-12
        offset += n


@pytest.mark.parametrize("name", MODELS)
def test_total_charge_changes_the_energy(name):
    model = make_model(name)
    atoms = random_molecule(6, seed=7)
    neutral = float(predict(model, [atoms])["energy"])
    cation = atoms.copy()
    cation.info["charge"] = 1.0
    # AtomicData.from_atoms reads info["charge"] as the total charge
    assert abs(float(predict(model, [cation])["energy"]) - neutral) > 1e-6


@pytest.mark.parametrize("name", MODELS)
def test_save_load_round_trip(name, tmp_path):
    model = make_model(name)
    path = tmp_path / "model.pt"
    save_model(model, path, {"note": "test"})
    loaded = load_model(path, dtype=torch.float64)
    atoms = random_molecule(7, seed=8)
    a, b = predict(model, [atoms]), predict(loaded, [atoms])
    assert torch.equal(a["energy"], b["energy"]) and torch.equal(a["forces"], b["forces"])
    assert loaded.metadata["note"] == "test"
    assert loaded.metadata["elements"] == [1, 6, 8]
    # a global block ("<backbone>+<preset>") or the graph-free transformer makes a model global
    assert loaded.metadata["global"] == ("+" in name or name == "transformer")
    assert loaded.metadata["conservative"] and loaded.metadata["invariant"]


@pytest.mark.parametrize("name", MODELS)
def test_torchscript_export_matches_eager(name):
    model = make_model(name)
    scripted = script(model)
    b = to_batch([random_molecule(7, seed=9), random_molecule(4, seed=10)], model.cutoff)
    eager = model.predict(b)
    for _ in range(3):  # TorchScript's profiling executor re-optimises after the first calls
        out = scripted(b.positions, b.numbers, b.batch, b.edge_index, b.shifts, b.cell, b.charge,
                       b.spin, True, False)
        assert rel(out["energy"], eager["energy"]) < 1e-12
        assert rel(out["forces"], eager["forces"]) < 1e-12


def test_fresh_global_model_equals_local_model():
    torch.manual_seed(0)
    local = build_model({"backbone": "painn", "elements": [1, 6, 8], "width": 16, "layers": 2})
    torch.manual_seed(0)
    glob = build_model({"backbone": "painn", "elements": [1, 6, 8], "width": 16, "layers": 2,
                        "attention": {"type": "efa", "r_max": 10.0, "vectors": True}})
    glob.load_state_dict(local.state_dict(), strict=False)
    atoms = random_molecule(6, seed=11)
    assert torch.allclose(predict(local.double(), [atoms])["energy"],
                          predict(glob.double(), [atoms])["energy"], rtol=0, atol=1e-12)


def test_float32_default_and_float64_agree():
    model64 = make_model("painn")
    model32 = make_model("painn", dtype=torch.float32)
    atoms = random_molecule(6, seed=12)
    e64 = float(predict(model64, [atoms])["energy"])
    e32 = float(model32.predict(to_batch([atoms], 4.0, torch.float32))["energy"])
    assert abs(e64 - e32) < 1e-4 * max(1.0, abs(e64))


def test_bad_model_files(tmp_path):
    model = make_model("painn")
    good = tmp_path / "model.pt"
    save_model(model, good)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ModelFileError, match="truncated"):
        load_model(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save(model.state_dict(), foreign)
    with pytest.raises(ModelFileError, match="not an mlip-attn model file"):
        load_model(foreign)
    pickled = tmp_path / "pickle.pt"
    torch.save({"format": "mlip-attn-model", "obj": Rotation.random()}, pickled)
    with pytest.raises(ModelFileError, match="non-tensor Python objects"):
        load_model(pickled)
    with pytest.raises(ModelFileError, match="no such model file"):
        load_model(tmp_path / "missing.pt")
    assert good.stat().st_size > 0 and load_model(good) is not None


@pytest.mark.parametrize("change, match", [
    (lambda c: c.pop("model_config"), "no 'model_config' entry"),
    (lambda c: c.pop("metadata"), "no 'metadata' entry"),
    (lambda c: c.pop("state_dict"), "no 'state_dict' entry"),
    (lambda c: c.update(model_config=[1, 2]), "'model_config' is a list, expected a mapping"),
    (lambda c: c.update(format_version="one"), "format_version 'one' is not an integer"),
    (lambda c: c["model_config"].update(backbone="schnet"),
     r"stored model_config cannot be built: model\.backbone: 'schnet' is not one of"),
    (lambda c: c["model_config"].update(width=-1), r"model_config cannot be built: model\.width"),
    (lambda c: c["state_dict"].update({k: v * float("nan") for k, v in c["state_dict"].items()
                                       if k.endswith("weight")}), "non-finite values in .*weight"),
    (lambda c: c["metadata"].update(dtype="float17"), "metadata.dtype: 'float17' is not a"),
], ids=["no-config", "no-metadata", "no-weights", "config-list", "version-text",
        "bad-backbone", "bad-width", "nan-weights", "bad-dtype"])
def test_damaged_model_file_contents_name_the_file(tmp_path, change, match):
    """Files with the right marker but missing or wrong entries: a ModelFileError naming the
    file, never a KeyError or a model that computes NaN."""
    path = tmp_path / "damaged.pt"
    save_model(make_model("painn"), path)
    content = torch.load(path, weights_only=True)
    change(content)
    torch.save(content, path)
    with pytest.raises(ModelFileError, match=f"^{path}: .*{match}"):
        load_model(path)


@pytest.mark.parametrize("config, key", [
    ({"backbone": "schnet", "elements": [1]}, "model.backbone"),
    ({"backbone": "painn"}, "model.elements"),
    ({"backbone": "painn", "elements": ["Xx"]}, "model.elements"),
    ({"backbone": "painn", "elements": [1], "width": 0}, "model.width"),
    ({"backbone": "painn", "elements": [1], "cutoff": -1}, "model.cutoff"),
    ({"backbone": "painn", "elements": [1], "attention": {"type": "magic"}}, "model.attention"),
    ({"backbone": "painn", "elements": [1], "hidden": 3}, "model.hidden: unknown key"),
    ({"backbone": "painn", "elements": [1], "attention": {"type": "efa", "r_max": 9.0,
                                                          "hedas": 4}},
     r"model\.attention\.hedas: unknown key for global block 'efa'; allowed: \["),
    ({"backbone": "painn", "elements": [1], "attention": {"type": "transformer", "bias": "x"}},
     r"model\.attention\.bias: must be one of"),
])
def test_build_model_errors_name_the_key(config, key):
    with pytest.raises(ValueError, match=key):
        build_model(config)


@pytest.mark.parametrize("name", MODELS)
def test_energy_is_continuous_when_a_pair_crosses_the_cutoff(name):
    """Two atoms pulled apart across the cutoff: no jump in energy (a smooth envelope). The
    energy's own slope there (nonzero for long-range terms such as Coulomb) is taken out."""
    from ase import Atoms
    model = make_model(name, cutoff=4.0)
    energies, slopes = [], []
    for d in (4.0 - 1e-7, 4.0 + 1e-7):
        atoms = Atoms("CO", positions=[[0, 0, 0], [d, 0, 0]])
        out = predict(model, [atoms])
        energies.append(float(out["energy"]))
        slopes.append(-float(out["forces"][1, 0]))          # dE/dd
    jump = energies[1] - energies[0] - 0.5 * (slopes[0] + slopes[1]) * 2e-7
    assert abs(jump) < 1e-8, (energies, slopes)


def test_several_global_blocks_beside_each_layer_add_up():
    """attention: [efa, bond-graph] builds both beside every layer; the model file keeps both
    and the reach of the EFA block."""
    from mlip_attn.attention.base import GlobalBlocks
    config = {"backbone": "painn", "elements": [1, 6], "width": 16, "layers": 2, "lmax": 2,
              "attention": [{"type": "efa", "r_max": 30.0, "vectors": True, "tensors": True},
                            {"type": "bond-graph", "channels": 4}]}
    model = build_model(config)
    assert all(isinstance(layer.global_block, GlobalBlocks) for layer in model.backbone.layers)
    assert model.is_global and model.r_max == 30.0
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    model = model.double()
    atoms = random_molecule(7, seed=1, numbers=(1, 6))
    ref = predict(model, [atoms])
    R = Rotation.random(random_state=2).as_matrix()
    turned = atoms.copy()
    turned.positions = atoms.positions @ R.T
    out = predict(model, [turned])
    assert rel(out["energy"], ref["energy"]) < 1e-10
    assert rel(out["forces"], ref["forces"] @ torch.tensor(R.T)) < 1e-10
    assert build_model(model.model_config).model_config["attention"][1]["steps"] == 24
    with pytest.raises(ValueError, match=r"model.attention\[1\].channels: must be a positive"):
        build_model({**config, "attention": [config["attention"][0], {"type": "bond-graph",
                                                                       "channels": 0}]})
