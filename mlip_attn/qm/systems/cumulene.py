"""Cumulenes H2C=(C=)k=CH2: the relative orientation of the two CH2 ends sets the energy.

One terminal CH2 is rotated about the chain axis (0° = planar, 90° = perpendicular): odd chains
have a perpendicular minimum (allene), even chains a planar one (butatriene); the barrier falls
from ~55 kcal/mol (3 carbons) to ~15 (12) in GFN2-xTB. From 6 carbons on the ends are further
apart than a 2-layer, 4 Å local model sees. Ground states are GFN2-xTB-optimised (cached in
memory per process, so asking for more structures does not optimise again).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from ase import Atoms

from ...registry import REFERENCE_SYSTEMS
from .base import (HeldOut, Protocol, ReferenceSystem, distort_chain, energies, finish, label,
                   make_rng, plot_panels, xtb_optimise)

_GROUND_STATES: dict[tuple, Atoms] = {}

_CC_END = 1.31     # terminal C=C (Angstrom), initial guess only
_CC_IN = 1.28      # inner C=C
_CH = 1.09
_HCH = 117.0       # degrees


def _cumulene_guess(n_carbons: int, torsion_deg: float) -> Atoms:
    """H2C=(C=)k=CH2 along z; atoms C0..C{n-1}, then H,H on C0 and H,H on C{n-1}."""
    if n_carbons < 2:
        raise ValueError("a cumulene needs at least 2 carbons")
    z = [0.0]
    for i in range(1, n_carbons):
        z.append(z[-1] + (_CC_END if i in (1, n_carbons - 1) else _CC_IN))
    pos = [[0.0, 0.0, zi] for zi in z]
    half = math.radians(_HCH / 2.0)
    rho, dz = _CH * math.sin(half), _CH * math.cos(half)
    for s in (1, -1):
        pos.append([s * rho, 0.0, -dz])
    phi = math.radians(torsion_deg)
    for s in (1, -1):
        pos.append([s * rho * math.cos(phi), s * rho * math.sin(phi), z[-1] + dz])
    return Atoms(f"C{n_carbons}H4", positions=pos)


def _terminal_groups(atoms: Atoms):
    """Return ((c_a, [h, h]), (c_b, [h, h])): the two CH2 ends of a cumulene-like chain."""
    num = atoms.numbers
    pos = atoms.positions
    c_idx = np.where(num == 6)[0]
    h_idx = np.where(num == 1)[0]
    if len(c_idx) < 2 or len(h_idx) < 4:
        raise ValueError("torsion_angle needs a H2C...CH2 chain (>= 2 C, 4 H)")
    d = np.linalg.norm(pos[h_idx][:, None, :] - pos[c_idx][None, :, :], axis=-1)
    owner = c_idx[np.argmin(d, axis=1)]
    groups = {}
    for h, c in zip(h_idx, owner):
        groups.setdefault(int(c), []).append(int(h))
    ends = [(c, hs) for c, hs in groups.items() if len(hs) == 2]
    if len(ends) != 2:
        raise ValueError("could not find exactly two CH2 end groups")
    # order: the end group closest to the first carbon first
    ends.sort(key=lambda e: np.linalg.norm(pos[e[0]] - pos[c_idx[0]]))
    return ends[0], ends[1]


def torsion_angle(atoms: Atoms) -> float:
    """End-to-end H2C...CH2 torsion in degrees, folded to [0, 90] (0 = planar).

    The angle between the two H-H vectors projected onto the plane perpendicular to
    the axis through the two terminal carbons.
    """
    (ca, ha), (cb, hb) = _terminal_groups(atoms)
    pos = atoms.positions
    axis = pos[cb] - pos[ca]
    axis = axis / np.linalg.norm(axis)

    def proj(v):
        v = v - np.dot(v, axis) * axis
        return v / np.linalg.norm(v)

    u = proj(pos[ha[1]] - pos[ha[0]])
    w = proj(pos[hb[1]] - pos[hb[0]])
    c = min(1.0, abs(float(np.dot(u, w))))
    return math.degrees(math.acos(c))


def rotate_terminal_group(atoms: Atoms, angle_deg: float) -> Atoms:
    """Copy of ``atoms`` with the H atoms of the second CH2 end rigidly rotated by
    ``angle_deg`` about the axis through the two terminal carbons."""
    (ca, _), (cb, hb) = _terminal_groups(atoms)
    out = atoms.copy()
    pos = out.positions
    axis = pos[cb] - pos[ca]
    axis = axis / np.linalg.norm(axis)
    th = math.radians(angle_deg)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rot = np.eye(3) + math.sin(th) * k + (1 - math.cos(th)) * (k @ k)
    for h in hb:
        pos[h] = pos[cb] + rot @ (pos[h] - pos[cb])
    out.positions = pos
    return out


def cumulene_ground_state(n_carbons: int, optimise: bool = True, fmax: float = 0.01,
                          steps: int = 500) -> Atoms:
    """xTB-optimised H2C=(C=)k=CH2 ground state (odd n: perpendicular, even n: planar).

    Cached in memory per (n_carbons, optimise, fmax).
    """
    key = (int(n_carbons), bool(optimise), float(fmax))
    if key not in _GROUND_STATES:
        guess = _cumulene_guess(n_carbons, 90.0 if n_carbons % 2 else 0.0)
        a = xtb_optimise(guess, 0, fmax, steps) if optimise else guess
        _GROUND_STATES[key] = a
    return _GROUND_STATES[key].copy()


def _set_torsion(ground: Atoms, torsion_deg: float) -> Atoms:
    # ground-state torsion is 0 or 90 (by symmetry); rotate the second end to reach target
    t0 = torsion_angle(ground)
    t0 = 90.0 if t0 > 45.0 else 0.0
    return rotate_terminal_group(ground, torsion_deg - t0)


def _cumulene_info(n_carbons: int, torsion_deg: float, **extra) -> dict:
    info = {
        "config_type": "cumulene_torsion",
        "system": "cumulene",
        "total_charge": 0,
        "n_carbons": int(n_carbons),
        "torsion_deg": float(torsion_deg),
    }
    info.update(extra)
    return info


def cumulene_torsion_scan(n_carbons: int, angles_deg: Iterable[float], optimise: bool = True,
                          fmax: float = 0.01) -> list[Atoms]:
    """Rigid rotation of one terminal CH2 of the optimised ground state (no rattle).

    ``angles_deg`` are absolute torsions (0 = planar, 90 = perpendicular). The rigid
    barrier is ``|E(0) - E(90)|``.
    """
    ground = cumulene_ground_state(n_carbons, optimise=optimise, fmax=fmax)
    out = []
    for ang in angles_deg:
        a = _set_torsion(ground, float(ang))
        out.append(finish(a, _cumulene_info(n_carbons, float(ang), rattle=0.0, scan=True)))
    return out


def cumulene_structures(n_carbons: Sequence[int], n_per_length: int | Sequence[int], seed=0,
                        rattle: float | tuple[float, float] = 0.03, bend: float = 0.0,
                        stretch: float = 0.0, optimise: bool = True, fmax: float = 0.01,
                        scan_fraction: float = 0.5) -> list[Atoms]:
    """Rotated and distorted cumulenes.

    For each chain length, ``n_per_length`` structures (an int, or one count per length):
    a fraction ``scan_fraction`` on a regular torsion grid over [0, 90] deg, the rest at
    uniformly random torsions. Every structure is distorted by `distort_chain`: ``rattle``
    (Å, Gaussian per component; a (low, high) pair draws each structure's amplitude uniformly
    from that range), ``bend`` (Å) and ``stretch`` (fraction).
    Tags: ``n_carbons``, ``torsion_deg`` (nominal rigid torsion before the distortion),
    ``rattle`` (the amplitude used).
    """
    rng = make_rng(seed)
    lengths = [int(n) for n in n_carbons]
    counts = ([int(n_per_length)] * len(lengths) if np.isscalar(n_per_length)
              else [int(c) for c in n_per_length])
    if len(counts) != len(lengths):
        raise ValueError("n_per_length must be an int or have one entry per chain length")
    low, high = (rattle, rattle) if np.isscalar(rattle) else (float(rattle[0]), float(rattle[1]))
    out: list[Atoms] = []
    for nc, m in zip(lengths, counts):
        if m <= 0:
            continue
        ground = cumulene_ground_state(nc, optimise=optimise, fmax=fmax)
        n_scan = int(round(scan_fraction * m))
        angles = list(np.linspace(0.0, 90.0, n_scan)) if n_scan > 1 else [0.0] * n_scan
        angles += list(rng.uniform(0.0, 90.0, m - n_scan))
        for ang in angles:
            amplitude = low if low == high else float(rng.uniform(low, high))
            a = distort_chain(_set_torsion(ground, float(ang)), rng, amplitude, bend, stretch)
            out.append(finish(a, _cumulene_info(nc, float(ang), rattle=amplitude)))
    return out


# the distortions of every benchmark structure: rattles of 0–0.06 Å, smooth bends up to
# 0.15 Å and ±2 % stretches (MD at 300–600 K visits these)
DISTORTIONS = {"rattle": (0.0, 0.06), "bend": 0.15, "stretch": 0.02}
TRAIN_LENGTHS = (3, 4, 5, 6, 7, 8, 9, 10, 13, 14)
UNSEEN_LENGTHS = (11, 12, 15, 16)
EFA_L2 = {"type": "efa", "vectors": True, "tensors": True, "grid": 50, "d_qk": 16, "d_v": 16}


@REFERENCE_SYSTEMS.register("cumulene", summary="cumulenes H2C=(C=)k=CH2, one end rotated "
                            "and distorted: the torsion barrier is seen across the chain")
class Cumulene(ReferenceSystem):
    """Options of `structures`: ``n_carbons`` (chain lengths, default 3–12; ``n`` is split
    evenly over them) and those of `cumulene_structures`."""

    default_n = 200
    protocols = {
        "lengths": Protocol(
            "train on C3–C10, C13, C14; test on C11, C12, C15, C16 (lengths never trained on)",
            n=3000, data={"n_carbons": list(TRAIN_LENGTHS), **DISTORTIONS},
            held_out={f"C{n}": HeldOut(100, {"n_carbons": [n], **DISTORTIONS}, seed=1000 + n)
                      for n in UNSEEN_LENGTHS},
            backbone={"backbone": "painn", "lmax": 2, "cutoff": 4.0, "layers": 2,
                      "num_basis": 16},
            variants={"local": None, "efa": EFA_L2, "bond-graph": {"type": "bond-graph"},
                      "efa+bond-graph": [EFA_L2, {"type": "bond-graph"}]},
            width=64, reference="efa",
            training={"epochs": 150, "batch_size": 16, "lr": 1e-3, "scheduler": "cosine",
                      "lr_min": 1e-5, "energy_weight": 100.0}),
        "paper": Protocol(
            "the EFA paper's protocol on our data: C9H4 only, 2,000 train / 500 valid / 500 "
            "test; 3 layers, cutoff 4 Å, ℓ ≤ 2 message passing, EFA of degree 1 on every "
            "layer (Lebedev 50, max frequency π, r_max 15 Å)",
            n=3000, data={"n_carbons": [9], **DISTORTIONS}, valid=1 / 6, test=1 / 6,
            backbone={"backbone": "painn", "lmax": 2, "cutoff": 4.0, "layers": 3,
                      "num_basis": 16},
            variants={"local": None,
                      "efa": {"type": "efa", "vectors": True, "grid": 50, "d_qk": 16,
                              "d_v": 16, "b_max": math.pi, "r_max": 15.0}},
            width=64, reference="efa",
            training={"epochs": 100, "batch_size": 16, "lr": 1e-3, "scheduler": "exponential",
                      "lr_min": 1e-5, "energy_weight": 100.0}),
    }
    card_description = (
        "Cumulenes H2C=(C=)k=CH2 of 3–10, 13 and 14 carbons, one CH2 end turned (0–90°), "
        "rattled (0–0.06 Å), bent (up to 0.15 Å) and stretched (±2 %), GFN2-xTB. The relative "
        "orientation of the two ends sets the energy (barrier 15–55 kcal/mol), with a minimum "
        "that alternates with the parity of the chain; the ends are beyond a local model's "
        "reach from about 8 carbons on.")
    card_limits = (
        "Neutral closed-shell cumulenes only (H, C); not for other hydrocarbons.",
        "Isolated molecules (no periodic cells).",
        "Torsion scans near the 90° diradical point inherit GFN2-xTB's error there.")

    def structures(self, n: int, seed: int = 0, n_carbons: Sequence[int] = tuple(range(3, 13)),
                   **options) -> list[Atoms]:
        lengths = list(n_carbons)
        counts = [n // len(lengths) + (1 if i < n % len(lengths) else 0)
                  for i in range(len(lengths))]
        return cumulene_structures(lengths, counts, seed=seed, **options)

    def analysis(self, out: Path, calculators: dict, protocol: str) -> dict:
        """Rigid torsion profiles against xTB: of C9 for the paper's protocol, of every unseen
        length otherwise; the barrier |E(0°) − E(90°)| and whether the minimum is on the
        right side (odd chains perpendicular, even chains planar)."""
        lengths = [9] if protocol == "paper" else list(UNSEEN_LENGTHS)
        angles = np.linspace(0.0, 90.0, 10)
        result: dict = {"angles_deg": angles.tolist(), "lengths": {}}
        curves_per_length = {}
        for n_c in lengths:
            frames = label(cumulene_torsion_scan(n_c, angles), out / f"c{n_c}_scan.xyz")
            ref = np.array([a.info["REF_energy"] for a in frames])
            reference = abs(ref[0] - ref[-1])
            entry = {"reference": _torsion_summary(ref, n_c, reference)}
            curves = {"reference (GFN2-xTB)": (angles, ref - ref.min())}
            for name, calc in calculators.items():
                e = energies(calc, frames)
                entry[name] = _torsion_summary(e, n_c, reference)
                entry[name]["profile_mae_eV"] = float(np.mean(np.abs((e - e[0]) - (ref - ref[0]))))
                curves[name] = (angles, e - e.min())
            result["lengths"][f"C{n_c}"] = entry
            curves_per_length[n_c] = curves
        note = "(trained length)" if protocol == "paper" else "(never trained on)"
        plot_panels(out / f"cumulene_torsion_{protocol}.png",
                    {f"C{n_c}H4 {note}": curves for n_c, curves in curves_per_length.items()},
                    "end-to-end torsion (°)", "energy − minimum (eV)")
        return result

    def card_findings(self, analysis: dict, variant: str) -> list[str]:
        return _card_findings(analysis, variant)


def _card_findings(analysis: dict, variant: str) -> list[str]:
    lines = []
    for length, entry in analysis.get("lengths", {}).items():
        ref, own = entry["reference"], entry.get(variant)
        if own is None:
            continue
        lines.append(f"{length}H4 rigid torsion barrier {own['barrier_eV']:.3f} eV against "
                     f"GFN2-xTB's {ref['barrier_eV']:.3f} eV "
                     f"({100 * (own['barrier_eV'] / ref['barrier_eV'] - 1):+.0f} %); minimum "
                     f"{own['minimum']} ({'right' if own['minimum_right'] else 'wrong'}: "
                     f"{ref['minimum']})")
    return lines


def _torsion_summary(energies: np.ndarray, n_carbons: int, reference_barrier: float) -> dict:
    """Barrier |E(0°) − E(90°)| (eV) and the side of the minimum: "planar", "perpendicular",
    or "flat" when the barrier is under a tenth of the reference's (no side to speak of);
    ``minimum_right``: planar for even chains, perpendicular for odd ones."""
    barrier = float(abs(energies[0] - energies[-1]))
    if barrier < 0.1 * reference_barrier:
        minimum = "flat"
    else:
        minimum = "planar" if energies[0] < energies[-1] else "perpendicular"
    return {"barrier_eV": barrier, "minimum": minimum,
            "minimum_right": minimum == ("planar" if n_carbons % 2 == 0 else "perpendicular")}
