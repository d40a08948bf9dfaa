"""Copy trained long-range benchmark models into potentials/ with a model card each.

    python potentials/ship.py RUNS --system cumulene [--protocol lengths]
                              [--variants local=local efa=efa+bond-graph] [--nve]

RUNS is the ``--out`` folder of ``mlip-attn benchmark longrange`` (runs in
RUNS/<system>/<protocol>/<variant>); without ``--variants`` it ships ``local`` and the
protocol's reference variant as ``<system>-local`` and ``<system>-efa``. Writes
``potentials/<system>-<name>.pt``, its card ``<system>-<name>.md`` (numbers read from the model
file, the run and the protocol's results.json, see `mlip_attn.analysis.model_card`), its
float32 LAMMPS export ``<system>-<name>.lmp.pt`` (what the decks in md_examples/lammps load),
and copies the protocol's held-out sets to ``potentials/held_out/`` so the cards' numbers can
be reproduced (a test does). The physical checks (`mlip-attn analyze physics --xtb`) go on the
card and, with the xTB numbers, into ``<system>-<name>.physics.json`` (so tests can compare
the model's tail and bond stretch with xTB without running it); ``--nve`` adds the 2 ps NVE
check at 300 and 600 K (``potentials/nve_check.py``) to each card. Runs made by
``potentials/finetune.py`` (a shipped file's weights carried to the current physics) get a
"Weights" line on the card saying where they started and how many epochs they were tuned.
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from mlip_attn.analysis.model_card import model_card
from mlip_attn.analysis.physics_check import physics_check
from mlip_attn.models import load_model
from mlip_attn.lammps.export import export_lammps
from mlip_attn.registry import REFERENCE_SYSTEMS

HERE = Path(__file__).resolve().parent

def provenance(meta: dict) -> str | None:
    """The card line for a file whose weights started from an older shipped file
    (`potentials/finetune.py` records ``initialised_from`` in the metadata), or None."""
    init, now = meta.get("initialised_from"), meta.get("physics")
    if not init:
        return None
    origin = (f"the physics-{init['physics']} `{init['file']}` (best epoch "
              f"{init['best_epoch']} of its training)")
    earlier = init.get("from")
    if earlier:   # that file was itself carried over from an older one
        origin = (f"the physics-{init['physics']} `{init['file']}` (itself the physics-"
                  f"{earlier['physics']} file's weights, best epoch {earlier['best_epoch']}, "
                  f"fine-tuned {earlier['fine_tuning_epochs']} epochs)")
    if init["fine_tuning_epochs"] == 0:
        return (f"- Weights: those of {origin}, unchanged, re-marked physics {now}: for this "
                f"architecture physics {now} computes what physics {init['physics']} did on "
                f"any structure that is one bonded molecule (the held-out errors are the same); "
                f"the training settings above are the original run's "
                f"(`potentials/finetune.py --epochs 0`)")
    chosen = ("; the last epoch's weights (`--select last`), not those of the lowest "
              "validation loss, which one validation structure dominated (docs/longrange-"
              "physics.md)" if init.get("selected") == "last" else "")
    return (f"- Weights: initialised from {origin} and fine-tuned {init['fine_tuning_epochs']} "
            f"epochs under physics {now} with the settings above (`potentials/finetune.py`); "
            f"new weights started from their initial values: {', '.join(init['missing']) or 'none'}"
            + chosen)


def with_provenance(card: str, target: Path) -> str:
    """``card`` with the `provenance` line after its training-settings line."""
    from mlip_attn.models.model_file import read_model_file
    line = provenance(read_model_file(target)["metadata"])
    if line is None:
        return card
    lines = card.splitlines()
    k = next(i for i, x in enumerate(lines) if "best validation epoch" in x)
    return "\n".join(lines[:k + 1] + [line] + lines[k + 1:]) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path)
    parser.add_argument("--system", required=True, choices=REFERENCE_SYSTEMS.names())
    parser.add_argument("--protocol", default=None, help="the system's protocol (default: its first)")
    parser.add_argument("--variants", nargs="+", default=None,
                        help="NAME=VARIANT pairs: potentials/<system>-NAME.pt from VARIANT's run "
                             "(default: local=local efa=<the protocol's reference variant>)")
    parser.add_argument("--nve", action="store_true",
                        help="also run potentials/nve_check.py on each shipped potential")
    args = parser.parse_args(argv)
    from mlip_attn.apps.longrange import protocol_of
    protocol, spec = protocol_of(args.system, args.protocol)
    if args.variants is None:
        args.variants = ["local=local", f"efa={spec.reference}"]
    system = REFERENCE_SYSTEMS[args.system].factory
    description, limits = system.card_description, list(system.card_limits)
    folder = args.runs / args.system / protocol
    results = json.loads((folder / "results.json").read_text())
    (HERE / "held_out").mkdir(exist_ok=True)
    shipped = {}
    for held in sorted({h for r in results["variants"].values() for h in r["held_out"]}):
        copy = HERE / "held_out" / f"{args.system}-{held}.xyz"
        shutil.copyfile(folder / f"held_out_{held}.xyz", copy)
        shipped[held] = f"potentials/held_out/{copy.name}"
    for pair in args.variants:
        name, variant = pair.split("=")
        run = folder / variant
        target = HERE / f"{args.system}-{name}.pt"
        shutil.copyfile(run / "model.pt", target)
        held_out = {h: (shipped[h], errors)
                    for h, errors in results["variants"][variant]["held_out"].items()}
        findings = system().card_findings(results.get("analysis", {}), variant)
        # the physical checks (separability, charge leak, ion tail, bond stretch) beside xTB
        try:
            physics = physics_check(load_model(target, dtype="float64"), xtb=True)
        except ValueError as exc:   # no probe molecules for these elements
            print(f"{target.name}: no physical checks on the card ({exc})")
            physics = None
        card = with_provenance(model_card(target, run, f"{args.system}-{name}: {variant} model "
                                          f"({protocol} protocol)", description, limits,
                                          held_out, findings, physics), target)
        # the card's held-out numbers, exactly, for the test that re-evaluates them
        target.with_suffix(".held_out.json").write_text(json.dumps(
            {h: {"file": path, "errors": errors} for h, (path, errors) in held_out.items()},
            indent=1))
        target.with_suffix(".md").write_text(card)
        if physics is not None:
            target.with_suffix(".physics.json").write_text(json.dumps(physics, indent=1))
        # float32: the faster default for MD (float64 does about twice the arithmetic work);
        # route auto: TorchScript with the compiled mlip_attn ops where they can be built
        exported = export_lammps(target, target.with_suffix(".lmp.pt"), dtype="float32")
        print(f"wrote {target.name}, {target.with_suffix('.md').name} and {exported.name}")
        if args.nve:
            from nve_check import check   # potentials/nve_check.py, beside this script
            check(target.stem, [300.0, 600.0], 2.0, 0.5)


if __name__ == "__main__":
    main()
