"""The long-range benchmark's analysis of the SN2 recipe: relaxed ξ profiles of every pair
against GFN2-xTB, and errors on the held-out sets split by the free ion's distance from the
carbon (`analyse`), with the lines they give a model card (`findings`)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from ase import Atoms

from .base import attach, energies, label, plot_panels
from .sn2_scans import PAIRS, ion_distance, sn2_scan, xi_range

DISTANCE_BINS = (2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 20.5)  # Å: bins of the free ion's distance from C


def analyse(out: Path, calculators: dict, held_out: list[str]) -> dict:
    """`SN2.analysis`: the relaxed scans of every pair at ξ between the trained grid points
    (labelled into ``out``) and the held-out sets ``held_out_<name>.xyz`` in ``out``, for every
    variant (``calculators``: name → ASE calculator)."""
    import ase.io
    result: dict = {"profiles": {}, "bins_A": list(DISTANCE_BINS), "held_out": {}}
    curves = {}
    for x, y in PAIRS:
        lo, hi = xi_range(x, y)
        xis = np.arange(lo + 0.125, hi, 0.5)
        frames = label(sn2_scan(x, y, xis), out / f"sn2_{x}{y}_scan.xyz".lower())
        ref = np.array([a.info["REF_energy"] for a in frames])
        entry = {"xi": xis.tolist(), "reference_eV": (ref - ref[0]).tolist()}
        curves[f"{x}⁻ + CH3{y}"] = {"reference (GFN2-xTB)": (xis, ref - ref[0])}
        for name, calc in calculators.items():
            e = energies(calc, frames)
            entry[name] = float(np.mean(np.abs((e - e[0]) - (ref - ref[0]))))
            curves[f"{x}⁻ + CH3{y}"][name] = (xis, e - e[0])
        result["profiles"][f"{x}-{y}"] = entry
    plot_panels(out / "sn2_profile.png", curves, "ξ = r(C–Y) − r(C–X) (Å)",
                "energy − E(first ξ) (eV)")
    errors = {}
    for name in held_out:
        frames = list(ase.io.read(out / f"held_out_{name}.xyz", ":"))
        result["held_out"][name] = {v: errors_by_distance(frames, c, DISTANCE_BINS)
                                    for v, c in calculators.items()}
        errors[name] = {v: (np.array(DISTANCE_BINS[:-1]) + np.diff(DISTANCE_BINS) / 2,
                            r["forces_mae_by_distance"])
                        for v, r in result["held_out"][name].items()}
    plot_panels(out / "sn2_forces_by_distance.png", errors,
                "distance of the free ion from the carbon (Å)", "force MAE (eV/Å)")
    return result


def findings(analysis: dict, variant: str) -> list[str]:
    """`SN2.card_findings`: the lines of `analyse`'s numbers for ``variant``."""
    lines = []
    bins = analysis.get("bins_A", [])
    spans = [f"{a:g}–{b:g} Å" for a, b in zip(bins[:-1], bins[1:])]
    for name, entry in analysis.get("held_out", {}).items():
        e = entry.get(variant)
        if e is None:
            continue
        cells = [f"{span} {1e3 * de:.1f} / {1e3 * df:.1f} ({k})" for span, de, df, k in
                 zip(spans, e["energy_mae_by_distance"], e["forces_mae_by_distance"],
                     e["structures_by_distance"]) if k]
        lines.append(f"{name}: E MAE (meV) / F MAE (meV/Å) by the free ion's distance from "
                     f"the carbon (structures): " + ", ".join(cells))
    profiles = {pair: p[variant] for pair, p in analysis.get("profiles", {}).items()
                if variant in p}
    if profiles:
        lines.append("Relaxed ξ profiles, MAE against GFN2-xTB: " + ", ".join(
            f"{pair} {1e3 * v:.1f} meV" for pair, v in profiles.items()))
    return lines


def errors_by_distance(frames: list[Atoms], calc, bins=DISTANCE_BINS) -> dict:
    """Energy and force MAE (eV, eV/Å per component) of ``calc`` on labelled ``frames``,
    overall and per bin of the free ion's distance from the carbon (`ion_distance`; one value
    per bin, NaN where empty), with the number of structures per bin."""
    d, de, df = [], [], []
    for a in frames:
        b = attach(a, calc)
        d.append(ion_distance(a))
        de.append(abs(b.get_potential_energy() - a.info["REF_energy"]))
        df.append(np.abs(b.get_forces() - a.arrays["REF_forces"]).mean())
    d, de, df = np.array(d), np.array(de), np.array(df)
    idx = np.digitize(d, bins)
    by = lambda v: [float(v[idx == k].mean()) if (idx == k).any() else float("nan")  # noqa: E731
                    for k in range(1, len(bins))]
    return {"energy_mae": float(de.mean()), "forces_mae": float(df.mean()),
            "energy_mae_by_distance": by(de), "forces_mae_by_distance": by(df),
            "structures_by_distance": [int((idx == k).sum()) for k in range(1, len(bins))]}
