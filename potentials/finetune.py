"""Carry a shipped potential's weights over to the current physics version, with or without
fine-tuning, into a `mlip-attn benchmark longrange` run folder that `potentials/ship.py` ships.

    python potentials/finetune.py RUNS --system cumulene --variant efa+bond-graph \\
        --init potentials/cumulene-efa.pt --epochs 14 --lr 3e-4
    python potentials/finetune.py RUNS --system cumulene --variant local \\
        --init potentials/cumulene-local.pt --epochs 0
    python potentials/finetune.py RUNS --system cumulene --results local efa+bond-graph

The run is the protocol's (`mlip_attn.apps.longrange`: same data file, split, model config
with r_max from the training structures, loss) except that the weights start from ``--init``
(weights the new version adds keep their initial values; none may be dropped) and the
training section takes ``--epochs``/``--lr`` (and ``--energy-weight``). ``--epochs 0`` trains
nothing: the file's weights are re-marked under the current physics (valid/test errors and the training-domain
records recomputed on the run's split; config.yaml keeps the protocol's training section,
which is how the weights were trained). The model file's metadata records ``initialised_from``
(file, its physics version, its best epoch, the fine-tuning epochs), which ship.py puts on the
card. ``--select last`` ships the last epoch's weights instead of the best validation loss's (for a
validation loss that one structure dominates; the card must say so). Given a run folder whose
fine-tuning has finished, the command trains nothing: it chooses the weights again and
recomputes their validation and test errors and training domain with the current code.
``--results`` evaluates the runs in the folder on the protocol's held-out sets and runs
the system's analysis, writing ``results.json`` as `run_longrange` does (the data must exist:
`make_data` resumes and labels nothing new when it does).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import ase.io
import torch

from mlip_attn.apps import longrange
from mlip_attn.models.model_file import atomic_save, read_model_file
from mlip_attn.registry import REFERENCE_SYSTEMS
from mlip_attn.training import load_config
from mlip_attn.training import trainer


def _setup(runs: Path, system: str, protocol: str | None, n: int | None = None):
    name, spec = longrange.protocol_of(system, protocol)
    out = runs / system / name
    out.mkdir(parents=True, exist_ok=True)
    data_path, held = longrange.make_data(system, spec, out, 0, n, 1)
    return name, spec, out, data_path, held


def _select_last(run, epoch: int) -> None:
    """Ship the last epoch's weights (the EMA average the validation saw), not the best
    validation loss's: for a validation loss that one structure dominates (the card says
    which and why)."""
    state = run.ema.shadow if run.ema is not None else run.model.state_dict()
    run.best_state = {k: v.detach().cpu().clone() for k, v in state.items()}
    run.best_epoch = epoch


def finetune(runs: Path, system: str, protocol: str | None, variant: str, init: Path,
             epochs: int, lr: float | None, physics: int | None = None,
             select: str = "best", n: int | None = None,
             energy_weight: float | None = None) -> Path:
    name, spec, out, data_path, _ = _setup(runs, system, protocol, n)
    frames = ase.io.read(data_path, ":")
    elements = sorted({int(z) for a in frames for z in a.numbers})
    r_max = longrange.training_reach(frames, spec.reach_factor)
    model_cfg = longrange.variant_configs(spec, elements, r_max, None, [variant])[variant]
    if physics is not None:   # an older version than the default for models built now
        model_cfg = {**model_cfg, "physics": physics}
    training = {**longrange.TRAINING, **spec.training}
    if epochs:
        training = {**training, "epochs": epochs, **({"lr": lr} if lr else {}),
                    **({"energy_weight": energy_weight} if energy_weight else {})}
    run_dir = out / variant
    config = load_config(None, {
        "model": model_cfg,
        "data": {"train": str(data_path), "valid": spec.valid, "test": spec.test,
                 "split_seed": 0},
        "training": {**training, "seed": 0, "progress": False},
        "output": str(run_dir)})
    old = read_model_file(init)
    if old["model_config"].get("width") != model_cfg["width"]:
        raise SystemExit(f"{init}: width {old['model_config'].get('width')} is not the "
                         f"protocol's {model_cfg['width']} for {variant}")
    finished = epochs > 0 and (run_dir / "checkpoint.pt").exists()
    run = trainer.start_run(config, finished, print)
    state = {k: v.to(run.dtype) if v.is_floating_point() else v
             for k, v in old["state_dict"].items()}
    new = run.model.state_dict()
    missing = [k for k in new if k not in state]
    unexpected = [k for k in state if k not in new]
    if unexpected:
        raise SystemExit(f"{init}: weights the current architecture does not have: {unexpected}")
    if finished:   # the fine-tuning ran: only the choice of weights is made again
        if run.start_epoch != epochs:
            raise SystemExit(f"{run_dir}: the run stopped after epoch {run.start_epoch}, not "
                             f"{epochs}: finish it (or remove the folder) first")
        if select == "last":
            _select_last(run, epochs - 1)
        return _finish(run, run_dir, init, old, epochs, missing, select)
    run.model.load_state_dict(state, strict=False)
    print(f"{init}: weights loaded; new (initial values): {missing or 'none'}", flush=True)
    if run.ema is not None:   # the average starts from the loaded weights
        run.ema = type(run.ema)(run.model, run.options["ema_decay"])
    epoch = -1
    if epochs == 0:
        run.best_state = {k: v.detach().clone() for k, v in run.model.state_dict().items()}
        run.best_epoch = int(old["metadata"].get("best_epoch", 0)) - 1
    for epoch in range(epochs):
        train_metrics, train_loss, skipped, batches = trainer.train_one_epoch(run, epoch)
        valid, loss, improved = trainer.validate(run, epoch)
        trainer.end_epoch(run, epoch, train_metrics, train_loss, skipped, batches, valid, loss,
                          improved)
    if select == "last" and epochs:
        _select_last(run, epoch)
    return _finish(run, run_dir, init, old, epochs, missing, select)


def _name(init: Path) -> str:
    """How a card names the file the weights came from: a shipped file by its name, a run's
    model.pt by protocol/variant/model.pt."""
    return init.name if init.name != "model.pt" else "/".join(init.parts[-3:])


def _finish(run, run_dir: Path, init: Path, old: dict, epochs: int, missing,
            select: str) -> Path:
    """Write the run's model file (test errors and training domain of the chosen weights)
    with where its weights started."""
    trainer.finish_run(run, max(epochs - 1, -1))
    model_path = run_dir / "model.pt"
    content = read_model_file(model_path)
    content["metadata"]["initialised_from"] = {
        "file": _name(Path(init)), "physics": old["model_config"].get("physics", 1),
        "best_epoch": old["metadata"].get("best_epoch"), "fine_tuning_epochs": epochs,
        "missing": list(missing), "from": old["metadata"].get("initialised_from"),
        "selected": select}
    atomic_save(content, model_path)
    return model_path


def results(runs: Path, system: str, protocol: str | None, variants: list[str],
            n: int | None = None) -> dict:
    """results.json of the folder's runs, as `longrange.run_longrange` writes it."""
    from mlip_attn.models import load_model
    from mlip_attn.training.evaluate import evaluate_file
    name, spec, out, data_path, held = _setup(runs, system, protocol, n)
    frames = ase.io.read(data_path, ":")
    r_max = longrange.training_reach(frames, spec.reach_factor)
    recipe = REFERENCE_SYSTEMS[system].factory()
    res = {"system": system, "protocol": name, "description": spec.description,
           "data": str(data_path), "structures": len(frames), "r_max": r_max,
           "training": {v: json.loads(json.dumps(
               __import__("yaml").safe_load((out / v / "config.yaml").read_text())["training"]))
               for v in variants}, "variants": {}}
    for variant in variants:
        model = load_model(out / variant / "model.pt", dtype="float64")
        meta = model.metadata
        res["variants"][variant] = {
            "parameters": longrange.count_parameters(model),
            "width": model.model_config["width"], "test": meta["test"],
            "held_out": {h: evaluate_file(model, p) for h, p in held.items()},
            "inference_ms": longrange._inference_ms(model, frames[:32]),
            "initialised_from": meta.get("initialised_from")}
    res["analysis"] = recipe.analysis(out, longrange._calculators(out, variants), name)
    (out / "results.json").write_text(json.dumps(res, indent=1))
    shown = {**res, "training": {"epochs": ", ".join(
        f"{v} {t['epochs']}" for v, t in res["training"].items())}}
    for v in shown["variants"].values():
        v.setdefault("train_seconds", float("nan"))
    print(longrange.format_table(shown))
    return res


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path)
    parser.add_argument("--system", required=True, choices=REFERENCE_SYSTEMS.names())
    parser.add_argument("--protocol", default=None)
    parser.add_argument("--variant", help="the protocol's variant to initialise and train")
    parser.add_argument("--init", type=Path, help="the model file whose weights start the run")
    parser.add_argument("--epochs", type=int, default=0,
                        help="fine-tuning epochs (0: re-mark the weights unchanged)")
    parser.add_argument("--lr", type=float, default=None, help="peak learning rate")
    parser.add_argument("--energy-weight", type=float, default=None,
                        help="loss weight of the per-atom energy (default: the protocol's); a "
                        "higher one for a last stage at a low learning rate, as MACE's second "
                        "stage does, when a few meV of energy are invisible beside the forces")
    parser.add_argument("--n", type=int, default=None,
                        help="structures, as `mlip-attn benchmark longrange --n` made the data")
    parser.add_argument("--physics", type=int, default=None,
                        help="physics version of the run (default: that of models built now)")
    parser.add_argument("--select", choices=("best", "last"), default="best",
                        help="ship the weights of the best validation loss (default) or of the "
                        "last epoch; on a finished run folder only the choice is made again")
    parser.add_argument("--results", nargs="+", metavar="VARIANT",
                        help="write results.json for these runs instead")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.results:
        results(args.runs, args.system, args.protocol, args.results, args.n)
        return
    if not args.variant or not args.init or args.epochs < 0:
        parser.error("--variant and --init are needed (and --epochs ≥ 0)")
    finetune(args.runs, args.system, args.protocol, args.variant, args.init, args.epochs,
             args.lr, args.physics, args.select, args.n, args.energy_weight)


if __name__ == "__main__":
    main()
