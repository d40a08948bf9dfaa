"""The periodic ion-water reference system: its cells (deterministic, neutral, no overlaps, liquid
density) and its periodic GFN1-xTB labels (forces = −dE/dr, stress = (1/V) dE/dε)."""
import numpy as np
import pytest

from mlip_attn.qm.systems.ion_water import ion_water_structures


def test_cells_are_reproducible_neutral_and_have_no_overlaps():
    cells = ion_water_structures(3, seed=5, waters=(5, 6, 7))
    again = ion_water_structures(3, seed=5, waters=(5, 6, 7))
    for a, b in zip(cells, again):
        np.testing.assert_array_equal(a.positions, b.positions)
    for a, n in zip(cells, (5, 6, 7)):
        assert a.pbc.all() and a.info["total_charge"] == 0
        assert a.get_chemical_formula(mode="hill") == f"H{2 * n}ClNaO{n}"
        d = a.get_all_distances(mic=True)
        np.fill_diagonal(d, np.inf)
        assert d.min() > 0.9                       # O–H bonds are the shortest pairs
        assert a.get_distance(0, 1, mic=True) >= 2.8    # the ion gap
        assert 27.0 < a.get_volume() / (n + 2) < 33.0   # ~29.9 Å³ per molecule


def test_bad_water_count_is_a_clear_error():
    with pytest.raises(ValueError, match="n_water"):
        ion_water_structures(1, waters=(0,))


@pytest.mark.slow
def test_periodic_xtb_forces_and_stress_are_derivatives_of_the_energy():
    pytest.importorskip("tblite")
    from mlip_attn.qm.methods import compute_periodic_label
    atoms = ion_water_structures(1, seed=2, waters=(4,))[0]
    e, f, stress = compute_periodic_label(atoms.numbers, atoms.positions, atoms.cell.array,
                                          "gfn1-xtb-pbc")
    assert np.isfinite(e) and f.shape == (len(atoms), 3) and stress.shape == (3, 3)
    h = 1e-3
    moved = [atoms.positions.copy() for _ in range(2)]
    moved[0][2, 1] += h
    moved[1][2, 1] -= h
    ep, em = (compute_periodic_label(atoms.numbers, p, atoms.cell.array, "gfn1-xtb-pbc")[0]
              for p in moved)
    assert abs(-(ep - em) / (2 * h) - f[2, 1]) < 1e-3 * max(1.0, abs(f[2, 1]))
    eps = 1e-4
    energies = []
    for s in (eps, -eps):
        strain = np.eye(3) * (1 + s)
        energies.append(compute_periodic_label(atoms.numbers, atoms.positions @ strain,
                                               atoms.cell.array @ strain, "gfn1-xtb-pbc")[0])
    trace = (energies[0] - energies[1]) / (2 * eps) / atoms.get_volume()
    assert abs(trace - np.trace(stress)) < 1e-3 * max(1e-3, abs(np.trace(stress)))
