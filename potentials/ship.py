"""Copy trained long-range benchmark models into potentials/ with a model card each.

    python potentials/ship.py RUNS --system sn2 [--variants local=local efa=efa-l0]

RUNS is the ``--out`` folder of ``mlip-attn benchmark longrange``. Writes
``potentials/<system>-<name>.pt``, its card ``<system>-<name>.md`` (numbers read from the model
file and the run, see `mlip_attn.analysis.model_card`) and its float32 LAMMPS export
``<system>-<name>.lmp.pt`` (what the decks in md_examples/lammps load).
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from mlip_attn.analysis.model_card import model_card
from mlip_attn.lammps.export import export_lammps

HERE = Path(__file__).resolve().parent

SYSTEMS = {
    "cumulene": (
        "Cumulenes H2C=(C=)k=CH2, 3–11 carbons (no 9), torsion of one CH2 end (0–90°) with "
        "0.03 Å rattles. The relative orientation of the two ends sets the energy (barrier "
        "15–55 kcal/mol), and the ends are beyond a local model's reach from 6 carbons on.",
        ["Neutral closed-shell cumulenes only (H, C); not for other hydrocarbons.",
         "The EFA model's torsion barriers are too low (C8: 8.9 vs 23.3 kcal/mol in xTB) and "
         "on the held-out C9 it prefers the planar end orientation of its even neighbours "
         "(xTB: perpendicular); the local model has no barrier at all.",
         "Isolated molecules (no periodic cells); structures larger than r_max are warned about.",
         "Torsion scans near the 90° diradical point inherit GFN2-xTB's error there."]),
    "sn2": (
        "Gas-phase SN2 X⁻ + CH3Y → XCH3 + Y⁻ with X, Y ∈ {Cl, Br}, total charge −1: relaxed "
        "scans along ξ = r(C–Y) − r(C–X) plus 0.05 Å rattles. The ion–dipole attraction "
        "reaches beyond a local model's cutoff.",
        ["Total charge −1 (atoms.info['charge'] = -1); other charges are extrapolation.",
         "Elements H, C, Cl, Br in these reactions only; no solvent.",
         "Isolated structures only."]),
    "charge-transfer": (
        "H–C10–H and C10H3⁺ (a proton added at one end), total charge 0 or +1: the proton "
        "changes forces on atoms more than 6 Å away, which only a model that sees the whole "
        "chain and the total charge can describe.",
        ["Total charge 0 or +1 (atoms.info['charge']); linear C10 chains only.",
         "On this data the attention model is not more accurate than the local one (see the "
         "README's long-range table): both miss the far-field force change in the same way.",
         "Isolated structures only."]),
}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path)
    parser.add_argument("--system", required=True, choices=sorted(SYSTEMS))
    parser.add_argument("--variants", nargs="+", default=["local=local", "efa=efa-l0"],
                        help="NAME=VARIANT pairs: potentials/<system>-NAME.pt from VARIANT's run")
    args = parser.parse_args(argv)
    description, limits = SYSTEMS[args.system]
    for pair in args.variants:
        name, variant = pair.split("=")
        run = args.runs / args.system / variant
        target = HERE / f"{args.system}-{name}.pt"
        shutil.copyfile(run / "model.pt", target)
        card = model_card(target, run, f"{args.system}-{name}: {variant} model", description,
                          limits)
        target.with_suffix(".md").write_text(card)
        # float32: the fast default for MD (float64 ran 1.6-2x slower per step in LAMMPS)
        exported = export_lammps(target, target.with_suffix(".lmp.pt"), dtype="float32")
        print(f"wrote {target.name}, {target.with_suffix('.md').name} and {exported.name}")


if __name__ == "__main__":
    main()
