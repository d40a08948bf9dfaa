"""Global blocks: Euclidean fast attention and transformer attention with physical biases.

Each module registers its block in `mlip_attn.registry.GLOBAL_BLOCKS`; a new block is a new
module here (contract: `mlip_attn.attention.base.GlobalBlock`).
"""
from .base import GlobalBlock
from .biases import GaussianKernelBias, PowerLawBias, make_bias
from .efa import EuclideanFastAttention, b_max_for_grid, lebedev_grid
from .transformer_attention import TransformerAttention

__all__ = ["GlobalBlock", "EuclideanFastAttention", "lebedev_grid", "b_max_for_grid",
           "TransformerAttention", "PowerLawBias", "GaussianKernelBias", "make_bias"]
