"""The self-contained model file ``model.pt``: weights + model config + metadata.

Layout (a plain dict saved with ``torch.save``; loaded with ``weights_only=True``, so loading
never unpickles code)::

    {"format": "mlip-attn-model", "format_version": 1,
     "model_config": {...},            # the resolved `model:` section; rebuilds the architecture
     "metadata": {"elements": [...], "cutoff": Å, "r_max": Å, "global": bool, "layers": int,
                  "dtype": "float32", "units": {...}, "mlip_attn_version": "...",
                  "smooth": bool, "force_field_safe": bool, ...},
     "state_dict": {...}}
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from .. import __version__
from .builder import build_model
from .potential import Potential

FORMAT = "mlip-attn-model"
FORMAT_VERSION = 1
UNITS = {"energy": "eV", "length": "Å", "forces": "eV/Å", "stress": "eV/Å^3", "charge": "e"}


class ModelFileError(ValueError):
    """A model file that is missing, truncated, foreign or from a newer format."""


def model_metadata(model: Potential, extra: dict | None = None) -> dict:
    cfg = model.model_config
    return {
        "elements": list(model.elements),
        "cutoff": model.cutoff,
        "r_max": model.r_max,
        "global": model.is_global,
        "attention": (cfg.get("attention") or {}).get("type"),
        "backbone": cfg.get("backbone"),
        "layers": cfg.get("layers"),
        "dtype": str(model.shift.dtype).replace("torch.", ""),
        "units": dict(UNITS),
        "conservative": model.conservative,
        "invariant": model.invariant,
        # bond-graph encoders jump when a bond forms or breaks: not a continuous energy
        "encoders": [e["type"] for e in cfg.get("encoders") or []],
        "smooth": model.smooth,
        "force_field_safe": model.smooth and model.conservative,
        "mlip_attn_version": __version__,
        **(extra or {}),
    }


def atomic_save(obj, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename: never half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_model(model: Potential, path: str | os.PathLike, metadata: dict | None = None) -> None:
    """Write ``model`` to ``path`` (atomically). ``metadata`` adds free-form entries (test errors…)."""
    if not model.model_config:
        raise ValueError("save_model needs a model made by build_model (it carries its config)")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    atomic_save({"format": FORMAT, "format_version": FORMAT_VERSION,
                 "model_config": model.model_config,
                 "metadata": model_metadata(model, metadata), "state_dict": state}, path)


def read_model_file(path: str | os.PathLike) -> dict:
    """The raw contents of a model file, checked; errors name the file and the problem."""
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"{path}: no such model file")
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelFileError(
            f"{path}: cannot be read as an mlip-attn model file; it is truncated, corrupt or "
            f"contains non-tensor Python objects ({type(exc).__name__}: {str(exc)[:200]})") from exc
    if not isinstance(content, dict) or content.get("format") != FORMAT:
        hint = ""
        if isinstance(content, dict) and "format" not in content:
            hint = " (it looks like a plain state_dict or another package's checkpoint)"
        raise ModelFileError(f"{path}: not an mlip-attn model file{hint}")
    if int(content.get("format_version", 0)) > FORMAT_VERSION:
        raise ModelFileError(f"{path}: model file format {content['format_version']} is newer than "
                             f"this mlip-attn ({__version__}) reads; upgrade mlip-attn")
    return content


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu",
               dtype: torch.dtype | str | None = None) -> Potential:
    """Rebuild a `Potential` from a model file (in eval mode). ``dtype`` defaults to the saved one."""
    content = read_model_file(path)
    saved = getattr(torch, str(content["metadata"].get("dtype", "float32")), torch.float32)
    model = build_model(content["model_config"]).to(saved)  # float64 weights load unrounded
    try:
        model.load_state_dict(content["state_dict"])
    except RuntimeError as exc:
        raise ModelFileError(f"{path}: weights do not match the stored architecture: {exc}") from exc
    model.metadata = content["metadata"]
    if dtype is None:
        dtype = content["metadata"].get("dtype", "float32")
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    return model.to(device=device, dtype=dtype).eval()
