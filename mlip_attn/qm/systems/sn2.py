"""Gas-phase SN2 X⁻ + CH3Y → XCH3 + Y⁻ (X, Y ∈ {Cl, Br}, total charge −1).

Relaxed scans along ξ = r(C–Y) − r(C–X) plus rattles: the ion–dipole attraction reaches beyond
a local model's cutoff, so a local model sees a flat asymptote. (xTB's SCF fails for F⁻ far
from the molecule, so F is not offered.) Scan points are constrained GFN2-xTB optimisations,
cached in memory per process.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable

import numpy as np
from ase import Atoms

from ...registry import REFERENCE_SYSTEMS
from .base import (Protocol, ReferenceSystem, energies, finish, label, make_rng,
                   plot, xtb_optimise)

_SCAN_POINTS: dict[tuple, Atoms] = {}

_R_CX = {"Cl": 1.80, "Br": 1.95}     # C-halogen bond length guesses (Angstrom)


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


def sn2_structures(n: int, seed=0, pairs=(("Cl", "Cl"), ("Cl", "Br"), ("Br", "Cl"), ("Br", "Br")),
                   xi_range: tuple[float, float] = (-6.0, 6.0), xi_step: float = 0.25,
                   rattle: float = 0.05, fmax: float = 0.05, optimise: bool = True) -> list[Atoms]:
    """``n`` SN2 structures X- + CH3Y (charge -1) spread round-robin over ``pairs``.

    Per pair the reaction coordinate xi is drawn uniformly from ``xi_range``
    (default -6 A, ion far on the reactant side, through the TS at xi ~ 0 to the
    product side) and snapped to a grid of ``xi_step`` (so the constrained optimisations
    are shared/cached); each structure is the relaxed scan point plus an isotropic
    Gaussian rattle of ``rattle`` Angstrom per component. Tags: ``pair``, ``xi``.
    """
    rng = make_rng(seed)
    pairs = [tuple(p) for p in pairs]
    per_pair: list[list[float]] = [[] for _ in pairs]
    lo, hi = xi_range
    for k in range(n):
        xi = rng.uniform(lo, hi)
        if xi_step:
            xi = round(round(xi / xi_step) * xi_step, 6)
        per_pair[k % len(pairs)].append(float(xi))
    scans = {}
    for (x, y), xis in zip(pairs, per_pair):
        uniq = sorted(set(xis))
        if uniq:
            scans[(x, y)] = dict(zip(uniq, sn2_scan(x, y, uniq, fmax=fmax, optimise=optimise)))
    out = []
    counters = [0] * len(pairs)
    for k in range(n):
        j = k % len(pairs)
        x, y = pairs[j]
        xi = per_pair[j][counters[j]]
        counters[j] += 1
        base = scans[(x, y)][xi]
        pos = base.positions + rng.normal(0.0, rattle, base.positions.shape)
        a = Atoms(base.numbers, positions=pos)
        out.append(finish(a, _sn2_info(x, y, xi, rattle=float(rattle))))
    return out


@REFERENCE_SYSTEMS.register("sn2", summary="SN2 X⁻ + CH3Y (Cl, Br): ion–dipole attraction "
                            "beyond the local cutoff")
class SN2(ReferenceSystem):
    """Options of `structures`: those of `sn2_structures` (pairs, ξ range and step, rattle)."""

    default_n = 200
    protocols = {"default": Protocol("Cl/Br pairs along ξ, rattled", n=600)}
    card_description = (
        "Gas-phase SN2 X⁻ + CH3Y → XCH3 + Y⁻ with X, Y ∈ {Cl, Br}, total charge −1: relaxed "
        "scans along ξ = r(C–Y) − r(C–X) plus 0.05 Å rattles. The ion–dipole attraction "
        "reaches beyond a local model's cutoff.")
    card_limits = (
        "Total charge −1 (atoms.info['charge'] = -1); other charges are extrapolation.",
        "Elements H, C, Cl, Br in these reactions only; no solvent.",
        "Isolated structures only.")

    def structures(self, n: int, seed: int = 0, **options) -> list[Atoms]:
        return sn2_structures(n, seed=seed, **options)

    def analysis(self, out: Path, calculators: dict, protocol: str) -> dict:
        """Energy profile of the relaxed Cl⁻ + CH3Cl scan against xTB."""
        xis = np.linspace(-6.0, 6.0, 25)
        frames = label(sn2_scan("Cl", "Cl", xis), out / "sn2_clcl_scan.xyz")
        ref = np.array([a.info["REF_energy"] for a in frames])
        curves = {"reference (GFN2-xTB)": (xis, ref - ref[0])}
        maes = {}
        for name, calc in calculators.items():
            e = energies(calc, frames)
            curves[name] = (xis, e - e[0])
            maes[name] = float(np.mean(np.abs((e - e[0]) - (ref - ref[0]))))
        plot(out / "sn2_profile.png", "ξ = r(C–Y) − r(C–X) (Å)", "energy − E(ξ = −6 Å) (eV)",
             curves, "Cl⁻ + CH3Cl, relaxed scan")
        return {"profile_mae_eV": maes}
