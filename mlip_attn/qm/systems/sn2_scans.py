"""SN2 X⁻ + CH3Y geometry: the reaction coordinate ξ = r(C–Y) − r(C–X), relaxed ξ scans (GFN2-xTB,
cached per process), and how far each pair's free halide may go (`ION_REACH`; why: the
`mlip_attn.qm.systems.sn2` module docstring). Shared by the system (`sn2`) and its analysis
(`sn2_analysis`).

Atom order: X (the nucleophile; the free ion in approach structures), C, Y, H, H, H.
"""
from __future__ import annotations

import math
from typing import Iterable

import numpy as np
from ase import Atoms

from .base import finish, xtb_optimise

_SCAN_POINTS: dict[tuple, Atoms] = {}

_R_CX = {"Cl": 1.80, "Br": 1.95}     # C-halogen bond length guesses (Angstrom)
_R_XTB = {"Cl": 1.78, "Br": 1.93}    # GFN2-xTB C-halogen bond lengths of CH3X (Angstrom)
PAIRS = (("Cl", "Cl"), ("Cl", "Br"), ("Br", "Cl"), ("Br", "Br"))
# largest distance (Å) of a free halide from the carbon of a methyl halide, (ion, halogen of
# the molecule): beyond it xTB leaks charge onto CH3Br (see the module docstring)
ION_REACH = {("Cl", "Cl"): 12.0, ("Br", "Cl"): 12.0, ("Cl", "Br"): 8.0, ("Br", "Br"): 5.0}


def sn2_xi(atoms: Atoms) -> float:
    """xi = r(C-Y) - r(C-X) for an SN2 structure from this module (X = atom 0,
    C = atom 1, Y = atom 2)."""
    p = atoms.positions
    return float(np.linalg.norm(p[2] - p[1]) - np.linalg.norm(p[0] - p[1]))


def _sn2_guess(x: str, y: str, xi: float) -> Atoms:
    """Collinear X ... C ... Y along z (X at -z, Y at +z), CH3 umbrella interpolated."""
    r0x, r0y = _R_CX[x], _R_CX[y]
    # r_CX + r_CY ~ r0x + r0y + sqrt(xi^2 + 1) (TS: both ~0.5 A longer than bonds)
    s = r0x + r0y - 1.0 + math.sqrt(xi * xi + 1.0)
    r_cy = 0.5 * (s + xi)
    r_cx = 0.5 * (s - xi)
    # H-C-Y angle: 108.5 (CH3Y, xi<0) -> 90 (TS) -> 71.5 (XCH3, xi>0)
    ang = math.radians(90.0 + 18.5 * math.tanh(-xi / 0.6))
    pos = [[0.0, 0.0, -r_cx], [0.0, 0.0, 0.0], [0.0, 0.0, r_cy]]
    for k in range(3):
        phi = 2 * math.pi * k / 3
        pos.append([1.09 * math.sin(ang) * math.cos(phi), 1.09 * math.sin(ang) * math.sin(phi),
                    1.09 * math.cos(ang)])
    return Atoms([x, "C", y, "H", "H", "H"], positions=pos)


def _sn2_relaxed(x: str, y: str, xi: float, fmax: float, steps: int) -> Atoms:
    """Constrained GFN2-xTB optimisation at fixed xi from the analytic guess (pure
    function of its arguments, cached in memory)."""
    from ase.constraints import FixInternals

    key = (x, y, round(float(xi), 6), float(fmax), int(steps))
    if key not in _SCAN_POINTS:
        a = _sn2_guess(x, y, xi)
        a.set_constraint(FixInternals(bondcombos=[[float(xi), [[1, 2, 1.0], [1, 0, -1.0]]]]))
        a = xtb_optimise(a, -1, fmax, steps)
        a.set_constraint()
        _SCAN_POINTS[key] = a
    return _SCAN_POINTS[key].copy()


def _sn2_info(x: str, y: str, xi: float, **extra) -> dict:
    info = {
        "config_type": "sn2_scan",
        "system": "sn2",
        "total_charge": -1,
        "pair": f"{x}-{y}",
        "nucleophile": x,
        "leaving_group": y,
        "xi": float(xi),
    }
    info.update(extra)
    return info


def sn2_scan(x: str, y: str, xis: Iterable[float], fmax: float = 0.05, steps: int = 200,
             optimise: bool = True) -> list[Atoms]:
    """Relaxed scan of X- + CH3Y along xi = r(C-Y) - r(C-X) (no rattle; charge -1).

    Atom order: X, C, Y, H, H, H. Each point is a constrained GFN2-xTB optimisation
    (ase ``FixInternals`` bond combination, BFGS to ``fmax`` eV/A) started from an
    analytic collinear guess, so every point depends on (x, y, xi) only (reproducible,
    cached in memory).
    """
    for el in (x, y):
        if el not in _R_CX:
            raise ValueError(f"SN2 halogens must be Cl or Br (xTB fails for F-), got {el!r}")
    out = []
    for xi in xis:
        xi = float(xi)
        a = _sn2_relaxed(x, y, xi, fmax, steps) if optimise else _sn2_guess(x, y, xi)
        out.append(finish(a, _sn2_info(x, y, xi, rattle=0.0, scan=True)))
    return out


def xi_range(x: str, y: str, step: float = 0.25) -> tuple[float, float]:
    """The ξ range of pair (x, y) that keeps the free halide within `ION_REACH` of the carbon:
    reactant side X⁻ + CH3Y, product side Y⁻ + CH3X (multiples of ``step``, inwards)."""
    low = _R_XTB[y] - ION_REACH[(x, y)]
    high = ION_REACH[(y, x)] - _R_XTB[x]
    return math.ceil(low / step) * step, math.floor(high / step) * step


def ion_distance(atoms: Atoms) -> float:
    """Distance (Å) of the free halide from the carbon: the longer of C–X and C–Y."""
    p = atoms.positions
    return float(max(np.linalg.norm(p[0] - p[1]), np.linalg.norm(p[2] - p[1])))
