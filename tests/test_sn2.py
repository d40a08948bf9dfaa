"""The SN2 recipe: ion approaches and relaxed scans of all four pairs, the reach xTB allows,
held-out directions, and errors split by the ion's distance."""
from __future__ import annotations

import ase.io
import numpy as np
import pytest
from ase.calculators.calculator import Calculator, all_changes

import mlip_attn.qm as S
from mlip_attn.qm.systems import sn2 as M
from mlip_attn.qm.systems import sn2_analysis as A


def test_structures_cover_all_pairs_and_stay_within_reach(tmp_path):
    structs = M.sn2_structures(24, seed=3, optimise=False)
    assert [a.info["pair"] for a in structs[:4]] == ["Cl-Cl", "Cl-Br", "Br-Cl", "Br-Br"]
    assert {a.info["config_type"] for a in structs} == {"sn2_scan", "sn2_approach"}
    for a in structs:
        x, y = a.info["nucleophile"], a.info["leaving_group"]
        assert a.get_chemical_symbols() == [x, "C", y, "H", "H", "H"]
        assert a.info["total_charge"] == -1
        assert abs(M.ion_distance(a) - a.info["ion_distance"]) < 1e-12
        if M._separated(a):                       # xTB checked that the halide kept its charge
            assert -1.0 - 1e-9 <= a.info["ion_charge"] <= -1.0 + M.MAX_LEAK
        if a.info["config_type"] == "sn2_approach":
            assert 3.3 < a.info["ion_distance"] < M.ION_REACH[(x, y)] + 0.3   # rattled molecule
            assert not M.SIDE_ON[0] <= a.info["angle"] <= M.SIDE_ON[1]
            d = np.linalg.norm(a.positions[1:] - a.positions[0], axis=1)
            assert d.min() > M.CLOSEST - 0.3
        else:
            lo, hi = M.xi_range(x, y)
            assert lo <= a.info["xi"] <= hi and (a.info["xi"] / 0.25).is_integer()
    again = M.sn2_structures(24, seed=3, optimise=False)
    assert all(np.array_equal(a.positions, b.positions) for a, b in zip(structs, again))
    report = S.label_structures(structs[:4], str(tmp_path / "sn2.xyz"), progress=False)
    assert report.n_done == 4 and report.n_failed == 0
    frames = ase.io.read(tmp_path / "sn2.xyz", ":")
    assert all(np.isfinite(a.info["REF_energy"]) for a in frames)


def test_xi_ranges_keep_the_free_ion_where_xtb_keeps_its_charge():
    assert M.xi_range("Cl", "Cl") == (-10.0, 10.0)
    assert M.xi_range("Cl", "Br") == (-6.0, 10.0)     # Cl- stays within 8 Å of CH3Br
    assert M.xi_range("Br", "Cl") == (-10.0, 6.0)
    assert M.xi_range("Br", "Br") == (-3.0, 3.0)      # Br- within 5 Å of CH3Br


def test_xtb_leaks_charge_onto_a_distant_methyl_bromide_but_not_a_chloride():
    """The measurement behind ION_REACH: the Mulliken charge of a free halide at 10 Å."""
    from ase import Atoms
    from mlip_attn.qm.methods import xtb_energy_forces
    leak = {}
    for x, y in (("Cl", "Cl"), ("Br", "Br")):
        molecule = M.methyl_halide(y)
        axis = molecule.positions[1] / np.linalg.norm(molecule.positions[1])
        atoms = Atoms([x], positions=[-10.0 * axis]) + molecule
        _, _, calc = xtb_energy_forces(atoms.numbers, atoms.positions, charge=-1)
        leak[y] = 1.0 + calc.results["charges"][0]
    assert leak["Cl"] < 0.002 and leak["Br"] > 0.05, leak


def test_held_out_directions_and_the_reach_are_enforced():
    rng = np.random.default_rng(0)
    side = [M.sn2_approach("Cl", "Cl", rng, angles=M.SIDE_ON, optimise=False)
            for _ in range(20)]
    assert all(M.SIDE_ON[0] <= a.info["angle"] <= M.SIDE_ON[1] for a in side)
    with pytest.raises(ValueError, match=r"distance: at most 5 Å for Br- \+ CH3Br"):
        M.sn2_approach("Br", "Br", rng, distance=(3.5, 8.0), optimise=False)
    with pytest.raises(ValueError, match="pairs: SN2 halogens must be Cl or Br"):
        M.sn2_structures(2, pairs=[("F", "Cl")], optimise=False)


class _Zero(Calculator):
    implemented_properties = ["energy", "forces"]

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        self.results = {"energy": 0.0, "forces": np.zeros((len(self.atoms), 3))}


def test_errors_by_distance_bins_the_free_ion(tmp_path):
    structs = M.sn2_structures(8, seed=1, approach_fraction=1.0, optimise=False)
    S.label_structures(structs, str(tmp_path / "a.xyz"), progress=False)
    frames = ase.io.read(tmp_path / "a.xyz", ":")
    result = A.errors_by_distance(frames, _Zero())
    assert sum(result["structures_by_distance"]) == 8
    assert result["energy_mae"] == pytest.approx(np.mean([abs(a.info["REF_energy"])
                                                          for a in frames]))
    filled = [v for v, k in zip(result["forces_mae_by_distance"],
                                result["structures_by_distance"]) if k]
    assert all(np.isfinite(filled)) and len(filled) >= 2
    findings = M.SN2().card_findings({"bins_A": list(A.DISTANCE_BINS), "held_out": {
        "approach": {"zero": result}}, "profiles": {"Cl-Cl": {"zero": 0.012}}}, "zero")
    assert findings[0].startswith("approach: E MAE (meV) / F MAE (meV/Å) by the free ion's "
                                  "distance from the carbon (structures): ")
    assert findings[0].count(" Å ") == len(filled) and findings[-1].endswith("Cl-Cl 12.0 meV")


def test_analysis_profiles_and_held_out_errors(tmp_path, monkeypatch):
    """SN2.analysis end to end for one pair (the relaxed scan between the trained ξ grid
    points, labelled) and one held-out set: a zero model's profile error is xTB's own profile,
    its held-out errors are the labels, and both plots are written."""
    monkeypatch.setattr(A, "PAIRS", (("Cl", "Cl"),))
    structs = M.sn2_structures(6, seed=2, approach_fraction=1.0, optimise=False)
    S.label_structures(structs, str(tmp_path / "held_out_approach.xyz"), progress=False)
    from mlip_attn.qm.systems.base import Protocol
    default = M.SN2.protocols["default"]
    monkeypatch.setitem(M.SN2.protocols, "tiny", Protocol(
        "one held-out set", n=6, held_out={"approach": default.held_out["approach"]}))
    result = M.SN2().analysis(tmp_path, {"zero": _Zero()}, "tiny")
    profile = result["profiles"]["Cl-Cl"]
    ref = np.array(profile["reference_eV"])
    assert set(result["profiles"]) == {"Cl-Cl"} and ref[0] == 0.0 and len(ref) >= 3
    assert profile["zero"] == pytest.approx(np.mean(np.abs(ref)))
    entry = result["held_out"]["approach"]["zero"]
    assert sum(entry["structures_by_distance"]) == 6
    assert (tmp_path / "sn2_profile.png").exists()
    assert (tmp_path / "sn2_forces_by_distance.png").exists()
    findings = M.SN2().card_findings(result, "zero")
    assert findings[0].startswith("approach: ") and findings[-1].startswith("Relaxed ξ profiles")


def test_far_approaches_reach_out_to_the_checked_distance_for_cl_cl_only():
    """``far``: part of the Cl⁻ + CH3Cl approaches at 12–20 Å (xTB keeps Cl⁻'s charge there,
    `FAR_REACH`), every other pair within its `ION_REACH`; each separated one is leak-checked."""
    structs = M.sn2_structures(32, seed=5, approach_fraction=1.0, far=(1.0, 12.0, M.FAR_REACH))
    for a in structs:
        pair = (a.info["nucleophile"], a.info["leaving_group"])
        if pair in M.FAR_PAIRS:
            assert 11.7 < a.info["ion_distance"] < M.FAR_REACH + 0.3
        else:
            assert a.info["ion_distance"] < M.ION_REACH[pair] + 0.3
        if M._separated(a):
            assert -1.0 - 1e-9 <= a.info["ion_charge"] <= -1.0 + M.MAX_LEAK
    with pytest.raises(ValueError, match="far"):
        M.sn2_structures(2, far=(0.5, 12.0, 30.0), optimise=False)
    with pytest.raises(ValueError, match="at most 12"):
        M.sn2_approach("Cl", "Cl", np.random.default_rng(0), distance=(12.0, 16.0))


def test_isolated_fragments_are_appended_without_changing_the_recipe():
    """``isolated``: the separated limit (neutral CH3X, free X⁻) appended after the n structures
    of the recipe, which stay the same (so a labelled file resumes)."""
    plain = M.sn2_structures(9, seed=3, approach_fraction=0.0, optimise=False, max_leak=None)
    more = M.sn2_structures(9, seed=3, approach_fraction=0.0, optimise=False, max_leak=None,
                            isolated=1.0)
    assert len(more) == 9 + 9
    for a, b in zip(plain, more):
        np.testing.assert_array_equal(a.positions, b.positions)
    extra = more[9:]
    assert [a.info["fragment"] for a in extra] == ["CH3Cl", "CH3Br", "CH3Cl", "CH3Br", "CH3Cl",
                                                  "CH3Br", "Cl-", "Br-", "CH3Cl"]
    for a in extra:
        assert a.info["config_type"] == "sn2_isolated"
        assert a.info["total_charge"] == (-1 if len(a) == 1 else 0)
    assert M.SN2.protocols["tails"].data["isolated"] == 0.03
    with pytest.raises(ValueError, match="isolated"):
        M.sn2_structures(2, isolated=2.0, optimise=False)


def test_hydrogen_contacts_are_appended_after_the_recipe_and_its_fragments():
    """``contacts`` (protocol `contacts`): the free halide 1.5–2.6 Å from a hydrogen, outside its
    C–H bond and no closer to any other atom, appended after the recipe and the isolated
    fragments, which stay the same (so the tails data resume into the contacts file)."""
    plain = M.sn2_structures(8, seed=3, approach_fraction=0.0, optimise=False, max_leak=None,
                             isolated=0.25)
    more = M.sn2_structures(8, seed=3, approach_fraction=0.0, optimise=False, max_leak=None,
                            isolated=0.25, contacts=1.0)
    assert len(plain) == 10 and len(more) == 18
    for a, b in zip(plain, more):
        np.testing.assert_array_equal(a.positions, b.positions)
    for a in more[10:]:
        assert a.info["config_type"] == "sn2_contact" and a.info["total_charge"] == -1
        hydrogens = np.where(a.numbers == 1)[0]
        d = np.linalg.norm(a.positions[1:] - a.positions[0], axis=1)
        closest = np.linalg.norm(a.positions[hydrogens] - a.positions[0], axis=1).min()
        assert 1.4 <= closest <= 2.7 and d.min() == pytest.approx(closest)
        assert abs(closest - a.info["h_distance"]) < 0.25     # the molecule is rattled
    assert M.SN2.protocols["contacts"].data == {**M.SN2.protocols["tails"].data,
                                                "contacts": 0.05}
    with pytest.raises(ValueError, match="contacts"):
        M.sn2_structures(2, contacts=-0.1, optimise=False)
