"""Training configuration: defaults, ``--key value`` overrides, validation naming the key.

The YAML has four sections, ``model``, ``data``, ``training`` and ``output``; keys mirror
constructor arguments. `load_config` returns a fully resolved dict or raises `ConfigError`
before any work is done.
"""
from __future__ import annotations

import copy
import re
from pathlib import Path

import yaml

from ..models.builder import MODEL_DEFAULTS
from .options import TrainingOptions


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-3`` as a float (YAML 1.1 needs ``1.0e-3``)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


def yaml_load(text: str):
    return yaml.load(text, Loader=_Loader)


class ConfigError(ValueError):
    """An invalid configuration; the message names the key path and what is allowed."""


DEFAULTS = {
    "model": dict(MODEL_DEFAULTS),
    "data": {
        "train": None,             # path to extxyz / HDF5 / ASE db
        "valid": 0.1,              # path, or fraction of `train`
        "test": 0.1,               # path, fraction of `train`, or null
        "split_seed": 0,
        "e0s": "least_squares",    # least_squares | isolated | zero | {element: eV}
        "keys": {},                # label keys, see mlip_attn.data.LabelKeys
    },
    "training": TrainingOptions.defaults(),
    "output": "runs/model",
}

def _merge(base: dict, override: dict, path: str = "") -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        where = f"{path}{key}"
        free_form = path.startswith(("model.", "data.keys."))  # checked by their own validators
        if key not in base and not free_form:
            raise ConfigError(f"{where}: unknown key; allowed: {sorted(base)}")
        if isinstance(base.get(key), dict) and isinstance(value, dict) and key != "attention":
            out[key] = _merge(base[key], value, where + ".")
        else:
            out[key] = value
    return out


def parse_overrides(args: list[str]) -> dict:
    """``["--training.epochs", "5", "--model.attention", "null"]`` -> nested dict (YAML values)."""
    out: dict = {}
    it = iter(args)
    for flag in it:
        if not flag.startswith("--"):
            raise ConfigError(f"override {flag!r}: expected --section.key value")
        key = flag[2:]
        if "=" in key:
            key, raw = key.split("=", 1)
        else:
            try:
                raw = next(it)
            except StopIteration:
                raise ConfigError(f"override --{key}: missing value") from None
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml_load(raw)
    return out


def load_config(path: str | Path | None, overrides: list[str] | dict | None = None) -> dict:
    """Read YAML ``path`` (or start from defaults), apply overrides, validate."""
    raw: dict = {}
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"{path}: no such config file")
        try:
            raw = yaml_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: the config must be a mapping with sections "
                              f"model, data, training, output")
    cfg = _merge(DEFAULTS, raw)
    if overrides:
        cfg = _merge(cfg, parse_overrides(overrides) if isinstance(overrides, list) else overrides)
    validate_config(cfg)
    return cfg


def validate_config(cfg: dict) -> None:
    """Raise `ConfigError` naming the first invalid key (``training`` is normalised in place:
    ints where numbers are expected become floats)."""
    from ..models.builder import build_model
    try:
        cfg["training"] = TrainingOptions.check(cfg["training"])
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    data = cfg["data"]
    if not data["train"] or not isinstance(data["train"], str):
        raise ConfigError("data.train: path to the training data file is required")
    for key in ("valid", "test"):
        value = data[key]
        if value is None or isinstance(value, str):
            continue
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value < 1:
            raise ConfigError(f"data.{key}: must be a path, a fraction in [0, 1) or null, got {value!r}")
    fractions = sum(v for v in (data["valid"], data["test"]) if isinstance(v, (int, float)))
    if fractions >= 1:
        raise ConfigError(f"data.valid + data.test: fractions sum to {fractions}, leaving no training data")
    if data["valid"] is None or data["valid"] == 0:
        raise ConfigError("data.valid: a validation set (path or fraction > 0) is needed to pick "
                          "the best model")
    e0s = data["e0s"]
    if not isinstance(e0s, dict) and e0s not in ("least_squares", "isolated", "zero"):
        raise ConfigError(f"data.e0s: {e0s!r} is not one of ['least_squares', 'isolated', 'zero'] "
                          f"or a mapping element -> eV")
    from ..data.labels import LabelKeys
    allowed_keys = set(LabelKeys.__dataclass_fields__)
    bad = set(data["keys"]) - allowed_keys
    if bad:
        raise ConfigError(f"data.keys: unknown label kinds {sorted(bad)}; allowed: {sorted(allowed_keys)}")
    if not isinstance(cfg["output"], str) or not cfg["output"]:
        raise ConfigError("output: must be a directory path")
    model = dict(cfg["model"])
    model.setdefault("elements", None)
    model["elements"] = model["elements"] or ["H"]  # the real list comes from the data
    try:
        build_model(model)  # a throwaway model: every option is checked where it is used
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
