"""Reference-data generation: geometry recipes, xTB labelling, resume, failures, NaCl toy."""

from __future__ import annotations

import glob
import os

import ase.io as ase_io
import numpy as np
import pytest
import tblite  # noqa: F401 - a required dependency: a broken install fails here, never skips
from ase.calculators.calculator import CalculationFailed, Calculator, all_changes
from ase.units import kcal, mol

import mlip_attn.qm as S
from mlip_attn.qm import methods as M
from mlip_attn.qm import store
from mlip_attn.qm.systems import nacl as N

KCAL = kcal / mol  # eV per kcal/mol


def _read(path):
    return ase_io.read(path, ":", format="extxyz")


def _check_frames(frames, structures):
    assert len(frames) == len(structures)
    for a in frames:
        i = int(a.info["index"])
        s = structures[i]
        assert a.calc is None                      # no ASE energy/forces keys
        assert not a.pbc.any() and np.allclose(a.cell.array, 0.0)
        assert list(a.numbers) == list(s.numbers)
        assert np.allclose(a.positions, s.positions, atol=1e-6)
        assert np.isfinite(a.info["REF_energy"])
        assert a.arrays["REF_forces"].shape == (len(a), 3)
        assert np.all(np.isfinite(a.arrays["REF_forces"]))
        assert int(a.info["total_charge"]) == int(s.info["total_charge"])
        assert a.info["config_type"] == s.info["config_type"]
        assert a.info["ref_method"] == "GFN2-xTB"
        assert "electronic_temperature=300 K" in a.info["ref_settings"]
        assert a.info["ref_settings"].startswith("tblite ")


# ----------------------------------------------------------------------------- systems

def test_cumulene_label_roundtrip(tmp_path):
    structs = S.cumulene_structures([3, 4], 3, seed=0)
    assert len(structs) == 6
    assert [s.info["n_carbons"] for s in structs] == [3, 3, 3, 4, 4, 4]
    # regular scan part covers 0 .. 90
    assert structs[0].info["torsion_deg"] == 0.0
    for s in structs:
        assert s.get_chemical_formula() == f"C{s.info['n_carbons']}H4"
        assert abs(S.torsion_angle(s) - s.info["torsion_deg"]) < 10.0   # rattle only
    # same seed -> same structures; other seed -> different
    again = S.cumulene_structures([3, 4], 3, seed=0)
    assert all(np.array_equal(a.positions, b.positions) for a, b in zip(structs, again))
    other = S.cumulene_structures([3, 4], 3, seed=1)
    assert not np.allclose(structs[-1].positions, other[-1].positions)
    out = tmp_path / "cum.xyz"
    rep = S.label_structures(structs, str(out), progress=False)
    assert rep.n_done == 6 and rep.n_failed == 0 and rep.complete
    frames = _read(str(out))
    _check_frames(frames, structs)
    assert {int(a.info["n_carbons"]) for a in frames} == {3, 4}


def test_sn2_profile_shape():
    """xTB Cl- + CH3Cl: ion-dipole well ~-10 kcal/mol, TS ~ +0.6 (spec), symmetric."""
    scan = S.sn2_scan("Cl", "Cl", [-6.0, -1.25, 0.0, 1.25])
    for a, xi in zip(scan, [-6.0, -1.25, 0.0, 1.25]):
        assert abs(S.sn2_xi(a) - xi) < 1e-3
    e = [S.xtb_energy(a) for a in scan]
    e_far, e_well, e_ts, e_well2 = ((x - e[0]) / KCAL for x in e)
    assert -10.0 < e_well < -5.0           # relative to xi = -6 (which is ~2 below infinity)
    assert 0.0 < e_ts - e_well < 14.0
    assert abs(e_well - e_well2) < 0.05    # symmetric identity reaction


# --------------------------------------------------------------------- xTB correctness

def test_xtb_forces_match_finite_differences():
    a = S.cumulene_structures([3], 1, seed=5)[0]              # rattled allene
    e, f = S.compute_label(a.numbers, a.positions, 0)
    h = 1e-3
    fd = np.zeros_like(f)
    for i in range(len(a)):
        for k in range(3):
            p = a.positions.copy()
            p[i, k] += h
            ep = S.compute_label(a.numbers, p, 0)[0]
            p[i, k] -= 2 * h
            em = S.compute_label(a.numbers, p, 0)[0]
            fd[i, k] = -(ep - em) / (2 * h)
    assert np.abs(f).max() > 0.1
    np.testing.assert_allclose(f, fd, atol=1e-3)


def test_cumulene_rigid_barrier_and_parity():
    # spec (xTB rigid barriers, kcal/mol): 3 C -> 54.6, 4 -> 45.0, 5 -> 34.4
    for n, ref in ((4, 45.0), (5, 34.4)):
        a0, a45, a90 = S.cumulene_torsion_scan(n, [0.0, 45.0, 90.0])
        assert abs(S.torsion_angle(a0)) < 1e-6 and abs(S.torsion_angle(a90) - 90.0) < 1e-6
        assert abs(S.torsion_angle(a45) - 45.0) < 1e-6
        e0, e45, e90 = (S.xtb_energy(a) for a in (a0, a45, a90))
        barrier = (e0 - e90) / KCAL
        if n % 2:       # odd: perpendicular minimum
            assert barrier > 0
        else:           # even: planar minimum
            assert barrier < 0
        assert abs(abs(barrier) - ref) < 0.15 * ref, (n, barrier)
        assert min(e0, e90) < e45 < max(e0, e90)


# --------------------------------------------------------------------------- resume

@pytest.mark.parametrize("cut", ["mid_line", "line_boundary", "garbage"])
def test_resume_after_interrupt(tmp_path, cut):
    structs = S.cumulene_structures([3], 6, seed=2)
    out = str(tmp_path / "resume.xyz")
    r1 = S.label_structures(structs[:3], out, progress=False)
    assert r1.n_done == 3
    first = {int(a.info["index"]): a for a in _read(out)}
    # simulate a kill during the write of the 4th frame
    e, f = S.compute_label(structs[3].numbers, structs[3].positions, 0)
    text = store.frame_text(store.output_atoms(structs[3], 3, e, f, "GFN2-xTB", "x"))
    if cut == "mid_line":
        tail = text[: len(text) // 2]
        assert not tail.endswith("\n")
    elif cut == "line_boundary":
        tail = "".join(text.splitlines(keepends=True)[:4])
    else:
        tail = "this is not a frame\n"
    with open(out, "a") as fh:
        fh.write(tail)
    assert S.read_done_indices(out) == {0, 1, 2}
    with pytest.warns(RuntimeWarning, match="after the last complete frame"):
        r2 = S.label_structures(structs, out, progress=False)
    assert (r2.n_skipped, r2.n_done, r2.n_failed, r2.n_in_file) == (3, 3, 0, 6)
    frames = _read(out)
    idx = [int(a.info["index"]) for a in frames]
    assert sorted(idx) == list(range(6)) and len(idx) == len(set(idx))
    for a in frames:
        i = int(a.info["index"])
        if i in first:
            assert a.info["REF_energy"] == first[i].info["REF_energy"]
            np.testing.assert_array_equal(a.arrays["REF_forces"], first[i].arrays["REF_forces"])
    _check_frames(frames, structs)
    # the removed bytes were kept next to the file
    backups = glob.glob(out + ".tail-*")
    assert len(backups) == 1 and open(backups[0]).read() == tail
    # a third run has nothing to do
    r3 = S.label_structures(structs, out, progress=False)
    assert (r3.n_skipped, r3.n_done) == (6, 0)
    assert len(_read(out)) == 6


def test_resume_refuses_other_input(tmp_path):
    out = str(tmp_path / "x.xyz")
    S.label_structures(S.cumulene_structures([3], 2, seed=0), out, progress=False)
    with pytest.raises(ValueError, match="does not match"):
        S.label_structures(S.cumulene_structures([3], 2, seed=1), out, progress=False)
    assert len(_read(out)) == 2


def _foreign_files(tmp_path):
    """Files a user may point --out at by mistake: extxyz from elsewhere, other text."""
    from ase.build import molecule
    plain = tmp_path / "plain.xyz"
    ase_io.write(plain, [molecule("H2O"), molecule("CH4")], format="extxyz")
    labelled = tmp_path / "labelled_elsewhere.xyz"          # labels, but not ours
    water = molecule("H2O")
    water.info["REF_energy"] = -1.0
    water.arrays["REF_forces"] = np.zeros((3, 3))
    ase_io.write(labelled, water, format="extxyz")
    notes = tmp_path / "notes.xyz"
    notes.write_text("my notes, not a structure file\n")
    return [plain, labelled, notes]


@pytest.mark.parametrize("n", ["-5", "0"])
def test_data_refuses_a_count_below_one(tmp_path, capsys, n):
    """`mlip-attn data --n -5` used to succeed with "0/0"."""
    from mlip_attn.cli import main
    out = tmp_path / "x.xyz"
    assert main(["data", "nacl", "--n", n, "--out", str(out)]) == 2
    assert f"n: the number of structures must be a positive integer, got {n}" in \
        capsys.readouterr().err
    assert not out.exists()


def test_data_refuses_a_file_it_did_not_write(tmp_path):
    """`mlip-attn data --out EXISTING`: a foreign file is refused and left exactly as it was."""
    from mlip_attn.cli import main
    for path in _foreign_files(tmp_path):
        before = path.read_bytes()
        with pytest.raises(ValueError, match=rf"^{path}: not a file of labelled structures "
                                             r"written by mlip-attn.*left untouched"):
            S.generate("nacl", 2, str(path), progress=False)
        assert main(["data", "nacl", "--n", "2", "--out", str(path)]) == 2
        assert path.read_bytes() == before
        assert glob.glob(str(path) + ".tail-*") == []


def test_data_resumes_its_own_interrupted_first_frame(tmp_path):
    """An own file killed while writing its first frame is still recognised and repaired."""
    structs = N.nacl_structures(2, seed=3)
    out = tmp_path / "first.xyz"
    e, f = N.nacl_energy_forces(structs[0].positions, structs[0].numbers)
    text = store.frame_text(store.output_atoms(structs[0], 0, e, f, N.REF_METHOD, "x"))
    out.write_text(text[: len(text) // 3])
    with pytest.warns(RuntimeWarning, match="after the last complete frame"):
        rep = S.label_structures(structs, str(out), method="nacl-analytic", progress=False)
    assert (rep.n_skipped, rep.n_done) == (0, 2)


def test_data_refuses_its_own_file_labelled_with_another_method(tmp_path):
    structs = S.cumulene_structures([3], 2, seed=0)
    out = str(tmp_path / "x.xyz")
    S.label_structures(structs[:1], out, method="gfn2-xtb", progress=False)
    before = open(out).read()
    with pytest.raises(ValueError, match="labelled with GFN2-xTB.*GFN1-xTB.*new file"):
        S.label_structures(structs, out, method="gfn1-xtb", progress=False)
    assert open(out).read() == before


# ------------------------------------------------------------------------- failures

def test_failures_are_counted_and_skipped(tmp_path, monkeypatch):
    structs = S.cumulene_structures([3], 6, seed=4)
    bad_scf, bad_nan = structs[2].positions.copy(), structs[4].positions.copy()
    real = M.make_calculator
    calls = []

    class Failing(Calculator):
        implemented_properties = ["energy", "forces"]

        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
            super().calculate(atoms, properties, system_changes)
            if np.allclose(self.atoms.positions, bad_scf):
                raise CalculationFailed("SCF not converged (forced by test)")
            if np.allclose(self.atoms.positions, bad_nan):
                self.results = {"energy": float("nan"), "forces": np.zeros((len(self.atoms), 3))}
                return
            a = self.atoms.copy()
            a.calc = self.inner
            self.results = {"energy": a.get_potential_energy(), "forces": a.get_forces()}

    def factory(method, **kw):
        calls.append(kw)
        return Failing(real(method, **kw))

    monkeypatch.setattr(M, "_calculator_factory", factory)
    out = str(tmp_path / "fail.xyz")
    rep = S.label_structures(structs, out, progress=False)
    assert (rep.n_done, rep.n_failed, rep.n_in_file) == (4, 2, 4)
    assert not rep.complete
    assert [i for i, _ in rep.failures] == [2, 4]
    assert "forced by test" in rep.failures[0][1]
    assert "non-finite" in rep.failures[1][1]
    # the SCF ladder tried every fallback for the failing structure
    assert len(calls) >= 6 + len(M.XTB_SCF_LADDER) - 1
    assert sorted(int(a.info["index"]) for a in _read(out)) == [0, 1, 3, 5]
    assert "#2" in str(rep)
    # with a working calculator the next run labels only the failed ones
    monkeypatch.undo()
    rep2 = S.label_structures(structs, out, progress=False)
    assert (rep2.n_skipped, rep2.n_done, rep2.n_failed) == (4, 2, 0) and rep2.complete
    _check_frames(_read(out), structs)


def test_scf_ladder_recovers_hard_case(tmp_path):
    """Br- + CH3Br far apart (xi = -5.25 A): the default SCF (SAD guess, damping 0.4) does
    not converge with tblite 0.8; the ladder must recover the same state as a damped SCF."""
    a = S.sn2_scan("Br", "Br", [-5.25])[0]
    e, f, calc = M.xtb_energy_forces(a.numbers, a.positions, charge=-1)
    assert np.isfinite(e) and np.all(np.isfinite(f))
    b = a.copy()
    b.calc = M.make_calculator("gfn2-xtb", charge=-1, mixer_damping=0.05, max_iterations=500,
                               mixer_memory=40)
    with S.single_thread_openmp():
        e_b, f_b = b.get_potential_energy(), b.get_forces()
    assert abs(e_b - e) < 1e-5
    np.testing.assert_allclose(f_b, f, atol=2e-3)  # SCF-tolerance level
    rep = S.label_structures([a], str(tmp_path / "hard.xyz"), progress=False)
    assert rep.n_failed == 0 and rep.n_done == 1


def test_workers_match_serial(tmp_path):
    structs = S.cumulene_structures([3, 4], 2, seed=7)
    env_before = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    r1 = S.label_structures(structs, str(tmp_path / "w1.xyz"), workers=1, progress=False)
    r2 = S.label_structures(structs, str(tmp_path / "w2.xyz"), workers=2, progress=False)
    assert r1.n_done == r2.n_done == 4
    a, b = _read(str(tmp_path / "w1.xyz")), _read(str(tmp_path / "w2.xyz"))
    assert [x.info["index"] for x in b] == [0, 1, 2, 3]      # imap keeps the order
    for x, y in zip(a, b):
        assert abs(x.info["REF_energy"] - y.info["REF_energy"]) < 1e-6
        np.testing.assert_allclose(x.arrays["REF_forces"], y.arrays["REF_forces"], atol=1e-6)
    # the parent environment is left as it was
    assert {k: os.environ.get(k) for k in env_before} == env_before


def test_unknown_method_and_pyscf_hint(tmp_path):
    with pytest.raises(ValueError, match="unknown method 'dft'"):
        S.label_structures([], str(tmp_path / "x.xyz"), method="dft")
    try:
        import pyscf  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pyscf"):
            S.label_structures([], str(tmp_path / "x.xyz"), method="pyscf-b3lyp")


# ----------------------------------------------------------------------------- NaCl

def test_nacl_forces_and_charge():
    rng = np.random.default_rng(0)
    a = N.nacl_cluster(9.0, rng)
    assert set(a.numbers) <= {11, 17} and 10 < len(a) < 80
    e, f = N.nacl_energy_forces(a.positions, a.numbers)
    # block-wise evaluation is exact
    e2, f2 = N.nacl_energy_forces(a.positions, a.numbers, block=7)
    assert abs(e - e2) < 1e-9 and np.allclose(f, f2, atol=1e-10)
    # net force vanishes (isolated, translation invariant)
    assert np.abs(f.sum(0)).max() < 1e-9
    h = 1e-4
    for i in rng.choice(len(a), 6, replace=False):
        for k in range(3):
            p = a.positions.copy()
            p[i, k] += h
            ep = N.nacl_energy_forces(p, a.numbers)[0]
            p[i, k] -= 2 * h
            em = N.nacl_energy_forces(p, a.numbers)[0]
            assert abs(-(ep - em) / (2 * h) - f[i, k]) < 1e-5
    # a single pair against physics, not against the implementation's own constants
    def pair(r, numbers=(11, 17)):
        return N.nacl_energy_forces(np.array([[0, 0, 0], [0, 0, r]]), list(numbers))

    from ase.units import Bohr, Hartree
    k_e = Hartree * Bohr                       # e^2 / (4 pi eps0) in eV Å, from CODATA
    for r in (20.0, 40.0):                     # far apart: bare Coulomb between +1 and -1
        assert pair(r)[0] == pytest.approx(-k_e / r, rel=1e-5)
    radii = np.linspace(1.5, 6.0, 451)
    unlike = np.array([pair(r)[0] for r in radii])
    r_min = radii[np.argmin(unlike)]
    assert 2.1 < r_min < 2.6                   # NaCl diatomic bond length: 2.36 Å
    assert (np.diff(unlike[radii < r_min]) < 0).all() and (np.diff(unlike[radii > r_min]) > 0).all()
    for like in ((11, 11), (17, 17)):          # like ions repel at every distance
        assert (np.diff([pair(r, like)[0] for r in radii]) < 0).all()
    e_pair, f_pair = pair(2.5)
    assert np.allclose(f_pair[0], -f_pair[1]) and f_pair[1, 2] < 0   # beyond r_min: attraction


def test_nacl_structures_and_generate(tmp_path):
    structs = N.nacl_structures(3, seed=1, diameter=(10.0, 14.0))
    for s in structs:
        n_na, n_cl = int(np.sum(s.numbers == 11)), int(np.sum(s.numbers == 17))
        assert s.info["total_charge"] == n_na - n_cl
        assert 10.0 <= s.info["diameter"] <= 14.0
        assert s.info["ref_method"] == "analytic erf-Coulomb + exp repulsion"
        e, f = N.nacl_energy_forces(s.positions, s.numbers)
        assert s.info["REF_energy"] == pytest.approx(e)
        assert np.allclose(s.arrays["REF_forces"], f)
    out = str(tmp_path / "nacl.xyz")
    rep = S.generate("nacl", 3, out, seed=1, progress=False, diameter=(10.0, 14.0))
    assert rep.n_done == 3
    frames = _read(out)
    for a, s in zip(frames, structs):
        assert a.info["total_charge"] == s.info["total_charge"]
        assert a.info["REF_energy"] == pytest.approx(s.info["REF_energy"], abs=1e-8)
        assert a.calc is None and not a.pbc.any()
    rep2 = S.generate("nacl", 3, out, seed=1, progress=False, diameter=(10.0, 14.0))
    assert (rep2.n_skipped, rep2.n_done) == (3, 0)


def test_generate_cumulene_counts(tmp_path):
    rep = S.generate("cumulene", 5, str(tmp_path / "c.xyz"), seed=0, progress=False,
                     n_carbons=[3, 4])
    assert rep.n_total == 5 and rep.complete
    assert [int(a.info["n_carbons"]) for a in _read(str(tmp_path / "c.xyz"))] == [3, 3, 3, 4, 4]
    with pytest.raises(ValueError, match="'water' is not one of"):
        S.generate("water", 1, str(tmp_path / "w.xyz"))


def test_pyscf_b3lyp_path(tmp_path):
    """Only where PySCF is installed (pip install 'mlip-attn[qm]')."""
    pytest.importorskip("pyscf")
    from ase import Atoms

    a = Atoms("OH2", positions=[[0, 0, 0.1], [0.76, 0, -0.45], [-0.74, 0.05, -0.5]])
    a.info.update(config_type="water", total_charge=0)
    rep = S.label_structures([a], str(tmp_path / "w.xyz"), method="pyscf-b3lyp",
                             progress=False)
    assert rep.n_done == 1, str(rep)
    fr = _read(str(tmp_path / "w.xyz"))[0]
    assert fr.info["ref_method"] == "B3LYP/def2-SVP"
    f = fr.arrays["REF_forces"]
    assert np.abs(f.sum(0)).max() < 1e-3
    h = 2e-3
    p = a.positions.copy()
    p[1, 0] += h
    ep = S.compute_label(a.numbers, p, method="pyscf-b3lyp")[0]
    p[1, 0] -= 2 * h
    em = S.compute_label(a.numbers, p, method="pyscf-b3lyp")[0]
    assert abs(-(ep - em) / (2 * h) - f[1, 0]) < 2e-3
