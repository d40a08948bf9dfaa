"""Atomic writes (model files, checkpoints, data files, LAMMPS exports): permissions that follow
the umask, and no pile-up of temporary files after writers were killed mid-write."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap

import pytest
import torch

from mlip_attn import load_model, save_model
from mlip_attn.models.model_file import atomic_save

from conftest import make_model


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask():
    """Set the process umask for one test (restored afterwards)."""
    old = os.umask(0o022)
    yield os.umask
    os.umask(old)


def _leftovers(path):
    return sorted(p.name for p in path.parent.iterdir() if p.name.startswith(f".{path.name}."))


def test_model_file_permissions_follow_the_umask(tmp_path, umask):
    model = make_model("painn")
    umask(0o022)
    save_model(model, tmp_path / "a.pt")
    assert _mode(tmp_path / "a.pt") == 0o644
    umask(0o007)   # a shared group may read and write
    save_model(model, tmp_path / "b.pt")
    atomic_save({"x": torch.zeros(2)}, tmp_path / "checkpoint.pt")
    assert _mode(tmp_path / "b.pt") == _mode(tmp_path / "checkpoint.pt") == 0o660
    os.chmod(tmp_path / "b.pt", 0o640)   # rewriting keeps the mode the user chose
    save_model(model, tmp_path / "b.pt")
    assert _mode(tmp_path / "b.pt") == 0o640


KILLED_WRITER = textwrap.dedent("""
    import os, sys, torch
    from mlip_attn.models import model_file

    def dying_save(obj, f):          # killed in the middle of torch.save
        f.write(b"half a model")
        f.flush()
        os._exit(3)

    torch.save = dying_save
    model_file.atomic_save({"x": torch.zeros(3)}, sys.argv[1])
""")


def test_a_killed_writer_leaves_the_old_file_and_no_pile_up(tmp_path):
    target = tmp_path / "model.pt"
    save_model(make_model("painn"), target)
    before = target.read_bytes()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for _ in range(2):
        run = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(target)], env=env,
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 3, run.stderr
    assert target.read_bytes() == before          # the old file is intact
    assert len(_leftovers(target)) == 2           # what the two killed writers left behind
    save_model(make_model("painn", seed=1), target)
    assert _leftovers(target) == []               # the next write removed them
    assert load_model(target) is not None


def test_a_write_in_progress_is_not_removed(tmp_path):
    """A temporary file of a live process (here: this one, in another write) is kept."""
    target = tmp_path / "model.pt"
    in_progress = tmp_path / f".model.pt.{os.getppid()}.0badc0de.tmp"   # the parent is alive
    in_progress.write_bytes(b"being written")
    os.utime(in_progress, (0, 0))
    atomic_save({"x": torch.zeros(1)}, target)
    assert in_progress.exists()


def _fail_in_the_middle_of_writing(monkeypatch, suffix):
    """Make the writer of ``suffix`` die after it has written part of the file."""
    def die():
        raise KeyboardInterrupt("killed while writing")

    if suffix == ".xyz":
        import ase.io
        real_write = ase.io.write

        def half_write(path, images, *args, **kwargs):
            real_write(path, images[:1], *args, **kwargs)
            die()
        monkeypatch.setattr(ase.io, "write", half_write)
    elif suffix == ".h5":
        import mlip_attn.data.hdf5 as hdf5_module
        real_columns = hdf5_module._columns

        class HalfColumns(dict):
            def items(self):
                yield next(iter(super().items()))
                die()
        monkeypatch.setattr(hdf5_module, "_columns", lambda s: HalfColumns(real_columns(s)))
    else:
        from ase.db.sqlite import SQLite3Database
        real_db_write, calls = SQLite3Database.write, []

        def second_write_dies(self, *args, **kwargs):
            calls.append(1)
            if len(calls) == 2:
                die()
            return real_db_write(self, *args, **kwargs)
        monkeypatch.setattr(SQLite3Database, "write", second_write_dies)


@pytest.mark.parametrize("suffix", [".xyz", ".h5", ".db"])
def test_data_file_writes_are_atomic(tmp_path, umask, monkeypatch, suffix):
    """`write_structures` (used by import-openqdc): an interrupted rewrite leaves the old file."""
    from mlip_attn.data import AtomicData, read_structures, write_structures
    from conftest import emt_frames
    structures = [AtomicData.from_atoms(a, name=str(k)) for k, a in enumerate(emt_frames(3))]
    target = tmp_path / f"data{suffix}"
    umask(0o002)
    write_structures(target, structures[2:])   # not what a half write would leave
    assert _mode(target) == (0o644 if suffix == ".db" else 0o664)   # sqlite creates 0644 files
    before = target.read_bytes()
    _fail_in_the_middle_of_writing(monkeypatch, suffix)
    with pytest.raises(KeyboardInterrupt, match="killed while writing"):
        write_structures(target, structures)
    assert target.read_bytes() == before and _leftovers(target) == []
    monkeypatch.undo()
    write_structures(target, structures)
    assert len(read_structures(target)) == 3


def test_lammps_export_is_atomic_and_cleans_up(tmp_path, umask):
    from mlip_attn.lammps.export import export_lammps, read_export_metadata
    save_model(make_model("painn"), tmp_path / "model.pt")
    target = tmp_path / "model.lmp.pt"
    stale = tmp_path / ".model.lmp.pt.999999999.0123abcd.tmp"   # of a writer long gone
    stale.write_bytes(b"half an export")
    os.utime(stale, (0, 0))
    umask(0o027)
    export_lammps(tmp_path / "model.pt", target)
    assert _mode(target) == 0o640 and _leftovers(target) == []
    assert read_export_metadata(target)["elements"] == [1, 6, 8]
