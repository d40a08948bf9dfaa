"""mlip-attn: machine-learning interatomic potentials with global attention.

Public API: `build_model`, `save_model`, `load_model`, `AttnCalculator`. They are imported on
first use, so ``import mlip_attn`` (and worker processes that only need `mlip_attn.qm`) stay
light.
"""
__version__ = "0.1.0"

_LAZY = {
    "build_model": ("mlip_attn.models", "build_model"),
    "load_model": ("mlip_attn.models", "load_model"),
    "save_model": ("mlip_attn.models", "save_model"),
    "AttnCalculator": ("mlip_attn.calculators.ase_calculator", "AttnCalculator"),
}


def __getattr__(name):
    if name in _LAZY:
        import importlib
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'mlip_attn' has no attribute {name!r}")


__all__ = ["AttnCalculator", "build_model", "load_model", "save_model", "__version__"]
