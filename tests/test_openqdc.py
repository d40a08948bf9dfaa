"""openQDC reader: a tiny dataset written the way openQDC's MemMapDataset.save_preprocess does."""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from mlip_attn.data import read_structures
from mlip_attn.data.openqdc import (BOHR_TO_ANGSTROM, HARTREE_TO_EV, KCAL_MOL_TO_EV,
                                    OpenQDCError, load_props, openqdc_to_file, read_openqdc)

# (numbers, formal charges, positions Å): water, methane, hydroxide (charged O), ammonia
MOLECULES = [
    ([8, 1, 1], [0, 0, 0], [[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]]),
    ([6, 1, 1, 1, 1], [0, 0, 0, 0, 0],
     [[0.0, 0.0, 0.0], [0.63, 0.63, 0.63], [-0.63, -0.63, 0.63], [-0.63, 0.63, -0.63],
      [0.63, -0.63, -0.63]]),
    ([8, 1], [-1, 0], [[0.0, 0.0, 0.0], [0.0, 0.0, 0.97]]),
    ([7, 1, 1, 1], [0, 0, 0, 0],
     [[0.0, 0.0, 0.0], [1.01, 0.0, 0.0], [-0.34, 0.95, 0.0], [-0.34, -0.47, 0.83]]),
]
ENERGIES_HA = np.array([[-76.4, -76.3], [-40.5, -40.4], [-75.8, -75.7], [-56.5, -56.4]])


def save_preprocess(prep: Path, data: dict, data_keys=("atomic_inputs", "position_idx_range",
                                                       "energies", "forces")):
    """What openQDC's MemMapDataset.save_preprocess writes: raw memmaps + props.pkl."""
    prep.mkdir(parents=True, exist_ok=True)
    data = dict(data)
    for key in data_keys:
        if key not in data:
            continue
        arr = data.pop(key)
        out = np.memmap(prep / f"{key}.mmap", mode="w+", dtype=arr.dtype, shape=arr.shape)
        out[:] = arr[:]
        out.flush()
        del out
    for key in ("name", "subset"):
        data[key] = np.unique(data[key], return_inverse=True)
    with open(prep / "props.pkl", "wb") as f:
        pickle.dump(data, f)


def make_dataset(root: Path, name="toy", energies=ENERGIES_HA, energy_dtype=np.float64,
                 distance_scale=1.0, forces_scale=1.0, n_force=2, extra=None) -> Path:
    """Collated like openQDC's collate_list: positions / distance_scale, forces per method."""
    rng = np.random.default_rng(0)
    inputs, n_atoms, forces = [], [], []
    for z, q, pos in MOLECULES:
        pos = np.asarray(pos) / distance_scale
        inputs.append(np.concatenate([np.array(z)[:, None], np.array(q)[:, None], pos], axis=1))
        n_atoms.append(len(z))
        forces.append(rng.normal(size=(len(z), 3, n_force)) * forces_scale)
    n_atoms = np.array(n_atoms, dtype=np.int32)
    csum = np.cumsum(n_atoms)
    idx = np.zeros((len(n_atoms), 2), dtype=np.int32)
    idx[1:, 0], idx[:, 1] = csum[:-1], csum
    data = {
        "atomic_inputs": np.concatenate(inputs).astype(np.float32),
        "position_idx_range": idx,
        "energies": np.asarray(energies, dtype=energy_dtype),
        "name": np.array(["O", "C", "[OH-]", "N"]),
        "subset": np.array([name] * 4),
        "n_atoms": n_atoms,
    }
    if n_force:
        data["forces"] = np.concatenate(forces).astype(np.float32)
    data.update(extra or {})
    save_preprocess(root / name / "preprocessed", data)
    return root / name


UNITS = dict(energy_unit="hartree", distance_unit="ang", force_unit="hartree/bohr")


def raw_forces(ds: Path, n_force: int = 2) -> np.ndarray:
    raw = np.fromfile(ds / "preprocessed" / "forces.mmap", dtype=np.float32)
    return raw.astype(np.float64).reshape(-1, 3, n_force)


def test_values_converted(tmp_path):
    ds = make_dataset(tmp_path)
    out = read_openqdc(ds, **UNITS)
    assert len(out) == 4
    raw_f = raw_forces(ds)
    offset = 0
    for data, (z, q, pos), e in zip(out, MOLECULES, ENERGIES_HA[:, 0]):
        n = len(z)
        assert data.numbers.tolist() == z
        np.testing.assert_allclose(data.positions.numpy(), np.float32(pos), rtol=1e-6)
        assert data.energy == pytest.approx(e * HARTREE_TO_EV, rel=1e-12)
        expected_f = raw_f[offset:offset + n, :, 0] * HARTREE_TO_EV / BOHR_TO_ANGSTROM
        np.testing.assert_allclose(data.forces.numpy(), expected_f, rtol=1e-12)
        assert data.charge == sum(q)
        assert not data.pbc.any() and not data.cell.any()
        offset += n
    assert out[2].charge == -1.0 and "[OH-]" in out[2].name
    # the preprocessed/ folder itself works too
    again = read_openqdc(ds / "preprocessed", **UNITS)
    assert [d.energy for d in again] == [d.energy for d in out]


def test_energy_method_and_max_structures(tmp_path):
    ds = make_dataset(tmp_path)
    second = read_openqdc(ds, energy_method=1, max_structures=2, **UNITS)
    assert len(second) == 2
    assert [d.energy for d in second] == pytest.approx(ENERGIES_HA[:2, 1] * HARTREE_TO_EV)
    np.testing.assert_allclose(second[0].forces.numpy(),
                               raw_forces(ds)[:3, :, 1] * HARTREE_TO_EV / BOHR_TO_ANGSTROM)
    with pytest.raises(OpenQDCError, match="out of range.*2 methods"):
        read_openqdc(ds, energy_method=2, **UNITS)
    with pytest.raises(OpenQDCError, match="column index"):
        read_openqdc(ds, energy_method="b3lyp", **UNITS)


def test_kcal_units_missing_values_and_no_forces(tmp_path):
    energies = ENERGIES_HA.copy() * 627.5
    energies[1, 0] = np.nan                     # openQDC's "missing" marker
    ds = make_dataset(tmp_path, energies=energies, n_force=0)
    out = read_openqdc(ds, energy_unit="kcal/mol", distance_unit="ang")
    assert len(out) == 3 and all(d.forces is None for d in out)   # NaN energy skipped
    assert out[1].energy == pytest.approx(energies[2, 0] * KCAL_MOL_TO_EV)


def test_legacy_float32_energies(tmp_path):
    # three methods: 12 bytes per structure can only be float32
    e3 = np.concatenate([ENERGIES_HA, ENERGIES_HA[:, :1] - 0.1], axis=1)
    ds = make_dataset(tmp_path, name="old", energies=e3, energy_dtype=np.float32)
    out = read_openqdc(ds, energy_method=2, **UNITS, force_method=0)
    assert out[0].energy == pytest.approx(float(np.float32(-76.5)) * HARTREE_TO_EV)
    # two float32 methods: told apart from one float64 method by the numbers
    ds2 = make_dataset(tmp_path, name="old2", energy_dtype=np.float32)
    assert read_openqdc(ds2, **UNITS)[3].energy == pytest.approx(
        float(np.float32(-56.5)) * HARTREE_TO_EV)
    # interaction datasets (n_atoms_ptr in props.pkl) keep float32 energies
    small = np.full((4, 2), 0.5)
    ds3 = make_dataset(tmp_path, name="des", energies=small, energy_dtype=np.float32,
                       extra={"n_atoms_ptr": np.array([1, 2, 1, 2], dtype=np.int32)})
    assert read_openqdc(ds3, **UNITS)[0].energy == pytest.approx(0.5 * HARTREE_TO_EV)


def test_ambiguous_energy_dtype_asks(tmp_path):
    ds = make_dataset(tmp_path, energies=np.full((4, 2), 0.5), energy_dtype=np.float32)
    with pytest.raises(OpenQDCError, match="energy_dtype"):
        read_openqdc(ds, **UNITS)
    assert read_openqdc(ds, **UNITS, energy_dtype="float32")[0].energy == pytest.approx(
        0.5 * HARTREE_TO_EV)


def test_known_dataset_sn2rxn(tmp_path):
    ev = ENERGIES_HA[:, :1] * HARTREE_TO_EV     # SN2RXN: one method, eV, Å, eV/Å, float64
    ds = make_dataset(tmp_path, name="sn2_rxn", energies=ev, n_force=1)
    with pytest.warns(UserWarning, match="no charges"):
        out = read_openqdc(ds, energy_method="DSD-BLYP-D3(BJ)/def2-TZVP")
    raw = raw_forces(ds, 1)[:, :, 0]
    assert out[0].energy == pytest.approx(ev[0, 0])
    np.testing.assert_allclose(out[0].forces.numpy(), raw[:3], rtol=1e-12)
    # coordinates stored in bohr (older SN2RXN class versions) are caught, not read as Å
    bohr = make_dataset(tmp_path / "b", name="sn2_rxn", energies=ev, n_force=1,
                        distance_scale=BOHR_TO_ANGSTROM)
    with pytest.raises(OpenQDCError, match="look like bohr"):
        read_openqdc(bohr)
    with pytest.warns(UserWarning, match="no charges"):
        fixed = read_openqdc(bohr, distance_unit="bohr")
    np.testing.assert_allclose(fixed[1].positions.numpy(), np.array(MOLECULES[1][2]), atol=1e-5)
    raw_b = raw_forces(bohr, 1)[:, :, 0]
    np.testing.assert_allclose(fixed[0].forces.numpy(), raw_b[:3] / BOHR_TO_ANGSTROM, rtol=1e-12)


def test_units_required(tmp_path):
    ds = make_dataset(tmp_path)
    with pytest.raises(OpenQDCError, match="units are not recorded.*energy_unit") as err:
        read_openqdc(ds, distance_unit="ang")
    assert str(ds) in str(err.value)
    with pytest.raises(OpenQDCError, match="force_unit"):
        read_openqdc(ds, energy_unit="hartree", distance_unit="ang")
    assert read_openqdc(ds, energy_unit="hartree", distance_unit="ang",
                        read_forces=False)[0].forces is None
    with pytest.raises(OpenQDCError, match="unknown energy unit 'furlong'"):
        read_openqdc(ds, energy_unit="furlong", distance_unit="ang", read_forces=False)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_props_pickles_across_numpy_versions(tmp_path, protocol):
    props = {"name": np.unique(np.array(["b", "a", "b"]), return_inverse=True),
             "n_atoms": np.array([3, 5, 2], dtype=np.int32), "count": np.int32(3)}
    raw = pickle.dumps(props, protocol=protocol)
    if protocol == 2:   # as written by numpy 1.x (module numpy.core, not numpy._core)
        raw = raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
        assert b"numpy.core.multiarray" in raw
    path = tmp_path / "props.pkl"
    path.write_bytes(raw)
    loaded = load_props(path)
    assert loaded["name"][0][loaded["name"][1]].tolist() == ["b", "a", "b"]
    assert loaded["n_atoms"].tolist() == [3, 5, 2] and int(loaded["count"]) == 3


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_refused(tmp_path):
    ds = make_dataset(tmp_path)
    marker = tmp_path / "pwned"
    props = ds / "preprocessed" / "props.pkl"
    with open(props, "wb") as f:
        pickle.dump({"name": _Exploit(marker), "n_atoms": np.array([3, 5, 2, 4])}, f)
    with pytest.raises(OpenQDCError, match=r"refusing to load global '(posix|nt|os)\.system'") as e:
        read_openqdc(ds, **UNITS)
    assert str(props) in str(e.value)
    assert not marker.exists()
    with open(props, "wb") as f:     # builtins beyond plain containers are refused too
        f.write(b"cbuiltins\neval\n(S'1+1'\ntR.")
    with pytest.raises(OpenQDCError, match="builtins.eval"):
        load_props(props)
    props.write_bytes(b"c_codecs\nencode\n(S'x'\nS'zlib'\ntR.")
    with pytest.raises(OpenQDCError, match="encoding 'zlib'"):
        load_props(props)


def test_broken_files_give_clear_errors(tmp_path):
    with pytest.raises(OpenQDCError, match="no such openQDC dataset directory"):
        read_openqdc(tmp_path / "nope", **UNITS)
    ds = make_dataset(tmp_path)
    prep = ds / "preprocessed"
    (prep / "energies.mmap").unlink()
    with pytest.raises(OpenQDCError, match="missing energies.mmap"):
        read_openqdc(ds, **UNITS)

    ds = make_dataset(tmp_path / "a")
    prep = ds / "preprocessed"
    with open(prep / "atomic_inputs.mmap", "ab") as f:      # one float32 too many
        f.write(b"\0" * 4)
    with pytest.raises(OpenQDCError, match="atomic_inputs.mmap: shape mismatch"):
        read_openqdc(ds, **UNITS)

    ds = make_dataset(tmp_path / "b", extra={"n_atoms": np.array([3, 5, 2, 5], dtype=np.int32)})
    with pytest.raises(OpenQDCError, match=r"shape mismatch: props.pkl n_atoms\[3\]"):
        read_openqdc(ds, **UNITS)

    ds = make_dataset(tmp_path / "c")
    with open(ds / "preprocessed" / "forces.mmap", "ab") as f:
        f.write(b"\0" * 8)
    with pytest.raises(OpenQDCError, match="forces.mmap: shape mismatch"):
        read_openqdc(ds, **UNITS)

    ds = make_dataset(tmp_path / "d")
    (ds / "preprocessed" / "props.pkl").write_bytes(b"not a pickle at all")
    with pytest.raises(OpenQDCError, match="unreadable pickle"):
        read_openqdc(ds, **UNITS)

    zarr = tmp_path / "z" / "ds" / "preprocessed"
    zarr.mkdir(parents=True)
    (zarr / "atomic_inputs.zip").write_bytes(b"PK")
    with pytest.raises(OpenQDCError, match="zarr layout"):
        read_openqdc(zarr.parent, **UNITS)


def test_extxyz_round_trip(tmp_path):
    ds = make_dataset(tmp_path)
    out_file = tmp_path / "toy.extxyz"
    assert openqdc_to_file(ds, out_file, energy_method=1, **UNITS) == 4
    expected = read_openqdc(ds, energy_method=1, **UNITS)
    back = read_structures(out_file)
    assert len(back) == len(expected)
    for a, b in zip(expected, back):
        assert a.numbers.tolist() == b.numbers.tolist()
        np.testing.assert_allclose(a.positions.numpy(), b.positions.numpy(), atol=1e-8)
        assert a.energy == pytest.approx(b.energy, rel=1e-10)
        np.testing.assert_allclose(a.forces.numpy(), b.forces.numpy(), rtol=1e-8)
        assert a.charge == b.charge


def test_cli_never_replaces_a_file_without_overwrite(tmp_path, capsys):
    from mlip_attn.cli import main
    ds = make_dataset(tmp_path)
    units = ["--energy-unit", "hartree", "--distance-unit", "ang", "--force-unit", "hartree/bohr"]
    out = tmp_path / "mine.h5"
    out.write_bytes(b"the user's own file")
    assert main(["import-openqdc", str(ds), "--out", str(out), *units]) == 2
    assert out.read_bytes() == b"the user's own file"
    assert f"{out}: already exists; pass --overwrite" in capsys.readouterr().err
    assert main(["import-openqdc", str(ds), "--out", str(out), "--overwrite", *units]) == 0
    assert len(read_structures(out)) == 4
    with pytest.raises(OpenQDCError, match="already exists"):
        openqdc_to_file(ds, out, **UNITS)


def test_cli_creates_missing_output_folders(tmp_path, capsys):
    from mlip_attn.cli import main
    ds = make_dataset(tmp_path)
    out = tmp_path / "missing" / "dir" / "file.h5"
    assert main(["import-openqdc", str(ds), "--out", str(out), "--energy-unit", "hartree",
                 "--distance-unit", "ang", "--force-unit", "hartree/bohr"]) == 0
    assert len(read_structures(out)) == 4
    assert f"wrote 4 structures to {out}" in capsys.readouterr().out
