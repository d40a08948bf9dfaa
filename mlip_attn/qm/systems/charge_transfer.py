"""Non-local charge transfer along polyyne chains: where the protons sit changes the far end.

Species, each GFN2-xTB-optimised and then distorted as MD at 300–600 K would distort it, for even
chain lengths n (odd H–C_n–H chains are open-shell carbenes in xTB, a half-filled degenerate
HOMO pair, so they are left out):

======================  ======  ==============================================================
kind                    charge  protons
======================  ======  ==============================================================
``neutral``             0       none: H–C≡C–…–C≡C–H
``end``                 +1      on a terminal carbon (site 0): H2C=C=…, the chain stays linear
``interior``            +1      on carbon k of the chain (site k = bonds to the nearer end,
                                k ≥ 2); the chain bends there (125–140°). At k = 1 xTB moves
                                the proton to the end in short chains, so site 1 is not used
``ends``                +2      on both terminal carbons
``end+interior``        +2      on one terminal carbon and at site k from the other end
======================  ======  ==============================================================

Atom order: the carbons C0 … C(n−1) along the chain, the H of C0, the H of C(n−1), then the
added protons (``n_protons`` of them, last). Tags: ``n_carbons``, ``kind``, ``site`` and
``site2`` (bonds from the protonated carbon to the nearer chain end; −1 when there is no such
proton), ``n_protons``, ``total_charge``, ``rattle``.

**How far the proton reaches, and why the total charge does not tell a local model** (GFN2-xTB,
`proton_effect` and `site_spread` of `charge_transfer_reach`, atoms more than 8 Å from every
proton, i.e. beyond a 2-layer × 4 Å local model):

========  =========  ==========  ========  ===========  ===========  ===============
species   site(s)    far atoms   Σ Δq (e)  mean |ΔF|    max |ΔF|     Δq of the far
                                           (eV/Å)       (eV/Å)       CH group (e)
========  =========  ==========  ========  ===========  ===========  ===============
C8H3⁺     0          3           0.24      0.54         1.05         0.184
C10H3⁺    0          5           0.34      0.72         1.33         0.156
C12H3⁺    0          7           0.41      0.79         1.45         0.135
C14H3⁺    0          9           0.46      0.81         1.52         0.119
C16H3⁺    0          11          0.51      0.81         1.57         0.106
C18H3⁺    0          13          0.54      0.80         1.60         0.096
C14H3⁺    3          6           0.29      0.50         0.81         0.165
C14H3⁺    4          5           0.31      0.68         1.27         0.104
C18H3⁺    3          10          0.40      0.56         0.78         0.140
C18H3⁺    4          9           0.43      0.77         1.46         0.087
C18H4²⁺   0 and 0    6           0.44      0.46         0.60         –
========  =========  ==========  ========  ===========  ===========  ===============

Δ: the charged species at its optimised geometry against the same geometry without the
protons (charge 0); q are Mulliken charges. The positive hole spreads over the whole chain
(0.05 e on every other carbon 22 Å from the proton in C18H3⁺), so the far end's charges and
forces change by up to 1.6 eV/Å. A local model knows the total charge on every atom, but the
hole a far atom carries falls like 1/n (0.18 e on the far CH group of C8H3⁺, 0.10 on that of
C18H3⁺) and depends on the site. `site_spread` puts one proton (charge +1 every time) at sites
0, 2, 3, 4 of one fixed C18 geometry: the 8 atoms more than 8 Å from all four placements have
identical surroundings within 8 Å and the same total charge, so a local model gives each of them
one force whatever the site, yet xTB's forces on them differ by up to 0.21 eV/Å (0.17 eV/Å
over sites 0–8 for the 4 atoms beyond 8 Å from all nine). The energy follows: the energy of
protonation E(charged) − E(neutral) falls like a + b/n with chain length, which a sum of local
terms (at fixed charge: a constant plus a multiple of n) misses at C12, fitted to
C6, C8, C10, C14 and C18, by 0.13 eV (+1, end), 0.19 eV (+1, site 2), 0.46 eV (+2, both ends)
and 0.53 eV (+2, end and site 2).

Ground states are cached in memory per process (asking for more structures does not optimise
again).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
from ase import Atoms

from ...registry import REFERENCE_SYSTEMS
from .base import HeldOut, Protocol, ReferenceSystem, distort_chain, finish, make_rng
from .charge_transfer_chains import (DEEP_SITES, DEFAULT_MIX, DISTORTIONS, INTERIOR_SITES, KINDS,
                                     polyyne_ground_state, proton_carbons, site_of, TRAIN_LENGTHS)


def _sites(kind: str, n_carbons: int, sites: Sequence[int]) -> list[int]:
    """The interior sites of ``sites`` a chain of ``n_carbons`` has (2 ≤ k ≤ n/2 − 1)."""
    if kind not in ("interior", "end+interior"):
        return [-1]
    return [int(k) for k in sites if 2 <= int(k) <= n_carbons // 2 - 1]


def _counts(weights: dict, m: int) -> dict:
    """``m`` split over the kinds in proportion to ``weights`` (largest remainders)."""
    total = sum(weights.values())
    raw = {k: m * w / total for k, w in weights.items()}
    counts = {k: int(math.floor(v)) for k, v in raw.items()}
    for k in sorted(raw, key=lambda k: counts[k] - raw[k])[:m - sum(counts.values())]:
        counts[k] += 1
    return counts


def charge_transfer_structures(n_carbons: Sequence[int], n_per_length: int | Sequence[int],
                               seed=0, kinds: dict | None = None,
                               sites: Sequence[int] = INTERIOR_SITES,
                               rattle: float | tuple[float, float] = DISTORTIONS["rattle"],
                               bend: float = DISTORTIONS["bend"],
                               stretch: float = DISTORTIONS["stretch"],
                               optimise: bool = True) -> list[Atoms]:
    """Distorted polyynes, neutral and protonated (see the module docstring).

    For each chain length (even, ≥ 6), ``n_per_length`` structures (an int or one per length)
    split over ``kinds`` (kind → weight, default `DEFAULT_MIX`; kinds a length cannot have,
    e.g. interior sites of C6 outside ``sites``, are left out there). Interior sites are drawn
    uniformly from ``sites`` (those with 2 ≤ k ≤ n/2 − 1). Each structure is its species' ground
    state distorted by `distort_chain`: a Gaussian rattle (Å per component; a (low, high) pair
    draws each structure's amplitude uniformly), a transverse bend of up to bend·(n/10)^1.5 Å
    and a stretch of ±``stretch``.
    """
    rng = make_rng(seed)
    weights = dict(DEFAULT_MIX if kinds is None else kinds)
    unknown = sorted(set(weights) - set(KINDS))
    if unknown:
        raise ValueError(f"kinds: {unknown[0]!r} is not one of {list(KINDS)}")
    lengths = [int(n) for n in n_carbons]
    counts = ([int(n_per_length)] * len(lengths) if np.isscalar(n_per_length)
              else [int(c) for c in n_per_length])
    if len(counts) != len(lengths):
        raise ValueError("n_per_length: an int or one count per chain length")
    low, high = (rattle, rattle) if np.isscalar(rattle) else (float(rattle[0]), float(rattle[1]))
    out: list[Atoms] = []
    for n, m in zip(lengths, counts):
        if n < 6:
            raise ValueError(f"n_carbons: chains of at least 6 carbons, got {n}")
        possible = {k: w for k, w in weights.items() if w > 0 and _sites(k, n, sites)}
        if not possible:
            raise ValueError(f"C{n}: none of the kinds {sorted(weights)} is possible with "
                             f"sites {list(sites)}")
        for kind, count in _counts(possible, m).items():
            choices = _sites(kind, n, sites)
            for _ in range(count):
                k = int(choices[rng.integers(len(choices))])
                carbons = proton_carbons(kind, n, None if k < 0 else k)
                ground = polyyne_ground_state(n, carbons, optimise=optimise)
                amplitude = low if low == high else float(rng.uniform(low, high))
                atoms = distort_chain(ground, rng, amplitude, bend * (n / 10.0) ** 1.5, stretch)
                site = [site_of(c, n) for c in carbons] + [-1, -1]
                out.append(finish(atoms, {
                    "config_type": "charge_transfer", "system": "charge-transfer",
                    "total_charge": len(carbons), "n_carbons": n, "kind": kind,
                    "site": site[0], "site2": site[1], "n_protons": len(carbons),
                    "rattle": amplitude}))
    return out


STRETCH_RANGE = (1.0, 2.6)   # Å: a C–H from compressed, through its bond window, to broken


def stretch_one_ch(atoms: Atoms, rng: np.random.Generator,
                   r_range: tuple[float, float] = STRETCH_RANGE) -> Atoms:
    """A copy of a chain with one hydrogen, drawn uniformly, moved along its C–H direction to
    a distance from its carbon (the nearest one) drawn uniformly from ``r_range`` Å; tagged
    ``stretched_h`` (its index) and ``ch_distance``. This is the path a bond takes when it
    stretches or breaks in hot MD, through the bond graph's window (1.23–1.44 Å for C–H),
    which distorted ground states never enter."""
    out = atoms.copy()
    hydrogens = np.where(out.numbers == 1)[0]
    carbons = np.where(out.numbers == 6)[0]
    h = int(hydrogens[rng.integers(len(hydrogens))])
    c = int(carbons[np.argmin(np.linalg.norm(out.positions[carbons] - out.positions[h], axis=1))])
    d = out.positions[h] - out.positions[c]
    r = float(rng.uniform(*r_range))
    out.positions[h] = out.positions[c] + r * d / np.linalg.norm(d)
    out.info.update({"stretched_h": h, "ch_distance": r})
    return out


# ------------------------------------------------------------------------ the system

def _held_out(n: int, seed: int, **options) -> HeldOut:
    return HeldOut(n, {**DISTORTIONS, **options}, seed=seed)


LOCAL_BACKBONE = {"backbone": "painn", "cutoff": 4.0, "layers": 2, "num_basis": 16}
EFA = {"type": "efa", "vectors": True, "grid": 50, "d_qk": 16, "d_v": 16}
CHARGES = {"type": "charges"}


@REFERENCE_SYSTEMS.register("charge-transfer", summary="polyynes C6–C18, neutral, protonated "
                            "at an end or inside (+1) or twice (+2): the hole spreads over the "
                            "whole chain, so far atoms depend on the chain length and the site")
class ChargeTransfer(ReferenceSystem):
    """Options of `structures`: ``n_carbons`` (even chain lengths, ``n`` split evenly over
    them; default the training lengths) and those of `charge_transfer_structures`."""

    default_n = 200
    protocols = {
        "lengths": Protocol(
            "train on C6, C8, C10, C14, C18 (neutral, +1 at an end or at sites 2–4, +2); test "
            "on C12 and C16 (never trained on) and on protons deeper inside the chain (sites "
            "5–8 of C14 and C18, never trained on)",
            n=3000, data={"n_carbons": list(TRAIN_LENGTHS), **DISTORTIONS},
            held_out={"C12": _held_out(200, 1012, n_carbons=[12]),
                      "C16": _held_out(200, 1016, n_carbons=[16]),
                      "deep-sites": _held_out(200, 1100, n_carbons=[14, 18],
                                              kinds={"interior": 1.0}, sites=list(DEEP_SITES))},
            backbone=LOCAL_BACKBONE,
            variants={"local": None, "efa": EFA, "charges": CHARGES, "efa+charges": [EFA, CHARGES],
                      "bond-graph": {"type": "bond-graph"},
                      "efa+bond-graph": [EFA, {"type": "bond-graph"}],
                      "electrostatics": {"type": "electrostatics"}},
            width=64, reference="efa",
            training={"epochs": 150, "batch_size": 16, "lr": 1e-3, "scheduler": "cosine",
                      "lr_min": 1e-5, "energy_weight": 100.0}),
    }
    protocols["bonds"] = protocols["lengths"].plus(
        "plus 8 % more structures with one C–H pulled to 1.0–2.6 Å (through the bond window to "
        "broken), the path a hot MD run takes and the distorted ground states never enter",
        stretched=0.08)
    card_description = (
        "Polyynes H–C_n–H with n = 6, 8, 10, 14, 18: neutral, protonated at a terminal carbon "
        "or at sites 2–4 of the chain (+1), at both ends or at one end and an interior site "
        "(+2); GFN2-xTB-optimised, then rattled (0–0.06 Å), bent (up to 0.8·(n/10)^1.5 Å) and "
        "stretched (±2 %), as MD at 300–600 K does. The positive hole spreads over the whole "
        "chain, so the forces and charges of atoms far from the proton depend on the chain "
        "length and the protonation site, which the total charge alone does not tell.")
    card_limits = (
        "Even polyyne chains (C, H) with total charge 0, +1 or +2 (atoms.info['charge']).",
        "Isolated molecules only.",
        "GFN2-xTB's Mulliken picture of the delocalised hole; no DFT validation.")

    def structures(self, n: int, seed: int = 0, n_carbons: Sequence[int] = TRAIN_LENGTHS,
                   stretched: float = 0.0, **options) -> list[Atoms]:
        """``n`` structures split evenly over ``n_carbons``; ``stretched``: round(stretched ×
        n) more after them, drawn the same way (another seed) with one C–H pulled to 1.0–2.6 Å
        (`stretch_one_ch`)."""
        if not 0.0 <= stretched <= 1.0:
            raise ValueError(f"stretched: a fraction of n in [0, 1], got {stretched}")

        def draw(m: int, s: int) -> list[Atoms]:
            lengths = list(n_carbons)
            counts = [m // len(lengths) + (1 if i < m % len(lengths) else 0)
                      for i in range(len(lengths))]
            return charge_transfer_structures(lengths, counts, seed=s, **options)
        out = draw(n, seed)
        extra = int(round(stretched * n))
        if extra:
            rng = make_rng(seed + 7919)
            for atoms in draw(extra, seed + 7919):
                s_atoms = stretch_one_ch(atoms, rng)
                s_atoms.info["config_type"] = "charge_transfer_stretch"
                out.append(s_atoms)
        return out

    def analysis(self, out: Path, calculators: dict, protocol: str) -> dict:
        """On every held-out set: energy RMSE (overall and per chain length and kind), force
        MAE on atoms more than `FAR` Å from the nearest proton (the target metric), and the
        force error against distance from the proton (plot ``charge_transfer_forces.png``);
        and on the held-out lengths how well each variant follows the far atoms' force change
        when the proton moves at fixed charge (`charge_transfer_reach.analyse`)."""
        from .charge_transfer_reach import analyse
        return analyse(out, calculators, list(self.protocols[protocol].held_out))

    def card_findings(self, analysis: dict, variant: str) -> list[str]:
        """Per held-out set: the force MAE of atoms more than `FAR` Å from the nearest proton
        and the energy RMSE overall and per chain length and kind; then how well the model
        follows a proton moving at fixed charge (`charge_transfer_reach.findings`)."""
        from .charge_transfer_reach import findings
        return findings(analysis, variant)
