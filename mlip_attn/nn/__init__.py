"""Shared building blocks: radial bases, cutoffs, embeddings, MLPs."""
from .embedding import AtomEmbedding, ElementIndex
from .mlp import mlp
from .radial import CosineCutoff, SincRadialBasis

__all__ = ["AtomEmbedding", "ElementIndex", "mlp", "CosineCutoff", "SincRadialBasis"]
