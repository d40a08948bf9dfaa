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
from pathlib import Path

import torch

from .. import __version__
from ..atomic import atomic_path
from .builder import build_model, legacy_model_config, stored_block_defaults
from .potential import Potential

FORMAT = "mlip-attn-model"
FORMAT_VERSION = 1
UNITS = {"energy": "eV", "length": "Å", "forces": "eV/Å", "stress": "eV/Å^3", "charge": "e"}


def attention_types(attention) -> str | None:
    """The global block type(s) of a model config's ``attention`` ("efa", "efa+bond-graph")."""
    if attention is None:
        return None
    blocks = attention if isinstance(attention, list) else [attention]
    return "+".join(b["type"] for b in blocks)


class ModelFileError(ValueError):
    """A model file that is missing, truncated, foreign or from a newer format."""


def model_metadata(model: Potential, extra: dict | None = None) -> dict:
    cfg = model.model_config
    return {
        "elements": list(model.elements),
        "cutoff": model.cutoff,
        "r_max": model.r_max,
        "global": model.is_global,
        "attention": attention_types(cfg.get("attention")),
        "backbone": cfg.get("backbone"),
        "layers": cfg.get("layers"),
        "dtype": str(model.shift.dtype).replace("torch.", ""),
        "units": dict(UNITS),
        "conservative": model.conservative,
        "invariant": model.invariant,
        # bond-graph encoders jump when a bond forms or breaks: not a continuous energy
        "encoders": [e["type"] for e in cfg.get("encoders") or []],
        "smooth": model.smooth,
        "physics": cfg.get("physics"),
        "force_field_safe": model.smooth and model.conservative,
        "mlip_attn_version": __version__,
        **(extra or {}),
    }


def atomic_save(obj, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename: never half-written
    (see `mlip_attn.atomic`: permissions follow the umask, a killed write's leftover is removed
    by the next write)."""
    with atomic_path(path) as tmp, open(tmp, "xb") as f:
        torch.save(obj, f)


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
    version = content.get("format_version", 0)
    if isinstance(version, bool) or not isinstance(version, int):
        raise ModelFileError(f"{path}: format_version {version!r} is not an integer; the file "
                             f"is damaged or was not written by mlip-attn")
    if version > FORMAT_VERSION:
        raise ModelFileError(f"{path}: model file format {version} is newer than "
                             f"this mlip-attn ({__version__}) reads; upgrade mlip-attn")
    for key in ("model_config", "metadata", "state_dict"):
        if key not in content:
            raise ModelFileError(f"{path}: no {key!r} entry; the file is incomplete or damaged "
                                 f"(an mlip-attn model file holds {_ENTRIES})")
        if not isinstance(content[key], dict):
            raise ModelFileError(f"{path}: {key!r} is a {type(content[key]).__name__}, expected "
                                 f"a mapping; the file is damaged")
    return content


_ENTRIES = "format, format_version, model_config, metadata and state_dict"


def _check_finite_weights(path, state_dict: dict) -> None:
    """A `ModelFileError` naming the first tensor with NaN or inf values (such a model can only
    compute NaN)."""
    for name, value in state_dict.items():
        if torch.is_tensor(value) and value.is_floating_point() and not torch.isfinite(value).all():
            raise ModelFileError(f"{path}: non-finite values in {name} (NaN or inf); the model "
                                 f"diverged in training or the file is damaged")


def resolve_dtype(dtype: torch.dtype | str, where: str) -> torch.dtype:
    """``"float32"``/``"float64"`` (or the torch dtypes) as a torch dtype; a `ValueError`
    naming ``where`` otherwise."""
    if dtype in ("float32", "float64", torch.float32, torch.float64):
        return getattr(torch, dtype) if isinstance(dtype, str) else dtype
    raise ValueError(f"{where}: {dtype!r} is not a supported dtype; use 'float32' or 'float64'")


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu",
               dtype: torch.dtype | str | None = None) -> Potential:
    """Rebuild a `Potential` from a model file (in eval mode). ``dtype`` defaults to the saved one."""
    content = read_model_file(path)
    try:
        saved = resolve_dtype(content["metadata"].get("dtype", "float32"), "metadata.dtype")
    except ValueError as exc:
        raise ModelFileError(f"{path}: {exc}") from exc
    dtype = saved if dtype is None else resolve_dtype(dtype, "dtype")
    config = content["model_config"]
    if "physics" not in config:  # written before the physical contracts: compute as then
        config = legacy_model_config(config)
    config = stored_block_defaults(config)  # options added since: as the file computed then
    try:
        model = build_model(config)
    except (ValueError, TypeError) as exc:
        raise ModelFileError(f"{path}: the stored model_config cannot be built: {exc}") from exc
    model = model.to(saved)  # load the weights at their own precision (float64 unrounded)
    try:
        model.load_state_dict(content["state_dict"])
    except RuntimeError as exc:
        raise ModelFileError(f"{path}: weights do not match the stored architecture: {exc}") from exc
    _check_finite_weights(path, content["state_dict"])
    model.metadata = content["metadata"]
    return model.to(device=device, dtype=dtype).eval()
