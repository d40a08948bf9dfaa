#!/usr/bin/env python
"""Issue 25's charge-transfer cases on the shipped charge-transfer files, beside GFN2-xTB:

- the bond-stretch path: the far C–H of C12H3+ (the first C12H3 frame of
  held_out/charge-transfer-C12.xyz) stretched 1.0→2.6 Å, max |dE/dr| (target ≤ 2× xTB's);
- charged + neutral chains: that C12H3+ beside the first neutral C12H2 frame, closest atoms
  100 and 1,000 Å apart: E(A + B, +1) − E(A, +1) − E(B, 0) (target |ΔE| ≤ 20 meV), and two
  neutral C12H2 (target ≤ 1 meV, ≤ 1 meV/Å).

    python potentials/charge_transfer_stretch.py [NAME ...]   (default: both files)

Prints the numbers and writes them, with xTB's stretch, to
``potentials/charge-transfer-chains.physics.json`` (tests/test_shipped_physics.py re-computes
the model side and compares with the cached xTB side). ``--xtb-from-cache`` reuses that file's
xTB numbers instead of running xTB again."""
import json
import sys
from pathlib import Path

import ase.io
import numpy as np

from mlip_attn.analysis.physics_check import bond_stretch, separability
from mlip_attn.models import load_model

HERE = Path(__file__).resolve().parent
OUT = HERE / "charge-transfer-chains.physics.json"
R_RANGE, POINTS = (1.0, 2.6), 321


def chains():
    """(C12H3+ frame, C12H2 frame, i, j): the cation and a neutral chain from the C12 held-out
    set, and the cation's far C–H (carbon i, hydrogen j: the lone H farthest from the CH2)."""
    frames = ase.io.read(HERE / "held_out" / "charge-transfer-C12.xyz", ":")
    cation = next(a for a in frames if a.get_chemical_formula() == "C12H3")
    neutral = next(a for a in frames if a.get_chemical_formula() == "C12H2"
                   and float(a.info.get("total_charge", 0)) == 0)
    pos = cation.positions
    h = [k for k, z in enumerate(cation.numbers) if z == 1]
    c = [k for k, z in enumerate(cation.numbers) if z == 6]

    def carbon_of(k):
        return min(c, key=lambda m: np.linalg.norm(pos[m] - pos[k]))
    owners = [carbon_of(k) for k in h]
    lone = [k for k, o in zip(h, owners) if owners.count(o) == 1]   # H alone on its carbon
    protonated = [o for o in owners if owners.count(o) == 2][0]
    far = max(lone, key=lambda k: np.linalg.norm(pos[k] - pos[protonated]))
    return cation, neutral, carbon_of(far), far


def check(name: str, xtb: bool) -> dict:
    model = load_model(HERE / f"{name}.pt", dtype="float64")
    cation, neutral, i, j = chains()
    s = bond_stretch(model, cation, i, j, R_RANGE, charge=1.0, points=POINTS, xtb=xtb)
    r = np.array(s["r"])
    out = {"physics": model.model_config.get("physics", 1), "stretch": {
        "bond": [i, j], "r_range": list(R_RANGE), "points": POINTS,
        "max_abs_dEdr": s["max_abs_dEdr"],
        "r_at_max": float(r[int(np.argmax(np.abs(s["dEdr"])))])},
        "charged_neutral": separability(model, cation, neutral, 1.0),
        "neutral_neutral": separability(model, neutral, neutral, 0.0)}
    if xtb:
        out["stretch"]["xtb_max_abs_dEdr"] = s["xtb_max_abs_dEdr"]
        out["stretch"]["xtb_r_at_max"] = float(r[int(np.argmax(np.abs(s["xtb_dEdr"])))])
    return out


def main(argv):
    cached = "--xtb-from-cache" in argv
    names = [a for a in argv if not a.startswith("--")] or ["charge-transfer-local",
                                                             "charge-transfer-efa"]
    old = json.loads(OUT.read_text()) if OUT.exists() else {}
    result = {"xtb": old.get("xtb") if cached else None, "models": old.get("models", {})}
    for name in names:
        res = check(name, xtb=result["xtb"] is None)
        if result["xtb"] is None:
            result["xtb"] = {"max_abs_dEdr": res["stretch"].pop("xtb_max_abs_dEdr"),
                             "r_at_max": res["stretch"].pop("xtb_r_at_max")}
        result["models"][name] = res
        s = res["stretch"]
        print(f"{name} (physics {res['physics']}): C–H stretch max |dE/dr| "
              f"{s['max_abs_dEdr']:.2f} eV/Å at {s['r_at_max']:.3f} Å (xTB "
              f"{result['xtb']['max_abs_dEdr']:.2f} eV/Å at {result['xtb']['r_at_max']:.3f} Å)")
        for key in ("charged_neutral", "neutral_neutral"):
            for row in res[key]:
                print(f"  {key}: gap {row['gap']:g} Å  ΔE {row['dE']:+.2e} eV  max |ΔF_A| "
                      f"{row['dF_A']:.2e} eV/Å", flush=True)
    OUT.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
