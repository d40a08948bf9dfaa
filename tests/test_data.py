"""Data containers, file formats, neighbour lists, statistics and bad-input errors."""
from __future__ import annotations

import os
import subprocess
import sys

import ase.io
import numpy as np
import pytest
import torch
from ase.neighborlist import neighbor_list as ase_neighbor_list

from mlip_attn.data import (AtomicData, Batch, DataFileError, LabelKeys, StructureError,
                            neighbour_list, read_structures, write_structures)
from mlip_attn.data.hdf5 import read_hdf5_metadata, write_hdf5
from mlip_attn.data.statistics import least_squares_e0, reference_energies, split_indices

from conftest import emt_frames, random_crystal, random_molecule


def same_structures(a: list[AtomicData], b: list[AtomicData]):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert torch.equal(x.numbers, y.numbers)
        assert torch.allclose(x.positions, y.positions, atol=1e-9)
        assert torch.allclose(x.cell, y.cell, atol=1e-9)
        assert torch.equal(x.pbc, y.pbc)
        assert x.energy == pytest.approx(y.energy, abs=1e-9)
        assert torch.allclose(x.forces, y.forces, atol=1e-9)
        assert (x.stress is None) == (y.stress is None)
        if x.stress is not None:
            assert torch.allclose(x.stress, y.stress, atol=1e-9)
        assert x.charge == y.charge


@pytest.mark.parametrize("suffix", [".xyz", ".h5", ".db"])
def test_round_trip_all_formats(tmp_path, suffix):
    frames = emt_frames(3) + emt_frames(2, kind="bulk")
    frames[1].info["total_charge"] = -1
    src = tmp_path / "src.xyz"
    ase.io.write(src, frames)
    original = read_structures(src)
    assert original[1].charge == -1 and original[3].stress is not None
    out = tmp_path / f"copy{suffix}"
    write_structures(out, original)
    same_structures(read_structures(out), original)


def test_extxyz_custom_keys(tmp_path):
    frames = emt_frames(2)
    for a in frames:
        a.info["dft_energy"] = a.info.pop("REF_energy")
        a.arrays["dft_forces"] = a.arrays.pop("REF_forces")
    path = tmp_path / "custom.xyz"
    ase.io.write(path, frames)
    data = read_structures(path, LabelKeys(energy="dft_energy", forces="dft_forces"))
    assert data[0].energy is not None and data[0].forces.shape == (6, 3)
    assert read_structures(path)[0].energy is None  # default keys find nothing


def test_hdf5_append_and_metadata(tmp_path):
    data = read_structures_from(emt_frames(4), tmp_path)
    path = tmp_path / "set.h5"
    write_hdf5(path, data[:2], metadata={"ref_method": "EMT"})
    write_hdf5(path, data[2:], append=True)
    same_structures(read_structures(path), data)
    assert read_hdf5_metadata(path)["ref_method"] == "EMT"


def read_structures_from(frames, tmp_path):
    path = tmp_path / "tmp.xyz"
    ase.io.write(path, frames)
    return read_structures(path)


@pytest.mark.parametrize("make", [random_crystal, lambda seed: random_molecule(7, seed=seed)])
def test_neighbour_list_matches_ase(make):
    atoms = make(seed=3)
    cutoff = 4.0  # larger than half the periodic cell: several images of one neighbour
    edge_index, shifts = neighbour_list(atoms.positions, atoms.cell.array, atoms.pbc, cutoff)
    i, j, D = ase_neighbor_list("ijD", atoms, cutoff)
    ours = atoms.positions[edge_index[1]] - atoms.positions[edge_index[0]] + shifts
    key = lambda a, b, d: sorted(zip(a.tolist(), b.tolist(), np.round(d, 8).tolist()))
    assert key(edge_index[0], edge_index[1], ours) == key(i, j, D)
    assert np.all(np.diff(edge_index[0]) >= 0)  # sorted by receiver


SPARSE_GEOMETRIES = {   # (positions, cell, pbc) that crashed the process inside vesin (SIGFPE)
    "flat-wide": ([[0, 0, 0], [1.2, 0, 0], [1500, 1500, 0], [1501, 1500, 0.5]], None, None),
    "one-far-atom": ([[0, 0, 0], [1.2, 0, 0], [0, 1e9, 0]], None, None),
    "long-line": ([[0, 0, 0], [1.0, 0, 0], [5e5, 0, 0]], None, None),
    "thin-periodic": ([[0, 0, 0], [1.1, 0.3, 0.2], [3, 1, 0.5]], [1500, 1500, 5], [1, 1, 1]),
}


@pytest.mark.parametrize("name", sorted(SPARSE_GEOMETRIES))
def test_neighbour_list_of_sparse_geometries_does_not_crash(name):
    """Run in a child process: a crash there fails this test instead of killing pytest."""
    positions, cell, pbc = SPARSE_GEOMETRIES[name]
    code = f"""if True:
        import numpy as np
        from ase import Atoms
        from ase.neighborlist import neighbor_list
        from mlip_attn.data import neighbour_list
        atoms = Atoms("H{len(positions)}", positions={positions!r}, cell=np.diag({cell or [0, 0, 0]!r}),
                      pbc={pbc or [0, 0, 0]!r})
        edges, shifts = neighbour_list(atoms.positions, atoms.cell.array, atoms.pbc, 4.0)
        i, j, D = neighbor_list("ijD", atoms, 4.0)
        ours = atoms.positions[edges[1]] - atoms.positions[edges[0]] + shifts
        key = lambda a, b, d: sorted(zip(a.tolist(), b.tolist(), np.round(d, 6).tolist()))
        assert key(edges[0], edges[1], ours) == key(i, j, D), (edges, i, j)
        assert np.all(np.diff(edges[0]) >= 0)
        print("pairs", len(i))
    """
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, f"exit {run.returncode}: {run.stderr[-2000:]}"
    assert run.stdout.startswith("pairs ")


def test_batch_offsets_and_fields():
    a = AtomicData.from_atoms(random_molecule(4, seed=1)).with_graph(3.0)
    b = AtomicData.from_atoms(random_crystal(seed=2)).with_graph(3.0)
    batch = Batch.collate([a, b])
    assert batch.num_graphs == 2 and batch.num_atoms == 9
    assert batch.batch.tolist() == [0] * 4 + [1] * 5
    assert int(batch.edge_index[:, a.edge_index.shape[1]:].min()) >= 4
    assert batch.pbc.tolist() == [[False] * 3, [True] * 3]
    assert batch.to(dtype=torch.float32).positions.dtype == torch.float32
    assert batch.to(dtype=torch.float32).numbers.dtype == torch.int64


def test_least_squares_e0_recovers_known_references():
    rng = np.random.default_rng(0)
    true = {1: -13.6, 6: -1030.0, 8: -2040.0}
    structures = []
    for k in range(30):
        numbers = rng.choice([1, 6, 8], size=rng.integers(2, 9))
        e = sum(true[int(z)] for z in numbers) + rng.normal(scale=1e-3)
        structures.append(AtomicData(positions=torch.zeros(len(numbers), 3),
                                     numbers=torch.tensor(numbers), cell=torch.zeros(3, 3),
                                     pbc=torch.zeros(3, dtype=torch.bool), energy=e))
    e0 = least_squares_e0(structures, [1, 6, 8])
    for z in true:
        assert e0[z] == pytest.approx(true[z], abs=0.01)
    assert reference_energies(structures, [1, 6], {"H": 1.0, "C": 2.0}) == {1: 1.0, 6: 2.0}
    with pytest.raises(ValueError, match="isolated"):
        reference_energies(structures, [1, 6, 8], "isolated")


def test_splits_are_seeded_and_disjoint():
    a = split_indices(100, (0.8, 0.1, 0.1), seed=1)
    assert a == split_indices(100, (0.8, 0.1, 0.1), seed=1)
    assert a != split_indices(100, (0.8, 0.1, 0.1), seed=2)
    assert sorted(sum(a, [])) == list(range(100)) and [len(x) for x in a] == [80, 10, 10]


# ---------------------------------------------------------------- bad input


def _atoms_data(positions, numbers=None):
    n = len(positions)
    return AtomicData(positions=torch.tensor(positions, dtype=torch.float64),
                      numbers=torch.tensor(numbers or [6] * n), cell=torch.zeros(3, 3),
                      pbc=torch.zeros(3, dtype=torch.bool))


@pytest.mark.parametrize("positions, match", [
    ([[0.0, 0.0, float("nan")], [1.0, 0, 0]], "non-finite"),
    ([[0.0, 0.0, float("inf")], [1.0, 0, 0]], "non-finite"),
    ([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]], "overlap"),
    ([[0.0, 0.0, 0.0], [0.05, 0.0, 0.0]], "overlap"),
])
def test_bad_structures_are_named(positions, match):
    with pytest.raises(StructureError, match=match):
        _atoms_data(positions).with_graph(3.0)


def test_empty_structure_is_an_error():
    data = AtomicData(positions=torch.zeros(0, 3), numbers=torch.zeros(0, dtype=torch.long),
                      cell=torch.zeros(3, 3), pbc=torch.zeros(3, dtype=torch.bool))
    with pytest.raises(StructureError, match="empty"):
        data.with_graph(3.0)


def test_bad_files_give_clear_errors_and_stay_intact(tmp_path):
    empty = tmp_path / "empty.xyz"
    empty.write_text("")
    with pytest.raises(DataFileError, match="empty"):
        read_structures(empty)
    malformed = tmp_path / "bad.xyz"
    content = "3\nProperties=species:S:1:pos:R:3\nC 0 0 0\nH 1 0\n"
    malformed.write_text(content)
    with pytest.raises(DataFileError, match="malformed"):
        read_structures(malformed)
    assert malformed.read_text() == content
    with pytest.raises(DataFileError, match="no such file"):
        read_structures(tmp_path / "missing.xyz")
    csv = tmp_path / "x.csv"
    csv.write_text("a,b\n")
    with pytest.raises(DataFileError, match="unknown data file type"):
        read_structures(csv)
    nan_file = tmp_path / "nan.xyz"
    nan_file.write_text("2\nProperties=species:S:1:pos:R:3\nC 0 0 0\nH nan 0 0\n")
    with pytest.raises(StructureError, match="non-finite"):
        read_structures(nan_file)
    not_hdf5 = tmp_path / "fake.h5"
    not_hdf5.write_text("hello")
    with pytest.raises(ValueError, match="HDF5"):
        read_structures(not_hdf5)


def test_verlet_list_equals_a_fresh_neighbour_list_along_a_trajectory():
    """Reused pairs (skin) give exactly the fresh list's pairs, and searches happen rarely."""
    from ase.build import bulk
    from mlip_attn.data.neighbours import VerletList, neighbour_list
    rng = np.random.default_rng(0)
    for atoms in (bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 2, 2),
                  random_molecule(30, seed=2, spread=4.0)):
        verlet = VerletList(skin=1.0)
        for step in range(40):
            atoms.positions += rng.normal(0.0, 0.02, atoms.positions.shape)
            ref_edges, ref_shifts = neighbour_list(atoms.positions, atoms.cell.array, atoms.pbc, 3.0)
            edges, shifts = verlet(atoms.positions, atoms.cell.array, atoms.pbc, 3.0)
            assert (np.diff(edges[0]) >= 0).all()  # still sorted by receiver
            key = lambda e, s: np.lexsort((*np.round(s, 6).T, e[1], e[0]))  # noqa: E731
            a, b = key(edges, shifts), key(ref_edges, ref_shifts)
            np.testing.assert_array_equal(edges[:, a], ref_edges[:, b])
            np.testing.assert_allclose(shifts[a], ref_shifts[b], atol=1e-12)
        assert 1 < verlet.builds < 20, verlet.builds
        # a changed cell forces a new search
        before = verlet.builds
        atoms.set_cell(atoms.cell.array * 1.01 if atoms.pbc.any() else np.eye(3), scale_atoms=False)
        verlet(atoms.positions, atoms.cell.array, atoms.pbc, 3.0)
        assert verlet.builds == before + 1
