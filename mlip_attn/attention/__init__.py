from .efa import EuclideanFastAttention, b_max_for_grid, lebedev_grid

__all__ = ["EuclideanFastAttention", "lebedev_grid", "b_max_for_grid"]
