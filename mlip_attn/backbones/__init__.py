"""Backbones: local message passing (PaiNN, EGNN) and the graph-free transformer."""
from .egnn import EGNN
from .painn import PaiNN
from .transformer import TransformerBackbone, random_rotation

__all__ = ["EGNN", "PaiNN", "TransformerBackbone", "random_rotation"]
