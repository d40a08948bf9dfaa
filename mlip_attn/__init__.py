"""mlip-attn: machine-learning interatomic potentials with global attention.

Public API: `build_model`, `save_model`, `load_model`, `AttnCalculator`.
"""
__version__ = "0.1.0"

from .models import build_model, load_model, save_model  # noqa: E402


def __getattr__(name):
    if name == "AttnCalculator":  # imported lazily: ASE is only needed for the calculator
        from .calculators.ase_calculator import AttnCalculator
        return AttnCalculator
    raise AttributeError(name)


__all__ = ["AttnCalculator", "build_model", "load_model", "save_model", "__version__"]
