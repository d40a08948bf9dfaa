"""``mlip-attn study``: the encoder study (S1–S4, arXiv 2510.05583) on graph-level properties.

Schemes, each for PaiNN and EGNN with the same width, layers, cutoff, data, split, epochs,
batch size and learning-rate schedule (equal budgets; parameter counts differ and are
reported), over several training seeds:

- **S1** message passing only;
- **S2** message passing + encoders (chemical, topological, Laplacian k = 4);
- **S3** GPS: message passing + transformer attention beside every layer (2 heads, learned
  negative power-law distance bias — the study found 2 heads enough);
- **S4** fused local–global + encoders (S3 + the encoders of S2).

Every model is a property model: energy and force losses are off, the per-structure targets
(z-scored MSE) and class labels (cross-entropy) are trained together. Each run trains in its
own spawned process, so its peak memory is its own; a finished run leaves ``result.json`` in
its folder and is skipped when the study is run again (an interrupted run resumes from its
checkpoint). Writes ``<out>/results.json``, ``<out>/table.md`` and ``<out>/study.png``.
"""
from __future__ import annotations

import json
import math
import multiprocessing as mp
import resource
import statistics
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

SCHEMES = {"S1": (False, False), "S2": (True, False), "S3": (False, True), "S4": (True, True)}
SCHEME_NAMES = {"S1": "message passing", "S2": "MP + encoders", "S3": "GPS (MP + attention)",
                "S4": "GPS + encoders"}
BACKBONES = ("painn", "egnn")
ENCODERS = ["chemical", "topological", {"type": "laplacian", "k": 4}]
ATTENTION = {"type": "transformer", "heads": 2, "bias": "power_law_negative"}


@dataclass(frozen=True)
class StudySettings:
    """The budget every scheme gets (model size, training length, seeds)."""

    width: int = 32
    layers: int = 3
    cutoff: float = 4.0
    num_basis: int = 16
    epochs: int = 40
    batch_size: int = 32
    lr: float = 2e-3
    seeds: tuple = (0, 1, 2)


FULL = StudySettings()
QUICK = StudySettings(epochs=8)


# ------------------------------------------------------------------ data

def prepare_data(frames, path: Path, targets: list[str], classes: dict) -> Path:
    """Write the study's training file: geometry, charge and the labels only (no energies or
    forces, so evaluation computes no forces). Missing labels are errors naming the frame."""
    import ase.io
    from ase import Atoms
    out = []
    for k, a in enumerate(frames):
        missing = [t for t in list(targets) + list(classes) if t not in a.info]
        if missing:
            raise ValueError(f"{path.name} frame {k}: no {missing[0]!r} in atoms.info "
                             f"(found {sorted(a.info)})")
        b = Atoms(numbers=a.numbers, positions=a.positions)
        b.info.update({t: float(a.info[t]) for t in targets})
        b.info.update({c: int(a.info[c]) for c in classes})
        b.info["total_charge"] = int(a.info.get("total_charge", a.info.get("charge", 0)))
        out.append(b)
    path.parent.mkdir(parents=True, exist_ok=True)
    ase.io.write(path, out, format="extxyz")
    return path


def study_data(out: Path, dataset: str | None, data: str | None, targets, classes,
               quick: bool, workers: int, log) -> tuple[Path, list[str], dict, dict]:
    """(training file, targets, classes, units) from a built-in data set or a user file."""
    import ase.io
    from ..qm.datasets import add_derived, generate_dataset, get_dataset
    if dataset:
        recipe = get_dataset(dataset)
        source = generate_dataset(dataset, out / "data", quick=quick, workers=workers,
                                  progress=False, log=log)
        frames = [add_derived(a) for a in ase.io.read(source, ":")]
        frames.sort(key=lambda a: int(a.info["index"]))
        targets = list(targets or recipe.targets)
        classes = dict(recipe.classes if classes is None else classes)
        units = dict(recipe.targets)
    else:
        if not data or not Path(data).exists():
            raise ValueError(f"--data: no such file {data!r}")
        if not targets and not classes:
            raise ValueError("--target: name at least one per-structure target (or --class) "
                             "stored in atoms.info of --data")
        frames = ase.io.read(data, ":")
        targets, classes, units = list(targets or []), dict(classes or {}), {}
    name = dataset or Path(data).stem
    path = prepare_data(frames, out / "data" / f"{name}-labels.xyz", targets, classes)
    return path, targets, classes, units


# ------------------------------------------------------------------ one run

def run_config(path: Path, backbone: str, scheme: str, seed: int, settings: StudySettings,
               targets: list[str], classes: dict, run_dir: Path) -> dict:
    """The training config of one (backbone, scheme, seed)."""
    from ..training import load_config
    encoders, attention = SCHEMES[scheme]
    model = {"backbone": backbone, "cutoff": settings.cutoff, "width": settings.width,
             "layers": settings.layers, "num_basis": settings.num_basis,
             "attention": dict(ATTENTION) if attention else None,
             "encoders": list(ENCODERS) if encoders else [],
             "targets": list(targets), "classes": dict(classes)}
    return load_config(None, {
        "model": model,
        "data": {"train": str(path), "valid": 0.1, "test": 0.1, "split_seed": 0, "e0s": "zero"},
        "training": {"epochs": settings.epochs, "batch_size": settings.batch_size,
                     "lr": settings.lr, "scheduler": "cosine", "lr_min": 1e-5,
                     "energy_weight": 0.0, "forces_weight": 0.0, "targets_weight": 1.0,
                     "classes_weight": 1.0, "ema_decay": 0.99, "seed": seed,
                     "progress": False},
        "output": str(run_dir)})


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2 ** 20


def train_one(config: dict, result_path: str, queue=None) -> dict:
    """Train one run (resuming a checkpoint), write its ``result.json``: test metrics,
    parameters, training seconds, peak memory (MB, whole process) and its rise during
    training."""
    import torch
    torch.set_num_threads(1)
    from ..training import fit
    from ..models import load_model
    out = Path(config["output"])
    before = _rss_mb()
    result = fit(config, resume=(out / "checkpoint.pt").exists(), log=lambda s: None)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    model = load_model(result.model_path)
    record = {"config": config, "test": result.test, "valid": result.valid,
              "best_epoch": result.best_epoch,
              "parameters": sum(p.numel() for p in model.parameters()),
              "train_seconds": result.seconds, "peak_mb": peak, "training_mb": peak - before}
    Path(result_path).write_text(json.dumps(record, indent=1))
    if queue is not None:
        queue.put(record)
    return record


def _train_isolated(config: dict, result_path: Path) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=train_one, args=(config, str(result_path), queue))
    proc.start()
    proc.join()
    if proc.exitcode != 0:
        raise RuntimeError(f"{config['output']}: training failed (exit code {proc.exitcode}); "
                           f"run the study again to resume it")
    return queue.get()


# ------------------------------------------------------------------ the study

def run_study(dataset: str | None = None, data: str | None = None, targets=None, classes=None,
              out: str | Path = "study_run", quick: bool = False, settings: StudySettings | None = None,
              backbones=BACKBONES, schemes=tuple(SCHEMES), workers: int = 1, isolate: bool = True,
              log=print) -> dict:
    """Run S1–S4 × ``backbones`` × seeds on a built-in ``dataset`` ("local", "longrange") or a
    ``data`` file with ``targets`` (and ``classes``); see the module docstring."""
    t0 = time.perf_counter()
    settings = settings or (QUICK if quick else FULL)
    unknown = sorted(set(schemes) - set(SCHEMES))
    if unknown:
        raise ValueError(f"--schemes: {unknown[0]!r} is not one of {list(SCHEMES)}")
    out = Path(out)
    path, targets, classes, units = study_data(out, dataset, data, targets, classes, quick,
                                               workers, log)
    runs = {}
    for backbone in backbones:
        for scheme in schemes:
            for seed in settings.seeds:
                name = f"{backbone}-{scheme}-seed{seed}"
                run_dir = out / "runs" / name
                result_path = run_dir / "result.json"
                config = run_config(path, backbone, scheme, seed, settings, targets, classes,
                                    run_dir)
                if result_path.exists():
                    runs[name] = json.loads(result_path.read_text())
                    if runs[name].get("config") != json.loads(json.dumps(config)):
                        raise ValueError(f"{run_dir}: trained with other settings than this "
                                         f"study's; choose another --out (or delete it)")
                    continue
                t = time.perf_counter()
                runs[name] = (_train_isolated(config, result_path) if isolate
                              else train_one(config, str(result_path)))
                log(f"{name}: {summary_line(runs[name]['test'], targets, classes)} "
                    f"({time.perf_counter() - t:.0f} s)")
    results = {"dataset": dataset or str(data), "data": str(path), "structures": _count(path),
               "targets": {t: units.get(t, "") for t in targets}, "classes": classes,
               "settings": asdict(settings), "schemes": SCHEME_NAMES,
               "encoders": ENCODERS, "attention": ATTENTION, "runs": runs,
               "table": aggregate(runs, backbones, schemes, targets, classes),
               "wall_seconds": time.perf_counter() - t0}
    results["findings"] = findings(results["table"], backbones, targets, classes)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    table = format_table(results)
    (out / "table.md").write_text(table + "\n")
    plot_study(results, out / "study.png")
    log(table)
    log(f"wrote {out / 'results.json'}, {out / 'table.md'}, {out / 'study.png'}")
    return results


def _count(path: Path) -> int:
    return sum(1 for line in open(path) if line.startswith("Lattice") or "Properties=" in line)


def summary_line(test: dict, targets, classes) -> str:
    parts = [f"{t} MAE {test[f'target_{t}_mae']:.4g}" for t in targets]
    parts += [f"{c} acc {test[f'class_{c}_accuracy']:.3f}" for c in classes]
    return ", ".join(parts)


def metric_keys(targets, classes) -> list[str]:
    return ([f"target_{t}_mae" for t in targets]
            + [f"class_{c}_{m}" for c in classes for m in ("accuracy", "roc_auc")])


def aggregate(runs: dict, backbones, schemes, targets, classes) -> dict:
    """backbone → scheme → metric → (mean, std over seeds); plus parameters, time, memory."""
    table: dict = {}
    for backbone in backbones:
        for scheme in schemes:
            group = [r for name, r in runs.items() if name.startswith(f"{backbone}-{scheme}-")]
            if not group:
                continue
            row = {}
            for key in metric_keys(targets, classes):
                values = [r["test"][key] for r in group if not math.isnan(r["test"].get(key, math.nan))]
                row[key] = _mean_std(values)
            for key in ("train_seconds", "peak_mb", "training_mb"):
                row[key] = _mean_std([r[key] for r in group])
            row["parameters"] = group[0]["parameters"]
            row["seeds"] = len(group)
            table.setdefault(backbone, {})[scheme] = row
    return table


def _mean_std(values):
    if not values:
        return [math.nan, math.nan]
    return [statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0]


def findings(table: dict, backbones, targets, classes) -> dict:
    """The seed's three claims, per backbone: where S2 ranks (1 = lowest mean error) and how
    far it is from the best scheme; how much S4 improves on the best of S1/S2 (relative to
    the best local scheme, and in units of the larger of their seed std); the memory and
    time of S3/S4 over S1/S2."""
    out = {}
    for backbone in backbones:
        rows = table.get(backbone, {})
        if not all(s in rows for s in SCHEMES):
            continue
        per_target = {}
        for key in metric_keys(targets, classes):
            higher_better = key.startswith("class_")
            sign = -1.0 if higher_better else 1.0
            order = sorted(SCHEMES, key=lambda s: sign * rows[s][key][0])
            best = rows[order[0]][key][0]
            local = min(("S1", "S2"), key=lambda s: sign * rows[s][key][0])
            l_mean, l_std = rows[local][key]
            g_mean, g_std = rows["S4"][key]
            gain = sign * (l_mean - g_mean)
            per_target[key] = {
                "ranking": order, "s2_rank": order.index("S2") + 1,
                "s2_from_best": abs(rows["S2"][key][0] - best) / max(abs(best), 1e-12),
                "s4_rank": order.index("S4") + 1,
                "s4_gain_over_best_local": gain / max(abs(l_mean), 1e-12),
                "s4_gain_in_std": gain / max(l_std, g_std, 1e-12)}
        memory = {f"{a}/{b}": rows[a]["training_mb"][0] / max(rows[b]["training_mb"][0], 1e-9)
                  for a, b in (("S3", "S1"), ("S4", "S2"))}
        time_ratio = {f"{a}/{b}": rows[a]["train_seconds"][0] / rows[b]["train_seconds"][0]
                      for a, b in (("S2", "S1"), ("S3", "S1"), ("S4", "S2"))}
        out[backbone] = {"metrics": per_target, "training_memory_ratio": memory,
                         "training_time_ratio": time_ratio}
    return out


def _cell(mean_std, scale=1.0, digits=3) -> str:
    m, s = mean_std
    if math.isnan(m):
        return "–"
    return f"{m * scale:.{digits}f} ± {s * scale:.{digits}f}"


def format_table(results: dict) -> str:
    """Markdown table: one row per backbone × scheme, mean ± std over seeds."""
    targets, classes = list(results["targets"]), results["classes"]
    units = results["targets"]
    head = (["backbone", "scheme"] + [f"{t} MAE ({units[t]})" if units[t] else f"{t} MAE"
                                      for t in targets]
            + [f"{c} {m}" for c in classes for m in ("accuracy", "ROC-AUC")]
            + ["parameters", "training time (s)", "peak memory (MB)", "training memory (MB)"])
    lines = [f"**{results['dataset']}**: {results['structures']} structures (80/10/10 split), "
             f"{results['settings']['epochs']} epochs, width {results['settings']['width']}, "
             f"{results['settings']['layers']} layers × {results['settings']['cutoff']} Å, "
             f"{len(results['settings']['seeds'])} seeds (test set, mean ± std)", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for backbone, rows in results["table"].items():
        for scheme, row in rows.items():
            cells = [backbone, f"{scheme} {SCHEME_NAMES[scheme]}"]
            cells += [_cell(row[f"target_{t}_mae"]) for t in targets]
            cells += [_cell(row[f"class_{c}_{m}"]) for c in classes for m in ("accuracy", "roc_auc")]
            cells += [f"{row['parameters']:,}", _cell(row["train_seconds"], digits=0),
                      _cell(row["peak_mb"], digits=0), _cell(row["training_mb"], digits=0)]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_study(results: dict, path: Path) -> None:
    """One panel per metric: mean ± std over seeds by scheme, one bar per backbone."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    keys = metric_keys(results["targets"], results["classes"])
    keys = [k for k in keys if not k.endswith("roc_auc")] + ["training_mb"]
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 3.2))
    axes = np.atleast_1d(axes)
    backbones = list(results["table"])
    for ax, key in zip(axes, keys):
        schemes = list(next(iter(results["table"].values())))
        x = np.arange(len(schemes))
        for b, backbone in enumerate(backbones):
            rows = results["table"][backbone]
            mean = [rows[s][key][0] for s in schemes]
            std = [rows[s][key][1] for s in schemes]
            ax.bar(x + (b - (len(backbones) - 1) / 2) * 0.38, mean, 0.38, yerr=std,
                   label=backbone, capsize=2)
        ax.set_xticks(x, schemes)
        label = {"training_mb": "training memory (MB)"}.get(key, key)
        for prefix, suffix, text in (("target_", "_mae", " MAE"), ("class_", "_accuracy", " accuracy")):
            if key.startswith(prefix) and key.endswith(suffix):
                label = key[len(prefix):-len(suffix)] + text
        ax.set_title(label, fontsize=9)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{results['dataset']}: test metrics, mean ± std over "
                 f"{len(results['settings']['seeds'])} seeds", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def settings_with(settings: StudySettings, **changes) -> StudySettings:
    """``settings`` with the given fields replaced (None values ignored)."""
    return replace(settings, **{k: v for k, v in changes.items() if v is not None})
