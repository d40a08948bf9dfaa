"""`build_model(model_config)`: the ``model:`` section of a config -> `Potential`."""
from __future__ import annotations

import copy

from torch import nn

from ..backbones import EGNN, PaiNN
from .potential import Potential

BACKBONES = {"painn": PaiNN, "egnn": EGNN}
MODEL_DEFAULTS = {"backbone": "painn", "cutoff": 5.0, "width": 128, "layers": 3, "num_basis": 20,
                  "attention": None}
ATTENTION_TYPES = ("efa",)


def element_numbers(elements) -> list[int]:
    """Atomic numbers from a list of numbers and/or symbols, sorted and unique."""
    from ase.data import atomic_numbers
    out = set()
    for e in elements:
        if isinstance(e, str):
            if e not in atomic_numbers:
                raise ValueError(f"model.elements: unknown element symbol {e!r}")
            out.add(atomic_numbers[e])
        else:
            z = int(e)
            if not 1 <= z <= 118:
                raise ValueError(f"model.elements: {z} is not an atomic number")
            out.add(z)
    return sorted(out)


def resolve_model_config(model_config: dict) -> dict:
    """Defaults filled in, elements as sorted atomic numbers; errors name the key."""
    cfg = {**MODEL_DEFAULTS, **copy.deepcopy(model_config)}
    unknown = set(cfg) - set(MODEL_DEFAULTS) - {"elements", "shift", "scale"}
    if unknown:
        raise ValueError(f"model: unknown keys {sorted(unknown)}; allowed: "
                         f"{sorted(set(MODEL_DEFAULTS) | {'elements'})}")
    if cfg["backbone"] not in BACKBONES:
        raise ValueError(f"model.backbone: {cfg['backbone']!r} is not one of {sorted(BACKBONES)}")
    if not cfg.get("elements"):
        raise ValueError("model.elements: list the elements the model must know (e.g. [C, H]); "
                         "`mlip-attn fit` fills it in from the training data")
    cfg["elements"] = element_numbers(cfg["elements"])
    for key in ("width", "layers", "num_basis"):
        if not isinstance(cfg[key], int) or cfg[key] < 1:
            raise ValueError(f"model.{key}: must be a positive integer, got {cfg[key]!r}")
    if not isinstance(cfg["cutoff"], (int, float)) or cfg["cutoff"] <= 0:
        raise ValueError(f"model.cutoff: must be a positive number of Å, got {cfg['cutoff']!r}")
    cfg["cutoff"] = float(cfg["cutoff"])
    att = cfg["attention"]
    if att is not None:
        if not isinstance(att, dict) or att.get("type") not in ATTENTION_TYPES:
            raise ValueError(f"model.attention: must be null or a mapping with type in "
                             f"{list(ATTENTION_TYPES)}, got {att!r}")
    return cfg


def _global_blocks(cfg: dict) -> list[nn.Module | None]:
    att = cfg["attention"]
    if att is None:
        return [None] * cfg["layers"]
    options = {k: v for k, v in att.items() if k != "type"}
    if att["type"] == "efa":
        from ..attention.efa import EuclideanFastAttention
        if cfg["backbone"] != "painn" and options.get("vectors"):
            raise ValueError("model.attention.vectors: vector (ℓ=1) EFA needs the painn backbone")
        if "r_max" not in options:
            raise ValueError("model.attention.r_max: EFA needs r_max, the largest distance (Å) "
                             "between two atoms of one structure")
        try:
            return [EuclideanFastAttention(width=cfg["width"], **options) for _ in range(cfg["layers"])]
        except TypeError as exc:
            raise ValueError(f"model.attention: {exc}") from exc
    raise AssertionError("unreachable")


def build_model(model_config: dict) -> Potential:
    """A fresh `Potential` from the ``model:`` section of a config (see the README)."""
    cfg = resolve_model_config(model_config)
    backbone = BACKBONES[cfg["backbone"]](
        num_elements=len(cfg["elements"]), width=cfg["width"], layers=cfg["layers"],
        cutoff=cfg["cutoff"], num_basis=cfg["num_basis"], global_blocks=_global_blocks(cfg))
    r_max = float(cfg["attention"]["r_max"]) if cfg["attention"] else 0.0
    model = Potential(backbone, cfg["elements"], cfg["width"], cfg["cutoff"],
                      shift=cfg.get("shift"), scale=cfg.get("scale"), r_max=r_max)
    cfg.pop("shift", None)
    cfg.pop("scale", None)  # live in the weights from now on
    model.model_config = cfg
    return model
