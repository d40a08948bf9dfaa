"""What a training run keeps on disk between epochs: the resume checkpoint and the per-epoch
CSV log, each written so that a crash at any moment loses at most the epoch in progress.
"""
from __future__ import annotations

import csv
from pathlib import Path

import torch

from ..models.model_file import atomic_save

CHECKPOINT_FORMAT = "mlip-attn-checkpoint"


class FitError(RuntimeError):
    """Training cannot start or go on (existing run, missing checkpoint, mismatched resume,
    divergence)."""


def load_checkpoint(path: Path) -> dict:
    """The resume state saved by `save_checkpoint` (weights-only unpickling)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise FitError(f"{path}: the checkpoint is truncated or corrupt ({type(exc).__name__}: "
                       f"{str(exc)[:200]}); it was left untouched") from exc
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise FitError(f"{path}: not an mlip-attn training checkpoint")
    return state


def save_checkpoint(path: Path, state: dict) -> None:
    """Write ``state`` atomically (the previous checkpoint stays until the new one is whole)."""
    atomic_save({"format": CHECKPOINT_FORMAT, **state}, path)


def truncate_csv(path: Path, last_epoch: int) -> None:
    """Drop log rows of epochs after ``last_epoch`` (run after the checkpoint, then lost)."""
    if not path.exists():
        return
    lines = path.read_text().splitlines(keepends=True)
    kept = lines[:1] + [r for r in lines[1:] if int(r.split(",", 1)[0]) <= last_epoch]
    if len(kept) != len(lines):
        path.write_text("".join(kept))


def append_csv(path: Path, row: dict) -> None:
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


def epoch_line(row: dict, improved: bool) -> str:
    """The log line of one epoch: learning rate, training and validation loss (``*``: the
    validation loss improved, the model was saved), validation errors."""
    valid = {k[len("valid_"):]: v for k, v in row.items()
             if k.startswith("valid_") and k != "valid_loss"}
    skipped = (f"  ({row['skipped_batches']} batches skipped: non-finite)"
               if row["skipped_batches"] else "")
    return (f"epoch {row['epoch']:4d}  lr {row['lr']:.2e}  loss train {row['train_loss']:.4g} "
            f"valid {row['valid_loss']:.4g}{' *' if improved else '  '}  "
            f"{format_errors(valid)}{skipped}")
