"""Copy trained long-range benchmark models into potentials/ with a model card each.

    python potentials/ship.py RUNS --system sn2 [--protocol default] [--variants local=local efa=efa]

RUNS is the ``--out`` folder of ``mlip-attn benchmark longrange`` (runs in
RUNS/<system>/<protocol>/<variant>). Writes ``potentials/<system>-<name>.pt``, its card
``<system>-<name>.md`` (numbers read from the model file, the run and the benchmark's
``results.json``: test split, every held-out set and the system's own analysis, see
`mlip_attn.analysis.model_card`) and its float32 LAMMPS export ``<system>-<name>.lmp.pt``
(what the decks in md_examples/lammps load).
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import json

from mlip_attn.analysis.model_card import held_out_section, model_card
from mlip_attn.apps.longrange import protocol_of
from mlip_attn.lammps.export import export_lammps
from mlip_attn.registry import REFERENCE_SYSTEMS

HERE = Path(__file__).resolve().parent

def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path)
    parser.add_argument("--system", required=True, choices=REFERENCE_SYSTEMS.names())
    parser.add_argument("--protocol", default=None, help="the benchmark protocol (default: the "
                        "system's first)")
    parser.add_argument("--variants", nargs="+", default=["local=local", "efa=efa"],
                        help="NAME=VARIANT pairs: potentials/<system>-NAME.pt from VARIANT's run")
    args = parser.parse_args(argv)
    system = REFERENCE_SYSTEMS[args.system].factory
    protocol, _ = protocol_of(args.system, args.protocol)
    description, limits = system.card_description, list(system.card_limits)
    results = json.loads((args.runs / args.system / protocol / "results.json").read_text())
    for pair in args.variants:
        name, variant = pair.split("=")
        run = args.runs / args.system / protocol / variant
        target = HERE / f"{args.system}-{name}.pt"
        shutil.copyfile(run / "model.pt", target)
        held = held_out_section(results, variant,
                                system().card_lines(results.get("analysis", {}), variant))
        card = model_card(target, run, f"{args.system}-{name}: {variant} model", description,
                          limits, held)
        target.with_suffix(".md").write_text(card)
        # float32: the fast default for MD (float64 ran 1.6-2x slower per step in LAMMPS)
        exported = export_lammps(target, target.with_suffix(".lmp.pt"), dtype="float32")
        print(f"wrote {target.name}, {target.with_suffix('.md').name} and {exported.name}")


if __name__ == "__main__":
    main()
