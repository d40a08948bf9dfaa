"""The AOTInductor route of the LAMMPS export: ``torch.export`` + AOTInductor ``.pt2`` packages.

`export_aoti` traces energy, per-atom energies, forces and virial of a model (with the
compiled ``mlip_attn`` ops: the fused PaiNN message and its backward, the cross-rank sums of
EFA, each one graph node with its fake kernel, `mlip_attn.ops.fake`) into one graph with a
dynamic number of atoms and edges, and compiles it ahead of time into a ``.pt2`` package that
the pair style's C++ runner loads (``torch::inductor::AOTIModelPackageLoader``); no TorchScript
anywhere. The package holds the export's metadata (`mlip_attn.lammps.export.lammps_metadata`)
under the key ``metadata.json``.

The compiled function (`AotiLammpsModel`) takes what the pair style has on one rank, as
tensors only, the rank's local atoms apart from the ghost nodes after them (so the local count
is a size, dynamic like the others, never a value the graph would have to read):

* ``local_positions`` (n_local, 3), ``ghost_positions`` (n_ghost, 3) float64 Å;
  ``local_numbers`` (n_local,), ``ghost_numbers`` (n_ghost,) int64; nodes are numbered local
  first, n = n_local + n_ghost;
* ``edge_index`` (2, E) int64, ``shifts`` (E, 3) float64 Å (as
  `mlip_attn.lammps.export.LammpsModel`);
* ``charge``, ``spin`` (1,) float64.

Any of n_local, n_ghost and E may be 0. A physics-2 or -3 model is traced for neutral structures
(`neutral_only`): the pair style refuses a ``charge`` keyword for such a package.

It returns ``energy`` (0-d) of the local atoms, their per-atom energies (n_local,), forces
(n, 3) = -dE_local/dr on every node and the virial (6,) (always computed: it costs one more
small product). All float64. Distributed global models (EFA) always take ``owned = n_local``
(their sums go through ``allreduce_sum``, the identity on one rank, where that is the same
Lebedev sums as the whole structure's). Compiling takes minutes (once per model and dtype).
"""
from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Tuple

import torch
from torch import nn

from ..atomic import atomic_path
from ..models import Potential

METADATA_KEY = "metadata.json"
SUFFIX = ".pt2"


class AotiLammpsModel(nn.Module):
    """Energy, per-atom energies, forces and virial of ``model`` for one LAMMPS rank (see the
    module docstring); ``split``: a distributed global model, whose blocks see ``n_local`` as
    ``Graph.owned`` (the cross-rank sums), else -1 (the plain call)."""

    def __init__(self, model: Potential, split: bool):
        super().__init__()
        self.model = model
        self.split = split

    def forward(self, local_positions: torch.Tensor, ghost_positions: torch.Tensor,
                local_numbers: torch.Tensor, ghost_numbers: torch.Tensor,
                edge_index: torch.Tensor, shifts: torch.Tensor, charge: torch.Tensor,
                spin: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                             torch.Tensor]:
        dtype = self.model.shift.dtype
        n_local = local_positions.shape[0]
        pos = torch.cat([local_positions, ghost_positions]).to(dtype).detach()
        pos.requires_grad_(True)
        numbers = torch.cat([local_numbers, ghost_numbers])
        sh = shifts.to(dtype).detach().requires_grad_(True)
        batch = torch.zeros(pos.shape[0], dtype=torch.long, device=pos.device)
        cell = torch.zeros((1, 3, 3), dtype=dtype, device=pos.device)
        owned = n_local if self.split else -1
        atomic = self.model.atomic_energies(pos, numbers, batch, edge_index, sh, cell,
                                            charge.to(dtype), spin.to(dtype), owned)
        local = atomic[:n_local]
        energy = local.sum()
        g_pos, g_sh = torch.autograd.grad([energy], [pos, sh], materialize_grads=True)
        dedeps = pos.detach().t() @ g_pos + sh.detach().t() @ g_sh       # (3, 3) dE/dε
        w = -0.5 * (dedeps + dedeps.t())
        virial = torch.stack([w[0, 0], w[1, 1], w[2, 2], w[0, 1], w[0, 2], w[1, 2]])
        return (energy.detach().to(torch.float64), local.detach().to(torch.float64),
                (-g_pos).detach().to(torch.float64), virial.detach().to(torch.float64))


def split_inputs(positions: torch.Tensor, numbers: torch.Tensor, edge_index: torch.Tensor,
                 shifts: torch.Tensor, n_local: int, charge: torch.Tensor,
                 spin: torch.Tensor) -> tuple:
    """The compiled function's inputs from the TorchScript route's (nodes local first)."""
    return (positions[:n_local], positions[n_local:], numbers[:n_local], numbers[n_local:],
            edge_index, shifts, charge, spin)


def check_device(device: str) -> torch.device:
    """``device`` (cpu, cuda, cuda:N) for a package, or a ValueError saying why not: the
    package runs on the device it was compiled for, so a CUDA package is compiled where
    torch sees that GPU."""
    try:
        where = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"device {device!r} is not a device name (cpu, cuda or cuda:N)") from exc
    if where.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"device {device}: this torch ({torch.__version__}) sees no CUDA "
                             "device; compile the package on a machine with the GPU it is for")
        if where.index is not None and where.index >= count:
            raise ValueError(f"device {device}: this machine has {count} CUDA device(s)")
    elif where.type != "cpu":
        raise ValueError(f"device {device!r}: packages are compiled for cpu or cuda")
    return where


def example_inputs(model: Potential) -> tuple:
    """Inputs to trace with: a small periodic box of the model's first element, with ghost
    nodes after the local ones (n_local < n), so no size is 0 or 1 (which a trace would
    specialise on)."""
    from ..data import AtomicData
    from ase.build import bulk
    z = int(model.elements[0])
    spacing = 0.9 * float(model.cutoff)
    atoms = bulk("Cu", "sc", a=spacing, cubic=True).repeat((3, 2, 2))
    atoms.numbers[:] = z
    data = AtomicData.from_atoms(atoms).with_graph(model.cutoff)
    positions = data.positions.to(torch.float64)
    ghosts = positions[:7] + 100.0       # far from everything: nodes without edges
    return (positions, ghosts, data.numbers, data.numbers[:7], data.edge_index,
            data.shifts.to(torch.float64), torch.zeros(1, dtype=torch.float64),
            torch.zeros(1, dtype=torch.float64))


def trace(module: AotiLammpsModel, args: tuple) -> torch.export.ExportedProgram:
    """The forces' graph of ``module`` (``make_fx`` runs autograd symbolically, so the graph
    holds the backward: the message's backward op included), exported with dynamic numbers of
    atoms and edges."""
    from torch.fx.experimental import _config as fx_config
    from torch.fx.experimental.proxy_tensor import make_fx
    # no duck shapes: a count equal to a fixed size (3 ghosts, 3 coordinates) must not share
    # its symbol
    with fx_config.patch(use_duck_shape=False):
        traced = make_fx(module, tracing_mode="symbolic", _allow_non_fake_inputs=True)(*args)
    local, ghosts = torch.export.Dim("local", min=0), torch.export.Dim("ghosts", min=0)
    edges = torch.export.Dim("edges", min=0)
    return torch.export.export(traced, args, strict=False, dynamic_shapes=(
        {0: local}, {0: ghosts}, {0: local}, {0: ghosts}, {1: edges}, {0: edges}, None, None))


def compile_package(program: torch.export.ExportedProgram, out_path: Path, meta: dict) -> Path:
    """AOTInductor-compile ``program`` into the package ``out_path`` (.pt2), with ``meta`` as
    its ``metadata.json``; threads follow the caller at run time (``cpp.dynamic_threads``)."""
    configs = {"aot_inductor.metadata": {METADATA_KEY: json.dumps(meta, sort_keys=True)},
               "cpp.dynamic_threads": True}
    with atomic_path(out_path) as tmp, tempfile.TemporaryDirectory() as folder:
        package = Path(folder) / f"model{SUFFIX}"   # AOTInductor wants the suffix
        torch._inductor.aoti_compile_and_package(program, package_path=str(package),
                                                 inductor_configs=configs)
        shutil.move(str(package), tmp)
    return out_path


def neutral_only(model: Potential) -> bool:
    """Take out of ``model`` (in place) the branches that only charged structures take: the
    embedding's fragment charges and the tails between charged fragments (physics ≥ 2). A traced
    graph cannot branch on the total charge's value, and on a neutral structure both branches
    give the same numbers, so the package computes neutral structures exactly and the pair
    style refuses a ``charge`` for it (``neutral_only`` in its metadata). True where the model
    had such a branch."""
    had = False
    for module in model.modules():
        if getattr(module, "fragment_charges", False) is True:
            module.fragment_charges = False
            had = True
    if model.tails:
        model.tails = False
        had = True
    return had


def export_aoti(model: Potential, out_path: str | os.PathLike, meta: dict,
                device: str = "cpu") -> Path:
    """Trace and compile ``model`` (already on the compiled ops, `use_compiled_ops`, in the
    dtype it runs in) into the ``.pt2`` package ``out_path`` for ``device`` (the pair style's
    ``device`` keyword must name the same kind); ``meta`` as for the TorchScript route (its
    ``distributed`` says whether global blocks take ``n_local`` as owned)."""
    where = check_device(device)
    out_path = Path(out_path)
    if out_path.suffix != SUFFIX:
        raise ValueError(f"{out_path}: an AOTInductor package is named *{SUFFIX} (the pair "
                         "style tells the routes apart by the suffix)")
    model = copy.deepcopy(model).eval().requires_grad_(False).to(where)
    if neutral_only(model):
        meta = {**meta, "neutral_only": True}
    module = AotiLammpsModel(model, bool(meta.get("global") and meta.get("distributed")))
    with warnings.catch_warnings():
        # torch's own modules that Inductor imports (torch.utils.mkldnn) still define
        # TorchScript methods and warn about it; this route calls no TorchScript
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\._inductor")
        warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)`",
                                category=FutureWarning)   # torch's own, while packaging
        program = trace(module, tuple(t.to(where) for t in example_inputs(model)))
        return compile_package(program, out_path, {**meta, "device": where.type})


def load_aoti(path: str | os.PathLike):
    """The compiled package at ``path``, callable from Python like `AotiLammpsModel` (the
    compiled ops must be loaded: `mlip_attn.ops.load_ops`)."""
    return torch._inductor.aoti_load_package(str(path))


def read_aoti_metadata(path: str | os.PathLike) -> dict:
    """The export metadata of a ``.pt2`` package (loads it: the ops must be loaded)."""
    text = load_aoti(path).get_metadata().get(METADATA_KEY, "")
    if not text:
        raise ValueError(f"{path}: not an mlip-attn LAMMPS export (no {METADATA_KEY})")
    return json.loads(text)
