"""C² switching functions: the envelopes that make a reach a promise.

``switch(r, r_on, r_off)`` is 1 for r ≤ r_on, 0 for r ≥ r_off and the quintic smoothstep
1 − (10x³ − 15x⁴ + 6x⁵), x = (r − r_on)/(r_off − r_on), between: value, first and second
derivative are continuous at both ends (C²), so an energy built from it has continuous forces
and force derivatives, and anything it multiplies is exactly zero (not small) beyond r_off.
Shapes: any; r, r_on, r_off in the same length unit (Å). A block with a reach r_max switches
its pair interactions off between r_max/2 and r_max (`reach_switch`).
"""
from torch import Tensor



def smoothstep(x: Tensor) -> Tensor:
    """1 − (10x³ − 15x⁴ + 6x⁵) for x clamped to [0, 1]: 1 at 0, 0 at 1, C² at both ends."""
    x = x.clamp(0.0, 1.0)
    return 1.0 - x * x * x * (x * (6.0 * x - 15.0) + 10.0)


def switch(r: Tensor, r_on: float, r_off: float) -> Tensor:
    """1 for r ≤ r_on, 0 for r ≥ r_off, C² in between (``r_off`` > ``r_on`` ≥ 0)."""
    return smoothstep((r - r_on) / (r_off - r_on))


def reach_switch(r: Tensor, r_max: float) -> Tensor:
    """The switch of a block with reach ``r_max``: from r_max/2 to r_max (1 below, 0 beyond)."""
    return switch(r, 0.5 * r_max, r_max)
