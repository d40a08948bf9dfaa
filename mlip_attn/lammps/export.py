"""TorchScript export of a model file for the LAMMPS pair style ``pair_style mlip_attn``.

The exported module (`LammpsModel`) takes what the pair style has on one MPI rank:

* ``positions`` (n, 3) float64 Å: the rank's local atoms first (``n_local`` of them), then the
  ghost atoms the pair style keeps as separate nodes (images of atoms owned by *other* ranks);
* ``numbers`` (n,) int64 atomic numbers;
* ``edge_index`` (2, E) int64 with ``r_ij = positions[j] - positions[i] + shifts[e]`` (messages
  summed at i). Periodic images of local atoms are folded onto the local atom with a non-zero
  shift; explicit ghost atoms have shift zero;
* ``shifts`` (E, 3) float64 Å; ``n_local``; the total ``charge`` and ``spin`` (1,) float64;
* ``compute_virial``.

It returns ``(energy, atomic_energies, forces, virial)``: the energy (eV, a 0-d tensor) of the
*local* atoms only, their per-atom energies (n_local,), forces (n, 3) = -dE_local/dr on every
node (LAMMPS folds ghost forces back to their owners, newton on), and the virial (6,) in
LAMMPS order xx, yy, zz, xy, xz, yz (eV), W = -(Σ_nodes r ⊗ ∂E/∂r + Σ_edges s ⊗ ∂E/∂s),
the symmetric strain derivative -dE/dε of the rank's energy; zeros unless ``compute_virial``.
All outputs are float64 whatever the model's dtype.

Metadata (``metadata.json`` in the TorchScript file's extra files) tells the pair style the
cutoff, the element list, the number of message-passing layers and whether the model is
global (one MPI rank only).
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import List, Tuple

import torch
from torch import nn

from .. import __version__
from ..atomic import atomic_path
from ..models import Potential, load_model
from ..models.model_file import read_model_file

EXPORT_FORMAT = "mlip-attn-lammps"
EXPORT_FORMAT_VERSION = 1
METADATA_FILE = "metadata.json"


class LammpsModel(nn.Module):
    """The scriptable wrapper the pair style calls (see the module docstring)."""

    def __init__(self, model: Potential):
        super().__init__()
        self.model = model

    def forward(self, positions: torch.Tensor, numbers: torch.Tensor, edge_index: torch.Tensor,
                shifts: torch.Tensor, n_local: int, charge: torch.Tensor, spin: torch.Tensor,
                compute_virial: bool) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                               torch.Tensor]:
        dtype = self.model.shift.dtype
        pos = positions.to(dtype).detach()
        pos.requires_grad_(True)
        sh = shifts.to(dtype).detach()
        if compute_virial:
            sh.requires_grad_(True)
        batch = torch.zeros(pos.shape[0], dtype=torch.long, device=pos.device)
        cell = torch.zeros((1, 3, 3), dtype=dtype, device=pos.device)
        atomic = self.model.atomic_energies(pos, numbers, batch, edge_index, sh, cell,
                                            charge.to(dtype), spin.to(dtype))
        local = atomic[:n_local]
        energy = local.sum()
        inputs: List[torch.Tensor] = [pos]
        if compute_virial:
            inputs.append(sh)
        grads = torch.autograd.grad([energy], inputs, allow_unused=True)
        g_pos = grads[0]
        if g_pos is None:
            g_pos = torch.zeros_like(pos)
        virial = torch.zeros(6, dtype=torch.float64, device=pos.device)
        if compute_virial:
            g_sh = grads[1]
            if g_sh is None:
                g_sh = torch.zeros_like(sh)
            dedeps = pos.detach().t() @ g_pos + sh.detach().t() @ g_sh     # (3, 3) dE/dε
            w = -0.5 * (dedeps + dedeps.t())
            virial = torch.stack([w[0, 0], w[1, 1], w[2, 2], w[0, 1], w[0, 2], w[1, 2]]
                                 ).to(torch.float64)
        return (energy.detach().to(torch.float64), local.detach().to(torch.float64),
                (-g_pos).detach().to(torch.float64), virial.detach())


def lammps_metadata(model: Potential, stored: dict | None = None) -> dict:
    """What the pair style reads: elements, cutoff (Å), layers, global, dtype, versions."""
    stored = dict(stored or getattr(model, "metadata", {}) or {})
    layers = len(model.backbone.layers)  # message-passing hops: the ghost shell is layers × cutoff
    return {
        **{k: v for k, v in stored.items() if isinstance(v, (str, int, float, bool, list))},
        "format": EXPORT_FORMAT,
        "format_version": EXPORT_FORMAT_VERSION,
        "elements": [int(z) for z in model.elements],
        "cutoff": float(model.cutoff),
        "r_max": float(model.r_max),
        "global": model.is_global,
        "layers": int(layers),
        "dtype": str(model.shift.dtype).replace("torch.", ""),
        "mlip_attn_version": __version__,
        "model_mlip_attn_version": stored.get("mlip_attn_version", __version__),
        "torch_version": torch.__version__.split("+")[0],
        "units": "metal",
    }


def script_model(model: Potential) -> torch.jit.ScriptModule:
    """`LammpsModel` around ``model`` (eval mode), compiled with ``torch.jit.script``."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.", category=DeprecationWarning)
        return torch.jit.script(LammpsModel(model.eval()))


def export_lammps(model_path: str | os.PathLike, out_path: str | os.PathLike,
                  dtype: str | torch.dtype = "float64") -> Path:
    """Export the model file ``model_path`` to a TorchScript file for ``pair_style mlip_attn``.

    ``dtype``: the precision the model runs in inside LAMMPS (``float64``, the default, or
    ``float32``); inputs and outputs are always float64. Returns the written path.
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
    meta = lammps_metadata(model, content.get("metadata"))
    meta["source"] = Path(model_path).name
    scripted = script_model(model)
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.", category=DeprecationWarning)
        torch.jit.save(scripted, str(tmp),
                       _extra_files={METADATA_FILE: json.dumps(meta, sort_keys=True)})
    return out_path


def read_export_metadata(path: str | os.PathLike) -> dict:
    """The metadata stored in an exported TorchScript file."""
    files = {METADATA_FILE: ""}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.", category=DeprecationWarning)
        torch.jit.load(str(path), map_location="cpu", _extra_files=files)
    if not files[METADATA_FILE]:
        raise ValueError(f"{path}: not an mlip-attn LAMMPS export (no {METADATA_FILE})")
    return json.loads(files[METADATA_FILE])
