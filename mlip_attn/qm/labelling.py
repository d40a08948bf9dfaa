"""`label_structures`: run a reference method over structures into a resumable extxyz file.

Failures (exceptions, non-finite results) are counted, reported and not written; re-running
the same call resumes (see `mlip_attn.qm.store`). With ``workers > 1`` the structures are
labelled by that many single-threaded ``spawn`` processes; scripts that do this must guard
their entry point with ``if __name__ == "__main__":`` (spawn re-imports the main module).
"""
from __future__ import annotations

import math
import multiprocessing as mp
import os
import time
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np
from ase import Atoms

from .methods import (METHODS, PERIODIC_METHODS, PYSCF_HINT, compute_label,
                      compute_periodic_label, method_metadata)
from .store import Appender, output_atoms, repair
from .threads import single_thread_environment, worker_init


def _task(args) -> tuple[int, float | None, np.ndarray | None, np.ndarray | None, str | None,
                        float]:
    """(index, energy, forces, stress or None, error or None, seconds) of one structure."""
    index, numbers, positions, charge, mult, method, kw, cell = args
    t0 = time.perf_counter()
    try:
        stress = None
        if method in PERIODIC_METHODS:
            if cell is None:
                raise ValueError(f"method {method!r} needs a periodic cell")
            e, f, stress = compute_periodic_label(numbers, positions, cell, method, int(charge))
        else:
            e, f = compute_label(numbers, positions, charge, mult, method, **kw)
        if not (math.isfinite(e) and np.all(np.isfinite(f))):
            raise FloatingPointError(f"non-finite energy/forces (E={e})")
        if f.shape != (len(numbers), 3):
            raise ValueError(f"forces have shape {f.shape}")
        return index, e, f, stress, None, time.perf_counter() - t0
    except Exception as exc:  # noqa: BLE001 - every failure is recorded and skipped
        return index, None, None, None, f"{type(exc).__name__}: {exc}", time.perf_counter() - t0


@dataclass
class LabelReport:
    """Outcome of one ``label_structures`` call.

    ``n_done``: labelled and written in this call; ``n_skipped``: already in the file
    (resumed); ``n_failed``: failed this call (not written; retried by the next call);
    ``n_in_file``: complete frames of this input in the file afterwards.
    """

    out_path: str
    method: str
    n_total: int
    n_done: int = 0
    n_skipped: int = 0
    n_failed: int = 0
    n_in_file: int = 0
    failures: list[tuple[int, str]] = field(default_factory=list)
    elapsed_s: float = 0.0
    compute_s: float = 0.0
    ref_method: str = ""
    ref_settings: str = ""

    @property
    def complete(self) -> bool:
        return self.n_in_file == self.n_total

    @property
    def seconds_per_structure(self) -> float:
        """Mean compute time per labelled structure (per process)."""
        n = self.n_done + self.n_failed
        return self.compute_s / n if n else float("nan")

    def __str__(self) -> str:
        s = (f"{self.out_path}: {self.n_in_file}/{self.n_total} in file "
             f"(new {self.n_done}, resumed {self.n_skipped}, failed {self.n_failed}) "
             f"with {self.ref_method} in {self.elapsed_s:.1f} s")
        if self.failures:
            s += "; failures: " + "; ".join(f"#{i}: {m}" for i, m in self.failures[:5])
            if len(self.failures) > 5:
                s += f" (+{len(self.failures) - 5} more)"
        return s


def _default_smearing(atoms: Atoms, smearing) -> float | None:
    if smearing == "auto":
        return 0.005 if str(atoms.info.get("system", "")) == "cumulene" or str(
            atoms.info.get("config_type", "")).startswith("cumulene") else None
    return smearing


def label_structures(structures: Sequence[Atoms], out_path: str, method: str = "gfn2-xtb",
                     workers: int = 1, electronic_temperature: float = 300.0,
                     progress: bool = True, accuracy: float = 1.0,
                     smearing: float | str | None = "auto", chunksize: int = 1,
                     fsync: bool = True) -> LabelReport:
    """Label ``structures`` with ``method`` and append them to ``out_path`` (extxyz).

    Resumable: structures whose index is already in the file are skipped; an incomplete
    last frame is removed first (its bytes saved to ``out_path.tail-*``). Failures
    (exceptions, non-finite results) are counted, reported and not written.

    ``method``: ``"gfn2-xtb"`` (default, tblite), ``"gfn1-xtb"``, ``"pyscf-b3lyp"``
    (B3LYP/def2-SVP with density fitting; ``smearing="auto"`` uses Fermi smearing of
    0.005 Ha for cumulenes) or ``"nacl-analytic"``. The total charge of each structure is
    ``info['total_charge']`` (default 0), the multiplicity ``info['total_spin']`` (2S+1)
    if present. ``workers > 1`` runs that many single-threaded spawn processes
    (``chunksize`` structures per task). ``fsync=False`` skips the per-frame ``os.fsync``
    (a crash of the OS, not of the process, can then lose frames, which the next run
    recomputes).
    """
    from tqdm.auto import tqdm

    method = method.lower()
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {METHODS}")
    if method == "pyscf-b3lyp":
        try:
            import pyscf  # noqa: F401
        except ImportError as e:
            raise ImportError(PYSCF_HINT) from e
    t_start = time.perf_counter()
    structures = list(structures)
    ref_method, ref_settings = method_metadata(method, electronic_temperature, accuracy,
                                               smearing if isinstance(smearing, float) else None)
    report = LabelReport(out_path=str(out_path), method=method, n_total=len(structures),
                         ref_method=ref_method, ref_settings=ref_settings)

    existing = repair(str(out_path), structures, ref_method)  # refuses foreign files untouched
    done = {int(a.info["index"]) for a in existing}
    report.n_skipped = len(done)
    todo = [i for i in range(len(structures)) if i not in done]

    def tasks() -> Iterator[tuple]:
        for i in todo:
            s = structures[i]
            mult = s.info.get("total_spin")
            kw: dict[str, Any] = {}
            if method in ("gfn2-xtb", "gfn1-xtb"):
                kw = {"electronic_temperature": electronic_temperature, "accuracy": accuracy}
            elif method == "pyscf-b3lyp":
                kw = {"smearing": _default_smearing(s, smearing)}
            yield (i, np.asarray(s.numbers), np.asarray(s.positions),
                   int(s.info.get("total_charge", 0)), None if mult is None else int(mult),
                   method, kw, np.asarray(s.cell.array) if s.pbc.any() else None)

    writer = Appender(str(out_path), fsync=fsync)
    bar = tqdm(total=len(todo), disable=not progress, desc=f"{method} -> {os.path.basename(str(out_path))}",
               unit="struct")
    pool = None
    try:
        if workers is None or workers <= 1 or len(todo) <= 1:
            results = map(_task, tasks())
        else:
            ctx = mp.get_context("spawn")
            with single_thread_environment():
                pool = ctx.Pool(int(workers), initializer=worker_init)
            results = pool.imap(_task, tasks(), chunksize=max(1, int(chunksize)))
        for index, e, f, stress, err, dt in results:
            report.compute_s += dt
            if err is not None:
                report.n_failed += 1
                report.failures.append((index, err))
                bar.set_postfix(failed=report.n_failed)
            else:
                settings = ref_settings
                if method == "pyscf-b3lyp":
                    settings = method_metadata(method, smearing=_default_smearing(
                        structures[index], smearing))[1]
                writer.write(output_atoms(structures[index], index, e, f, ref_method,
                                           settings, stress=stress))
                report.n_done += 1
            bar.update(1)
    finally:
        bar.close()
        writer.close()
        if pool is not None:
            pool.terminate()
            pool.join()
    report.n_in_file = report.n_skipped + report.n_done
    report.elapsed_s = time.perf_counter() - t_start
    return report
