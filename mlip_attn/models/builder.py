"""`build_model(model_config)`: the ``model:`` section of a config -> `Potential`.

Keys of ``model:``:

- ``backbone``: a name in `mlip_attn.registry.BACKBONES` (``mlip-attn components`` lists them);
- the backbone's own options — its constructor's keywords (``width``, ``layers`` …), with the
  constructor's defaults;
- ``cutoff`` (Å): the neighbour-list cutoff (also the backbone's, where it takes one);
- ``attention``: null (a local model), ``{type: <a GLOBAL_BLOCKS name>, <its options>}`` (one
  block beside every backbone layer), or a list of them (their outputs add up);
- ``elements`` (symbols or numbers; `fit` fills them in from the data), ``targets`` (per-
  structure scalars) and ``classes`` (per-structure class labels, name → number of classes);
- ``encoders``: per-atom input encoders, a list of names in `mlip_attn.registry.ENCODERS` or
  ``{type: <name>, <its options>}`` mappings (``[chemical, {type: laplacian, k: 8}]``).

- ``physics``: which form of the physical contracts the model computes (`PHYSICS`, the
  default, for models built now; 1 for model files written before it — `load_model` sets it
  for files that lack the key, so they compute what they always did). It reaches every
  backbone and global block whose constructor takes a ``physics`` argument (a host argument,
  not a config option of theirs). Version 2: the total charge goes to the atoms of one bonded
  fragment instead of every atom (`mlip_attn.nn.embedding`), EFA without its ω = 0 mode and
  with a C² switch to zero at r_max, attention with a reach and an attention sink, split-charge
  equilibration in the charges block, and the bond graph without its ε force scale (see
  docs/longrange-physics.md). Version 3: as 2, with the fragment charge placed continuously
  inside a fragment whose bonds are forming (`mlip_attn.nn.placement`; version 2 steps there).
  Version 4: as 3, with a cation's charge placed on a many-atom radical first and on a lone
  hydrogen last (`mlip_attn.nn.fragments`: a C–H pulled out of a hydrocarbon cation leaves
  the charge on the chain, not on a bare proton).

Errors name the key (``model.attention.r_max: ...``). The resolved config (every default
written out) is what the model file stores, so it rebuilds the same architecture.
"""
from __future__ import annotations

import copy

from ..attention.base import GlobalBlocks
from ..registry import BACKBONES, ENCODERS, GLOBAL_BLOCKS, PositiveFloat, check_value
from .potential import Potential

# model-level keys with their defaults; any other key is an option of the backbone
MODEL_DEFAULTS = {"backbone": "painn", "cutoff": 5.0, "attention": None, "targets": []}
# model-level keys added later; absent from older configs and model files, which keep loading
OPTIONAL_DEFAULTS = {"encoders": [], "classes": {}}
# the version of the physical contracts (separability, fragment charges, smooth bonds) that new
# models get; model files without a ``physics`` key were written under version 1
PHYSICS = 4
PHYSICS_VERSIONS = (1, 2, 3, 4)
# initial values that `fit` computes from the training data; they live in the weights after
INITIAL_VALUES = ("shift", "scale", "target_mean", "target_std")


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
    """Defaults filled in (the backbone's and the global block's too), elements as sorted
    atomic numbers; errors name the key."""
    cfg = {**MODEL_DEFAULTS, **copy.deepcopy(model_config)}
    backbone = BACKBONES.get(cfg["backbone"], "model.backbone")
    own = (set(MODEL_DEFAULTS) | set(OPTIONAL_DEFAULTS) | {"elements", "physics"}
           | set(INITIAL_VALUES))
    options = backbone.parameters()
    unknown = sorted(set(cfg) - own - set(options))
    if unknown:
        hint = (f" (an option of attention, not of the {cfg['backbone']} backbone: "
                f"use model.attention)" if any(unknown[0] in c.parameters() for c in GLOBAL_BLOCKS)
                else "")
        raise ValueError(f"model.{unknown[0]}: unknown key{hint}; allowed: "
                         f"{sorted(set(MODEL_DEFAULTS) | set(OPTIONAL_DEFAULTS) | {'elements'} | set(options))}")
    cfg["cutoff"] = check_value(cfg["cutoff"], PositiveFloat, "model.cutoff")
    resolved = backbone.resolve({k: v for k, v in cfg.items()
                                 if k in options and k != "cutoff"}, "model")
    cfg.update({k: v for k, v in resolved.items() if k != "cutoff"})
    if not cfg.get("elements"):
        raise ValueError("model.elements: list the elements the model must know (e.g. [C, H]); "
                         "`mlip-attn fit` fills it in from the training data")
    cfg["elements"] = element_numbers(cfg["elements"])
    targets = cfg["targets"] or []
    if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
        raise ValueError(f"model.targets: a list of per-structure target names, got {targets!r}")
    cfg["targets"] = targets
    cfg["classes"] = resolve_classes(cfg.get("classes"), targets)
    cfg["encoders"] = resolve_encoders(cfg.get("encoders"))
    physics = cfg.get("physics", PHYSICS)
    if isinstance(physics, bool) or physics not in PHYSICS_VERSIONS:
        raise ValueError(f"model.physics: one of {list(PHYSICS_VERSIONS)}, got {physics!r}")
    cfg["physics"] = physics
    att = cfg["attention"]
    if att is not None:
        if not backbone.factory.accepts_global_blocks:
            raise ValueError(f"model.attention: the {cfg['backbone']} backbone takes no global "
                             f"blocks (it is already global); leave attention null")
        if isinstance(att, list):
            if not att:
                raise ValueError("model.attention: an empty list; use null for a local model")
            cfg["attention"] = [_resolve_block(a, f"model.attention[{k}]", cfg["cutoff"])
                                for k, a in enumerate(att)]
        else:
            cfg["attention"] = _resolve_block(att, "model.attention", cfg["cutoff"])
    return cfg


def _resolve_block(att, where: str, cutoff: float) -> dict:
    """One global block's config with its defaults filled in; a block class with
    ``resolve_settings(options, cutoff)`` turns its ``auto`` settings into the numbers the
    model file then stores (`mlip_attn.attention.electrostatics.Electrostatics`)."""
    if not isinstance(att, dict) or "type" not in att:
        raise ValueError(f"{where}: must be null, a mapping with a type in "
                         f"{GLOBAL_BLOCKS.names()} or a list of such mappings, got {att!r}")
    block = GLOBAL_BLOCKS.get(att["type"], f"{where}.type")
    options = {k: v for k, v in att.items() if k != "type"}
    resolved = block.resolve(options, where)
    if hasattr(block.factory, "resolve_settings"):
        resolved = block.factory.resolve_settings(resolved, cutoff)
    return {"type": att["type"], **resolved}


def resolve_classes(classes, targets: list) -> dict:
    """``model.classes`` checked: a mapping name → number of classes (≥ 2)."""
    classes = classes or {}
    if not isinstance(classes, dict):
        raise ValueError(f"model.classes: a mapping of class-label names to their number of "
                         f"classes (e.g. {{polar: 2}}), got {classes!r}")
    for name, count in classes.items():
        if not isinstance(name, str) or isinstance(count, bool) or not isinstance(count, int) \
                or count < 2:
            raise ValueError(f"model.classes.{name}: the number of classes must be an integer "
                             f">= 2, got {count!r}")
        if name in targets:
            raise ValueError(f"model.classes.{name}: also listed in model.targets; a label is "
                             f"either a regression target or a class")
    return dict(classes)


def resolve_encoders(encoders) -> list[dict]:
    """``model.encoders`` as a list of ``{type: name, <options with defaults>}``."""
    encoders = encoders or []
    if not isinstance(encoders, list):
        raise ValueError(f"model.encoders: a list of encoder names from {ENCODERS.names()} "
                         f"(or {{type: name, ...}} mappings), got {encoders!r}")
    out, seen = [], set()
    for k, entry in enumerate(encoders):
        where = f"model.encoders[{k}]"
        if isinstance(entry, str):
            entry = {"type": entry}
        if not isinstance(entry, dict) or "type" not in entry:
            raise ValueError(f"{where}: an encoder name from {ENCODERS.names()} or a mapping "
                             f"with a type, got {entry!r}")
        component = ENCODERS.get(entry["type"], f"{where}.type")
        if entry["type"] in seen:
            raise ValueError(f"{where}: encoder {entry['type']!r} is listed twice")
        seen.add(entry["type"])
        options = {key: v for key, v in entry.items() if key != "type"}
        out.append({"type": entry["type"], **component.resolve(options, where)})
    return out


def build_encoders(cfg: dict) -> list:
    """The encoder modules of a resolved config (empty list without encoders)."""
    modules = []
    for k, entry in enumerate(cfg.get("encoders") or []):
        options = {key: v for key, v in entry.items() if key != "type"}
        try:
            modules.append(ENCODERS[entry["type"]].factory(elements=cfg["elements"], **options))
        except ValueError as exc:
            raise ValueError(f"model.encoders[{k}]: {exc}") from exc
    return modules


def _backbone_options(cfg: dict) -> dict:
    """The backbone constructor's keyword arguments from a resolved config."""
    return {k: cfg[k] for k in BACKBONES[cfg["backbone"]].parameters()}


def _global_blocks(cfg: dict, widths: tuple[int, ...], layers: int) -> list:
    """One global block per layer from ``cfg['attention']`` (or Nones for a local model)."""
    att = cfg["attention"]
    if att is None:
        return [None] * layers
    if isinstance(att, list):
        return [GlobalBlocks([blocks[k] for blocks in
                              [_global_blocks({"attention": a, "physics": cfg.get("physics", PHYSICS)},
                                              widths, layers) for a in att]])
                for k in range(layers)]
    factory = GLOBAL_BLOCKS[att["type"]].factory
    options = {k: v for k, v in att.items() if k != "type"}
    options.update(_physics_argument(factory, cfg.get("physics", PHYSICS)))
    try:
        return [factory(widths=widths, **options) for _ in range(layers)]
    except ValueError as exc:
        raise ValueError(f"model.attention.{exc}") from exc


def _physics_argument(factory, physics: int) -> dict:
    """``{"physics": physics}`` for a factory whose constructor takes it, else ``{}`` (plug-in
    components written without it)."""
    import inspect
    target = factory.__init__ if inspect.isclass(factory) else factory
    return {"physics": physics} if "physics" in inspect.signature(target).parameters else {}


def legacy_model_config(model_config: dict) -> dict:
    """The config of a model file written before ``physics`` existed, marked as version 1 (what
    it computed then); options added since take their defaults, which version 1 ignores."""
    cfg = copy.deepcopy(model_config)
    cfg["physics"] = 1
    return cfg


def stored_block_defaults(model_config: dict) -> dict:
    """A model file's config with the options its global blocks lack set to what the file
    computed with when it was written (the block class's ``STORED_DEFAULTS``), not to
    today's defaults."""
    att = model_config.get("attention")
    if att is None:
        return model_config
    cfg = copy.deepcopy(model_config)
    blocks = cfg["attention"] if isinstance(cfg["attention"], list) else [cfg["attention"]]
    for block in blocks:
        if isinstance(block, dict) and block.get("type") in GLOBAL_BLOCKS.names():
            stored = getattr(GLOBAL_BLOCKS[block["type"]].factory, "STORED_DEFAULTS", {})
            for key, value in stored.items():
                block.setdefault(key, value)
    return cfg


def build_model(model_config: dict) -> Potential:
    """A fresh `Potential` from the ``model:`` section of a config (see the module docstring)."""
    cfg = resolve_model_config(model_config)
    component = BACKBONES[cfg["backbone"]]
    options = _backbone_options(cfg)
    layers = options.get("layers", 1)
    blocks = _global_blocks(cfg, component.factory.feature_widths(options), layers)
    try:
        backbone = component.factory(num_elements=len(cfg["elements"]), global_blocks=blocks,
                                     **options, **_physics_argument(component.factory,
                                                                    cfg["physics"]))
    except ValueError as exc:
        raise ValueError(f"model.{exc}") from exc
    initial = {k: cfg.pop(k, None) for k in INITIAL_VALUES}  # they live in the weights from now on
    return Potential(backbone, cfg["elements"], cfg["cutoff"], model_config=cfg,
                     targets=cfg["targets"], classes=cfg["classes"], encoders=build_encoders(cfg),
                     **initial)


def describe_model(model_cfg: dict) -> str:
    """``painn + efa`` / ``egnn + bond-graph, charges`` / ``painn (local)``: the backbone and
    its global blocks, for the run's header."""
    att = model_cfg.get("attention")
    blocks = [a["type"] for a in (att if isinstance(att, list) else [att] if att else [])]
    return f"{model_cfg['backbone']} + {', '.join(blocks)}" if blocks else \
        f"{model_cfg['backbone']} (local)"
