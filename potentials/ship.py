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
from mlip_attn.registry import REFERENCE_SYSTEMS

HERE = Path(__file__).resolve().parent

def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path)
    parser.add_argument("--system", required=True, choices=REFERENCE_SYSTEMS.names())
    parser.add_argument("--variants", nargs="+", default=["local=local", "efa=efa-l0"],
                        help="NAME=VARIANT pairs: potentials/<system>-NAME.pt from VARIANT's run")
    args = parser.parse_args(argv)
    system = REFERENCE_SYSTEMS[args.system].factory
    description, limits = system.card_description, list(system.card_limits)
    for pair in args.variants:
        name, variant = pair.split("=")
        run = args.runs / args.system / variant
        target = HERE / f"{args.system}-{name}.pt"
        shutil.copyfile(run / "model.pt", target)
        card = model_card(target, run, f"{args.system}-{name}: {variant} model", description,
                          limits)
        target.with_suffix(".md").write_text(card)
        # float32: the faster default for MD (float64 does about twice the arithmetic work);
        # route auto: TorchScript with the compiled mlip_attn ops where they can be built
        exported = export_lammps(target, target.with_suffix(".lmp.pt"), dtype="float32")
        print(f"wrote {target.name}, {target.with_suffix('.md').name} and {exported.name}")


if __name__ == "__main__":
    main()
