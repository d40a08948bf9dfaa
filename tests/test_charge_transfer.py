"""The charge-transfer recipe: polyyne species and their tags, ground states, distortions,
the measured reach of a proton (charge_transfer_reach), and the held-out analysis."""
from __future__ import annotations

import ase.io
import numpy as np
import pytest
from ase.calculators.calculator import Calculator, all_changes

import mlip_attn.qm as S
from mlip_attn.qm.systems import charge_transfer as CT
from mlip_attn.qm.systems import charge_transfer_chains as CH
from mlip_attn.qm.systems import charge_transfer_reach as R


def test_species_tags_and_formulas():
    structs = CT.charge_transfer_structures([6, 10], 20, seed=0, optimise=False)
    assert len(structs) == 40
    assert {a.info["n_carbons"] for a in structs} == {6, 10}
    kinds = {a.info["kind"] for a in structs}
    assert kinds == set(CH.KINDS)
    for a in structs:
        n, k = a.info["n_carbons"], a.info["n_protons"]
        assert a.get_chemical_formula(mode="hill") == f"C{n}H{2 + k}"
        assert a.info["total_charge"] == k == {"neutral": 0, "end": 1, "interior": 1, "ends": 2,
                                               "end+interior": 2}[a.info["kind"]]
        # each proton (the last k atoms) sits on a carbon at the tagged site
        sites = sorted(CH.site_of(CH._nearest_carbon(a, h), n) for h in range(len(a) - k, len(a)))
        assert sites == sorted(s for s in (a.info["site"], a.info["site2"]) if s >= 0)
        if a.info["kind"] in ("interior", "end+interior"):
            assert max(sites) in CH.INTERIOR_SITES and max(sites) <= n // 2 - 1
        assert 0.0 <= a.info["rattle"] <= 0.06
    # C6 has only site 2 inside the chain; the recipe is a pure function of the seed
    assert {a.info["site"] for a in structs if a.info["n_carbons"] == 6
            and a.info["kind"] == "interior"} == {2}
    again = CT.charge_transfer_structures([6, 10], 20, seed=0, optimise=False)
    assert all(np.array_equal(a.positions, b.positions) for a, b in zip(structs, again))


def test_label_round_trip(tmp_path):
    structs = CT.charge_transfer_structures([6], 5, seed=1, optimise=False)
    report = S.label_structures(structs, str(tmp_path / "ct.xyz"), progress=False)
    assert report.n_done == 5 and report.n_failed == 0
    frames = ase.io.read(tmp_path / "ct.xyz", ":")
    for a in frames:
        s = structs[int(a.info["index"])]
        assert a.info["total_charge"] == s.info["total_charge"]
        assert a.info["kind"] == s.info["kind"] and a.info["site"] == s.info["site"]
        assert np.isfinite(a.info["REF_energy"]) and np.isfinite(a.arrays["REF_forces"]).all()


def test_ground_states_keep_their_protons_and_bend_at_interior_sites():
    end = CH.polyyne_ground_state(8, (0,))
    inside = CH.polyyne_ground_state(8, (3,))
    c = np.arange(8)
    assert all(end.get_angle(int(i - 1), int(i), int(i + 1)) > 175 for i in c[1:-1])
    assert inside.get_angle(2, 3, 4) < 150                      # sp2 carbon: the chain bends
    # at site 1 of C8 xTB moves the proton to the end: refused, with the species named
    with pytest.raises(RuntimeError, match=r"C8 protonated at carbons \[1\]: the optimisation "
                                           r"moved hydrogen 10 from carbon 1 to carbon 0"):
        CH.polyyne_ground_state(8, (1,))


@pytest.mark.parametrize("call, message", [
    (lambda: CH.polyyne(7), "n_carbons: a polyyne needs an even number of carbons"),
    (lambda: CH.proton_carbons("interior", 8, 4), "interior: site must be in 2–3 for C8"),
    (lambda: CH.proton_carbons("middle", 8), "kind: 'middle' is not one of"),
    (lambda: CT.charge_transfer_structures([8], 2, kinds={"middle": 1.0}, optimise=False),
     "kinds: 'middle' is not one of"),
    (lambda: CT.charge_transfer_structures([6], 2, kinds={"interior": 1.0}, sites=[5],
                                           optimise=False),
     "C6: none of the kinds"),
])
def test_bad_options_are_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_bonds_protocol_adds_one_stretched_ch_per_extra_structure():
    """The `bonds` protocol's data: the `lengths` structures unchanged, then 8 % more with one
    hydrogen pulled along its C–H to 1.0–2.6 Å and every other atom where it was drawn."""
    recipe = CT.ChargeTransfer()
    plain = recipe.structures(25, seed=4, optimise=False)
    data = recipe.structures(25, seed=4, stretched=0.4, optimise=False)
    assert len(data) == 35
    for a, b in zip(plain, data[:25]):
        np.testing.assert_array_equal(a.positions, b.positions)
    for a in data[25:]:
        h = a.info["stretched_h"]
        assert a.numbers[h] == 1 and a.info["config_type"] == "charge_transfer_stretch"
        carbons = np.where(a.numbers == 6)[0]
        r = np.linalg.norm(a.positions[carbons] - a.positions[h], axis=1).min()
        assert 1.0 <= r <= 2.6 and r == pytest.approx(a.info["ch_distance"], abs=1e-9)
        others = [k for k in range(len(a)) if k != h]
        assert np.linalg.norm(a.positions[others][:, None] - a.positions[others][None],
                              axis=-1)[np.triu_indices(len(others), 1)].min() > 0.8
    assert {"stretched": 0.08}.items() <= recipe.protocols["bonds"].data.items()
    with pytest.raises(ValueError, match="stretched: a fraction"):
        recipe.structures(5, stretched=1.5, optimise=False)


def test_proton_distances():
    a = CH.add_protons(CH.polyyne(8), [0, 7])
    a.info["n_protons"] = 2
    d = CH.proton_distances(a)
    assert d.shape == (len(a),) and np.all(d[-2:] == 0.0)
    assert abs(d[0] - 1.09) < 1e-9 and d[3] > 3.0
    neutral = CH.polyyne(8)
    assert np.all(np.isinf(CH.proton_distances(neutral)))


def test_the_far_end_depends_on_more_than_the_total_charge():
    """The evidence of the module docstring, on unoptimised geometries: a proton changes charges
    and forces beyond 8 Å, and where it sits (same charge, same far surroundings) changes the
    far atoms' forces, which no local model can follow."""
    effect = R.proton_effect(12, (0,), optimise=False)
    assert effect["far_atoms"] >= 5 and effect["sum_dq"] > 0.2 and effect["mean_dF"] > 0.1
    spread = R.site_spread(14, [0, 2, 3], optimise=False)
    assert spread["far_atoms"] >= 4 and spread["spread_dF"] > 0.05


class _Zero(Calculator):
    implemented_properties = ["energy", "forces"]

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        self.results = {"energy": 0.0, "forces": np.zeros((len(self.atoms), 3))}


def test_analysis_reports_far_force_errors_per_held_out_set(tmp_path):
    recipe = CT.ChargeTransfer()
    for name in recipe.protocols["lengths"].held_out:
        structs = CT.charge_transfer_structures([12], 3, seed=2, optimise=False)
        S.label_structures(structs, str(tmp_path / f"held_out_{name}.xyz"), progress=False)
    result = recipe.analysis(tmp_path, {"zero": _Zero()}, "lengths")
    assert set(result["held_out"]) == {"C12", "C16", "deep-sites"}
    entry = result["held_out"]["C12"]["zero"]
    frames = ase.io.read(tmp_path / "held_out_C12.xyz", ":")
    energies = np.array([a.info["REF_energy"] for a in frames])
    assert entry["energy_rmse"] == pytest.approx(np.sqrt(np.mean(energies ** 2)))
    assert entry["far_atoms"] > 0 and entry["far_forces_mae"] > 0
    assert "C12" in entry["energy_rmse_by"]
    assert (tmp_path / "charge_transfer_forces.png").exists()
    findings = recipe.card_findings(result, "zero")
    assert findings[0].startswith("C12: force MAE ") and "more than 8 Å from the nearest " \
        "proton" in findings[0] and "C12 " in findings[0].split("by group")[1]
    assert [line.split(":")[0] for line in findings[:3]] == ["C12", "C16", "deep-sites"]
    move = result["proton_moves"]["zero"]
    assert move["model"] == 0.0 and move["mae"] == pytest.approx(move["reference"])
    assert findings[-1].startswith("The proton moves along C12 and C16 at charge +1")
    assert recipe.card_findings(result, "other") == []


class _ChargeAsEnergy(Calculator):
    """Energy = the total charge it is given (info['charge']), forces zero."""
    implemented_properties = ["energy", "forces"]

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        self.results = {"energy": float(self.atoms.info.get("charge", 0.0)),
                        "forces": np.zeros((len(self.atoms), 3))}


def test_held_out_errors_evaluate_each_structure_at_its_total_charge(tmp_path):
    """Labelled frames carry `total_charge`; AttnCalculator reads `charge`: the analysis must
    pass it on, or every cation would be evaluated as a neutral molecule."""
    structs = CT.charge_transfer_structures([8], 10, seed=3, optimise=False)
    S.label_structures(structs, str(tmp_path / "a.xyz"), progress=False)
    frames = ase.io.read(tmp_path / "a.xyz", ":")
    for a in frames:                       # make the reference equal to the total charge
        a.info["REF_energy"] = float(a.info["total_charge"])
    result, _ = R.held_out_errors(frames, _ChargeAsEnergy(), np.arange(0.0, 26.0, 2.0))
    assert result["energy_rmse"] == 0.0


def test_a_local_model_cannot_follow_a_moving_proton():
    """proton_moves/proton_move_errors: a model whose far forces ignore the proton has an error
    equal to xTB's force change; one that reproduces xTB has none."""
    moves = R.proton_moves([12], n_geometries=2, sites=(0, 3), optimise=False)
    assert len(moves) == 2 and all(m["far"].sum() >= 3 for m in moves)
    blind = R.proton_move_errors(moves, _Zero())
    assert blind["model"] == 0.0 and blind["mae"] == pytest.approx(blind["reference"])
    assert blind["reference"] > 0.01

    class Oracle(Calculator):
        implemented_properties = ["energy", "forces"]

        def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
            super().calculate(atoms, properties, system_changes)
            from mlip_attn.qm.methods import xtb_energy_forces
            e, f, _ = xtb_energy_forces(self.atoms.numbers, self.atoms.positions,
                                        charge=int(self.atoms.info["charge"]))
            self.results = {"energy": e, "forces": f}

    assert R.proton_move_errors(moves, Oracle())["mae"] < 1e-6
