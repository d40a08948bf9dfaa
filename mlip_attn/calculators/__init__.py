"""ASE calculator."""
from .ase_calculator import AttnCalculator, RangeWarning

__all__ = ["AttnCalculator", "RangeWarning"]
