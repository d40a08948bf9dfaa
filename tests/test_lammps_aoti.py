"""The AOTInductor route of the LAMMPS export (``route="aoti"``, a ``.pt2`` package): the
pair style's C++ runner loads it and gives what ASE and the TorchScript route give (float64,
1e-10), on one rank and split over two. Compiling a package takes minutes on 2 cores, so
the models are tiny and the tests that compile are marked ``slow``; the speed comparison is
a benchmark (``python benchmarks/aoti_vs_torchscript.py``), not a test.
"""
from __future__ import annotations

import warnings
from unittest import mock

import numpy as np
import pytest
import torch

from conftest import MODEL_CONFIGS, make_model, random_crystal, random_molecule
from test_lammps import (_md_on_ranks, _single_point_on_ranks, assert_close, lammps_frame,
                         lammps_results, plugin, reference, write_data)  # noqa: F401

from mlip_attn import build_model, save_model
from mlip_attn.lammps.export import export_lammps, load_torchscript, read_export_metadata

pytestmark = [pytest.mark.filterwarnings("ignore:`torch.jit.*:DeprecationWarning")]


def _export_both(model, folder, name):
    """``model`` exported by the aoti route and by TorchScript with the ops."""
    save_model(model, folder / f"{name}.pt")

    def no_torchscript(*args, **kwargs):
        raise AssertionError("the aoti route called TorchScript")

    with mock.patch.object(torch.jit, "script", no_torchscript), \
            mock.patch.object(torch.jit, "save", no_torchscript):
        package = export_lammps(folder / f"{name}.pt", folder / f"{name}.pt2", route="aoti")
    script = export_lammps(folder / f"{name}.pt", folder / f"{name}-lammps.pt",
                           route="torchscript+ops")
    return package, script


@pytest.fixture(scope="module")
def painn_exports(tmp_path_factory):
    folder = tmp_path_factory.mktemp("aoti-painn")
    model = make_model("painn", width=8, layers=2)
    return model, *_export_both(model, folder, "painn")


@pytest.fixture(scope="module")
def efa_exports(tmp_path_factory):
    folder = tmp_path_factory.mktemp("aoti-efa")
    # the linear-cost EFA (Lebedev sums, ``switch: false``): the form whose sums go across ranks
    torch.manual_seed(0)
    config = {**MODEL_CONFIGS["painn+efa-l1"], "elements": [1, 6, 8], "width": 8, "layers": 1}
    config["attention"] = {**config["attention"], "switch": False}
    model = build_model(config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    model = model.to(torch.float64).eval()
    return model, *_export_both(model, folder, "efa")


def test_aoti_route_needs_a_pt2_name_and_a_device_it_sees(tmp_path):
    model = make_model("painn", width=8, layers=1)
    save_model(model, tmp_path / "m.pt")
    with pytest.raises(ValueError, match=r"\.pt2"):
        export_lammps(tmp_path / "m.pt", tmp_path / "m-lammps.pt", route="aoti")
    with pytest.raises(ValueError, match=r"\.pt2"):
        export_lammps(tmp_path / "m.pt", tmp_path / "m.pt2", route="torchscript+ops")
    with pytest.raises(ValueError, match="only the aoti route"):
        export_lammps(tmp_path / "m.pt", tmp_path / "m-lammps.pt", device="cuda")
    with pytest.raises(ValueError, match="not a device name"):
        export_lammps(tmp_path / "m.pt", tmp_path / "m.pt2", route="aoti", device="gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="sees no CUDA device"):
            export_lammps(tmp_path / "m.pt", tmp_path / "m.pt2", route="aoti", device="cuda")


@pytest.mark.slow
def test_aoti_package_metadata_and_python_call(painn_exports):
    """The package carries the export's metadata (read without loading it) and, called from
    Python, equals the TorchScript route with ghost nodes, without any, and on one atom."""
    from mlip_attn.data import AtomicData, Batch
    from mlip_attn.lammps.aoti import load_aoti, read_aoti_metadata, split_inputs
    model, package, script = painn_exports
    meta = read_export_metadata(package)
    assert meta["route"] == "aoti" and meta["format"] == "mlip-attn-lammps"
    assert meta["device"] == "cpu"
    assert meta == read_aoti_metadata(package)
    own = ("route", "device", "box_input", "neutral_only")   # what differs by route
    assert {k: v for k, v in meta.items() if k not in own} == \
        {k: v for k, v in read_export_metadata(script).items() if k not in own}
    compiled, scripted = load_aoti(package), load_torchscript(script)
    atoms = random_molecule(9, seed=2)
    batch = Batch.collate([AtomicData.from_atoms(atoms).with_graph(model.cutoff)]).to(
        dtype=torch.float64)
    args = (batch.positions, batch.numbers, batch.edge_index, batch.shifts)
    zero = torch.zeros(1, dtype=torch.float64)
    for n_local in (9, 6, 1):     # the last nodes stand for ghosts
        want = scripted(*args, n_local, zero, zero, True, torch.zeros(3, 3, dtype=torch.float64))
        got = compiled(*split_inputs(*args, n_local, zero, zero))
        for g, w, what in zip(got, want, ("energy", "atomic", "forces", "virial")):
            assert g.shape == w.shape, what
            torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-10, msg=what)
    assert float(want[2].abs().max()) > 1e-2


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["molecule", "crystal"])
def test_aoti_in_lammps_matches_ase_and_torchscript(plugin, tmp_path, painn_exports, kind):
    """Energy, per-atom energies, forces and virial of the .pt2 package in LAMMPS equal
    AttnCalculator and the TorchScript route's (float64, 1e-10)."""
    model, package, script = painn_exports
    atoms = lammps_frame(random_molecule(10, seed=1) if kind == "molecule" else random_crystal(3))
    got = lammps_results(plugin, atoms, package, tmp_path)
    via_script = lammps_results(plugin, atoms, script, tmp_path)
    want = reference(model, atoms)
    for what, g, s, w in zip(("energy", "per-atom energies", "forces", "virial"), got,
                             via_script, want):
        if w is None:
            continue
        assert_close(g, w, f"{what} vs ASE")
        assert_close(g, s, f"{what} vs TorchScript")
    assert np.abs(want[2]).max() > 1e-2


@pytest.mark.slow
def test_aoti_on_two_ranks_equals_one(plugin, tmp_path, painn_exports):
    """A local model's package split over 2 ranks (ghost nodes) equals 1 rank over MD steps."""
    _, package, _ = painn_exports
    atoms = lammps_frame(random_crystal(5).repeat((3, 2, 2)))
    atoms.rattle(0.03, seed=3)
    write_data(tmp_path / "data.lmp", atoms)
    t1, f1, out1 = _md_on_ranks(plugin, tmp_path, package, atoms, 1, periodic=True)
    t2, f2, _ = _md_on_ranks(plugin, tmp_path, package, atoms, 2, periodic=True)
    assert "AOTInductor package" in out1
    assert_close(t2[:, 1:3], t1[:, 1:3], "energies 2 vs 1 ranks", rtol=1e-9)
    assert_close(t2[:, 3:], t1[:, 3:], "virial 2 vs 1 ranks", rtol=1e-9)
    assert_close(f2, f1, "forces 2 vs 1 ranks", rtol=1e-9)


@pytest.mark.slow
def test_aoti_efa_on_one_and_two_ranks_equals_ase(plugin, tmp_path, efa_exports):
    """A distributed EFA model's package: its sums all-reduced across 2 ranks (forward and
    backward through allreduce_sum), 1 rank and 2 ranks equal ASE and the TorchScript route
    to 1e-10."""
    model, package, script = efa_exports
    assert read_export_metadata(package)["distributed"] is True
    atoms = random_molecule(12, seed=5)
    write_data(tmp_path / "data.lmp", atoms)
    e_ref, _, f_ref, _ = reference(model, atoms)
    e_script, f_script, _ = _single_point_on_ranks(plugin, tmp_path, script, 1)
    for nprocs in (1, 2):
        energy, forces, fewest = _single_point_on_ranks(plugin, tmp_path, package, nprocs)
        assert_close(energy, e_ref, f"energy, {nprocs} rank(s) vs ASE")
        assert_close(forces, f_ref, f"forces, {nprocs} rank(s) vs ASE")
        assert_close(energy, e_script, f"energy, {nprocs} rank(s) vs TorchScript")
        assert_close(forces, f_script, f"forces, {nprocs} rank(s) vs TorchScript")
        if nprocs == 2:
            assert fewest > 0, "one rank holds every atom: the structure is not split"


def test_no_torchscript_deprecation_warning_in_export_or_calculator(tmp_path, capsys):
    """`mlip-attn export` (default route: TorchScript with the ops, the fallback while torch
    ships it) and `AttnCalculator` emit no TorchScript deprecation warning."""
    from mlip_attn import AttnCalculator
    from mlip_attn.cli import main
    model = make_model("painn+efa-l1", width=8, layers=1)
    save_model(model, tmp_path / "m.pt")
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=r".*torch\.jit", category=DeprecationWarning)
        assert main(["export", str(tmp_path / "m.pt"), "--lammps", "-o",
                     str(tmp_path / "m-lammps.pt")]) in (0, None)
        atoms = random_molecule(6, seed=1)
        atoms.calc = AttnCalculator(tmp_path / "m.pt")
        assert np.isfinite(atoms.get_forces()).all()
    assert "torchscript+ops" in capsys.readouterr().out


@pytest.mark.slow
def test_aoti_package_of_a_physics_2_model_is_for_neutral_structures(plugin, tmp_path,
                                                                      painn_exports):
    """A physics-2 model places a total charge on one bonded fragment, a branch on the
    charge's value that a compiled graph cannot take: the package is traced for neutral
    structures (its metadata says so), and the pair style refuses a charge for it, naming the
    route that takes one."""
    from mlip_attn.lammps.aoti import read_aoti_metadata
    from test_lammps import header, run_python
    _, package, _ = painn_exports
    assert read_aoti_metadata(package)["neutral_only"] is True
    write_data(tmp_path / "data.lmp", random_molecule(6, seed=2))
    deck = header(tmp_path / "data.lmp", package, False, "charge 1")
    with pytest.raises(Exception, match="neutral structures only.*torchscript"):
        run_python(plugin, deck)
