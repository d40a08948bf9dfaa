"""Regenerate mlip-attn's openQDC conventions table, atom-energy tables and golden folders.

Everything here is produced by openQDC's own code, so it needs ``openqdc`` installed (about
1 GB of dependencies; never a dependency of mlip-attn). In a separate environment::

    python3 -m venv venv-openqdc
    venv-openqdc/bin/pip install torch==2.13.0 --index-url ...   # or a local CPU wheel
    venv-openqdc/bin/pip install openqdc
    OMP_NUM_THREADS=1 venv-openqdc/bin/python scripts/make_openqdc_goldens.py \
        [--spice-raw SPICE-1.1.4_excerpt.hdf5] [--ani1x-raw ani1x_release_excerpt.hdf5]

It writes

* ``mlip_attn/data/openqdc_table.json``: one entry per dataset class in
  ``openqdc.datasets.AVAILABLE_DATASETS`` (units, energy methods, force mask, energies dtype,
  the force transform its ``convert_forces`` applies, the name converter, where ``preprocess``
  puts the files, the unit factors of ``openqdc.utils.units``).
* ``mlip_attn/data/openqdc_atom_energies.json``: the isolated-atom energies (hartree) openQDC's
  ``energy_type="formation"`` subtracts, for every energy method of those datasets.
* ``tests/data/openqdc/cache/...``: golden folders written by each class's own
  ``collate_list`` + ``save_preprocess`` (openQDC's preprocessing), laid out as openQDC lays out
  its cache, and ``tests/data/openqdc/expected/<dataset>.json``: what openQDC's own reader
  (``Dataset(cache_dir=..., energy_unit="ev", distance_unit="ang")[i]``) returns for them.

The raw inputs: for SPICE, openQDC's ``Spice.read_raw_entries`` runs on a trimmed copy of a
real SPICE 1.1.4 HDF5 excerpt (``--spice-raw``, e.g. choderalab/modelforge's
``modelforge/tests/data/SPICE-1.1.4_n2.hdf5``); for ANI-1x, the entries are filled from a real
ANI-1x release excerpt (``--ani1x-raw``, e.g. modelforge's ``ani1_n5.hdf5``) in the per-entry
format openQDC's ``read_qc_archive_h5`` produces. The other families use small hand-made entries
in each class's per-entry format (``read_raw_entries`` would need the multi-GB sources).
"""
from __future__ import annotations

import argparse
import gzip
import ast
import json
import os
import pkgutil
import shutil
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "data" / "openqdc"
PROBE_NAME = b"a-b_c-d_e"


# ----------------------------------------------------------------------------- the table

def _name_converter(inst):
    """(split_on, join_with) of ``__smiles_converter__``, or None for the identity."""
    try:
        out = inst.__smiles_converter__(PROBE_NAME)
    except Exception:
        out = PROBE_NAME
    if isinstance(out, bytes) or out == PROBE_NAME:
        return None
    text = PROBE_NAME.decode()
    if out == text:
        return ("decode", "")
    for split_on in "-_":
        for join_with in "-_":
            if out == join_with.join(text.split(split_on)[:-1]):
                return (split_on, join_with)
    raise RuntimeError(f"{inst.__name__}: unknown name converter ({out!r})")


def conventions(tmp: str) -> dict:
    from openqdc.datasets import AVAILABLE_DATASETS
    from openqdc.datasets.interaction.base import BaseInteractionDataset
    from openqdc.utils.io import get_local_cache, set_cache_dir
    set_cache_dir(tmp)
    table = {}
    for cls_name, cls in sorted(AVAILABLE_DATASETS.items()):
        inst = cls.no_init()
        inst._fn_forces = lambda x: x
        inst._fn_energy = lambda x: x
        probe = np.array([1.0, -2.0])
        force_map = inst.convert_forces(probe.copy()) / probe
        energy_map = inst.convert_energy(probe.copy()) / probe
        assert np.allclose(energy_map, energy_map[0]) and np.allclose(force_map, force_map[0])
        assert energy_map[0] == 1.0, f"{cls_name} transforms its energies on load"
        layout = os.path.relpath(inst.preprocess_path, get_local_cache())
        table[inst.__name__] = dict(
            openqdc_class=cls_name,
            energy_unit=str(cls.__energy_unit__).lower(),
            distance_unit=str(cls.__distance_unit__).lower(),
            force_unit=str(cls.__forces_unit__).lower(),
            energy_methods=tuple(inst.energy_methods),
            # openQDC's force_methods = compress(energy_methods, force_mask): pad/cut to match
            force_mask=tuple(bool(m) for m in
                             (list(inst.force_mask) + [False] * len(inst.energy_methods))
                             [:len(inst.energy_methods)]),
            energies_dtype=np.dtype(inst.data_types["energies"]).name,
            openqdc_force_factor=float(force_map[0]),
            interaction=issubclass(cls, BaseInteractionDataset),
            name_converter=_name_converter(inst),
            layout=layout,
        )
    return table


def unit_factors() -> dict:
    from openqdc.utils.units import get_conversion
    energy = {u: get_conversion(u, "ev")(1.0) for u in
              ("hartree", "ev", "kcal/mol", "kj/mol", "ryd", "mev")}
    distance = {u: get_conversion(u, "ang")(1.0) for u in ("ang", "bohr", "nm")}
    return {"energy_to_ev": energy, "distance_to_ang": distance}


def atom_energies(table: dict) -> dict:
    import openqdc.methods.atom_energies as ae
    collection = ast.literal_eval(pkgutil.get_data(ae.__name__, "atom_energies.txt").decode())
    collection = {k.lower(): v for k, v in collection.items()}
    from openqdc.utils.constants import ATOMIC_NUMBERS
    out = {}
    for entry in table.values():
        if entry["interaction"]:
            continue
        for method in entry["energy_methods"]:
            values = collection.get(method)
            if values:
                out[method] = sorted([int(ATOMIC_NUMBERS[s]), int(q), float(e)]
                                     for (s, q), e in values.items() if e is not None)
    return out


def write_table(table: dict, factors: dict, version: str) -> None:
    """``openqdc_table.json``: generated; openqdc_conventions.py adds what it cannot hold.
    ``openqdc_force_factor`` is what the class's ``convert_forces`` multiplies the stored forces
    by on load besides the unit conversion (-1: gradients; 0.529177249: ANI-1x)."""
    path = ROOT / "mlip_attn" / "data" / "openqdc_table.json"
    doc = {"generated_by": "scripts/make_openqdc_goldens.py from "
                           "openqdc.datasets.AVAILABLE_DATASETS",
           "openqdc_version": version, "unit_factors": factors, "datasets": table}
    path.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")


# ----------------------------------------------------------------------------- goldens

def _entry(numbers, charges, positions, energies, forces=None, name="m", subset="s", **extra):
    numbers = np.asarray(numbers)
    x = np.concatenate([numbers[:, None], np.asarray(charges)[:, None], np.asarray(positions)],
                       axis=1).astype(np.float32)
    out = dict(name=np.array([name]), subset=np.array([subset]),
               energies=np.asarray(energies, dtype=np.float64).reshape(1, -1),
               atomic_inputs=x, n_atoms=np.array([len(numbers)], dtype=np.int32), **extra)
    if forces is not None:
        out["forces"] = np.asarray(forces, dtype=np.float32)
    return out


def _save(cls, entries, energies_dtype=None):
    inst = cls.no_init()
    res = inst.collate_list(entries)
    if energies_dtype is not None:
        res["energies"] = res["energies"].astype(energies_dtype)
    inst.save_preprocess(res, upload=False, overwrite=True, as_zarr=False)
    return inst


def _spice_raw(src: Path, dst: Path, keep: dict) -> None:
    import h5py
    with h5py.File(src) as fin, h5py.File(dst, "w") as fout:
        for key, n in keep.items():
            g = fout.create_group(key)
            for name, ds in fin[key].items():
                if name in ("smiles", "subset"):
                    fin.copy(ds, g, name)
                elif name in ("conformations", "dft_total_energy", "dft_total_gradient",
                              "atomic_numbers"):
                    data = ds[()] if name == "atomic_numbers" else ds[:n]
                    g.create_dataset(name, data=data)
                    for a, v in ds.attrs.items():
                        g[name].attrs[a] = v


def golden_spice(spice_raw: Path, cache: str) -> list:
    from openqdc.datasets import Spice, SpiceVL2
    from openqdc.utils.io import get_local_cache
    root = Path(get_local_cache()) / "spice"
    root.mkdir(parents=True, exist_ok=True)
    # 2 conformers of a neutral PubChem molecule, 6 of the C#C.[Na+] ion-pair scan
    _spice_raw(spice_raw, root / "SPICE-1.1.4.hdf5", {"103147721": 2, "C#C.[Na+]": 6})
    inst = Spice.no_init()
    entries = inst.read_raw_entries()            # openQDC's own SPICE reader
    _save(Spice, entries)
    # SpiceVL2: same records with openQDC's 3 energy methods (2 semi-empirical columns added)
    vl2 = []
    for e in entries:
        e = dict(e)
        dft = e["energies"][:, :1]
        e["energies"] = np.concatenate([dft, dft * 0.0 - 13.7 - 0.01 * np.arange(len(dft))[:, None],
                                        dft * 0.0 + 0.05], axis=1)
        vl2.append(e)
    _save(SpiceVL2, vl2)
    return [Spice, SpiceVL2]


def golden_ani1x(ani_raw: Path) -> list:
    import h5py
    from openqdc.datasets import ANI1X
    keys = ["hf_dz.energy", "hf_qz.energy", "hf_tz.energy", "mp2_dz.corr_energy",
            "mp2_qz.corr_energy", "mp2_tz.corr_energy", "wb97x_dz.energy", "wb97x_tz.energy"]
    entries = []
    with h5py.File(ani_raw) as f:
        for formula in list(f)[:2]:
            g = f[formula]
            z = g["atomic_numbers"][:]
            for c in range(g["coordinates"].shape[0]):
                forces = np.stack([g["wb97x_dz.forces"][c], g["wb97x_tz.forces"][c]], axis=-1)
                entries.append(_entry(z, np.zeros_like(z), g["coordinates"][c],
                                      [g[k][c] for k in keys], forces,
                                      name=f"{formula}-{c}".encode(), subset="ani1x"))
    _save(ANI1X, entries)
    return [ANI1X]


def golden_small() -> list:
    from openqdc.datasets import DES370K, QM7X, SN2RXN
    rng = np.random.default_rng(7)
    water = ([8, 1, 1], [[0.0, 0.0, 0.0], [0.9572, 0.0, 0.0], [-0.2400, 0.9266, 0.0]])
    methane = ([6, 1, 1, 1, 1], [[0, 0, 0], [0.63, 0.63, 0.63], [-0.63, -0.63, 0.63],
                                 [-0.63, 0.63, -0.63], [0.63, -0.63, -0.63]])
    # QM7X: eV / Å, float64 energies, 2 methods, forces only for the first (mask [True, False])
    qm7x = []
    for i, (z, pos) in enumerate([water, methane, water]):
        pos = np.asarray(pos, float) + rng.normal(scale=0.02, size=(len(z), 3))
        e = [-2079.6 - 0.1 * i if z[0] == 8 else -1101.2, -380.1 - 0.01 * i]
        qm7x.append(_entry(z, np.zeros(len(z)), pos, e, rng.normal(size=(len(z), 3, 1)),
                           name=f"mol{i}", subset="qm7x"))
    _save(QM7X, qm7x)
    # SN2RXN: eV / Å / eV/Å, one method; openQDC stores no charges (zeros) for it
    sn2 = []
    for i in range(3):
        z = [9, 6, 1, 1, 1, 17]
        pos = np.array([[-2.5 + 0.3 * i, 0, 0], [0, 0, 0], [0.36, 1.0, 0], [0.36, -0.5, 0.87],
                        [0.36, -0.5, -0.87], [1.8, 0, 0]]) + rng.normal(scale=0.01, size=(6, 3))
        sn2.append(_entry(z, np.zeros(6), pos, [-16880.1 + 0.05 * i],
                          rng.normal(size=(6, 3, 1)), name=f"sn2-{i}", subset="sn2"))
    _save(SN2RXN, sn2)
    # DES370K: interaction energies (kcal/mol), float32, n_atoms_ptr, monomer charge per atom
    n_methods = len(DES370K.no_init().energy_methods)
    des = []
    dimers = [([8, 1, 1, 8, 1, 1], [0] * 6), ([11, 8, 1, 1], [1, 0, 0, 0]),
              ([17, 8, 1, 1], [-1, 0, 0, 0])]
    for i, (z, q) in enumerate(dimers):
        pos = rng.normal(scale=1.5, size=(len(z), 3))
        ptr = 3 if len(z) == 6 else 1
        des.append(_entry(z, q, pos, rng.normal(scale=2.0, size=n_methods), None,
                          name=f"dimer{i}", subset="des", n_atoms_ptr=np.array([ptr], np.int32)))
    _save(DES370K, des, energies_dtype=np.float32)
    return [QM7X, SN2RXN, DES370K]


def _jsonable(x):
    if x is None:
        return None
    if isinstance(x, bytes):
        return x.decode()
    arr = np.asarray(x)
    if arr.dtype.kind in "SU":
        return str(arr.item().decode() if arr.dtype.kind == "S" else arr.item())
    return arr.astype(np.float64 if arr.dtype.kind == "f" else np.int64).tolist()


def _patch_default_e0s():
    """openQDC 0.1.2 fills methods without isolated-atom energies with ``array([0])`` entries,
    which numpy >= 2 refuses to put in its e0 matrix ("setting an array element with a
    sequence"), so ANI-1x cannot even be opened with ``energy_type="formation"``. Give the same
    zeros as scalars (openQDC's intended value: formation = total for such methods)."""
    from openqdc.methods.enums import PotentialMethod
    from openqdc.utils.constants import ATOM_SYMBOLS
    PotentialMethod._build_default_dict = lambda self: {
        (s, q): 0.0 for s in ATOM_SYMBOLS for q in range(-10, 11)}


def read_back(cls, cache: str) -> dict:
    _patch_default_e0s()
    ds = cls(cache_dir=cache, energy_unit="ev", distance_unit="ang", skip_statistics=True,
             energy_type="formation")
    out = []
    for i in range(len(ds)):
        b = ds[i]
        rec = {k: _jsonable(b.get(k)) for k in ("positions", "atomic_numbers", "charges",
                                                "energies", "formation_energies", "forces",
                                                "name", "subset", "n_atoms_ptr")}
        out.append(rec)
    return {"dataset": ds.__name__, "openqdc_class": cls.__name__,
            "energy_methods": ds.energy_methods, "force_methods": ds.force_methods,
            "reader": f"openqdc.datasets.{cls.__name__}(cache_dir=..., energy_unit='ev', "
                      f"distance_unit='ang', skip_statistics=True, energy_type='formation')[i]",
            "structures": out}


def main():
    import openqdc
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--spice-raw", type=Path, default=Path("/tmp/mf/SPICE-1.1.4_n2.hdf5"))
    p.add_argument("--ani1x-raw", type=Path, default=Path("/tmp/mf/ani1_n5.hdf5"))
    p.add_argument("--table-only", action="store_true")
    args = p.parse_args()
    version = getattr(openqdc, "__version__", "unknown")
    with tempfile.TemporaryDirectory() as tmp:
        table = conventions(tmp)
    write_table(table, unit_factors(), version)
    raw = json.dumps(atom_energies(table), separators=(",", ":"), sort_keys=True) + "\n"
    with gzip.GzipFile(ROOT / "mlip_attn" / "data" / "openqdc_atom_energies.json.gz", "wb",
                       mtime=0) as f:
        f.write(raw.encode())
    if args.table_only:
        return
    from openqdc.utils.io import get_local_cache, set_cache_dir
    with tempfile.TemporaryDirectory() as cache:
        set_cache_dir(cache)
        classes = golden_spice(args.spice_raw, cache) + golden_ani1x(args.ani1x_raw) \
            + golden_small()
        shutil.rmtree(GOLDEN, ignore_errors=True)
        (GOLDEN / "expected").mkdir(parents=True)
        for cls in classes:
            expected = read_back(cls, cache)
            expected["openqdc_version"] = version
            (GOLDEN / "expected" / f"{expected['dataset']}.json").write_text(
                json.dumps(expected, separators=(",", ":")) + "\n")
        for prep in Path(get_local_cache()).rglob("props.pkl"):
            rel = prep.parent.relative_to(get_local_cache())
            dest = GOLDEN / "cache" / rel
            dest.mkdir(parents=True, exist_ok=True)
            for f in prep.parent.iterdir():
                if f.suffix in (".mmap", ".pkl") and f.name != "e0s.pkl":
                    shutil.copy(f, dest / f.name)
    print(f"wrote {GOLDEN} for openqdc {version}")


if __name__ == "__main__":
    main()
