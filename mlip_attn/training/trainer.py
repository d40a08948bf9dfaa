"""`fit(config)`: train a potential, checkpointing every epoch so no progress is lost.

Run directory (``output``)::

    config.yaml       the resolved config            checkpoint.pt   resume state (every epoch)
    model.pt          best-on-validation model       metrics.csv     one row per epoch
    tensorboard/      TensorBoard event files
"""
from __future__ import annotations

import copy
import csv
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from ..data.statistics import charge_spin_seen, energy_scale, reference_energies
from ..models import build_model, save_model
from ..models.model_file import atomic_save
from . import distributed
from .augmentation import random_rotation
from .datasets import load_datasets
from .ema import ExponentialMovingAverage
from ..data import Batch
from .evaluate import evaluate
from .loss import ErrorMetrics, loss_terms
from .nonfinite import clip_and_check_gradients, nonfinite_loss
from .schedule import LRSchedule
from ..threads import threads_for_call

CHECKPOINT_FORMAT = "mlip-attn-checkpoint"


class FitError(RuntimeError):
    """Training cannot start (existing run, missing checkpoint, mismatched resume)."""


@dataclass
class FitResult:
    output: Path
    model_path: Path
    epochs_run: int
    best_epoch: int
    valid: dict
    test: dict
    seconds: float


def _weights(tcfg: dict) -> dict:
    return {"energy": tcfg["energy_weight"], "forces": tcfg["forces_weight"],
            "stress": tcfg["stress_weight"]}


def _target_statistics(structures, names: tuple[str, ...]) -> dict:
    """Initial affine map of the target heads: mean and std of each target on the train set."""
    if not names:
        return {}
    values = torch.tensor([[d.targets[n] for n in names] for d in structures], dtype=torch.float64)
    std = values.std(dim=0) if len(structures) > 1 else torch.ones(len(names))
    return {"target_mean": values.mean(dim=0).tolist(),
            "target_std": torch.where(std > 1e-12, std, torch.ones_like(std)).tolist()}


def _valid_loss(metrics: dict, weights: dict) -> float:
    total = 0.0
    names = weights.get("class_names", [])
    for name in names:
        total += weights["classes"] * metrics[f"class_{name}_cross_entropy"] / len(names)
    for k, name in enumerate(weights.get("target_names", [])):
        std = float(weights["target_std"][k])
        total += weights["targets"] * (metrics[f"target_{name}_rmse"] / std) ** 2
    for name, key in (("energy", "energy_per_atom_rmse"), ("forces", "forces_rmse"),
                      ("stress", "stress_rmse")):
        if weights[name] > 0 and key in metrics:
            total += weights[name] * metrics[key] ** 2
    return total


def _load_checkpoint(path: Path) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise FitError(f"{path}: the checkpoint is truncated or corrupt ({type(exc).__name__}: "
                       f"{str(exc)[:200]}); it was left untouched") from exc
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise FitError(f"{path}: not an mlip-attn training checkpoint")
    return state


def _swap_weights(model, state: dict) -> dict:
    """Load ``state`` into ``model`` and return the weights it replaced."""
    old = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.load_state_dict(state)
    return old


def fit(config: dict, resume: bool = False, log=print) -> FitResult:
    """Train per ``config`` (validated by `load_config`). See the module docstring for outputs."""
    t_start = time.perf_counter()
    tcfg = config["training"]
    rank, world = distributed.init_distributed(tcfg["device"])
    is_main = rank == 0
    out = Path(config["output"])
    ckpt_path = out / "checkpoint.pt"
    checkpoint = None
    if resume:
        if not ckpt_path.exists():
            raise FitError(f"--resume: no checkpoint at {ckpt_path}")
        checkpoint = _load_checkpoint(ckpt_path)
        saved = checkpoint["config"]
        for section in ("model", "data"):
            if saved[section] != config[section]:
                raise FitError(f"--resume: the config's '{section}' section differs from the one "
                               f"the run in {out} was started with; resume with the same config")
    elif ckpt_path.exists() or (out / "model.pt").exists():
        raise FitError(f"{out} already holds a training run; pass --resume to continue it or "
                       f"choose another output directory (nothing was overwritten)")

    dtype = getattr(torch, tcfg["dtype"])
    device = torch.device(tcfg["device"])
    torch.manual_seed(tcfg["seed"])
    weights = _weights(tcfg)
    required = tuple(k for k, w in weights.items() if w > 0)
    elements = None
    if config["model"].get("elements"):
        from ..models.builder import element_numbers
        elements = element_numbers(config["model"]["elements"])
    target_names = tuple(config["model"].get("targets") or ())
    classes = dict(config["model"].get("classes") or {})
    data = load_datasets(config["data"], float(config["model"]["cutoff"]), elements, required,
                         target_names, classes)
    if weights["stress"] > 0 and not all(d.is_periodic for d in data.train):
        raise FitError("training.stress_weight > 0 needs periodic structures with stress labels")

    if checkpoint is None:
        e0 = reference_energies(data.train, data.elements, config["data"]["e0s"])
        scale = energy_scale(data.train, e0)
        model_cfg = {**config["model"], "elements": data.elements,
                     "shift": [e0[z] for z in data.elements], "scale": [scale] * len(data.elements),
                     **_target_statistics(data.train, target_names)}
    else:
        model_cfg = {**config["model"], "elements": checkpoint["elements"]}
    seen = charge_spin_seen(data.train)   # model metadata: AttnCalculator checks against it
    model = build_model(model_cfg).to(device=device, dtype=dtype)
    _check_global_reach(model, data, log if is_main else (lambda s: None))
    distributed.broadcast_parameters(model)
    if target_names:
        weights.update(targets=tcfg["targets_weight"], target_names=list(target_names),
                       target_std=model.target_std)
    if classes:
        weights.update(classes=tcfg["classes_weight"], class_names=list(classes),
                       class_counts=list(classes.values()))
    if getattr(model, "smooth", True) is False and weights["forces"] > 0:
        log("warning: bond-graph encoders make the energy jump where bonds form or break; "
            "train property models with them (forces_weight 0), not force fields")
    optimizer = torch.optim.AdamW(model.parameters(), lr=tcfg["lr"], weight_decay=tcfg["weight_decay"])
    steps_per_epoch = max(1, math.ceil(len(data.train) / tcfg["batch_size"]) // world)
    schedule = LRSchedule(tcfg["lr"], tcfg["scheduler"], tcfg["epochs"], steps_per_epoch,
                          tcfg["warmup_epochs"], tcfg["lr_min"], tcfg["plateau_factor"],
                          tcfg["plateau_patience"])
    ema = ExponentialMovingAverage(model, tcfg["ema_decay"]) if tcfg["ema_decay"] else None
    start_epoch, step, best_loss, best_epoch, bad_epochs = 0, 0, math.inf, -1, 0
    best_state = None
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        schedule.load_state_dict(checkpoint["schedule"])
        if ema is not None:
            ema.load_state_dict(checkpoint["ema"])
        start_epoch, step = checkpoint["epoch"] + 1, checkpoint["step"]
        best_loss, best_epoch = checkpoint["best_loss"], checkpoint["best_epoch"]
        bad_epochs, best_state = checkpoint["bad_epochs"], checkpoint["best_state"]
        t_start -= checkpoint.get("seconds", 0.0)  # training time counts across resumes
        if is_main:
            log(f"resuming {out} after epoch {checkpoint['epoch'] + 1}")
            _truncate_csv(out / "metrics.csv", checkpoint["epoch"] + 1)

    writer = None
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        from torch.utils.tensorboard import SummaryWriter
        writer = SummaryWriter(str(out / "tensorboard"))
        log(f"training {model_cfg['backbone']} ({sum(p.numel() for p in model.parameters()):,} "
            f"parameters) on {len(data.train)} structures, validating on {len(data.valid)}"
            f"{f', {world} processes' if world > 1 else ''}")

    epoch = start_epoch - 1
    for epoch in range(start_epoch, tcfg["epochs"]):
        rotations = torch.Generator().manual_seed(tcfg["seed"] * 100_003 + epoch + 1)
        model.train()
        order = torch.randperm(len(data.train),
                               generator=torch.Generator().manual_seed(tcfg["seed"] * 100_003 + epoch))
        all_batches = [order[k:k + tcfg["batch_size"]].tolist()
                       for k in range(0, len(order), tcfg["batch_size"])]
        mine = all_batches[rank:steps_per_epoch * world:world]
        progress = _progress(mine, epoch, tcfg, is_main)
        train_metrics = ErrorMetrics(target_names, classes)
        loss_sum, skipped = 0.0, 0
        for b, indices in enumerate(progress):
            batch = Batch.collate([data.train[i] for i in indices]).to(device, dtype)
            threads_for_call(int(batch.edge_index.shape[1]))
            if not model.invariant:  # coordinate embeddings: learn orientations by augmentation
                batch = random_rotation(batch, rotations)
            lr = schedule.lr_at(step, epoch)
            for group in optimizer.param_groups:
                group["lr"] = lr
            pred = model.predict(batch, compute_forces=weights["forces"] > 0,
                                 compute_stress=weights["stress"] > 0)
            loss = loss_terms(pred, batch, weights)
            step += 1
            problem = nonfinite_loss(loss)   # the same verdict on every rank
            if problem is None:
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                distributed.average_gradients(model)
                problem = clip_and_check_gradients(model, tcfg["grad_clip"])
            if problem is not None:   # no optimizer step, no EMA update
                if tcfg["nonfinite"] == "stop":
                    raise _diverged(f"non-finite {problem} at epoch {epoch + 1}, batch {b + 1} "
                                    f"of {len(mine)}", epoch, best_epoch, out, writer, tcfg)
                skipped += 1
                continue
            optimizer.step()
            if ema is not None:
                ema.update(model)
            loss_sum += float(loss.detach())
            train_metrics.update(pred, batch)
            if hasattr(progress, "set_postfix"):
                progress.set_postfix(loss=f"{float(loss.detach()):.4g}", lr=f"{lr:.2e}")
        if skipped == len(mine):
            raise _diverged(f"all {skipped} batches of epoch {epoch + 1} had a non-finite loss "
                            f"or gradient", epoch, best_epoch, out, writer, tcfg)
        train_vec = distributed.sum_across_ranks(train_metrics.as_vector())
        train_metrics.load_vector(train_vec)

        # validation with the EMA weights, each rank its share, summed
        live = _swap_weights(model, ema.shadow) if ema is not None else None
        valid_metrics = ErrorMetrics(target_names, classes)
        evaluate(model, data.valid[rank::world], tcfg["batch_size"], valid_metrics)
        valid_metrics.load_vector(distributed.sum_across_ranks(valid_metrics.as_vector()))
        valid = valid_metrics.result()
        valid_loss = _valid_loss(valid, weights)
        if not math.isfinite(valid_loss):
            raise _diverged(f"non-finite validation loss ({valid_loss}) after epoch {epoch + 1}",
                            epoch, best_epoch, out, writer, tcfg)
        improved = valid_loss < best_loss
        if improved:
            best_loss, best_epoch, bad_epochs = valid_loss, epoch, 0
            best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            if is_main:
                save_model(model, out / "model.pt", {"best_epoch": epoch + 1, "valid": valid,
                                                     **seen})
        else:
            bad_epochs += 1
        if live is not None:
            model.load_state_dict(live)
        schedule.end_of_epoch(valid_loss)

        if is_main:
            row = {"epoch": epoch + 1, "lr": schedule.lr_at(step, epoch),
                   "train_loss": loss_sum / max(len(mine) - skipped, 1), "valid_loss": valid_loss,
                   "skipped_batches": skipped,
                   **{f"train_{k}": v for k, v in train_metrics.result().items()},
                   **{f"valid_{k}": v for k, v in valid.items()},
                   "seconds": time.perf_counter() - t_start}
            _append_csv(out / "metrics.csv", row)
            for k, v in row.items():
                if k != "epoch":
                    writer.add_scalar(k.replace("_", "/", 1), v, epoch + 1)
            writer.flush()
            log(_epoch_line(row, improved))
            atomic_save({
                "format": CHECKPOINT_FORMAT, "config": config, "elements": data.elements,
                "epoch": epoch, "step": step, "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
                "ema": ema.state_dict() if ema is not None else None,
                "best_loss": best_loss, "best_epoch": best_epoch, "bad_epochs": bad_epochs,
                "best_state": best_state, "seconds": time.perf_counter() - t_start}, ckpt_path)
        distributed.barrier()
        if tcfg["early_stopping"] and bad_epochs >= tcfg["early_stopping"]:
            if is_main:
                log(f"early stopping: no validation improvement for {bad_epochs} epochs")
            break

    model.load_state_dict(best_state)
    test = evaluate(model, data.test, tcfg["batch_size"]) if data.test else {}
    valid = evaluate(model, data.valid, tcfg["batch_size"])
    if is_main:
        save_model(model, out / "model.pt", {"best_epoch": best_epoch + 1, "valid": valid,
                                             "test": test, **seen})
        writer.close()
        if test:
            log("test: " + format_errors(test))
        log(f"model written to {out / 'model.pt'} (best epoch {best_epoch + 1} of {epoch + 1}); "
            f"metrics in {out / 'metrics.csv'}")
    distributed.barrier()
    return FitResult(out, out / "model.pt", epoch + 1, best_epoch + 1, valid, test,
                     time.perf_counter() - t_start)


def _diverged(problem: str, epoch: int, best_epoch: int, out: Path, writer, tcfg) -> FitError:
    """The error that ends a diverged run (``epoch``, 0-based, is the one that failed); what
    the run directory holds is left as it was after the last good epoch."""
    if writer is not None:
        writer.close()
    if epoch == 0:
        kept, then = ("no model or checkpoint was written (the first epoch diverged)",
                      "run again")
    else:
        kept, then = (f"{out / 'checkpoint.pt'} holds epoch {epoch} and {out / 'model.pt'} the "
                      f"best model (epoch {best_epoch + 1})", "continue with --resume")
    skip = (", or set training.nonfinite: skip to skip such batches"
            if tcfg["nonfinite"] == "stop" else "")
    return FitError(f"training diverged: {problem}; {kept}. Lower training.lr (or set "
                    f"training.grad_clip) and {then}{skip}")


def _check_global_reach(model, data, log) -> None:
    """A model whose global blocks cannot handle periodic cells refuses periodic data; one
    with a finite reach warns about structures larger than it."""
    structures = data.train + data.valid + data.test
    if not model.periodic:
        periodic = [d.name for d in structures if d.is_periodic]
        if periodic:
            raise FitError(f"{periodic[0]}: periodic structure, but this model's global "
                           f"attention supports isolated structures only")
    if model.r_max > 0:
        extents = [d.extent for d in structures]
        too_big = sum(e > model.r_max for e in extents)
        if too_big:
            log(f"warning: {too_big} structures are larger than the attention's reach "
                f"r_max = {model.r_max:g} Å (largest extent {max(extents):.1f} Å); raise "
                f"model.attention.r_max to cover them")


def _progress(items, epoch, tcfg, is_main):
    if not (tcfg["progress"] and is_main):
        return items
    from tqdm.auto import tqdm
    return tqdm(items, desc=f"epoch {epoch + 1}/{tcfg['epochs']}", leave=False, unit="batch")


def _truncate_csv(path: Path, last_epoch: int) -> None:
    """Drop log rows of epochs after ``last_epoch`` (run after the checkpoint, then lost)."""
    if not path.exists():
        return
    lines = path.read_text().splitlines(keepends=True)
    kept = lines[:1] + [r for r in lines[1:] if int(r.split(",", 1)[0]) <= last_epoch]
    if len(kept) != len(lines):
        path.write_text("".join(kept))


def _append_csv(path: Path, row: dict) -> None:
    """Append ``row``; a resumed run keeps the columns of the file's header."""
    new = not path.exists()
    if new:
        fields = list(row)
    else:
        with open(path, newline="") as f:
            fields = next(csv.reader(f))
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore", restval="")
        if new:
            w.writeheader()
        w.writerow(row)


def format_errors(m: dict) -> str:
    """One line of errors in meV units: E per structure and per atom, F, stress."""
    parts = []
    if "energy_mae" in m:
        parts.append(f"E MAE {1e3 * m['energy_mae']:.2f} meV ({1e3 * m['energy_per_atom_mae']:.2f} "
                     f"meV/atom) RMSE {1e3 * m['energy_rmse']:.2f} meV")
    if "forces_mae" in m:
        parts.append(f"F MAE {1e3 * m['forces_mae']:.1f} RMSE {1e3 * m['forces_rmse']:.1f} meV/Å")
    if "stress_mae" in m:
        parts.append(f"S MAE {1e3 * m['stress_mae']:.3f} meV/Å³")
    for key in m:
        if key.startswith("target_") and key.endswith("_mae"):
            parts.append(f"{key[len('target_'):-len('_mae')]} MAE {m[key]:.4g}")
        if key.startswith("class_") and key.endswith("_accuracy"):
            name = key[len("class_"):-len("_accuracy")]
            parts.append(f"{name} accuracy {m[key]:.3f} ROC-AUC "
                         f"{m.get(f'class_{name}_roc_auc', float('nan')):.3f}")
    return " | ".join(parts)


def _epoch_line(row: dict, improved: bool) -> str:
    valid = {k[len("valid_"):]: v for k, v in row.items() if k.startswith("valid_") and k != "valid_loss"}
    skipped = (f"  ({row['skipped_batches']} batches skipped: non-finite)"
               if row["skipped_batches"] else "")
    return (f"epoch {row['epoch']:4d}  lr {row['lr']:.2e}  train loss {row['train_loss']:.4g}  "
            f"valid {format_errors(valid)}{'  *' if improved else ''}{skipped}")
