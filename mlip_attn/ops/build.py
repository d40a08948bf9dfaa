"""Compiling ``libmlip_attn_torch.so``: the ``mlip_attn`` torch ops (``src/ops.cpp``), the fused
CPU loops they call (``src/painn_kernels.cpp``) and the C++ model runner a host program drives
(``src/torch_model.cpp``); and the compile helpers `mlip_attn.lammps.build` shares.

The library needs torch and a C++ compiler only (no LAMMPS), and is built once per torch
version, sources and torch installation into ``<cache>/torch/<torch version>-<hash>/`` (a
library linked against one installation's libtorch does not load once that installation is
gone, e.g. a recreated virtual environment, so each gets its own). Python loads it
(`mlip_attn.ops.library`) for the eager model and the export; the LAMMPS plugin loads the same
file, so the ops register once per process.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path

from ..atomic import atomic_path

SOURCE_DIR = Path(__file__).with_name("src")
INFO_NAME = "build_info.json"
TORCH_LIBRARY_NAME = "libmlip_attn_torch.so"
# written into the library's folder by `mlip_attn.nn.policy` when building it on first use
# failed (the reason), so later processes do not try again; a successful build removes it
FAILED_MARKER = "build_failed.txt"
TORCH_SOURCES = [SOURCE_DIR / n for n in ("ops.cpp", "painn_kernels.cpp", "torch_model.cpp",
                                          "efa_ops.cpp", "efa_kernels.cpp")]
TORCH_HEADERS = [SOURCE_DIR / n for n in ("ops.h", "painn_kernels.h", "kernel_isa.h",
                                          "torch_model.h", "efa_kernels.h")]
# what the library is made of, its cache key: the sources, and this file (the compile flags)
LIBRARY_INPUTS = TORCH_SOURCES + TORCH_HEADERS + [Path(__file__)]
# the fused message loops: vectorised (-O3, the `omp simd` reductions); products and sums
# rounded separately, as ATen's element-wise operations round them (contracting them into fused
# multiply-adds was no faster here and moved float32 forces by up to ~12 roundings from the
# TorchScript export's); painn_kernels.cpp picks its AVX2 / AVX-512 clone at run time; no errno
# from sqrt (nothing reads it), so loops over square roots vectorise
KERNEL_FLAGS = ["-O3", "-ffp-contract=off", "-fno-math-errno", "-fopenmp-simd"]
# EFA's loops have no ATen twin to round alike (the ATen form sums in another order anyway):
# their products and sums contract into fused multiply-adds, one rounding each (the switched
# pair loops ~20% faster)
EFA_KERNEL_FLAGS = KERNEL_FLAGS + ["-ffp-contract=fast"]


class PluginBuildError(RuntimeError):
    """The plugin could not be compiled (compiler, headers or libraries missing)."""


def _dist_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def torch_version() -> str:
    v = _dist_version("torch")
    if v is None:
        raise PluginBuildError("torch is not installed")
    return v


def cache_root() -> Path:
    if os.environ.get("MLIP_ATTN_CACHE"):
        return Path(os.environ["MLIP_ATTN_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mlip_attn"


def _package_dir(name: str) -> Path:
    import importlib.util
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise PluginBuildError(f"the {name!r} package is not installed")
    return Path(list(spec.submodule_search_locations)[0])


def torch_dirs() -> tuple[list[Path], Path]:
    root = _package_dir("torch")
    inc = [root / "include", root / "include" / "torch" / "csrc" / "api" / "include"]
    lib = root / "lib"
    if not (inc[0] / "torch" / "script.h").exists():
        raise PluginBuildError(f"{inc[0]}: torch C++ headers not found")
    return inc, lib


def _compiler() -> str:
    cxx = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    if not cxx:
        raise PluginBuildError("no C++ compiler found (set CXX, or install g++ >= 10)")
    return cxx


def _sources_hash(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for path in paths:
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def install_tag(*packages: str) -> str:
    """A short hash of where ``packages`` are installed (their folders, resolved): the cache key
    part that keeps a library built against one installation from being loaded in another."""
    h = hashlib.sha256()
    for name in packages:
        h.update(str(_package_dir(name).resolve()).encode())
    return h.hexdigest()[:8]


@contextlib.contextmanager
def _lock(folder: Path):
    import fcntl
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _run(cmd: list[str], verbose: bool) -> None:
    if verbose:
        print(" ".join(cmd), file=sys.stderr)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True)
    except OSError as exc:   # e.g. CXX names a compiler that does not exist
        raise PluginBuildError(f"cannot run {cmd[0]}: {exc} (set CXX to a C++ compiler, "
                               f"g++ >= 10)") from exc
    if proc.returncode != 0:
        raise PluginBuildError(f"command failed ({proc.returncode}): {' '.join(cmd)}\n"
                               f"{proc.stderr[-6000:]}")


def _link(cxx: str, objects: list[Path], so: Path, libs: list[str], verbose: bool) -> None:
    """Link ``objects`` into ``so`` atomically (`mlip_attn.atomic.atomic_path`)."""
    with atomic_path(so) as tmp_so:
        _run([cxx, "-shared", "-o", str(tmp_so), *map(str, objects), *libs], verbose)


def _compile(cxx: str, per_file: dict[Path, list[str]], headers: list[Path], force: bool,
             verbose: bool, jobs: int | None) -> list[Path]:
    """Object files of ``per_file`` (source -> flags), compiled in parallel where missing.

    Objects live in one shared folder, keyed by the source, the headers, the compiler and
    flags and the installed versions, so a changed file recompiles only itself.
    """
    obj_dir = cache_root() / "lammps" / "obj"
    obj_dir.mkdir(parents=True, exist_ok=True)
    versions = (torch_version() + (_dist_version("lammps") or "")).encode()
    header_bytes = b"".join(h.read_bytes() for h in headers)
    todo, objects = [], []
    for src, flags in per_file.items():
        key = hashlib.sha256(src.read_bytes() + header_bytes
                             + " ".join([cxx] + flags).encode() + versions).hexdigest()[:16]
        obj = obj_dir / f"{src.stem}-{key}.o"
        objects.append(obj)
        if not obj.exists() or force:
            todo.append((flags, src, obj))

    def compile_one(job):
        flags, src, obj = job
        with atomic_path(obj) as tmp_obj:
            _run([cxx, *flags, "-c", str(src), "-o", str(tmp_obj)], verbose)

    workers = jobs or min(len(todo), os.cpu_count() or 1) or 1
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(compile_one, todo))
    for old in obj_dir.glob("*.o"):   # objects of other sources/versions, unused for a week
        if old not in objects and time.time() - old.stat().st_mtime > 7 * 86400:
            old.unlink(missing_ok=True)
    return objects


def _common_flags() -> list[str]:
    return ["-std=c++20", "-O2", "-fPIC", "-D_GLIBCXX_USE_CXX11_ABI=1", "-DLAMMPS_SMALLBIG",
            "-Wno-deprecated-declarations", f"-I{SOURCE_DIR}"]


def torch_library_dir(torch: str | None = None) -> Path:
    """Folder of ``libmlip_attn_torch.so`` for the installed (or given) torch version, the
    current C++ sources and the torch installation:
    ``<cache>/torch/<torch version>-<sources hash>-<install tag>/``."""
    torch = torch or torch_version()
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", torch)
    return cache_root() / "torch" / (f"{safe}-{_sources_hash(LIBRARY_INPUTS)}"
                                     f"-{install_tag('torch')}")


def build_torch_library(force: bool = False, verbose: bool = False,
                        jobs: int | None = None) -> Path:
    """Compile the torch side (``libmlip_attn_torch.so``: the ``mlip_attn`` ops and the
    TorchScript runner of the pair style; about 40 s on 2 cores, once per torch version) and
    return its path. Needs torch and a C++ compiler only (no LAMMPS): the fast export route
    (`mlip_attn.ops.library`) loads it from Python, the plugin from C++ (the same file)."""
    folder = torch_library_dir()
    so = folder / TORCH_LIBRARY_NAME
    with _lock(folder):
        if so.exists() and not force:
            return so
        t0 = time.perf_counter()
        cxx = _compiler()
        torch_inc, torch_lib = torch_dirs()
        flags = _common_flags() + [f"-I{p}" for p in torch_inc]
        per_file = {src: flags for src in TORCH_SOURCES}
        per_file[SOURCE_DIR / "painn_kernels.cpp"] = flags + KERNEL_FLAGS
        per_file[SOURCE_DIR / "efa_kernels.cpp"] = flags + EFA_KERNEL_FLAGS   # EFA's fused loops
        # at::parallel_for is inlined from ATen's OpenMP header: without -fopenmp it runs on
        # one thread. The OpenMP runtime it links (libgomp.so.1) resolves to torch's own copy
        # (torch/lib, on the rpath and already loaded), so one runtime serves both
        per_file[SOURCE_DIR / "ops.cpp"] = flags + ["-fopenmp"]
        per_file[SOURCE_DIR / "efa_ops.cpp"] = flags + ["-fopenmp"]
        objects = _compile(cxx, per_file, TORCH_HEADERS, force, verbose, jobs)
        _link(cxx, objects, so, [f"-L{torch_lib}", f"-Wl,-rpath,{torch_lib}", "-ltorch",
                                 "-ltorch_cpu", "-lc10", "-fopenmp"], verbose)
        (folder / INFO_NAME).write_text(json.dumps(
            {"torch_version": torch_version(), "sources": _sources_hash(LIBRARY_INPUTS),
             "build_seconds": round(time.perf_counter() - t0, 1), "compiler": cxx,
             "built_at": time.strftime("%Y-%m-%dT%H:%M:%S")}, indent=1, sort_keys=True))
        (folder / FAILED_MARKER).unlink(missing_ok=True)
        return so
