"""Reference labelling: GFN2-xTB (tblite), optional PySCF B3LYP, the analytic NaCl toy.

``label_structures`` runs the reference method over a list of structures and appends one
extxyz frame per structure to ``out_path`` as soon as it is done (single ``write`` +
``flush`` + ``fsync`` per frame), so an interrupted run continues where it stopped:
on start the file is scanned, frames already present (by ``info['index']``, the position
of the structure in the input list) are skipped, and a half-written last frame is cut off
(the bytes removed are saved next to the file, never thrown away).

Threads: tblite uses OpenMP and is 5-100x slower with more than one thread per process on
a small machine. Worker processes are started with the ``spawn`` method with
``OMP_NUM_THREADS=MKL_NUM_THREADS=OPENBLAS_NUM_THREADS=1`` in their environment (set
before tblite is imported); in the calling process (``workers=1``) the OpenMP thread
count of the libgomp that tblite uses is set to 1 for the duration of the calculation
and restored afterwards (:func:`single_thread_openmp`). Scripts that call
``label_structures(workers>1)`` must guard their entry point with
``if __name__ == "__main__":`` (spawn re-imports the main module).
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import math
import multiprocessing as mp
import os
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import numpy as np
from ase import Atoms

__all__ = [
    "LabelReport",
    "label_structures",
    "generate",
    "make_calculator",
    "xtb_energy_forces",
    "XTB_SCF_LADDER",
    "compute_label",
    "read_done_indices",
    "single_thread_openmp",
    "method_metadata",
    "METHODS",
]

METHODS = ("gfn2-xtb", "gfn1-xtb", "pyscf-b3lyp", "nacl-analytic")
_THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")

PYSCF_HINT = ("the 'pyscf-b3lyp' method needs PySCF: pip install 'mlip-attn[qm]' "
              "(or pip install pyscf)")


# ------------------------------------------------------------------------- threads

def _libgomp():
    try:
        return ctypes.CDLL("libgomp.so.1")
    except OSError:
        return None


@contextlib.contextmanager
def single_thread_openmp(n: int = 1):
    """Limit the OpenMP threads of the system ``libgomp.so.1`` (the one tblite links) to
    ``n`` in this thread and restore the previous value on exit. torch's bundled libgomp
    is a different library and is not touched."""
    lib = _libgomp()
    if lib is None:
        yield
        return
    try:
        before = int(lib.omp_get_max_threads())
        lib.omp_set_num_threads(int(n))
    except AttributeError:  # pragma: no cover
        yield
        return
    try:
        yield
    finally:
        lib.omp_set_num_threads(before)


def _worker_init() -> None:
    for k in _THREAD_ENV:
        os.environ[k] = "1"
    lib = _libgomp()
    if lib is not None:
        lib.omp_set_num_threads(1)


@contextlib.contextmanager
def _thread_env():
    """Temporarily put single-thread settings in os.environ (inherited by spawned workers)."""
    old = {k: os.environ.get(k) for k in _THREAD_ENV}
    for k in _THREAD_ENV:
        os.environ[k] = "1"
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# ---------------------------------------------------------------------- calculators

def _tblite_version() -> str:
    try:
        from importlib.metadata import version

        return version("tblite")
    except Exception:  # pragma: no cover
        return "unknown"


def method_metadata(method: str, electronic_temperature: float = 300.0,
                    accuracy: float = 1.0, smearing: float | None = None) -> tuple[str, str]:
    """(ref_method, ref_settings) strings recorded on every frame."""
    method = method.lower()
    if method in ("gfn2-xtb", "gfn1-xtb"):
        name = "GFN2-xTB" if method == "gfn2-xtb" else "GFN1-xTB"
        return name, (f"tblite {_tblite_version()}; electronic_temperature="
                      f"{electronic_temperature:g} K; accuracy={accuracy:g}; "
                      "SCF retries: eeq guess / mixer damping")
    if method == "pyscf-b3lyp":
        try:
            from importlib.metadata import version

            v = version("pyscf")
        except Exception:
            v = "unknown"
        sm = f"fermi smearing {smearing:g} Ha" if smearing else "no smearing"
        return "B3LYP/def2-SVP", f"pyscf {v}; density fitting def2-universal-jkfit; {sm}"
    if method == "nacl-analytic":
        from .nacl import REF_METHOD, REF_SETTINGS

        return REF_METHOD, REF_SETTINGS
    raise ValueError(f"unknown method {method!r}; choose from {METHODS}")


# SCF settings tried in turn for xTB (same fixed point, only the route changes). Seen:
# Br- + CH3Br at > 5 A, where Broyden mixing from the SAD guess oscillates. A
# non-converging SCF with tblite's defaults costs ~0.5 s (its Broyden history length equals
# max_iterations), so the first attempt stops at 100 iterations (converging cases here
# need < 60, and their iterations are identical to the defaults); tblite's exact defaults
# (250 iterations) are still tried before the last resort.
XTB_SCF_LADDER: tuple[dict, ...] = (
    {"max_iterations": 100},
    {"mixer_damping": 0.1, "mixer_memory": 40},
    {"guess": "eeq", "mixer_memory": 40},
    {},
    {"mixer_damping": 0.05, "guess": "eeq", "max_iterations": 500, "mixer_memory": 40},
)


_TBLITE_CLASS = None


def _single_thread_tblite_class():
    """tblite.ase.TBLite whose calculations run with one OpenMP thread (restored after)."""
    global _TBLITE_CLASS
    if _TBLITE_CLASS is None:
        from tblite.ase import TBLite

        class SingleThreadTBLite(TBLite):
            def calculate(self, *args, **kwargs):
                with single_thread_openmp():
                    return super().calculate(*args, **kwargs)

        _TBLITE_CLASS = SingleThreadTBLite
    return _TBLITE_CLASS


def make_calculator(method: str = "gfn2-xtb", charge: int = 0, multiplicity: int | None = None,
                    electronic_temperature: float = 300.0, accuracy: float = 1.0,
                    max_iterations: int = 250, **tblite_kwargs):
    """ASE calculator for the xTB methods: ``tblite.ase.TBLite`` that computes with one
    OpenMP thread (see :func:`single_thread_openmp`). ``charge`` in e; ``multiplicity``
    2S+1 or None (tblite's default: closed shell / from initial magnetic moments).
    Extra keyword arguments go to ``tblite.ase.TBLite`` (e.g. ``guess``, ``mixer_damping``)."""
    method = method.lower()
    if method not in ("gfn2-xtb", "gfn1-xtb"):
        raise ValueError(f"make_calculator supports gfn2-xtb/gfn1-xtb, not {method!r}")
    return _single_thread_tblite_class()(method="GFN2-xTB" if method == "gfn2-xtb" else "GFN1-xTB",
                  charge=int(charge), multiplicity=multiplicity,
                  electronic_temperature=float(electronic_temperature),
                  accuracy=float(accuracy), max_iterations=int(max_iterations), verbosity=0,
                  **tblite_kwargs)


def xtb_energy_forces(numbers, positions, charge: int = 0, multiplicity: int | None = None,
                      method: str = "gfn2-xtb", electronic_temperature: float = 300.0,
                      accuracy: float = 1.0, factory: Callable[..., Any] | None = None,
                      calc=None) -> tuple[float, np.ndarray, Any]:
    """xTB energy (eV) and forces (eV/A), single-threaded, walking ``XTB_SCF_LADDER`` when
    the SCF fails. ``calc``: a calculator to try first (e.g. the previous optimisation
    step's, which restarts from its density). Returns (energy, forces, calculator used)."""
    from ase.calculators.calculator import CalculationFailed

    factory = factory or _calculator_factory
    err: Exception | None = None
    attempts = ([calc] if calc is not None else []) + list(XTB_SCF_LADDER)
    for att in attempts:
        if isinstance(att, dict):
            att = factory(method, charge=charge, multiplicity=multiplicity,
                          electronic_temperature=electronic_temperature, accuracy=accuracy,
                          **att)
        a = Atoms(numbers=numbers, positions=positions)
        a.calc = att
        try:
            with single_thread_openmp():
                e = float(a.get_potential_energy())
                f = np.array(a.get_forces(), dtype=float)
            return e, f, att
        except CalculationFailed as exc:
            err = exc
    assert err is not None
    raise err


def _pyscf_energy_forces(numbers, positions, charge: int, multiplicity: int | None,
                         smearing: float | None) -> tuple[float, np.ndarray]:
    try:
        from pyscf import dft, gto
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(PYSCF_HINT) from e
    from ase.data import chemical_symbols
    from ase.units import Bohr, Hartree

    nelec = int(np.sum(numbers)) - int(charge)
    spin = (multiplicity - 1) if multiplicity else nelec % 2
    mol = gto.M(atom=[(chemical_symbols[z], tuple(p)) for z, p in zip(numbers, positions)],
                unit="Angstrom", basis="def2-svp", charge=int(charge), spin=int(spin),
                verbose=0)
    mf = dft.RKS(mol) if spin == 0 else dft.UKS(mol)
    mf.xc = "b3lyp"
    mf = mf.density_fit(auxbasis="def2-universal-jkfit")
    mf.conv_tol = 1e-9
    mf.max_cycle = 200
    if smearing:
        from pyscf.scf import addons

        mf = addons.smearing_(mf, sigma=float(smearing), method="fermi")
    mf.kernel()
    if not mf.converged:
        raise RuntimeError("PySCF SCF did not converge")
    # with smearing the variational quantity is the Mermin free energy
    e = float(getattr(mf, "e_free", mf.e_tot)) if smearing else float(mf.e_tot)
    grad = mf.nuc_grad_method().kernel()
    return e * Hartree, -np.asarray(grad) * Hartree / Bohr


def compute_label(numbers: np.ndarray, positions: np.ndarray, charge: int = 0,
                  multiplicity: int | None = None, method: str = "gfn2-xtb",
                  electronic_temperature: float = 300.0, accuracy: float = 1.0,
                  smearing: float | None = None) -> tuple[float, np.ndarray]:
    """Energy (eV) and forces (eV/A) of one structure with the reference method."""
    method = method.lower()
    if method in ("gfn2-xtb", "gfn1-xtb"):
        e, f, _ = xtb_energy_forces(numbers, positions, charge, multiplicity, method,
                                    electronic_temperature, accuracy)
        return e, f
    if method == "pyscf-b3lyp":
        return _pyscf_energy_forces(numbers, positions, charge, multiplicity, smearing)
    if method == "nacl-analytic":
        from .nacl import nacl_energy_forces

        return nacl_energy_forces(positions, numbers)
    raise ValueError(f"unknown method {method!r}; choose from {METHODS}")


# indirection so tests (and users) can swap the calculator in the calling process
_calculator_factory: Callable[..., Any] = make_calculator


def _task(args) -> tuple[int, float | None, np.ndarray | None, str | None, float]:
    index, numbers, positions, charge, mult, method, kw = args
    t0 = time.perf_counter()
    try:
        e, f = compute_label(numbers, positions, charge, mult, method, **kw)
        if not (math.isfinite(e) and np.all(np.isfinite(f))):
            raise FloatingPointError(f"non-finite energy/forces (E={e})")
        if f.shape != (len(numbers), 3):
            raise ValueError(f"forces have shape {f.shape}")
        return index, e, f, None, time.perf_counter() - t0
    except Exception as exc:  # noqa: BLE001 - every failure is recorded and skipped
        return index, None, None, f"{type(exc).__name__}: {exc}", time.perf_counter() - t0


# ---------------------------------------------------------------------- file handling

def _frame_text(atoms: Atoms) -> str:
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
        chunk = data[pos:end + 1].decode("utf-8", errors="strict")
        try:
            a = ase.io.read(io.StringIO(chunk), format="extxyz", index=0)
        except Exception:
            break
        if (len(a) != nat or "REF_energy" not in a.info or "REF_forces" not in a.arrays
                or "index" not in a.info):
            break
        frames.append(a)
        pos = end + 1
    return frames, pos, size


def _repair(path: str) -> list[Atoms]:
    """Scan ``path``, cut an invalid tail (saved to ``path + '.tail-<time>'``) and return
    the valid frames."""
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        return []
    frames, valid, size = _scan_frames(path)
    if valid < size:
        with open(path, "rb") as fh:
            fh.seek(valid)
            tail = fh.read()
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


def _output_atoms(src: Atoms, index: int, energy: float, forces: np.ndarray,
                  ref_method: str, ref_settings: str) -> Atoms:
    out = Atoms(numbers=src.numbers, positions=src.positions)
    out.pbc = False
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
    return out


class _Appender:
    def __init__(self, path: str, fsync: bool = True):
        d = os.path.dirname(os.path.abspath(path))
        os.makedirs(d, exist_ok=True)
        self.fh = open(path, "a", encoding="utf-8")
        self.fsync = fsync

    def write(self, atoms: Atoms) -> None:
        self.fh.write(_frame_text(atoms))     # one write per frame
        self.fh.flush()
        if self.fsync:
            os.fsync(self.fh.fileno())

    def close(self) -> None:
        self.fh.close()


# ---------------------------------------------------------------------------- report

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


# ------------------------------------------------------------------------- labelling

def _check_consistent(done: list[Atoms], structures: Sequence[Atoms]) -> None:
    for a in done:
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
    (~5 ms per frame here; a crash of the OS, not of the process, can then lose frames,
    which the next run recomputes).
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

    existing = _repair(str(out_path))
    _check_consistent(existing, structures)
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
                   method, kw)

    writer = _Appender(str(out_path), fsync=fsync)
    bar = tqdm(total=len(todo), disable=not progress, desc=f"{method} -> {os.path.basename(str(out_path))}",
               unit="struct")
    pool = None
    try:
        if workers is None or workers <= 1 or len(todo) <= 1:
            results = map(_task, tasks())
        else:
            ctx = mp.get_context("spawn")
            with _thread_env():
                pool = ctx.Pool(int(workers), initializer=_worker_init)
            results = pool.imap(_task, tasks(), chunksize=max(1, int(chunksize)))
        for index, e, f, err, dt in results:
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
                writer.write(_output_atoms(structures[index], index, e, f, ref_method,
                                           settings))
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


# --------------------------------------------------------------------------- generate

SYSTEMS = ("cumulene", "sn2", "charge-transfer", "nacl")


def generate(system: str, n: int, out: str, method: str = "gfn2-xtb", workers: int = 1,
             seed: int = 0, progress: bool = True, electronic_temperature: float = 300.0,
             **kwargs) -> LabelReport:
    """Make ``n`` structures of ``system`` with ``seed`` and label them into ``out``.

    ``system``: ``"cumulene"`` (kwargs ``n_carbons`` = chain lengths, default 3..12; ``n``
    split evenly over them), ``"sn2"``, ``"charge-transfer"``, ``"nacl"`` (analytic labels,
    ``method`` ignored). Other kwargs go to the recipe. Re-running the same call resumes.
    """
    from . import systems as S

    system = system.lower().replace("_", "-")
    if system == "cumulene":
        lengths = list(kwargs.pop("n_carbons", range(3, 13)))
        L = len(lengths)
        counts = [n // L + (1 if i < n % L else 0) for i in range(L)]
        structs = S.cumulene_structures(lengths, counts, seed=seed, **kwargs)
    elif system == "sn2":
        structs = S.sn2_structures(n, seed=seed, **kwargs)
    elif system in ("charge-transfer", "chargetransfer", "ct"):
        structs = S.charge_transfer_structures(n, seed=seed, **kwargs)
    elif system == "nacl":
        from .nacl import nacl_structures

        structs = nacl_structures(n, seed=seed, **kwargs)
        method = "nacl-analytic"
    else:
        raise ValueError(f"unknown system {system!r}; choose from {SYSTEMS}")
    return label_structures(structs, out, method=method, workers=workers,
                            electronic_temperature=electronic_temperature, progress=progress)
