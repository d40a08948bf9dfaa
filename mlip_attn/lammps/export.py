"""TorchScript export of a model file for the LAMMPS pair style ``pair_style mlip_attn``.

The exported module (`LammpsModel`) takes what the pair style has on one MPI rank:

* ``positions`` (n, 3) float64 Å: the rank's local atoms first (``n_local`` of them), then the
  ghost atoms the pair style keeps as separate nodes (images of atoms owned by *other* ranks);
* ``numbers`` (n,) int64 atomic numbers;
* ``edge_index`` (2, E) int64 with ``r_ij = positions[j] - positions[i] + shifts[e]`` (messages
  summed at i). Periodic images of local atoms are folded onto the local atom with a non-zero
  shift; explicit ghost atoms have shift zero;
* ``shifts`` (E, 3) float64 Å; ``n_local``; the total ``charge`` and ``spin`` (1,) float64;
* ``compute_virial``;
* ``cell`` (3, 3) float64 Å (format 4): the LAMMPS box, rows a = (xprd, 0, 0),
  b = (xy, yprd, 0), c = (xz, yz, zprd), read from ``domain->h`` at every call (so it follows
  fix npt and change_box); zeros unless the box is periodic in x, y and z. Blocks with a
  reciprocal-space sum (electrostatics) read it; the energy is translation invariant, so the
  box origin is not needed.

It returns ``(energy, atomic_energies, forces, virial)``: the energy (eV, a 0-d tensor) of the
*local* atoms only, their per-atom energies (n_local,), forces (n, 3) = -dE_local/dr on every
node (LAMMPS folds ghost forces back to their owners, newton on), and the virial (6,) in
LAMMPS order xx, yy, zz, xy, xz, yz (eV), W = -(Σ_nodes r ⊗ ∂E/∂r + Σ_edges s ⊗ ∂E/∂s),
the symmetric strain derivative -dE/dε of the rank's energy, with the box strained along
(−hᵀ ∂E/∂h: the k-space part of an Ewald or PME sum, which no pair term carries); zeros
unless ``compute_virial``.
All outputs are float64 whatever the model's dtype. When the structure is split over several
ranks (a global model on several ranks: ``torch.ops.mlip_attn.sums_across_processes()``),
``n_local`` reaches the model as ``Graph.owned``: distributed global blocks (EFA) add only local
atoms into their per-structure sums and complete them across ranks with
``torch.ops.mlip_attn.allreduce_sum``. On one rank ``Graph.owned`` is −1 and the model runs
exactly as in Python; EFA takes the same Lebedev sums either way, so 1 and N ranks agree to
rounding.

Three routes, recorded as ``route`` in the metadata:

* ``aoti``: ``torch.export`` + AOTInductor (`mlip_attn.lammps.aoti`): the forces' graph with
  the compiled ops, compiled ahead of time into a ``.pt2`` package (minutes, once per model
  and dtype), loaded by the pair style's C++ runner; no TorchScript. The file name must end in
  ``.pt2``. The package is compiled for the exporting machine's CPU instruction set;

* ``torchscript+ops`` (the default where it can be built): TorchScript that calls the compiled
  ``mlip_attn`` ops (`mlip_attn.ops`): PaiNN's message (every order) with the eager
  model's recomputing backward, and the cross-rank sums of EFA. Needs a C++ compiler once per torch
  version (the plugin needs one anyway); the file then runs wherever the plugin is built.
* ``torchscript``: plain TorchScript (autograd through the message chunks, slower and more
  memory; global models on one MPI rank only). Chosen with ``route="torchscript"``, or
  automatically, with a warning, where the ops cannot be built.

Metadata (``metadata.json`` in the TorchScript file's extra files) tells the pair style the
cutoff, the element list, the number of message-passing layers, whether the model is global,
whether it supports periodic boxes and whether it can run split over MPI ranks
(``distributed``, else ``not_distributed`` says why).
"""
from __future__ import annotations

import contextlib
import json
import os
import warnings
import zipfile
from pathlib import Path
from typing import List, Tuple

import torch
from torch import nn

from .. import __version__
from ..atomic import atomic_path
from ..attention.base import GlobalBlock, GlobalBlocks
from ..nn.embedding import AtomEmbedding
from ..nn.latent_charges import FlowCharges, UniformCharges
from ..models import Potential, load_model
from ..models.model_file import read_model_file
from ..nn.coulomb import Coulomb

EXPORT_FORMAT = "mlip-attn-lammps"
# 2: route, distributed, Graph.owned; 3: PaiNN's message over a list of orders (the op
# painn_message_orders), split structures asked of sums_across_processes, periodic;
# 4: TorchScript exports take the box (``cell``, metadata ``box_input``), ``needs_box``, and
# ``layers`` counts the ghost hops the model needs (an energy term with a real-space sum adds
# one)
EXPORT_FORMAT_VERSION = 4
METADATA_FILE = "metadata.json"
ROUTES = ("auto", "aoti", "torchscript+ops", "torchscript")


class RankSums(nn.Module):
    """The sums hook of distributed global blocks in a LAMMPS export: an all-reduce over the
    MPI ranks of the pair style (identity outside the plugin), differentiable."""

    def forward(self, partial: torch.Tensor) -> torch.Tensor:
        return torch.ops.mlip_attn.allreduce_sum(partial)


class WholeStructure(nn.Module):
    """Whether the structure is split between processes, on the plain TorchScript route:
    never (global models run on one rank there, and local models do not ask)."""

    def forward(self) -> bool:
        return False


class RankSplit(nn.Module):
    """Whether the structure is split between processes, on the fast route: whether the pair
    style has installed its all-reduce for this call (a global model on several ranks); the
    same answer on every rank."""

    def forward(self) -> bool:
        return torch.ops.mlip_attn.sums_across_processes()


class LammpsModel(nn.Module):
    """The scriptable wrapper the pair style calls (see the module docstring). ``split``
    (`WholeStructure` or `RankSplit`) tells it whether to pass ``n_local`` on as
    ``Graph.owned``."""

    def __init__(self, model: Potential, split: nn.Module | None = None):
        super().__init__()
        self.model = model
        self.split = split if split is not None else WholeStructure()

    def forward(self, positions: torch.Tensor, numbers: torch.Tensor, edge_index: torch.Tensor,
                shifts: torch.Tensor, n_local: int, charge: torch.Tensor, spin: torch.Tensor,
                compute_virial: bool, cell: torch.Tensor
                ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        dtype = self.model.shift.dtype
        pos = positions.to(dtype).detach()
        pos.requires_grad_(True)
        sh = shifts.to(dtype).detach()
        box = cell.to(dtype).detach().reshape(3, 3)
        if compute_virial:
            sh.requires_grad_(True)
            box.requires_grad_(True)
        batch = torch.zeros(pos.shape[0], dtype=torch.long, device=pos.device)
        # one rank holds the whole structure (owned = -1: the eager model's own path);
        # several ranks split it (the same sums, completed across ranks)
        owned = n_local if self.split() else -1
        atomic = self.model.atomic_energies(pos, numbers, batch, edge_index, sh, box.unsqueeze(0),
                                            charge.to(dtype), spin.to(dtype), owned)
        local = atomic[:n_local]
        energy = local.sum()
        inputs: List[torch.Tensor] = [pos]
        if compute_virial:
            inputs.append(sh)
            inputs.append(box)
        grads = torch.autograd.grad([energy], inputs, allow_unused=True)
        g_pos = grads[0]
        if g_pos is None:
            g_pos = torch.zeros_like(pos)
        virial = torch.zeros(6, dtype=torch.float64, device=pos.device)
        if compute_virial:
            g_sh = grads[1]
            if g_sh is None:
                g_sh = torch.zeros_like(sh)
            g_box = grads[2]
            if g_box is None:
                g_box = torch.zeros_like(box)
            # (3, 3) dE/dε: atoms, periodic shifts and the box (rows) strained alike
            dedeps = pos.detach().t() @ g_pos + sh.detach().t() @ g_sh + box.detach().t() @ g_box
            w = -0.5 * (dedeps + dedeps.t())
            virial = torch.stack([w[0, 0], w[1, 1], w[2, 2], w[0, 1], w[0, 2], w[1, 2]]
                                 ).to(torch.float64)
        return (energy.detach().to(torch.float64), local.detach().to(torch.float64),
                (-g_pos).detach().to(torch.float64), virial.detach())


def distribution(model: Potential, compiled_ops: bool) -> tuple[bool, str]:
    """Whether a global ``model`` can run split over MPI ranks, and if not, why not."""
    if not model.is_global:
        return True, ""
    if model.backbone.is_global:
        return False, (f"its backbone {type(model.backbone).__name__} is global itself "
                       "(softmax attention over every atom in every layer)")
    fixed = {type(b).__name__: b.not_distributed for b in model.modules()
             if isinstance(b, GlobalBlock) and not isinstance(b, GlobalBlocks)
             and not b.distributed}
    if fixed:
        return False, "; ".join(f"{name} has no distributed form: {why}"
                                for name, why in sorted(fixed.items()))
    if not compiled_ops:
        return False, ("it was exported as plain TorchScript, without the compiled mlip_attn "
                       "ops that sum over ranks; export it again where `mlip-attn "
                       "build-lammps` works")
    return True, ""


def lammps_metadata(model: Potential, stored: dict | None = None,
                    route: str = "torchscript") -> dict:
    """What the pair style reads: elements, cutoff (Å), layers, global, periodic, route, distributed,
    dtype, versions."""
    stored = dict(stored or getattr(model, "metadata", {}) or {})
    # hops of the ghost shell (layers × cutoff): one per message-passing layer, and one more
    # for an energy term whose real-space sum reads the final charges of neighbours
    layers = len(model.backbone.layers) + int(bool(getattr(
        getattr(model.energy_term, "coulomb", None), "real_space", False)))
    distributed, why_not = distribution(model, route in ("torchscript+ops", "aoti"))
    needs_box = any(getattr(b, "needs_cell", False) for b in model.modules())
    meta = {
        **{k: v for k, v in stored.items() if isinstance(v, (str, int, float, bool, list))},
        "format": EXPORT_FORMAT,
        "format_version": EXPORT_FORMAT_VERSION,
        "route": route,
        "elements": [int(z) for z in model.elements],
        "cutoff": float(model.cutoff),
        "r_max": float(model.r_max),
        "global": model.is_global,
        # blocks with reciprocal-space sums need the box: TorchScript exports take it (format 4)
        "periodic": bool(model.periodic) and (route != "aoti" or not needs_box),
        "box_input": route != "aoti",
        "needs_box": needs_box,
        "distributed": distributed,
        "layers": int(layers),
        "dtype": str(model.shift.dtype).replace("torch.", ""),
        "mlip_attn_version": __version__,
        "model_mlip_attn_version": stored.get("mlip_attn_version", __version__),
        "torch_version": torch.__version__.split("+")[0],
        "units": "metal",
    }
    if why_not:
        meta["not_distributed"] = why_not
    return meta


def use_compiled_ops(model: Potential) -> Potential:
    """Point ``model`` at the compiled ``mlip_attn`` ops (they must be loaded): PaiNN layers
    call ``painn_message_orders``; distributed global blocks, and the Coulomb sums and charge
    heads of an electrostatics model (its energy term included), sum through `RankSums`.
    In place."""
    for module in model.modules():
        if hasattr(module, "compiled_message"):
            module.compiled_message = True
        if isinstance(module, GlobalBlock) and module.distributed and hasattr(module, "sums"):
            module.sums = RankSums()
        if isinstance(module, (Coulomb, FlowCharges, UniformCharges, AtomEmbedding)):
            module.sums = RankSums()
    return model


@contextlib.contextmanager
def torchscript_fallback():
    """Around this package's own calls of TorchScript (``torch.jit.script``, ``save``,
    ``load``): the fallback routes stay while torch ships TorchScript, so torch's deprecation
    warnings about them are silenced there, and only there."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.", category=DeprecationWarning)
        yield


def script(module: nn.Module) -> torch.jit.ScriptModule:
    """``torch.jit.script(module)`` within `torchscript_fallback`."""
    with torchscript_fallback():
        return torch.jit.script(module)


def load_torchscript(path: str | os.PathLike) -> torch.jit.ScriptModule:
    """``torch.jit.load(path)`` (a TorchScript export) within `torchscript_fallback`."""
    with torchscript_fallback():
        return torch.jit.load(str(path))


def script_model(model: Potential, compiled_ops: bool = False) -> torch.jit.ScriptModule:
    """`LammpsModel` around ``model`` (eval mode, frozen), compiled with ``torch.jit.script``;
    ``compiled_ops``: the fast route (the ops must be loaded, see `use_compiled_ops`)."""
    split = RankSplit() if compiled_ops else WholeStructure()
    return script(LammpsModel(model.eval().requires_grad_(False), split))


def _resolve_route(route: str) -> tuple[str, str]:
    """The route to export with (loading the ops if it is the fast one) and a note."""
    if route not in ROUTES:
        raise ValueError(f"route must be one of {ROUTES}, got {route!r}")
    if route == "torchscript":
        return route, ""
    from ..ops.library import try_load_ops
    ok, why = try_load_ops(build=True)
    if ok:
        return ("aoti" if route == "aoti" else "torchscript+ops"), ""
    if route in ("torchscript+ops", "aoti"):
        raise RuntimeError(f"route {route}: the compiled mlip_attn ops are not available: "
                           f"{why}")
    return "torchscript", why


def default_export_path(model_path: str | os.PathLike, route: str = "auto") -> Path:
    """``<model>-lammps.pt``, or ``<model>-lammps.pt2`` for the aoti route."""
    model_path = Path(model_path)
    return model_path.with_name(f"{model_path.stem}-lammps{'.pt2' if route == 'aoti' else '.pt'}")


def export_lammps(model_path: str | os.PathLike, out_path: str | os.PathLike,
                  dtype: str | torch.dtype = "float64", route: str = "auto",
                  device: str = "cpu") -> Path:
    """Export the model file ``model_path`` to a TorchScript file for ``pair_style mlip_attn``.

    ``dtype``: the precision the model runs in inside LAMMPS (``float64``, the default, or
    ``float32``); inputs and outputs are always float64. ``route``: ``auto`` (TorchScript with
    the compiled ops where they can be built, else plain TorchScript with a warning), ``aoti``
    (an AOTInductor package, ``out_path`` ending in ``.pt2``), ``torchscript+ops`` or
    ``torchscript`` (see the module docstring). ``device``: what an ``aoti`` package is
    compiled for (cpu, cuda or cuda:N, where torch sees it); TorchScript files run on any
    device the pair style names. Returns the written path.
    """
    if isinstance(dtype, str):
        if dtype not in ("float64", "float32"):
            raise ValueError(f"dtype must be 'float64' or 'float32', got {dtype!r}")
        dtype = getattr(torch, dtype)
    content = read_model_file(model_path)
    model = load_model(model_path, dtype=dtype)
    if getattr(model, "direct_forces", False):
        raise ValueError(f"{model_path}: the model predicts forces directly (direct_forces: true), "
                         "which is not conservative; the LAMMPS export supports models whose "
                         "forces are -dE/dr only")
    if model.has_encoders and not model.encoders.exportable:
        names = [e["type"] for e in model.model_config.get("encoders", [])]
        raise ValueError(f"{model_path}: the model uses bond-graph encoders ({', '.join(names)}), "
                         "which are discontinuous when bonds form or break and depend on the "
                         "whole molecule (wrong on a LAMMPS rank's partial view); it is a "
                         "property model, not a force field, and is not exported to LAMMPS")
    if (route == "aoti") != (Path(out_path).suffix == ".pt2"):
        raise ValueError(f"{out_path}: the aoti route writes a .pt2 package and only it "
                         f"(the pair style tells the routes apart by the suffix); "
                         f"route {route!r}")
    if route == "aoti" and any(getattr(b, "needs_cell", False) for b in model.modules()):
        raise ValueError(f"{model_path}: its electrostatics block reads the periodic box, which "
                         "the aoti route does not pass (its k-vectors and mesh follow the box); "
                         "export it with --route torchscript+ops")
    if device != "cpu" and route != "aoti":
        raise ValueError(f"device {device!r}: only the aoti route compiles for a device "
                         "(TorchScript files run on the device the pair style names)")
    route, why = _resolve_route(route)
    if why:
        warnings.warn(f"exporting {model_path} as plain TorchScript (slower in LAMMPS; global "
                      f"models on one MPI rank only): the compiled mlip_attn ops are not "
                      f"available ({why})", RuntimeWarning, stacklevel=2)
    if route in ("torchscript+ops", "aoti"):
        use_compiled_ops(model)
    meta = lammps_metadata(model, content.get("metadata"), route)
    meta["source"] = Path(model_path).name
    if route == "aoti":
        from .aoti import export_aoti
        return export_aoti(model, out_path, meta, device)
    scripted = script_model(model, route == "torchscript+ops")
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp, torchscript_fallback():
        torch.jit.save(scripted, str(tmp),
                       _extra_files={METADATA_FILE: json.dumps(meta, sort_keys=True)})
    return out_path


def read_export_metadata(path: str | os.PathLike) -> dict:
    """The metadata stored in an export: a TorchScript file or an AOTInductor ``.pt2``
    package (read from the archive: no torch load, so it works without the compiled ops)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            script = [n for n in names if n.endswith(f"/extra/{METADATA_FILE}")]
            package = [n for n in names if n.endswith("wrapper_metadata.json")
                       and "/data/aotinductor/" in n]
            if script:
                text = archive.read(script[0]).decode()
            elif package:
                text = json.loads(archive.read(package[0]).decode()).get(METADATA_FILE, "")
            else:
                text = ""
    except (zipfile.BadZipFile, OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a TorchScript file or .pt2 package ({exc})") from exc
    if not text:
        raise ValueError(f"{path}: not an mlip-attn LAMMPS export (no {METADATA_FILE})")
    return json.loads(text)
