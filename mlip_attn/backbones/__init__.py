"""Local message-passing backbones."""
from .egnn import EGNN
from .painn import PaiNN

__all__ = ["EGNN", "PaiNN"]
