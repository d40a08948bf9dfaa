"""`build_model(model_config)`: the ``model:`` section of a config -> `Potential`."""
from __future__ import annotations

import copy

from torch import nn

from ..backbones import EGNN, PaiNN
from ..backbones.transformer import TransformerBackbone
from .potential import Potential

BACKBONES = {"painn": PaiNN, "egnn": EGNN, "transformer": TransformerBackbone}
MODEL_DEFAULTS = {"backbone": "painn", "cutoff": 5.0, "width": 128, "layers": 3, "num_basis": 20,
                  "attention": None, "targets": []}
ATTENTION_TYPES = ("efa", "transformer")
# keys of the graph-free transformer backbone (`backbone: transformer` only), with defaults
TRANSFORMER_DEFAULTS = {"heads": 4, "bias": "power_law_negative", "fixed": False, "exponent": None,
                        "num_kernels": 32, "mlp_ratio": 4, "coordinate_embedding": False,
                        "direct_forces": False, "layout": "auto"}
# options of `attention: {type: transformer, ...}` (TransformerAttention), with defaults
TRANSFORMER_ATTENTION_DEFAULTS = {"heads": 4, "bias": "power_law_negative", "fixed": False,
                                  "exponent": None, "num_kernels": 32, "layout": "auto"}


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
    unknown = set(cfg) - set(MODEL_DEFAULTS) - set(TRANSFORMER_DEFAULTS) - {"elements", "shift", "scale", "target_mean", "target_std"}
    if unknown:
        raise ValueError(f"model: unknown keys {sorted(unknown)}; allowed: "
                         f"{sorted(set(MODEL_DEFAULTS) | set(TRANSFORMER_DEFAULTS) | {'elements'})}")
    if cfg["backbone"] not in BACKBONES:
        raise ValueError(f"model.backbone: {cfg['backbone']!r} is not one of {sorted(BACKBONES)}")
    if cfg["backbone"] == "transformer":
        _resolve_transformer_backbone(cfg)
    else:
        misplaced = sorted(set(cfg) & set(TRANSFORMER_DEFAULTS))
        if misplaced:
            raise ValueError(f"model.{misplaced[0]}: only for backbone: transformer (the graph-free "
                             f"transformer); for attention in {cfg['backbone']} use model.attention")
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
        if att["type"] == "transformer":  # defaults written out: the model file is explicit
            cfg["attention"] = {"type": "transformer", **TRANSFORMER_ATTENTION_DEFAULTS, **att}
    return cfg


def _resolve_transformer_backbone(cfg: dict) -> None:
    """Defaults and checks of the graph-free transformer keys (in place)."""
    from ..attention.biases import BIAS_TYPES
    from ..attention.transformer import LAYOUTS
    for key, value in TRANSFORMER_DEFAULTS.items():
        cfg.setdefault(key, value)
    for key in ("heads", "num_kernels", "mlp_ratio"):
        if not isinstance(cfg[key], int) or isinstance(cfg[key], bool) or cfg[key] < 1:
            raise ValueError(f"model.{key}: must be a positive integer, got {cfg[key]!r}")
    if isinstance(cfg["width"], int) and cfg["width"] % cfg["heads"]:
        raise ValueError(f"model.heads: {cfg['heads']} does not divide model.width {cfg['width']}")
    if cfg["bias"] not in BIAS_TYPES:
        raise ValueError(f"model.bias: {cfg['bias']!r} is not one of {list(BIAS_TYPES)}")
    if cfg["layout"] not in LAYOUTS:
        raise ValueError(f"model.layout: {cfg['layout']!r} is not one of {list(LAYOUTS)}")
    for key in ("fixed", "coordinate_embedding", "direct_forces"):
        if not isinstance(cfg[key], bool):
            raise ValueError(f"model.{key}: must be true or false, got {cfg[key]!r}")
    if cfg["exponent"] is not None:
        if not cfg["bias"].startswith("power_law") or not isinstance(cfg["exponent"], (int, float)):
            raise ValueError(f"model.exponent: a number, only with a power_law bias, got "
                             f"{cfg['exponent']!r} with bias {cfg['bias']!r}")
        if cfg["bias"] == "power_law_negative" and cfg["exponent"] >= 0:
            raise ValueError(f"model.exponent: power_law_negative needs exponent < 0, "
                             f"got {cfg['exponent']!r}")
        cfg["exponent"] = float(cfg["exponent"])
    if cfg["bias"] == "none" and not cfg["coordinate_embedding"]:
        raise ValueError("model.bias: none sees no positions at all; use a distance bias or "
                         "coordinate_embedding: true")
    if cfg["direct_forces"] and not cfg["coordinate_embedding"]:
        raise ValueError("model.direct_forces: needs coordinate_embedding: true (a force head on "
                         "rotation-invariant features cannot turn with the structure)")
    if cfg["attention"] is not None:
        raise ValueError("model.attention: the transformer backbone is already global; "
                         "leave attention null")


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
    if att["type"] == "transformer":
        from ..attention.transformer import TransformerAttention
        if "r_max" in options:
            raise ValueError("model.attention.r_max: transformer attention has no reach limit "
                             "(it attends to every atom of a structure); remove r_max")
        try:
            return [TransformerAttention(width=cfg["width"], **options) for _ in range(cfg["layers"])]
        except (TypeError, ValueError) as exc:
            raise ValueError(f"model.attention: {exc}") from exc
    raise AssertionError("unreachable")


def is_global(model_config: dict) -> bool:
    """True when some block attends over the whole structure (EFA, transformer attention,
    or the graph-free transformer backbone)."""
    return model_config.get("attention") is not None or model_config.get("backbone") == "transformer"


def build_model(model_config: dict) -> Potential:
    """A fresh `Potential` from the ``model:`` section of a config (see the README)."""
    cfg = resolve_model_config(model_config)
    if cfg["backbone"] == "transformer":
        try:
            backbone = TransformerBackbone(
                num_elements=len(cfg["elements"]), width=cfg["width"], layers=cfg["layers"],
                **{k: cfg[k] for k in TRANSFORMER_DEFAULTS if k != "direct_forces"})
        except ValueError as exc:
            raise ValueError(f"model.{exc}") from exc
    else:
        backbone = BACKBONES[cfg["backbone"]](
            num_elements=len(cfg["elements"]), width=cfg["width"], layers=cfg["layers"],
            cutoff=cfg["cutoff"], num_basis=cfg["num_basis"], global_blocks=_global_blocks(cfg))
    # r_max: the reach of EFA; transformer attention has none (every pair of a structure)
    att = cfg["attention"]
    r_max = float(att["r_max"]) if att and att["type"] == "efa" else 0.0
    targets = cfg["targets"] or []
    if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
        raise ValueError(f"model.targets: a list of per-structure target names, got {targets!r}")
    model = Potential(backbone, cfg["elements"], cfg["width"], cfg["cutoff"],
                      shift=cfg.get("shift"), scale=cfg.get("scale"), r_max=r_max,
                      direct_forces=bool(cfg.get("direct_forces", False)), targets=targets,
                      target_mean=cfg.pop("target_mean", None), target_std=cfg.pop("target_std", None))
    model.invariant = not cfg.get("coordinate_embedding", False)
    cfg.pop("shift", None)
    cfg.pop("scale", None)  # live in the weights from now on
    model.model_config = cfg
    return model
