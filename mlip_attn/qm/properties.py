"""Graph-level GFN2-xTB properties (tblite) of one molecule, and their resumable labelling.

`xtb_properties` gives, for the given geometry (no optimisation): the total energy (eV),
forces (eV/Å), HOMO and LUMO energies and their gap (eV), the dipole moment's norm (Debye),
the isotropic static polarisability (Å³, by finite fields: α_kk = (μ_k(+F) − μ_k(−F)) / 2F
along x, y, z, F = 1e-3 a.u., each field SCF restarted from the zero-field density) and the
atomisation energy E − Σ E_atom (eV, isolated atoms in their ground-state multiplicity).
`label_properties` writes them into the resumable extxyz store of `mlip_attn.qm.store`
(``REF_energy``/``REF_forces`` plus the properties in ``atoms.info``).
"""
from __future__ import annotations

import math
import multiprocessing as mp
import os
import time
from typing import Sequence

import numpy as np
from ase import Atoms

from .store import Appender, check_consistent, output_atoms, repair
from .threads import single_thread_environment, single_thread_openmp, worker_init

HARTREE = 27.211386245988       # eV
BOHR = 0.529177210903           # Å
DEBYE_PER_AU = 2.541746473      # Debye per e·bohr
FIELD = 1e-3                    # a.u. (Hartree / (e·bohr))
PROPERTIES = ("energy", "homo", "lumo", "gap", "dipole_norm", "polarizability", "atomization_energy")
UNITS = {"homo": "eV", "lumo": "eV", "gap": "eV", "dipole_norm": "Debye", "polarizability": "Å^3",
         "atomization_energy": "eV"}
# ground-state multiplicities of the isolated atoms (2S + 1)
ATOM_MULTIPLICITY = {1: 2, 5: 2, 6: 3, 7: 4, 8: 3, 9: 2, 14: 3, 15: 4, 16: 3, 17: 2, 35: 2, 53: 2}
_ATOM_ENERGIES: dict[int, float] = {}


def _calculator(numbers, positions, charge: int = 0, uhf: int = 0, temperature: float = 300.0):
    from tblite.interface import Calculator
    calc = Calculator("GFN2-xTB", np.asarray(numbers), np.asarray(positions) / BOHR,
                      charge=float(charge), uhf=int(uhf))
    calc.set("verbosity", 0)
    calc.set("temperature", temperature * 3.166811563e-6)  # K -> Hartree
    return calc


def _add_field(calc, field: np.ndarray) -> None:
    """A uniform electric field (a.u.) on ``calc``. tblite 0.8's ``add("electric-field", …)``
    hands a numpy array where its C call wants a pointer, so the pointer is made here."""
    from tblite.library import ffi
    field = np.ascontiguousarray(field, dtype=np.float64)
    calc.add("electric-field", ffi.cast("double*", field.ctypes.data))


def _singlepoint(calc, restart=None):
    """A converged result; retried with stronger damping when the SCF fails."""
    from tblite.exceptions import TBLiteRuntimeError
    try:
        return calc.singlepoint(restart) if restart is not None else calc.singlepoint()
    except TBLiteRuntimeError:
        calc.set("mixer-damping", 0.1)
        calc.set("max-iter", 500)
        return calc.singlepoint()


def atom_energy(z: int) -> float:
    """GFN2-xTB energy (eV) of an isolated atom in its ground-state multiplicity (cached)."""
    if z not in _ATOM_ENERGIES:
        mult = ATOM_MULTIPLICITY.get(int(z))
        if mult is None:
            raise ValueError(f"atomisation energy: no ground-state multiplicity for Z = {z}")
        with single_thread_openmp():
            res = _singlepoint(_calculator([z], [[0.0, 0.0, 0.0]], uhf=mult - 1))
        _ATOM_ENERGIES[z] = float(res.get("energy")) * HARTREE
    return _ATOM_ENERGIES[z]


def xtb_properties(numbers, positions, charge: int = 0, polarizability: bool = True) -> dict:
    """GFN2-xTB properties of one closed-shell molecule (see the module docstring):
    ``energy``, ``forces`` (N, 3), ``homo``, ``lumo``, ``gap``, ``dipole_norm``,
    ``polarizability`` (NaN when not asked for) and ``atomization_energy``."""
    numbers = np.asarray(numbers)
    with single_thread_openmp():
        calc = _calculator(numbers, positions, charge)
        res = _singlepoint(calc)
        energy = float(res.get("energy")) * HARTREE
        forces = -np.asarray(res.get("gradient")) * HARTREE / BOHR
        eps = np.asarray(res.get("orbital-energies")) * HARTREE
        occ = np.asarray(res.get("orbital-occupations"))
        dipole = np.asarray(res.get("dipole"))
        occupied = np.nonzero(occ > 1.0)[0]
        homo_index = int(occupied.max())
        homo, lumo = float(eps[homo_index]), float(eps[homo_index + 1])
        alpha = math.nan
        if polarizability:
            diagonal = []
            for axis in range(3):
                moments = []
                for sign in (1.0, -1.0):
                    field = np.zeros(3)
                    field[axis] = sign * FIELD
                    c = _calculator(numbers, positions, charge)
                    _add_field(c, field)
                    moments.append(np.asarray(_singlepoint(c, res).get("dipole"))[axis])
                diagonal.append((moments[0] - moments[1]) / (2 * FIELD))
            alpha = float(np.mean(diagonal)) * BOHR ** 3
    atoms = sum(atom_energy(int(z)) for z in numbers)
    return {"energy": energy, "forces": forces, "homo": homo, "lumo": lumo, "gap": lumo - homo,
            "dipole_norm": float(np.linalg.norm(dipole)) * DEBYE_PER_AU, "polarizability": alpha,
            "atomization_energy": energy - atoms}


def _task(args):
    index, numbers, positions, charge, polarizability = args
    t0 = time.perf_counter()
    try:
        props = xtb_properties(numbers, positions, charge, polarizability)
        checked = [k for k in PROPERTIES if polarizability or k != "polarizability"]
        bad = [k for k in checked if not math.isfinite(props[k])]
        if bad or not np.all(np.isfinite(props["forces"])):
            raise FloatingPointError(f"non-finite {bad or 'forces'}")
        return index, props, None, time.perf_counter() - t0
    except Exception as exc:  # noqa: BLE001 - recorded and skipped, retried on the next run
        return index, None, f"{type(exc).__name__}: {exc}", time.perf_counter() - t0


def label_properties(structures: Sequence[Atoms], out_path: str, workers: int = 1,
                     polarizability: bool = True, progress: bool = True, log=print) -> dict:
    """Compute `xtb_properties` for ``structures`` into ``out_path`` (extxyz), resumably:
    frames already in the file (``info['index']``) are skipped, a torn last frame is cut off.
    Failures are reported and not written. Returns counts and timings."""
    from tqdm.auto import tqdm
    t_start = time.perf_counter()
    structures = list(structures)
    existing = repair(str(out_path))
    check_consistent(existing, structures)
    done = {int(a.info["index"]) for a in existing}
    todo = [i for i in range(len(structures)) if i not in done]
    tasks = ((i, np.asarray(structures[i].numbers), np.asarray(structures[i].positions),
              int(structures[i].info.get("total_charge", 0)), polarizability) for i in todo)
    writer = Appender(str(out_path), fsync=False)
    bar = tqdm(total=len(todo), disable=not progress, unit="mol",
               desc=f"GFN2-xTB properties -> {os.path.basename(str(out_path))}")
    report = {"path": str(out_path), "total": len(structures), "resumed": len(done), "new": 0,
              "failed": [], "compute_s": 0.0}
    pool = None
    try:
        if workers <= 1 or len(todo) <= 1:
            results = map(_task, tasks)
        else:
            with single_thread_environment():
                pool = mp.get_context("spawn").Pool(int(workers), initializer=worker_init)
            results = pool.imap(_task, tasks, chunksize=4)
        for index, props, err, dt in results:
            report["compute_s"] += dt
            bar.update(1)
            if err is not None:
                report["failed"].append((index, err))
                continue
            frame = output_atoms(structures[index], index, props["energy"], props["forces"],
                                 "GFN2-xTB", "tblite; 300 K; finite-field polarisability")
            for key in PROPERTIES[1:]:
                frame.info[key] = props[key]
            writer.write(frame)
            report["new"] += 1
    finally:
        bar.close()
        writer.close()
        if pool is not None:
            pool.terminate()
            pool.join()
    report["elapsed_s"] = time.perf_counter() - t_start
    if report["failed"]:
        log(f"{out_path}: {len(report['failed'])} molecules failed in xTB (skipped): "
            f"{report['failed'][:3]}")
    return report
