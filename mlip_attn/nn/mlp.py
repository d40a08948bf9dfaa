"""Small multilayer perceptrons."""
from __future__ import annotations

from torch import nn


def mlp(sizes: list[int], activation: type[nn.Module] = nn.SiLU, zero_last: bool = False) -> nn.Sequential:
    """Linear layers of ``sizes`` with ``activation`` between them (none after the last).

    ``zero_last`` zero-initialises the last layer, so a fresh branch outputs zeros.
    """
    layers: list[nn.Module] = []
    for k in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[k], sizes[k + 1]))
        if k < len(sizes) - 2:
            layers.append(activation())
    if zero_last:
        nn.init.zeros_(layers[-1].weight)
        nn.init.zeros_(layers[-1].bias)
    return nn.Sequential(*layers)
