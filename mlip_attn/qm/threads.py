"""OpenMP thread control for the QM codes.

tblite uses OpenMP and is 5–100× slower with more than one thread per process on a small
machine. Worker processes get ``OMP_NUM_THREADS=MKL_NUM_THREADS=OPENBLAS_NUM_THREADS=1`` in
their environment before tblite is imported (`worker_init`, `single_thread_environment`); in
the calling process the OpenMP thread count of the libgomp that tblite uses is set to 1 for
the duration of a calculation and restored afterwards (`single_thread_openmp`).
"""
from __future__ import annotations

import contextlib
import ctypes
import os

THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


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


def worker_init() -> None:
    for k in THREAD_ENV:
        os.environ[k] = "1"
    lib = _libgomp()
    if lib is not None:
        lib.omp_set_num_threads(1)


@contextlib.contextmanager
def single_thread_environment():
    """Temporarily put single-thread settings in os.environ (inherited by spawned workers)."""
    old = {k: os.environ.get(k) for k in THREAD_ENV}
    for k in THREAD_ENV:
        os.environ[k] = "1"
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
