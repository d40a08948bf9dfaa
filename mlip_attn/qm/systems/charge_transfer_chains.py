"""Polyyne chains H–C_n–H and their protonated cations: guess geometries, protonation sites,
xTB ground states, the distortions MD visits, and distances from the protons. Shared by the
charge-transfer system (`charge_transfer`) and its reach analysis (`charge_transfer_reach`).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from ase import Atoms

from .base import xtb_optimise

_GROUND_STATES: dict[tuple, Atoms] = {}

_C_TRIPLE, _C_SINGLE = 1.21, 1.35   # polyyne guess bond lengths (Å)
_CH_TERMINAL = 1.06                 # ≡C–H
_CH = 1.09                          # sp2 C–H of a protonated carbon
_HALF_HCH = 58.5                    # half of the H–C–H angle of a protonated end (degrees)

KINDS = ("neutral", "end", "interior", "ends", "end+interior")
TRAIN_LENGTHS = (6, 8, 10, 14, 18)
HELD_OUT_LENGTHS = (12, 16)
INTERIOR_SITES = (2, 3, 4)
DEEP_SITES = (5, 6, 7, 8)
DEFAULT_MIX = {"neutral": 0.2, "end": 0.2, "interior": 0.25, "ends": 0.15, "end+interior": 0.2}
# distortions MD visits at 300–600 K. Harmonic GFN2-xTB normal modes (translations and
# rotations projected out) give the chain's middle a transverse (bending) RMS amplitude of
# 0.43 Å (C10) and 1.19 Å (C18) at 300 K, 0.60 and 1.68 Å at 600 K (∝ n^1.5, like a free rod),
# so the bend amplitude is drawn up to bend·(n/10)^1.5 Å; bond stretches have RMS 0.023 Å (C≡C)
# and 0.037 Å (C–H) at 600 K, which a rattle of 0–0.06 Å per component (bond RMS up to 0.085 Å)
# covers with its tails; stretches ±2 %
DISTORTIONS = {"rattle": (0.0, 0.06), "bend": 0.8, "stretch": 0.02}
FAR = 8.0   # Å: beyond a 2-layer × 4 Å local model


def polyyne(n_carbons: int) -> Atoms:
    """Linear H–C_n–H guess along z (alternating 1.21/1.35 Å), atoms C0 … C(n−1), H, H."""
    if n_carbons < 2 or n_carbons % 2:
        raise ValueError(f"n_carbons: a polyyne needs an even number of carbons (odd chains "
                         f"are open-shell carbenes), got {n_carbons}")
    z = [0.0]
    for i in range(1, n_carbons):
        z.append(z[-1] + (_C_TRIPLE if i % 2 == 1 else _C_SINGLE))
    pos = [[0.0, 0.0, zi] for zi in z]
    pos += [[0.0, 0.0, -_CH_TERMINAL], [0.0, 0.0, z[-1] + _CH_TERMINAL]]
    return Atoms(f"C{n_carbons}H2", positions=pos)


def _transverse(axis: np.ndarray) -> np.ndarray:
    """A unit vector perpendicular to ``axis`` (deterministic)."""
    e = np.zeros(3)
    e[int(np.argmin(np.abs(axis)))] = 1.0
    p = np.cross(axis, e)
    return p / np.linalg.norm(p)


def add_protons(chain: Atoms, carbons: Sequence[int]) -> Atoms:
    """A copy of the H–C_n–H ``chain`` (atom order C0 … C(n−1), H, H) with a proton on each
    carbon index of ``carbons``, appended last, without relaxing anything: on a terminal carbon
    its H and the proton form an sp2 H–C–H (117°); on an interior carbon the proton sits 1.09 Å
    from it, perpendicular to the chain (all in one plane through the chain's axis)."""
    n = int(np.sum(chain.numbers == 6))
    pos = chain.positions.copy()
    axis = pos[n - 1] - pos[0]
    axis /= np.linalg.norm(axis)
    perp = _transverse(axis)
    added = []
    for c in carbons:
        c = int(c)
        if not 0 <= c < n:
            raise ValueError(f"proton on carbon {c}: the chain has carbons 0–{n - 1}")
        if c in (0, n - 1):
            out = pos[c] - pos[1 if c == 0 else n - 2]
            out /= np.linalg.norm(out)
            side = perp - (perp @ out) * out
            side /= np.linalg.norm(side)
            h = n if c == 0 else n + 1
            th = math.radians(_HALF_HCH)
            pos[h] = pos[c] + _CH * (math.cos(th) * out + math.sin(th) * side)
            added.append(pos[c] + _CH * (math.cos(th) * out - math.sin(th) * side))
        else:
            t = pos[c + 1] - pos[c - 1]
            t /= np.linalg.norm(t)
            side = perp - (perp @ t) * t
            added.append(pos[c] + _CH * side / np.linalg.norm(side))
    out = Atoms(numbers=list(chain.numbers) + [1] * len(added),
                positions=np.vstack([pos] + ([np.array(added)] if added else [])))
    return out


def site_of(carbon: int, n_carbons: int) -> int:
    """Bonds from ``carbon`` to the nearer chain end."""
    return min(int(carbon), n_carbons - 1 - int(carbon))


def proton_carbons(kind: str, n_carbons: int, site: int | None = None) -> tuple[int, ...]:
    """The protonated carbon indices of ``kind`` (see the module docstring) with ``site`` k for
    the interior kinds (``interior``: carbon k; ``end+interior``: carbons 0 and n − 1 − k)."""
    n = n_carbons
    if kind in ("interior", "end+interior"):
        if site is None or not 2 <= site <= n // 2 - 1:
            raise ValueError(f"{kind}: site must be in 2–{n // 2 - 1} for C{n}, got {site}")
    table = {"neutral": (), "end": (0,), "ends": (0, n - 1),
             "interior": (site,), "end+interior": (0, n - 1 - (site or 0))}
    if kind not in table:
        raise ValueError(f"kind: {kind!r} is not one of {list(KINDS)}")
    return tuple(int(c) for c in table[kind])


def _nearest_carbon(atoms: Atoms, index: int) -> int:
    c = np.where(atoms.numbers == 6)[0]
    return int(c[np.argmin(np.linalg.norm(atoms.positions[c] - atoms.positions[index], axis=1))])


def polyyne_ground_state(n_carbons: int, carbons: Sequence[int] = (), optimise: bool = True,
                         fmax: float = 0.01, steps: int = 800) -> Atoms:
    """H–C_n–H with a proton on each of ``carbons`` (charge = their number), GFN2-xTB-optimised
    (or the guess of `add_protons` when ``optimise`` is false). Cached in memory. Raises a
    `RuntimeError` naming the species when the optimisation moves a hydrogen to another carbon
    (the tags would then be wrong)."""
    carbons = tuple(sorted(int(c) for c in carbons))
    key = (int(n_carbons), carbons, bool(optimise), float(fmax))
    if key not in _GROUND_STATES:
        guess = add_protons(polyyne(n_carbons), carbons)
        atoms = xtb_optimise(guess, len(carbons), fmax, steps) if optimise else guess
        owners = [0, n_carbons - 1, *carbons]
        for h, owner in zip(range(n_carbons, len(atoms)), owners):
            if _nearest_carbon(atoms, h) != owner:
                raise RuntimeError(f"C{n_carbons} protonated at carbons {list(carbons)}: the "
                                   f"optimisation moved hydrogen {h} from carbon {owner} to "
                                   f"carbon {_nearest_carbon(atoms, h)}")
        _GROUND_STATES[key] = atoms
    return _GROUND_STATES[key].copy()


def proton_distances(atoms: Atoms) -> np.ndarray:
    """Distance (Å) of every atom from the nearest added proton (the last ``n_protons`` atoms;
    0 for the protons themselves), (N,); all inf when there is none."""
    k = int(atoms.info.get("n_protons", 0))
    if k == 0:
        return np.full(len(atoms), np.inf)
    p = atoms.positions
    return np.min(np.linalg.norm(p[:, None, :] - p[None, len(atoms) - k:, :], axis=-1), axis=1)
