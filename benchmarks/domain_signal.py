"""Calibration of the domain signal (`mlip_attn.models.domain`) on the shipped C/H potentials.

    OMP_NUM_THREADS=1 python benchmarks/domain_signal.py [--out benchmarks/results/domain]
                                                         [--n-train 300]

For cumulene-local/-efa and charge-transfer-local/-efa:

1. Their training data is not stored, so a training-like set is regenerated with the system
   recipe (`Cumulene` / `ChargeTransfer` structures, training lengths and distortions, seed 0,
   ``--n-train`` structures, unlabelled) and the domain statistics are computed from it
   (`domain_statistics`, the same call as ``mlip-attn analyze domain``) into the loaded models
   (the files in potentials/ are not changed).
2. Off-chemistry sets are built and labelled with GFN2-xTB (tblite), cached in OUT/sets:
   C7H4 with one end H replaced by CH3 and that end turned 0→90° (the issue's case), a
   dimethyl-branched C7 end, C9H4 kinked by 20–60° at its middle carbon; H–C8–CH3 (neutral and
   protonated), C10H2 kinked 20–60° (neutral and protonated), a C10H3⁺ branched by an ethynyl
   group at site 3.
3. The held-out sets of the cards (potentials/held_out, never trained on) are the
   in-distribution reference.

Printed per model and set: structures, how many warn (any `DomainWarning`; by bonded
environment; by feature novelty), energy and force MAE against xTB, for global models how many
structures have global error ≤ local error or a warning (the issue's target), and the Spearman
rank correlation of the novelty ``uncertainty`` with the energy error per atom (structures) and
of ``atom_uncertainty`` with the force error (atoms). Everything also goes to OUT/domain.json.
"""
from __future__ import annotations

import argparse
import json
import math
import warnings
from pathlib import Path

import ase.io
import numpy as np
from ase import Atoms
from scipy.stats import spearmanr

from mlip_attn.calculators.ase_calculator import AttnCalculator, DomainWarning
from mlip_attn.data import AtomicData
from mlip_attn.data.statistics import charge_spin_seen
from mlip_attn.models import load_model
from mlip_attn.models.domain import MARGIN, domain_statistics
from mlip_attn.qm.labelling import label_structures
from mlip_attn.qm.systems.base import finish, xtb_optimise
from mlip_attn.qm.systems.charge_transfer import ChargeTransfer
from mlip_attn.qm.systems.charge_transfer_chains import (DISTORTIONS as CT_DISTORTIONS,
                                                         TRAIN_LENGTHS as CT_LENGTHS,
                                                         polyyne_ground_state, proton_carbons)
from mlip_attn.qm.systems.cumulene import (DISTORTIONS, TRAIN_LENGTHS, Cumulene,
                                           cumulene_ground_state)

ROOT = Path(__file__).resolve().parents[1]
MARGINS = (1.0, 1.25, 1.5, 2.0, 3.0)
FAMILIES = {
    "cumulene": {"models": ["cumulene-local", "cumulene-efa"],
                 "held_out": ["cumulene-C11", "cumulene-C12", "cumulene-C15", "cumulene-C16"]},
    "charge-transfer": {"models": ["charge-transfer-local", "charge-transfer-efa"],
                        "held_out": ["charge-transfer-C12", "charge-transfer-C16",
                                     "charge-transfer-deep-sites"]},
}


# ------------------------------------------------------------------ geometry helpers

def _unit(v):
    return v / np.linalg.norm(v)


def methylate(atoms: Atoms, h: int) -> tuple[Atoms, list[int]]:
    """``atoms`` with hydrogen ``h`` replaced by a CH3 (C–C 1.50 Å, C–H 1.09 Å, tetrahedral);
    returns the new atoms and the indices of the methyl group (C first)."""
    pos = atoms.positions
    c = int(np.argmin(np.where(atoms.numbers == 6, np.linalg.norm(pos - pos[h], axis=1), np.inf)))
    u = _unit(pos[h] - pos[c])
    e1 = _unit(np.cross(u, [1.0, 0.3, 0.1]))
    e2 = np.cross(u, e1)
    new_c = pos[c] + 1.50 * u
    theta = math.radians(180.0 - 109.5)
    hs = [new_c + 1.09 * (math.cos(theta) * u
                          + math.sin(theta) * (math.cos(p) * e1 + math.sin(p) * e2))
          for p in (0.0, 2 * math.pi / 3, 4 * math.pi / 3)]
    keep = [k for k in range(len(atoms)) if k != h]
    out = Atoms(numbers=list(atoms.numbers[keep]) + [6, 1, 1, 1],
                positions=np.vstack([pos[keep], new_c, *hs]))
    n = len(keep)
    return out, [n, n + 1, n + 2, n + 3]


def rotate(atoms: Atoms, moving, origin, axis, angle_deg: float) -> Atoms:
    """Rigid rotation of the atoms ``moving`` about ``axis`` through ``origin``."""
    out = atoms.copy()
    k = _unit(np.asarray(axis, dtype=float))
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    t = math.radians(angle_deg)
    rot = np.eye(3) + math.sin(t) * kx + (1 - math.cos(t)) * kx @ kx
    p = out.positions
    p[moving] = origin + (p[moving] - origin) @ rot.T
    out.positions = p
    return out


def kink(atoms: Atoms, carbon: int, angle_deg: float) -> Atoms:
    """The chain bent by ``angle_deg`` at ``carbon``: atoms beyond it along the chain rotated."""
    c = np.where(atoms.numbers == 6)[0]
    axis = _unit(atoms.positions[c[-1]] - atoms.positions[c[0]])
    along = (atoms.positions - atoms.positions[carbon]) @ axis
    moving = np.nonzero(along > 0.1)[0]
    normal = np.cross(axis, [0.3, 1.0, 0.2])
    return rotate(atoms, moving, atoms.positions[carbon], normal, angle_deg)


def rattled(atoms: Atoms, rng, count: int, amplitude: float, info: dict) -> list[Atoms]:
    out = []
    for k in range(count):
        a = atoms.copy()
        a.positions = a.positions + (rng.normal(0.0, amplitude, a.positions.shape) if k else 0.0)
        out.append(finish(a, dict(info)))
    return out


# ------------------------------------------------------------------ off-chemistry sets

def cumulene_sets(rng) -> dict[str, list[Atoms]]:
    info = {"total_charge": 0}
    ground = cumulene_ground_state(7)
    h = int(np.nonzero(ground.numbers == 1)[0][2])           # an H on the last carbon
    sub, methyl = methylate(ground, h)
    sub = xtb_optimise(sub, 0, fmax=0.03, steps=300)
    c_end = 6
    end = [c_end, *methyl] + [k for k in np.nonzero(sub.numbers == 1)[0]
                              if np.linalg.norm(sub.positions[k] - sub.positions[c_end]) < 1.2]
    axis = sub.positions[c_end] - sub.positions[0]
    turn = []
    for angle in np.linspace(0.0, 90.0, 10):
        a = rotate(sub, [k for k in end if k != c_end], sub.positions[c_end], axis, angle)
        turn += rattled(a, rng, 2, 0.03, {**info, "angle": float(angle)})
    dimethyl, _ = methylate(ground, int(np.nonzero(ground.numbers == 1)[0][3]))
    h2 = [k for k in np.nonzero(dimethyl.numbers == 1)[0]
          if np.linalg.norm(dimethyl.positions[k] - dimethyl.positions[c_end]) < 1.2][0]
    dimethyl, _ = methylate(dimethyl, int(h2))
    dimethyl = xtb_optimise(dimethyl, 0, fmax=0.03, steps=300)
    ground9 = cumulene_ground_state(9)
    kinked = [s for angle in (20.0, 40.0, 60.0)
              for s in rattled(kink(ground9, 4, angle), rng, 6, 0.03, {**info, "angle": angle})]
    return {"C7H4 CH3 end, turned 0-90°": turn,
            "C7 (CH3)2C= end (branched)": rattled(dimethyl, rng, 12, 0.03, info),
            "C9H4 kinked 20-60°": kinked}


def charge_transfer_sets(rng) -> dict[str, list[Atoms]]:
    out: dict[str, list[Atoms]] = {"H-C8-CH3 (0, +1)": [], "C10H2 kinked 20-60° (0, +1)": []}
    for carbons in ((), (0,)):
        q = len(carbons)
        ground = polyyne_ground_state(8, carbons)
        sub, _ = methylate(ground, 9)                       # the H of the far carbon C7
        sub = xtb_optimise(sub, q, fmax=0.03, steps=300)
        out["H-C8-CH3 (0, +1)"] += rattled(sub, rng, 10, 0.03, {"total_charge": q})
        ground10 = polyyne_ground_state(10, carbons)
        for angle in (20.0, 40.0, 60.0):
            out["C10H2 kinked 20-60° (0, +1)"] += rattled(kink(ground10, 5, angle), rng, 4, 0.03,
                                                          {"total_charge": q, "angle": angle})
    ground = polyyne_ground_state(10, proton_carbons("interior", 10, 3))
    proton = len(ground) - 1
    sub, methyl = methylate(ground, proton)                 # an sp3 branch on the chain
    sub = xtb_optimise(sub, 1, fmax=0.03, steps=300)
    out["C10H3+ CH3 branch at site 3"] = rattled(sub, rng, 12, 0.03, {"total_charge": 1})
    return out


def labelled(name: str, frames: list[Atoms], folder: Path) -> list[Atoms]:
    path = folder / (name.replace(" ", "_").replace("/", "-").replace("°", "deg") + ".xyz")
    folder.mkdir(parents=True, exist_ok=True)
    label_structures(frames, str(path), "gfn2-xtb", progress=False)
    return sorted(ase.io.read(path, ":"), key=lambda a: int(a.info["index"]))


def training_like(family: str, n: int, folder: Path) -> list[AtomicData]:
    path = folder / f"train-like-{family}-{n}.xyz"
    if not path.exists():
        if family == "cumulene":
            frames = Cumulene().structures(n, seed=0, n_carbons=TRAIN_LENGTHS, **DISTORTIONS)
        else:
            frames = ChargeTransfer().structures(n, seed=0, n_carbons=CT_LENGTHS,
                                                 **CT_DISTORTIONS)
        folder.mkdir(parents=True, exist_ok=True)
        ase.io.write(path, frames)
    return [AtomicData.from_atoms(a) for a in ase.io.read(path, ":")]


# ------------------------------------------------------------------ evaluation

def evaluate(calc: AttnCalculator, frames: list[Atoms]) -> list[dict]:
    rows = []
    for atoms in frames:
        a = atoms.copy()
        a.info["charge"] = float(atoms.info.get("total_charge", 0))
        a.calc = calc
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            energy = a.get_potential_energy()
            forces = a.get_forces()
        texts = [str(w.message) for w in caught if issubclass(w.category, DomainWarning)]
        df = np.linalg.norm(forces - atoms.arrays["REF_forces"], axis=1)
        rows.append({"e_err": float(abs(energy - atoms.info["REF_energy"])), "natoms": len(a),
                     "angle": float(atoms.info.get("angle", float("nan"))),
                     "f_mae": float(np.mean(np.abs(forces - atoms.arrays["REF_forces"]))),
                     "f_atom": df.tolist(), "warn": bool(texts),
                     "env": any("environments never seen" in t for t in texts),
                     "novel": any("features unlike" in t for t in texts),
                     "other": any(not ("environments never seen" in t or "features unlike" in t)
                                  for t in texts),
                     "u": calc.results.get("uncertainty", float("nan")),
                     "u_atom": np.asarray(calc.results.get("atom_uncertainty", [])).tolist()})
    return rows


def summary(rows: list[dict], local_rows: list[dict] | None) -> dict:
    out = {"n": len(rows), "warn": sum(r["warn"] for r in rows),
           "env": sum(r["env"] for r in rows), "novel": sum(r["novel"] for r in rows),
           "other": sum(r["other"] for r in rows),
           "e_mae_mev": 1000 * float(np.mean([r["e_err"] for r in rows])),
           "f_mae_mev": 1000 * float(np.mean([r["f_mae"] for r in rows]))}
    if local_rows is not None:
        out["contained"] = int(sum(r["e_err"] <= l["e_err"] or r["warn"]
                                   for r, l in zip(rows, local_rows)))
        # the largest amount by which global exceeds local on a structure that does not warn
        out["excess_mev"] = 1000 * max([r["e_err"] - l["e_err"] for r, l in zip(rows, local_rows)
                                        if not r["warn"]] + [0.0])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/domain"))
    ap.add_argument("--n-train", type=int, default=300)
    args = ap.parse_args()
    out = Path(args.out)
    rng = np.random.default_rng(0)
    report = {}
    lines = ["| model | set | kind | n | warn (env / novelty / other) | E MAE (meV) | "
             "F MAE (meV/Å) | global ≤ local or warned (worst excess, meV) |",
             "|---|---|---|---|---|---|---|---|"]
    sweep = ["", "Novelty threshold (margin × the 99.9 % quantile of calibration atoms): "
             "structures with u > 1 at other margins", "",
             "| model | kind | " + " | ".join(f"margin {m:g}" for m in MARGINS) + " |",
             "|---|---|" + "---|" * len(MARGINS)]
    for family, spec in FAMILIES.items():
        train = training_like(family, args.n_train, out)
        builder = cumulene_sets if family == "cumulene" else charge_transfer_sets
        off = {name: labelled(name, frames, out / "sets") for name, frames in builder(rng).items()}
        held = {name: ase.io.read(ROOT / "potentials/held_out" / f"{name}.xyz", ":")
                for name in spec["held_out"]}
        results = {}
        for model_name in spec["models"]:
            model = load_model(ROOT / "potentials" / f"{model_name}.pt", dtype="float64")
            # what `mlip-attn analyze domain MODEL DATA` records
            model.metadata.update({**charge_spin_seen(train), **domain_statistics(model, train)})
            calc = AttnCalculator(model, default_dtype="float64")
            results[model_name] = {**{k: ("held-out", evaluate(calc, v)) for k, v in held.items()},
                                   **{k: ("off-chemistry", evaluate(calc, v))
                                      for k, v in off.items()}}
        local = results[spec["models"][0]]
        for model_name, sets in results.items():
            us, es, ua, fa = [], [], [], []
            for set_name, (kind, rows) in sets.items():
                s = summary(rows, None if model_name == spec["models"][0]
                            else local[set_name][1])
                report.setdefault(model_name, {})[set_name] = {"kind": kind, **s, "rows": [
                    {k: r[k] for k in ("e_err", "natoms", "angle", "warn", "env", "novel", "u")}
                    for r in rows]}
                contained = (f"{s['contained']}/{s['n']} ({s['excess_mev']:.0f})"
                             if "contained" in s else "—")
                lines.append(f"| {model_name} | {set_name} | {kind} | {s['n']} | {s['warn']} "
                             f"({s['env']} / {s['novel']} / {s['other']}) | {s['e_mae_mev']:.0f} | "
                             f"{s['f_mae_mev']:.0f} | {contained} |")
                us += [r["u"] for r in rows]
                es += [r["e_err"] / r["natoms"] for r in rows]
                ua += [u for r in rows for u in r["u_atom"]]
                fa += [f for r in rows for f in r["f_atom"]]
            for kind in ("held-out", "off-chemistry"):
                u = [r["u"] for k, rows in sets.values() if k == kind for r in rows]
                sweep.append(f"| {model_name} | {kind} | " + " | ".join(
                    f"{sum(x > m / MARGIN for x in u)}/{len(u)}" for m in MARGINS) + " |")
            rho_s = spearmanr(us, es).statistic
            rho_a = spearmanr(ua, fa).statistic
            report[model_name]["spearman"] = {"structure_u_vs_e_per_atom": float(rho_s),
                                              "atom_u_vs_force_error": float(rho_a)}
            lines.append(f"| {model_name} | Spearman ρ: u vs \\|ΔE\\|/atom {rho_s:.2f} "
                         f"({len(us)} structures), u_i vs \\|ΔF_i\\| {rho_a:.2f} ({len(ua)} atoms)"
                         f" | | | | | | |")
    print("\n".join(lines + sweep))
    out.mkdir(parents=True, exist_ok=True)
    (out / "domain.json").write_text(json.dumps(report, indent=1))
    print(f"wrote {out / 'domain.json'}")


if __name__ == "__main__":
    main()
