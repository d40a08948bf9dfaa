"""Global blocks: Euclidean fast attention and transformer attention with physical biases."""
from .biases import GaussianKernelBias, PowerLawBias, make_bias
from .efa import EuclideanFastAttention, b_max_for_grid, lebedev_grid
from .transformer import TransformerAttention

__all__ = ["EuclideanFastAttention", "lebedev_grid", "b_max_for_grid", "TransformerAttention",
           "PowerLawBias", "GaussianKernelBias", "make_bias"]
