"""`fit(config)`: train a potential, checkpointing every epoch so no progress is lost.

The steps, each a function (after MACE's train / train-one-epoch / take-step):

* `start_run`: read the data, build (or restore) the model, optimizer, schedule and EMA;
* `train_one_epoch`: the epoch's batches, each through `take_step`;
* `validate`: errors on the validation set with the EMA weights, the best model saved;
* `end_epoch`: the CSV row, TensorBoard, the log line and the resume checkpoint;
* `finish_run`: the best weights evaluated on validation and test, the final model file.

Run directory (``output``)::

    config.yaml       the resolved config            checkpoint.pt   resume state (every epoch)
    model.pt          best-on-validation model       metrics.csv     one row per epoch
    tensorboard/      TensorBoard event files
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import yaml

from ..data import Batch
from ..data.statistics import charge_spin_seen, energy_scale, reference_energies
from ..models import build_model, domain_statistics, save_model
from ..models.builder import describe_model
from ..threads import threads_for_call
from . import distributed
from .augmentation import random_rotation
from .datasets import check_global_reach, load_datasets
from .ema import ExponentialMovingAverage
from .evaluate import evaluate
from .loss import ErrorMetrics, loss_terms
from .nonfinite import clip_and_check_gradients, nonfinite_loss
from .run_files import (FitError, append_csv, epoch_line, format_errors, load_checkpoint,
                        save_checkpoint, truncate_csv)
from .schedule import LRSchedule
from .weights import loss_weights, target_statistics, valid_loss

__all__ = ["FitError", "FitResult", "fit", "format_errors"]


@dataclass
class FitResult:
    output: Path
    model_path: Path
    epochs_run: int
    best_epoch: int
    valid: dict
    test: dict
    seconds: float


@dataclass
class TrainingRun:
    """Everything one training run carries from epoch to epoch (what the checkpoint saves)."""

    config: dict
    options: dict                       # the checked ``training`` section
    out: Path
    rank: int
    world: int
    data: object                        # `mlip_attn.training.datasets.Datasets`
    model: torch.nn.Module
    weights: dict                       # loss weights (`mlip_attn.training.weights`)
    optimizer: torch.optim.Optimizer
    schedule: LRSchedule
    ema: ExponentialMovingAverage | None
    seen: dict                          # charges and spins of the training data (metadata)
    log: Callable[[str], None]
    t_start: float
    steps_per_epoch: int
    step: int = 0
    start_epoch: int = 0
    best_loss: float = math.inf
    best_epoch: int = -1
    bad_epochs: int = 0
    best_state: dict | None = None
    writer: object = None
    dtype: torch.dtype = torch.float32
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def checkpoint_path(self) -> Path:
        return self.out / "checkpoint.pt"


def fit(config: dict, resume: bool = False, log=print) -> FitResult:
    """Train per ``config`` (validated by `load_config`). See the module docstring."""
    run = start_run(config, resume, log)
    epoch = run.start_epoch - 1
    for epoch in range(run.start_epoch, run.options["epochs"]):
        train_metrics, train_loss, skipped, batches = train_one_epoch(run, epoch)
        valid, loss, improved = validate(run, epoch)
        end_epoch(run, epoch, train_metrics, train_loss, skipped, batches, valid, loss, improved)
        if run.options["early_stopping"] and run.bad_epochs >= run.options["early_stopping"]:
            if run.is_main:
                log(f"early stopping: no validation improvement for {run.bad_epochs} epochs")
            break
    return finish_run(run, epoch)


# ----------------------------------------------------------------------------- start


def _resume_state(config: dict, out: Path, resume: bool) -> dict | None:
    """The checkpoint to resume from (checked against ``config``), or None for a new run in
    an output folder that holds none."""
    ckpt = out / "checkpoint.pt"
    if not resume:
        if ckpt.exists() or (out / "model.pt").exists():
            raise FitError(f"{out} already holds a training run; pass --resume to continue it "
                           f"or choose another output directory (nothing was overwritten)")
        return None
    if not ckpt.exists():
        raise FitError(f"--resume: no checkpoint at {ckpt}")
    checkpoint = load_checkpoint(ckpt)
    for section in ("model", "data"):
        if checkpoint["config"][section] != config[section]:
            raise FitError(f"--resume: the config's '{section}' section differs from the one "
                           f"the run in {out} was started with; resume with the same config")
    return checkpoint


def _load_data(config: dict, weights: dict):
    elements = None
    if config["model"].get("elements"):
        from ..models.builder import element_numbers
        elements = element_numbers(config["model"]["elements"])
    required = tuple(k for k in ("energy", "forces", "stress") if weights[k] > 0)
    data = load_datasets(config["data"], float(config["model"]["cutoff"]), elements, required,
                         tuple(config["model"].get("targets") or ()),
                         dict(config["model"].get("classes") or {}))
    if weights["stress"] > 0 and not all(d.is_periodic for d in data.train):
        raise FitError("training.stress_weight > 0 needs periodic structures with stress labels")
    return data


def _model_config(config: dict, data, checkpoint: dict | None) -> dict:
    """The model section completed from the training data: elements, per-element energy shifts
    (E0s), the energy scale and the targets' statistics (a resumed run keeps its own)."""
    if checkpoint is not None:
        return {**config["model"], "elements": checkpoint["elements"]}
    e0 = reference_energies(data.train, data.elements, config["data"]["e0s"])
    scale = energy_scale(data.train, e0)
    return {**config["model"], "elements": data.elements,
            "shift": [e0[z] for z in data.elements], "scale": [scale] * len(data.elements),
            **target_statistics(data.train, tuple(config["model"].get("targets") or ()))}


def start_run(config: dict, resume: bool, log) -> TrainingRun:
    """Check the output folder, read the data, build or restore everything a run carries."""
    t_start = time.perf_counter()
    options = config["training"]
    rank, world = distributed.init_distributed(options["device"])
    out = Path(config["output"])
    checkpoint = _resume_state(config, out, resume)
    torch.manual_seed(options["seed"])
    weights = loss_weights(options)
    data = _load_data(config, weights)
    model_cfg = _model_config(config, data, checkpoint)
    dtype, device = getattr(torch, options["dtype"]), torch.device(options["device"])
    model = build_model(model_cfg).to(device=device, dtype=dtype)
    check_global_reach(model, data, log if rank == 0 else (lambda s: None))
    distributed.broadcast_parameters(model)
    weights = loss_weights(options, model, config["model"])
    if getattr(model, "smooth", True) is False and weights["forces"] > 0:
        log("warning: bond-graph encoders make the energy jump where bonds form or break; "
            "train property models with them (forces_weight 0), not force fields")
    steps_per_epoch = max(1, math.ceil(len(data.train) / options["batch_size"]) // world)
    run = TrainingRun(
        config=config, options=options, out=out, rank=rank, world=world, data=data,
        model=model, weights=weights,
        optimizer=torch.optim.AdamW(model.parameters(), lr=options["lr"],
                                    weight_decay=options["weight_decay"]),
        schedule=LRSchedule.for_training(options, steps_per_epoch),
        ema=ExponentialMovingAverage(model, options["ema_decay"]) if options["ema_decay"]
        else None,
        seen=charge_spin_seen(data.train), log=log, t_start=t_start,
        steps_per_epoch=steps_per_epoch, dtype=dtype, device=device)
    if checkpoint is not None:
        _restore(run, checkpoint)
    if run.is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        from torch.utils.tensorboard import SummaryWriter
        run.writer = SummaryWriter(str(out / "tensorboard"))
        log(f"training {describe_model(model_cfg)} ({sum(p.numel() for p in model.parameters()):,}"
            f" parameters) on {len(data.train)} structures, validating on {len(data.valid)}"
            f"{f', {world} processes' if world > 1 else ''}; loss = weighted squared errors, "
            f"'*' marks an epoch whose validation loss improved (model saved)")
    return run


def _restore(run: TrainingRun, checkpoint: dict) -> None:
    run.model.load_state_dict(checkpoint["model"])
    run.optimizer.load_state_dict(checkpoint["optimizer"])
    run.schedule.load_state_dict(checkpoint["schedule"])
    if run.ema is not None:
        run.ema.load_state_dict(checkpoint["ema"])
    run.start_epoch, run.step = checkpoint["epoch"] + 1, checkpoint["step"]
    run.best_loss, run.best_epoch = checkpoint["best_loss"], checkpoint["best_epoch"]
    run.bad_epochs, run.best_state = checkpoint["bad_epochs"], checkpoint["best_state"]
    run.t_start -= checkpoint.get("seconds", 0.0)  # training time counts across resumes
    if run.is_main:
        run.log(f"resuming {run.out} after epoch {checkpoint['epoch'] + 1}")
        truncate_csv(run.out / "metrics.csv", checkpoint["epoch"] + 1)


# ----------------------------------------------------------------------------- epochs


def _epoch_batches(run: TrainingRun, epoch: int) -> list[list[int]]:
    """This rank's batches of the epoch: a seeded shuffle, split across ranks."""
    size, seed = run.options["batch_size"], run.options["seed"]
    order = torch.randperm(len(run.data.train),
                           generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    batches = [order[k:k + size].tolist() for k in range(0, len(order), size)]
    return batches[run.rank:run.steps_per_epoch * run.world:run.world]


def take_step(run: TrainingRun, batch: Batch, epoch: int) -> tuple[dict, torch.Tensor,
                                                                    str | None]:
    """One optimizer step on ``batch``: (predictions, loss, problem). ``problem`` names a
    non-finite loss or gradient, in which case no step was taken (the same verdict on every
    rank)."""
    lr = run.schedule.lr_at(run.step, epoch)
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    pred = run.model.predict(batch, compute_forces=run.weights["forces"] > 0,
                             compute_stress=run.weights["stress"] > 0)
    loss = loss_terms(pred, batch, run.weights)
    run.step += 1
    problem = nonfinite_loss(loss)
    if problem is None:
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        distributed.average_gradients(run.model)
        problem = clip_and_check_gradients(run.model, run.options["grad_clip"])
    if problem is None:
        run.optimizer.step()
        if run.ema is not None:
            run.ema.update(run.model)
    return pred, loss.detach(), problem


def train_one_epoch(run: TrainingRun, epoch: int) -> tuple[ErrorMetrics, float, int, int]:
    """(training errors, mean loss, batches skipped, batches) of one pass over this rank's
    share of the training set."""
    options = run.options
    rotations = torch.Generator().manual_seed(options["seed"] * 100_003 + epoch + 1)
    run.model.train()
    mine = _epoch_batches(run, epoch)
    progress = _progress(mine, epoch, options, run.is_main)
    metrics = _error_metrics(run)
    loss_sum, skipped = 0.0, 0
    for b, indices in enumerate(progress):
        batch = Batch.collate([run.data.train[i] for i in indices]).to(run.device, run.dtype)
        threads_for_call(int(batch.edge_index.shape[1]))
        if not run.model.invariant:  # coordinate embeddings: learn orientations by augmentation
            batch = random_rotation(batch, rotations)
        pred, loss, problem = take_step(run, batch, epoch)
        if problem is not None:
            if options["nonfinite"] == "stop":
                raise _diverged(run, f"non-finite {problem} at epoch {epoch + 1}, batch {b + 1} "
                                f"of {len(mine)}", epoch)
            skipped += 1
            continue
        loss_sum += float(loss)
        metrics.update(pred, batch)
        if hasattr(progress, "set_postfix"):
            progress.set_postfix(loss=f"{float(loss):.4g}",
                                 lr=f"{run.schedule.lr_at(run.step - 1, epoch):.2e}")
    if skipped == len(mine):
        raise _diverged(run, f"all {skipped} batches of epoch {epoch + 1} had a non-finite loss "
                        f"or gradient", epoch)
    metrics.load_vector(distributed.sum_across_ranks(metrics.as_vector()))
    return metrics, loss_sum / max(len(mine) - skipped, 1), skipped, len(mine)


def validate(run: TrainingRun, epoch: int) -> tuple[dict, float, bool]:
    """Validation errors with the EMA weights (each rank its share, summed), the validation
    loss, and whether it improved (then the model file is written)."""
    model = run.model
    live = _swap_weights(model, run.ema.shadow) if run.ema is not None else None
    metrics = _error_metrics(run)
    evaluate(model, run.data.valid[run.rank::run.world], run.options["batch_size"], metrics)
    metrics.load_vector(distributed.sum_across_ranks(metrics.as_vector()))
    valid = metrics.result()
    loss = valid_loss(valid, run.weights)
    if not math.isfinite(loss):
        raise _diverged(run, f"non-finite validation loss ({loss}) after epoch {epoch + 1}",
                        epoch)
    improved = loss < run.best_loss
    if improved:
        run.best_loss, run.best_epoch, run.bad_epochs = loss, epoch, 0
        run.best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        if run.is_main:
            save_model(model, run.out / "model.pt", {"best_epoch": epoch + 1, "valid": valid,
                                                     **run.seen})
    else:
        run.bad_epochs += 1
    if live is not None:
        model.load_state_dict(live)
    run.schedule.end_of_epoch(loss)
    return valid, loss, improved


def end_epoch(run: TrainingRun, epoch: int, train_metrics: ErrorMetrics, train_loss: float,
              skipped: int, batches: int, valid: dict, loss: float, improved: bool) -> None:
    """Log the epoch (CSV, TensorBoard, one line) and write the resume checkpoint."""
    if run.is_main:
        row = {"epoch": epoch + 1, "lr": run.schedule.lr_at(run.step, epoch),
               "train_loss": train_loss, "valid_loss": loss, "skipped_batches": skipped,
               **{f"train_{k}": v for k, v in train_metrics.result().items()},
               **{f"valid_{k}": v for k, v in valid.items()},
               "seconds": time.perf_counter() - run.t_start}
        append_csv(run.out / "metrics.csv", row)
        for k, v in row.items():
            if k != "epoch":
                run.writer.add_scalar(k.replace("_", "/", 1), v, epoch + 1)
        run.writer.flush()
        run.log(epoch_line(row, improved))
        save_checkpoint(run.checkpoint_path, {
            "config": run.config, "elements": run.data.elements, "epoch": epoch,
            "step": run.step, "model": run.model.state_dict(),
            "optimizer": run.optimizer.state_dict(), "schedule": run.schedule.state_dict(),
            "ema": run.ema.state_dict() if run.ema is not None else None,
            "best_loss": run.best_loss, "best_epoch": run.best_epoch,
            "bad_epochs": run.bad_epochs, "best_state": run.best_state,
            "seconds": time.perf_counter() - run.t_start})
    distributed.barrier()


def finish_run(run: TrainingRun, last_epoch: int) -> FitResult:
    """Evaluate the best weights on validation and test and write the final model file."""
    model, size = run.model, run.options["batch_size"]
    model.load_state_dict(run.best_state)
    test = evaluate(model, run.data.test, size) if run.data.test else {}
    valid = evaluate(model, run.data.valid, size)
    if run.is_main:   # + the training domain (`mlip_attn.models.domain`), for DomainWarnings
        seen = {**run.seen, **domain_statistics(model, run.data.train, run.data.valid or None)}
        save_model(model, run.out / "model.pt", {"best_epoch": run.best_epoch + 1,
                                                 "valid": valid, "test": test, **seen})
        run.writer.close()
        if test:
            run.log("test: " + format_errors(test))
        run.log(f"model written to {run.out / 'model.pt'} (best epoch {run.best_epoch + 1} of "
                f"{last_epoch + 1}); metrics in {run.out / 'metrics.csv'}")
    distributed.barrier()
    return FitResult(run.out, run.out / "model.pt", last_epoch + 1, run.best_epoch + 1, valid,
                     test, time.perf_counter() - run.t_start)


# ----------------------------------------------------------------------------- helpers

def _error_metrics(run: TrainingRun) -> ErrorMetrics:
    model = run.config["model"]
    return ErrorMetrics(tuple(model.get("targets") or ()), dict(model.get("classes") or {}))


def _swap_weights(model, state: dict) -> dict:
    """Load ``state`` into ``model`` and return the weights it replaced."""
    old = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.load_state_dict(state)
    return old


def _diverged(run: TrainingRun, problem: str, epoch: int) -> FitError:
    """The error that ends a diverged run (``epoch``, 0-based, is the one that failed); what
    the run directory holds is left as it was after the last good epoch."""
    if run.writer is not None:
        run.writer.close()
    out = run.out
    if epoch == 0:
        kept, then = ("no model or checkpoint was written (the first epoch diverged)",
                      "run again")
    else:
        kept, then = (f"{out / 'checkpoint.pt'} holds epoch {epoch} and {out / 'model.pt'} the "
                      f"best model (epoch {run.best_epoch + 1})", "continue with --resume")
    skip = (", or set training.nonfinite: skip to skip such batches"
            if run.options["nonfinite"] == "stop" else "")
    return FitError(f"training diverged: {problem}; {kept}. Lower training.lr (or set "
                    f"training.grad_clip) and {then}{skip}")


def _progress(items, epoch, options, is_main):
    if not (options["progress"] and is_main):
        return items
    from tqdm.auto import tqdm
    return tqdm(items, desc=f"epoch {epoch + 1}/{options['epochs']}", leave=False, unit="batch")
