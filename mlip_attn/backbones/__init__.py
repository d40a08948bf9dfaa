"""Backbones: local message passing (PaiNN, EGNN) and the graph-free transformer.

Each module registers its backbone in `mlip_attn.registry.BACKBONES`; a new backbone is a new
module here (contract: `mlip_attn.backbones.base.Backbone`).
"""
from .base import Backbone
from .egnn import EGNN
from .graph_free_transformer import TransformerBackbone
from .painn import PaiNN

__all__ = ["Backbone", "EGNN", "PaiNN", "TransformerBackbone"]
