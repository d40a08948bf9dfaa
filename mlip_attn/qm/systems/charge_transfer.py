"""Non-local charge transfer: H–C10–H (charge 0) and C10H3⁺ (+1, a proton added at one end).

Adding the proton changes forces on atoms more than 6 Å away (up to 1.36 eV/Å in xTB) and
the far HC2 group's charge. The geometries are GFN2-xTB-optimised (cached in memory per
process), stretched along the chain and rattled.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from ase import Atoms

from ...registry import REFERENCE_SYSTEMS
from .base import Protocol, ReferenceSystem, finish, make_rng, plot, xtb_optimise
from .cumulene import _CH, _HCH

_GROUND_STATES: dict[tuple, Atoms] = {}

def _polyyne_guess(n_carbons: int = 10, protonated: bool = False) -> Atoms:
    """H-C#C-...-C#C-H along z (alternating 1.21/1.36 A); protonated: the first end is
    H2C= (sp2, H-C-H 117 deg) and the chain is given cumulenic bond lengths there."""
    z = [0.0]
    for i in range(1, n_carbons):
        z.append(z[-1] + (1.23 if i % 2 == 1 else 1.34))
    pos = [[0.0, 0.0, zi] for zi in z]
    sym = ["C"] * n_carbons
    if protonated:
        half = math.radians(_HCH / 2.0)
        for s in (1, -1):
            pos.append([s * _CH * math.sin(half), 0.0, -_CH * math.cos(half)])
            sym.append("H")
    else:
        pos.append([0.0, 0.0, -1.06])
        sym.append("H")
    pos.append([0.0, 0.0, z[-1] + 1.06])
    sym.append("H")
    return Atoms(sym, positions=pos)


def charge_transfer_ground_state(protonated: bool, n_carbons: int = 10, optimise: bool = True,
                                 fmax: float = 0.01, steps: int = 500) -> Atoms:
    """xTB-optimised H-C10-H (charge 0) or C10H3+ (charge +1, proton at the first end)."""
    key = (bool(protonated), int(n_carbons), bool(optimise), float(fmax))
    if key not in _GROUND_STATES:
        guess = _polyyne_guess(n_carbons, protonated)
        _GROUND_STATES[key] = (xtb_optimise(guess, 1 if protonated else 0, fmax, steps)
                          if optimise else guess)
    return _GROUND_STATES[key].copy()


def charge_transfer_structures(n: int, seed=0, n_carbons: int = 10, rattle: float = 0.04,
                               stretch: float = 0.02, optimise: bool = True) -> list[Atoms]:
    """``n`` structures alternating H-C10-H (charge 0) and C10H3+ (charge +1).

    Each is the xTB-optimised geometry, uniformly stretched along the chain axis by a
    factor drawn from [1 - stretch, 1 + stretch], plus an isotropic Gaussian rattle of
    ``rattle`` Angstrom. The atoms of the far end (last C and H) are the same species in
    both states, so the data set tests whether a model transfers the effect of the
    total charge / proton over > 10 A. Tags: ``protonated`` (0/1), ``n_carbons``,
    ``stretch``.
    """
    rng = make_rng(seed)
    out = []
    for k in range(n):
        prot = k % 2 == 1
        g = charge_transfer_ground_state(prot, n_carbons, optimise=optimise)
        c = np.where(g.numbers == 6)[0]
        axis = g.positions[c[-1]] - g.positions[c[0]]
        axis /= np.linalg.norm(axis)
        f = float(rng.uniform(1.0 - stretch, 1.0 + stretch))
        p = g.positions - g.positions[c[0]]
        p = p + (f - 1.0) * np.outer(p @ axis, axis)
        p = p + rng.normal(0.0, rattle, p.shape)
        a = Atoms(g.numbers, positions=p)
        out.append(finish(a, {
            "config_type": "charge_transfer",
            "system": "charge-transfer",
            "total_charge": 1 if prot else 0,
            "protonated": int(prot),
            "n_carbons": int(n_carbons),
            "stretch": f,
            "rattle": float(rattle),
        }))
    return out


@REFERENCE_SYSTEMS.register("charge-transfer", summary="H–C10–H / C10H3⁺: a proton at one "
                            "end changes forces at the other")
class ChargeTransfer(ReferenceSystem):
    """Options of `structures`: those of `charge_transfer_structures`."""

    default_n = 200
    protocols = {"default": Protocol("H–C10–H / C10H3⁺, stretched and rattled", n=400)}
    card_description = (
        "H–C10–H and C10H3⁺ (a proton added at one end), total charge 0 or +1: the proton "
        "changes forces on atoms more than 6 Å away, which only a model that sees the whole "
        "chain and the total charge can describe.")
    card_limits = (
        "Total charge 0 or +1 (atoms.info['charge']); linear C10 chains only.",
        "On this data the attention model is not more accurate than the local one (see the "
        "README's long-range table): both miss the far-field force change in the same way.",
        "Isolated structures only.")

    def structures(self, n: int, seed: int = 0, **options) -> list[Atoms]:
        return charge_transfer_structures(n, seed=seed, **options)

    def analysis(self, out: Path, calculators: dict, protocol: str) -> dict:
        """Force error against distance from the protonated end (last 40 structures)."""
        import ase.io
        frames = list(ase.io.read(out / f"{self.name}.xyz", ":"))[-40:]
        bins = np.arange(0.0, 16.0, 2.0)
        curves, table = {}, {}
        for name, calc in calculators.items():
            dist, err = [], []
            for a in frames:
                first_c = int(np.where(a.numbers == 6)[0][0])
                b = a.copy()
                b.calc = calc
                dist.append(np.linalg.norm(a.positions - a.positions[first_c], axis=1))
                err.append(np.linalg.norm(b.get_forces() - a.arrays["REF_forces"], axis=1))
            dist, err = np.concatenate(dist), np.concatenate(err)
            idx = np.digitize(dist, bins)
            means = [float(err[idx == k].mean()) if (idx == k).any() else float("nan")
                     for k in range(1, len(bins) + 1)]
            curves[name] = (bins + 1.0, means)
            table[name] = means
        plot(out / "charge_transfer_forces.png", "distance from the protonated end (Å)",
             "mean |ΔF| (eV/Å)", curves, "H–C10–H / C10H3⁺ (last 40 structures)")
        return {"bins_A": bins.tolist(), "force_error_eV_per_A": table}
