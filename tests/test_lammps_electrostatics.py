"""The electrostatics block in LAMMPS periodic boxes (export format 4: the pair style passes the
box at every step): 1, 2 and 4 MPI ranks (reciprocal sums over each rank's owned atoms, one
all-reduce) equal one rank to 1e-10 in float64, one rank equals `AttnCalculator`, the virial
(k-space part included) equals ASE's stress and the finite-difference strain derivative, and a
box that changes (change_box, fix npt) is followed. Same prerequisites as tests/test_lammps.py.
"""
from __future__ import annotations

import textwrap

import numpy as np
import pytest
import torch

from conftest import random_crystal, random_molecule
from test_lammps import (NKTV2P, _md_on_ranks, assert_close, export, header,  # noqa: F401
                         lammps_frame, lammps_results, plugin, reference, run_lmp, run_python,
                         write_data)

from mlip_attn import build_model
from mlip_attn.nn.latent_charges import FlowCharges, UniformCharges
from mlip_attn.lammps.export import read_export_metadata

pytestmark = [pytest.mark.filterwarnings("ignore:`torch.jit.*:DeprecationWarning")]


def electrostatics_model(backbone="painn", method="ewald", smearing=None, seed=0):
    """A small float64 model with every branch randomised (charges, φ feedback)."""
    torch.manual_seed(seed)
    attention = {"type": "electrostatics", "method": method, "accuracy": 1e-6}
    if smearing is not None:
        attention["smearing"] = smearing
    model = build_model({"backbone": backbone, "elements": [1, 6, 8], "width": 16, "layers": 2,
                         "cutoff": 4.0, "attention": attention})
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model.to(torch.float64).eval()


def crystal(repeat=(3, 2, 2), seed=5):
    atoms = lammps_frame(random_crystal(seed).repeat(repeat))
    atoms.rattle(0.03, seed=3)
    return atoms


def test_export_format_4_metadata(tmp_path):
    """Format 4: the box is an input; point charges (a real-space sum over neighbours' final
    charges) need one more ghost hop than the layers, Gaussian charges of the default width
    (no real-space part) do not."""
    smeared = read_export_metadata(export(electrostatics_model(), tmp_path, "a"))
    point = read_export_metadata(export(electrostatics_model(smearing=0.0), tmp_path, "b"))
    for meta in (smeared, point):
        assert meta["format_version"] == 4 and meta["box_input"] and meta["needs_box"]
        assert meta["periodic"] and meta["distributed"] and meta["global"]
    assert smeared["layers"] == 2 and point["layers"] == 3


@pytest.mark.parametrize("backbone, method, smearing", [
    ("painn", "ewald", None), ("painn", "pme", 0.0), ("egnn", "pme", None)])
def test_one_rank_equals_ase_with_the_k_space_virial(plugin, tmp_path, backbone, method, smearing):
    """Energy, per-atom energies, forces and virial (-V σ from ASE: the strain of the box in
    the reciprocal sum included) equal `AttnCalculator` to 1e-10."""
    model = electrostatics_model(backbone, method, smearing)
    exported = export(model, tmp_path)
    atoms = crystal()
    energy, energies, forces, virial = lammps_results(plugin, atoms, exported, tmp_path)
    e_ref, en_ref, f_ref, w_ref = reference(model, atoms)
    assert_close(energy, e_ref, "energy")
    assert_close(energies, en_ref, "per-atom energies")
    assert_close(forces, f_ref, "forces")
    assert_close(virial, w_ref, "virial")
    # the charges matter, in the energy and in the virial: without them (zero charge heads)
    neutral = electrostatics_model(backbone, method, smearing)
    with torch.no_grad():
        for head in neutral.modules():
            if isinstance(head, (FlowCharges, UniformCharges)):
                for p in head.parameters():
                    p.zero_()
    e0, _, _, w0 = reference(neutral, atoms)
    assert abs(e0 - e_ref) > 1e-3 and np.abs(w0 - w_ref).max() > 1e-3


def test_virial_is_the_finite_difference_strain_derivative(plugin, tmp_path):
    """LAMMPS' virial against central differences of the energy under change_box (x stretched,
    yz tilted; atoms remapped): -dE/dh = Σ_ab W_ab D_ab with D = cell⁻¹ d(cell)/dh. Ewald:
    exactly rotation invariant (a PME mesh is not, to its accuracy, so the antisymmetric part of
    its dE/dε, which these non-symmetric deformations see, is of that size: 1.4e-5 seen)."""
    exported = export(electrostatics_model(method="ewald"), tmp_path)
    atoms = crystal()
    write_data(tmp_path / "data.lmp", atoms)
    h = 1e-5
    deck = header(tmp_path / "data.lmp", exported, True) + textwrap.dedent("""\
        compute vir all pressure NULL virial
        thermo_style custom step pe vol c_vir[1] c_vir[6]
        run 0
        """)
    lmp = run_python(plugin, deck)
    try:
        volume = lmp.get_thermo("vol")
        w = np.array(lmp.numpy.extract_compute("vir", 0, 1)) * volume / NKTV2P
        c = np.array(atoms.cell)
        energies = {}
        for sign in (1, -1):
            # ε_xx: x scaled by 1 ± h; ε_yz (symmetric): z-row gains ±h·c_zz in y (yz tilt)
            lmp.command(f"change_box all x scale {1 + sign * h} remap")
            lmp.command("run 0")
            energies[("xx", sign)] = lmp.get_thermo("pe")
            lmp.command(f"change_box all x scale {1 / (1 + sign * h)} remap")
            lmp.command(f"change_box all yz final {c[2, 1] + sign * h * c[2, 2]} remap")
            lmp.command("run 0")
            energies[("yz", sign)] = lmp.get_thermo("pe")
            lmp.command(f"change_box all yz final {c[2, 1]} remap")
    finally:
        lmp.close()
    full = np.array([[w[0], w[3], w[4]], [w[3], w[1], w[5]], [w[4], w[5], w[2]]])
    inverse = np.linalg.inv(c)
    stretch, tilt = np.zeros((3, 3)), np.zeros((3, 3))
    stretch[0, 0], tilt[2, 1] = c[0, 0], c[2, 2]
    for key, dcell in (("xx", stretch), ("yz", tilt)):
        fd = -(energies[(key, 1)] - energies[(key, -1)]) / (2 * h)
        want = float((full * (inverse @ dcell)).sum())
        assert abs(fd - want) < 1e-6 * max(1.0, abs(want)), (key, fd, want)
        assert abs(want) > 1e-3


@pytest.mark.parametrize("method, smearing", [("ewald", None), ("pme", None), ("ewald", 0.0)])
def test_several_ranks_equal_one_rank_under_npt(plugin, tmp_path, method, smearing):
    """20 NPT steps (the box changes every step; neighbour lists rebuilt every step) on 1, 2
    and 4 ranks: energy, pressure, volume and forces agree to 1e-10 (PME: the charge mesh
    all-reduced; point charges: a real-space sum, one more ghost hop)."""
    model = electrostatics_model(method=method, smearing=smearing)
    exported = export(model, tmp_path)
    atoms = crystal()
    write_data(tmp_path / "data.lmp", atoms)
    npt = "fix npt all npt temp 600 600 0.05 tri 0 0 0.5"
    runs = {n: _npt_on_ranks(plugin, tmp_path, exported, atoms, n, npt)
            for n in ((1, 2, 4) if method == "pme" else (1, 2))}
    t1, f1, _ = runs[1]
    assert t1.shape == (5, 6)
    assert np.ptp(t1[:, 3]) > 1e-3, "the box does not move"
    for n, (tn, fn, out) in runs.items():
        if n == 1:
            continue
        assert "ghost cutoff set to" in out
        assert_close(tn[:, 1:3], t1[:, 1:3], f"energies {n} vs 1 ranks")
        assert_close(tn[:, 3:], t1[:, 3:], f"volume, pressure {n} vs 1 ranks")
        assert_close(fn, f1, f"forces {n} vs 1 ranks")


def _npt_on_ranks(plugin, tmp_path, exported, atoms, nprocs, fix):
    """20 MD steps with ``fix`` on ``nprocs`` ranks: thermo (step pe etotal vol press pxy) and
    the final forces by atom ID."""
    return _md_on_ranks(plugin, tmp_path, exported, atoms, nprocs, True, fix=fix,
                        columns="step pe etotal vol press pxy")


def test_changed_box_equals_ase_on_two_ranks(plugin, tmp_path):
    """change_box (triclinic tilt and a stretch) between two single points on 2 ranks: the
    second equals ASE on the changed cell (energy, forces, virial)."""
    model = electrostatics_model(method="pme")
    exported = export(model, tmp_path)
    atoms = crystal()
    write_data(tmp_path / "data.lmp", atoms)
    c = np.array(atoms.cell)
    deck = header(tmp_path / "data.lmp", exported, True) + textwrap.dedent(f"""\
        compute vir all pressure NULL virial
        thermo_style custom step pe c_vir[1] c_vir[2] c_vir[3] c_vir[4] c_vir[5] c_vir[6]
        thermo_modify format float %.17g
        run 0
        change_box all y scale 1.03 xy final {c[1, 0] + 0.4} remap
        run 0
        print "RESULT $(pe:%.17g) $(c_vir[1]:%.17g) $(c_vir[2]:%.17g) $(c_vir[3]:%.17g) &
            $(c_vir[4]:%.17g) $(c_vir[5]:%.17g) $(c_vir[6]:%.17g)"
        write_dump all custom {tmp_path}/f.dump id x y z fx fy fz modify sort id &
            format float %.17g
        """)
    (tmp_path / "in.box").write_text(deck)
    proc = run_lmp(tmp_path / "in.box", plugin, nprocs=2)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = [line.split()[1:] for line in proc.stdout.splitlines()
              if line.startswith("RESULT")][-1]
    energy, virial_bar = float(result[0]), np.array([float(v) for v in result[1:]])
    dump = np.loadtxt(tmp_path / "f.dump", skiprows=9)
    changed = atoms.copy()
    new_cell = c.copy()
    new_cell[1, 1] *= 1.03
    new_cell[1, 0] += 0.4
    changed.set_cell(new_cell, scale_atoms=False)
    changed.positions = dump[:, 1:4]
    e_ref, _, f_ref, w_ref = reference(model, changed)
    assert_close(energy, e_ref, "energy on the changed box")
    assert_close(dump[:, 4:], f_ref, "forces on the changed box")
    assert_close(virial_bar * changed.get_volume() / NKTV2P, w_ref, "virial on the changed box",
                 rtol=1e-9)


def test_open_box_on_two_ranks_and_a_slab_box_are_refused(plugin, tmp_path):
    """A non-periodic box is a direct sum (one rank only); a box periodic in 1 or 2 directions
    has no Ewald form here: both stop, saying why."""
    exported = export(electrostatics_model(), tmp_path)
    write_data(tmp_path / "data.lmp", random_molecule(8, seed=1))
    (tmp_path / "in.open").write_text(header(tmp_path / "data.lmp", exported, False) + "run 0\n")
    proc = run_lmp(tmp_path / "in.open", plugin, nprocs=2)
    out = " ".join((proc.stdout + proc.stderr).split())
    assert proc.returncode != 0 and "direct sum over every pair" in out
    write_data(tmp_path / "slab.lmp", crystal((1, 1, 1)))
    deck = header(tmp_path / "slab.lmp", exported, True).replace("p p p", "p p f") + "run 0\n"
    with pytest.raises(Exception, match="periodic in x, y and z"):
        run_python(plugin, deck)


@pytest.mark.slow
def test_electrostatics_bench_prints_both_tables(plugin, capsys):
    """`mlip-attn bench --lammps --electrostatics` at small sizes: the ASE ratio, the scaling
    rows with 2 ranks equal to 1 rank, and a size over the time limit skipped."""
    from mlip_attn.apps.lammps_bench_electrostatics import run_electrostatics_bench
    out = run_electrostatics_bench(ase_sizes=(64,), lammps_sizes=(216, 10 ** 6), width=8,
                                   steps=2, time_limit=5.0)
    printed = capsys.readouterr().out
    assert [r["atoms"] for r in out["ase"]] == [64] and out["ase"][0]["ratio"] > 0
    assert {r["model"] for r in out["scaling"]} == {"local", "electrostatics"}
    for row in out["scaling"]:
        assert row["atoms"] == 216 and row["ranks"] == 2
        assert row["energy_rel_diff"] < 1e-10 and row["force_diff"] < 1e-9
    assert "this machine has" in printed and "skipped" in printed


def test_charged_cell_on_two_ranks_equals_ase(plugin, tmp_path):
    """A charged periodic cell (``charge -1``) split over 2 ranks: the embedding spreads Q over
    every rank's atoms (its count all-reduced) and the charges keep the cell-wide constraint,
    so energy and forces equal ASE with atoms.info['charge'] = -1."""
    model = electrostatics_model(method="ewald")
    exported = export(model, tmp_path)
    atoms = crystal()
    write_data(tmp_path / "data.lmp", atoms)
    deck = header(tmp_path / "data.lmp", exported, True, "charge -1") + textwrap.dedent(f"""\
        thermo_modify format float %.17g
        run 0
        print "RESULT $(pe:%.17g)"
        write_dump all custom {tmp_path}/f.dump id x y z fx fy fz modify sort id &
            format float %.17g
        """)
    (tmp_path / "in.charged").write_text(deck)
    proc = run_lmp(tmp_path / "in.charged", plugin, nprocs=2)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    energy = float([line.split()[1] for line in proc.stdout.splitlines()
                    if line.startswith("RESULT")][-1])
    dump = np.loadtxt(tmp_path / "f.dump", skiprows=9)
    charged = atoms.copy()
    charged.positions = dump[:, 1:4]
    charged.info["charge"] = -1.0
    e_ref, _, f_ref, _ = reference(model, charged)
    neutral_e = reference(model, atoms)[0]
    assert abs(e_ref - neutral_e) > 1e-3        # the charge matters to this model
    assert_close(energy, e_ref, "energy of the charged cell, 2 ranks vs ASE")
    assert_close(dump[:, 4:], f_ref, "forces of the charged cell, 2 ranks vs ASE")
