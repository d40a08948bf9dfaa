"""The resumable extxyz store of labelled structures.

One extxyz frame per structure, appended as soon as it is labelled (one ``write`` + ``flush``
+ ``fsync`` per frame) and tagged with ``info['index']``, the structure's position in the input
list. On start the file is scanned: frames already present are skipped, and a half-written
last frame is cut off (the bytes removed are saved next to the file, never thrown away).

A file is one of the store's own when every complete frame carries ``index``, ``REF_energy``,
``ref_method`` (info) and ``REF_forces`` (arrays), and what follows the last complete frame
could be the start of such a frame (an interrupted write). Anything else — an extxyz from
elsewhere, other text — is refused and left untouched, as is an own file of another input or
labelled with another method.
"""
from __future__ import annotations

import io
import os
import time
import warnings
from typing import Sequence

import numpy as np
from ase import Atoms


def frame_text(atoms: Atoms) -> str:
    buf = io.StringIO()
    import ase.io

    ase.io.write(buf, atoms, format="extxyz")
    text = buf.getvalue()
    if not text.endswith("\n"):
        text += "\n"
    return text


def _scan_frames(path: str) -> tuple[list[Atoms], int, int]:
    """Parse complete frames from the start of ``path``.

    Returns (frames, valid_end_offset, file_size). Stops at the first frame that is
    incomplete (missing lines or a last line without newline) or unparsable.
    """
    import ase.io

    frames: list[Atoms] = []
    with open(path, "rb") as fh:
        data = fh.read()
    size = len(data)
    pos = 0
    while pos < size:
        nl = data.find(b"\n", pos)
        if nl < 0:
            break
        head = data[pos:nl].strip()
        if not head:  # tolerate blank lines between frames
            pos = nl + 1
            continue
        try:
            nat = int(head)
        except ValueError:
            break
        end = nl
        ok = True
        for _ in range(nat + 1):
            nxt = data.find(b"\n", end + 1)
            if nxt < 0:
                ok = False
                break
            end = nxt
        if not ok:
            break
        try:
            chunk = data[pos:end + 1].decode("utf-8", errors="strict")
            a = ase.io.read(io.StringIO(chunk), format="extxyz", index=0)
        except Exception:
            break
        if len(a) != nat:
            break
        missing = [k for k in OWN_INFO_KEYS if k not in a.info] + (
            [] if "REF_forces" in a.arrays else ["REF_forces"])
        if missing:
            raise ValueError(_foreign(path, f"frame {len(frames) + 1} has no {', '.join(missing)}"))
        frames.append(a)
        pos = end + 1
    return frames, pos, size


OWN_INFO_KEYS = ("index", "REF_energy", "ref_method")


def _foreign(path: str, why: str) -> str:
    return (f"{path}: not a file of labelled structures written by mlip-attn ({why}); it was "
            f"left untouched: choose another output file, or move this one away")


def _starts_own_frame(tail: bytes) -> bool:
    """Whether ``tail`` can be the beginning of a frame this store writes: an atom count line
    and, if complete, a comment line with the store's keys."""
    lines = tail.lstrip().split(b"\n")
    count = lines[0].strip()
    if len(lines) == 1:   # cut within the atom count line
        return count.isdigit()
    if not count.isdigit():
        return False
    if len(lines) == 2:   # cut within the comment line
        return True
    return all(f"{k}=".encode() in lines[1] for k in OWN_INFO_KEYS)


def repair(path: str, structures: Sequence[Atoms] | None = None,
           ref_method: str | None = None) -> list[Atoms]:
    """Scan ``path``, cut an invalid tail (saved to ``path + '.tail-<time>'``) and return
    the valid frames.

    Refuses (`ValueError`, nothing changed) a file that is not one of the store's own (see the
    module docstring) and, given ``structures``/``ref_method``, one whose frames belong to
    another input or were labelled with another method."""
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        return []
    frames, valid, size = _scan_frames(path)
    with open(path, "rb") as fh:
        fh.seek(valid)
        tail = fh.read()
    if not frames and tail.strip() and not _starts_own_frame(tail):
        raise ValueError(_foreign(path, "it does not start with a labelled frame"))
    if structures is not None:
        check_consistent(frames, structures, ref_method)
    if valid < size:
        if tail.strip():
            backup = f"{path}.tail-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
            with open(backup, "wb") as fh:
                fh.write(tail)
            warnings.warn(
                f"{path}: {len(tail)} bytes after the last complete frame (interrupted write?)"
                f" were removed and saved to {backup}", RuntimeWarning, stacklevel=3)
        with open(path, "r+b") as fh:
            fh.truncate(valid)
            fh.flush()
            os.fsync(fh.fileno())
    return frames


def read_done_indices(path: str) -> set[int]:
    """Indices (``info['index']``) of the complete frames in ``path`` (read-only)."""
    if not os.path.exists(path):
        return set()
    frames, _, _ = _scan_frames(path)
    return {int(a.info["index"]) for a in frames}


def output_atoms(src: Atoms, index: int, energy: float, forces: np.ndarray,
                  ref_method: str, ref_settings: str, stress: np.ndarray | None = None) -> Atoms:
    """The labelled frame: periodic structures keep their cell and pbc, and ``stress`` (3, 3)
    eV/Å³ becomes ``REF_stress``."""
    out = Atoms(numbers=src.numbers, positions=src.positions)
    out.pbc = False
    if src.pbc.any():
        out.set_cell(src.cell)
        out.pbc = src.pbc
    for k, v in src.info.items():
        if k in ("REF_energy", "energy", "free_energy", "stress", "REF_stress"):
            continue
        if isinstance(v, (str, bool, int, float, np.integer, np.floating)):
            out.info[k] = v.item() if isinstance(v, np.generic) else v
    out.info["total_charge"] = int(src.info.get("total_charge", 0))
    out.info["REF_energy"] = float(energy)
    out.arrays["REF_forces"] = np.asarray(forces, dtype=float).reshape(len(src), 3)
    out.info["ref_method"] = ref_method
    out.info["ref_settings"] = ref_settings
    out.info["index"] = int(index)
    if stress is not None:
        out.info["REF_stress"] = np.asarray(stress, dtype=float).reshape(3, 3)
    return out


class Appender:
    def __init__(self, path: str, fsync: bool = True):
        d = os.path.dirname(os.path.abspath(path))
        os.makedirs(d, exist_ok=True)
        self.fh = open(path, "a", encoding="utf-8")
        self.fsync = fsync

    def write(self, atoms: Atoms) -> None:
        self.fh.write(frame_text(atoms))     # one write per frame
        self.fh.flush()
        if self.fsync:
            os.fsync(self.fh.fileno())

    def close(self) -> None:
        self.fh.close()


def check_consistent(done: list[Atoms], structures: Sequence[Atoms],
                     ref_method: str | None = None) -> None:
    """Raise `ValueError` unless every frame in ``done`` is its input structure (same index,
    elements and positions) labelled with ``ref_method`` (when given)."""
    for a in done:
        if ref_method is not None and a.info["ref_method"] != ref_method:
            raise ValueError(f"frame index {a.info['index']} in the output file was labelled "
                             f"with {a.info['ref_method']}, this run uses {ref_method}: write "
                             f"to a new file")
        i = int(a.info["index"])
        if i < 0 or i >= len(structures):
            raise ValueError(f"frame with index {i} in the output file, but only "
                             f"{len(structures)} structures were given: not the same input")
        s = structures[i]
        if len(s) != len(a) or not np.array_equal(s.numbers, a.numbers) or not np.allclose(
                s.positions, a.positions, atol=1e-5):
            raise ValueError(
                f"frame index {i} in the output file does not match structure {i} of the "
                "input (different seed/recipe?): write to a new file")
