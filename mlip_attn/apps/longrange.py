"""``mlip-attn benchmark longrange``: local against global models on the long-range systems.

A reference system's `Protocol` fixes the data (one file split into train/valid/test, plus
held-out sets made separately and never trained on), the backbone every variant shares, the
variants (the local model and global blocks beside it) with parameter counts matched within
±5 % by adjusting the width, and one training budget for all. The default variants are the
local model and every attention preset of `mlip_attn.registry.GLOBAL_BLOCKS`.

Writes ``OUT/<system>/<protocol>/results.json``, a table on stdout, one run directory per
variant, and the system's own analysis (`ReferenceSystem.analysis`: torsion profiles of chain
lengths never trained on, the SN2 profile along ξ, …).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from ..registry import GLOBAL_BLOCKS, REFERENCE_SYSTEMS

# training settings every variant shares unless the protocol overrides them
TRAINING = {"epochs": 60, "batch_size": 8, "lr": 2e-3, "scheduler": "cosine", "lr_min": 1e-5,
            "energy_weight": 10.0, "forces_weight": 1.0, "ema_decay": 0.99}


def variant_attention() -> dict[str, dict | None]:
    """The default variants: ``local`` (None) and every attention preset's config."""
    out: dict[str, dict | None] = {"local": None}
    for preset, (block, options) in GLOBAL_BLOCKS.presets().items():
        out[preset] = {"type": block, **options}
    return out


def protocol_of(system: str, name: str | None = None):
    """(name, `Protocol`) of ``system``: ``name``, or its first protocol."""
    recipe = REFERENCE_SYSTEMS.get(system, "--system").factory
    protocols = recipe.protocols
    name = name or next(iter(protocols))
    if name not in protocols:
        raise ValueError(f"--protocol: {name!r} is not one of {list(protocols)} for {system}")
    return name, protocols[name]


def protocol_data(system: str, protocol: str | None = None, held_out: str | None = None,
                  n: int | None = None, seed: int | None = None) -> tuple[int, int, dict]:
    """(n, seed, recipe options) of what `mlip-attn data` makes: without ``protocol`` the
    recipe's defaults (200 structures, seed 0); with it the protocol's training data (its n and
    options, seed 0) or, with ``held_out``, that held-out set (its n, options and seed) — the
    files `run_longrange` makes. An explicit ``n`` or ``seed`` overrides; a ``seed`` with
    ``held_out`` is refused (it would not be the held-out set any more)."""
    if protocol is None:
        if held_out is not None:
            raise ValueError("--held-out: needs --protocol (held-out sets belong to a protocol)")
        return (200 if n is None else n), (0 if seed is None else seed), {}
    name, spec = protocol_of(system, protocol)
    if held_out is None:
        return (spec.n if n is None else n), (0 if seed is None else seed), dict(spec.data)
    if held_out not in spec.held_out:
        raise ValueError(f"--held-out: {held_out!r} is not one of {list(spec.held_out)} of "
                         f"{system}'s protocol {name!r}")
    if seed is not None:
        raise ValueError(f"--seed: a held-out set has its own seed "
                         f"({spec.held_out[held_out].seed}); leave --seed out")
    chosen = spec.held_out[held_out]
    return (chosen.n if n is None else n), chosen.seed, dict(chosen.options)


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def matched_width(model_cfg: dict, target: int, step: int = 1) -> tuple[int, int]:
    """Width (a multiple of ``step``) whose parameter count is closest to ``target``."""
    from ..models import build_model
    best = None
    for width in range(step * 2, 513, step):
        n = count_parameters(build_model({**model_cfg, "width": width}))
        if best is None or abs(n - target) < abs(best[1] - target):
            best = (width, n)
        if n > target:
            break
    return best


def training_reach(frames, factor: float = 1.5) -> float:
    """A global block's ``r_max`` (Å) from the training structures only (never the held-out
    sets): ``factor`` × the largest interatomic distance among ``frames`` (the true distance,
    not `AtomicData.extent`'s bound), rounded up to 1 Å. A factor above 1 leaves room for
    larger molecules than these; a factor of 1 ends the learned interaction where the data ends, so that beyond it the physical tails
    (`mlip_attn.nn.tails`) take over between fragments instead of an extrapolated kernel."""
    from scipy.spatial.distance import pdist
    extent = max(float(pdist(a.positions).max()) for a in frames if len(a) > 1)
    return float(np.ceil(factor * extent))


def _with_reach(att, r_max: float):
    """``att`` (a block config, a list of them, or None) with ``r_max`` filled in where a
    block takes one and its config does not set it."""
    if att is None:
        return None
    if isinstance(att, list):
        return [_with_reach(a, r_max) for a in att]
    att = dict(att)
    if "r_max" in GLOBAL_BLOCKS[att["type"]].parameters():
        att.setdefault("r_max", r_max)
    return att


def _width_step(att) -> int:
    """Widths must be multiples of every block's head count."""
    blocks = att if isinstance(att, list) else [att] if att else []
    step = 1
    for b in blocks:
        step = max(step, int(b.get("heads", 1)))
    return step


def variant_configs(protocol, elements: list[int], r_max: float, width: int | None = None,
                    names=None) -> dict:
    """Model configs per variant, parameter counts matched to the protocol's reference variant
    at ``width`` (default: the protocol's)."""
    from ..models import build_model
    atts = protocol.variants if protocol.variants is not None else variant_attention()
    common = {**protocol.backbone, "elements": elements}
    reference = {**common, "attention": _with_reach(atts[protocol.reference], r_max)}
    target = count_parameters(build_model({**reference, "width": width or protocol.width}))
    out = {}
    for name in names or atts:
        cfg = {**common, "attention": _with_reach(atts[name], r_max)}
        w, n = matched_width(cfg, target, _width_step(atts[name]))
        if abs(n - target) > 0.05 * target:
            raise RuntimeError(f"{name}: cannot match {target} parameters within 5% (got {n})")
        out[name] = {**cfg, "width": w}
    return out


def make_data(system: str, protocol, out: Path, seed: int = 0, n: int | None = None,
              workers: int = 1) -> tuple[Path, dict]:
    """The protocol's training file and its held-out files (each labelled, resumable)."""
    from ..qm import generate
    path = out / f"{system}.xyz"
    reports = [generate(system, n or protocol.n, str(path), workers=workers, seed=seed,
                        progress=False, **protocol.data)]
    held = {}
    for name, spec in protocol.held_out.items():
        held[name] = out / f"held_out_{name}.xyz"
        reports.append(generate(system, spec.n, str(held[name]), workers=workers,
                                seed=spec.seed, progress=False, **spec.options))
    failed = sum(r.n_failed for r in reports)
    if failed:
        print(f"{system}: {failed} structures failed in the reference method (skipped)")
    return path, held


def run_longrange(system: str, protocol: str | None = None, out: str | Path = "longrange",
                  epochs: int | None = None, width: int | None = None, n: int | None = None,
                  variants=None, workers: int = 1, seed: int = 0, log=print) -> dict:
    """Train every variant of ``system``'s protocol and compare; see the module docstring."""
    import ase.io
    from ..models import load_model
    from ..training import fit, load_config
    from ..training.evaluate import evaluate_file
    name, spec = protocol_of(system, protocol)
    recipe = REFERENCE_SYSTEMS[system].factory()
    out = Path(out) / system / name
    out.mkdir(parents=True, exist_ok=True)
    data_path, held = make_data(system, spec, out, seed, n, workers)
    frames = ase.io.read(data_path, ":")
    everything = frames + [a for p in held.values() for a in ase.io.read(p, ":")]
    elements = sorted({int(z) for a in everything for z in a.numbers})
    r_max = training_reach(frames, spec.reach_factor)
    configs = variant_configs(spec, elements, r_max, width, variants)
    training = {**TRAINING, **spec.training, **({"epochs": epochs} if epochs else {})}
    results = {"system": system, "protocol": name, "description": spec.description,
               "data": str(data_path), "structures": len(frames), "r_max": r_max,
               "training": training, "variants": {}}
    for variant, model_cfg in configs.items():
        run_dir = out / variant
        config = load_config(None, {
            "model": model_cfg,
            "data": {"train": str(data_path), "valid": spec.valid, "test": spec.test,
                     "split_seed": seed},
            "training": {**training, "seed": seed, "progress": False},
            "output": str(run_dir)})
        log(f"{system}/{name}: training {variant} ({model_cfg['width']} wide)")
        result = fit(config, resume=(run_dir / "checkpoint.pt").exists(), log=lambda s: None)
        model = load_model(run_dir / "model.pt", dtype="float64")
        results["variants"][variant] = {
            "parameters": count_parameters(model), "width": model_cfg["width"],
            "test": result.test, "train_seconds": result.seconds,  # summed over resumes
            "held_out": {h: evaluate_file(model, p) for h, p in held.items()},
            "inference_ms": _inference_ms(model, frames[:32])}
    results["analysis"] = recipe.analysis(out, _calculators(out, configs), name)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    log(format_table(results))
    return results


def _inference_ms(model, frames) -> float:
    """Median ms for energy + forces of one structure (float32, batch of 1)."""
    import torch
    from ..data import AtomicData, Batch
    batches = [Batch.collate([AtomicData.from_atoms(a).with_graph(model.cutoff)]).to(dtype=torch.float32)
               for a in frames]
    model = model.float()
    times = []
    for b in batches:
        t = time.perf_counter()
        model.predict(b)
        times.append(time.perf_counter() - t)
    return 1e3 * float(np.median(times[1:] if len(times) > 1 else times))


def _ratio(local: dict, other: dict, key: str) -> float:
    return local[key] / other[key] if other.get(key) else float("nan")


def format_table(results: dict) -> str:
    """The results as text: test-split errors, held-out errors, local/variant ratios."""
    v = results["variants"]
    lines = [f"{results['system']} ({results['protocol']}: {results['description']}): "
             f"{results['structures']} structures, {results['training']['epochs']} epochs",
             f"{'variant':<16}{'params':>8}{'E MAE':>9}{'E RMSE':>9}{'F MAE':>9}{'F RMSE':>9}"
             f"{'train s':>9}{'infer ms':>10}",
             f"{'':<16}{'':>8}{'meV':>9}{'meV':>9}{'meV/Å':>9}{'meV/Å':>9}"]
    for name, r in v.items():
        t = r["test"]
        lines.append(f"{name:<16}{r['parameters']:>8,}{1e3 * t['energy_mae']:>9.1f}"
                     f"{1e3 * t['energy_rmse']:>9.1f}{1e3 * t['forces_mae']:>9.1f}"
                     f"{1e3 * t['forces_rmse']:>9.1f}{r['train_seconds']:>9.0f}"
                     f"{r['inference_ms']:>10.1f}")
    held = sorted({h for r in v.values() for h in r["held_out"]})
    for h in held:
        lines.append(f"held out {h}: " + ", ".join(
            f"{name} E RMSE {1e3 * r['held_out'][h]['energy_rmse']:.1f} meV, F MAE "
            f"{1e3 * r['held_out'][h]['forces_mae']:.1f} meV/Å" for name, r in v.items()))
    local = v.get("local")
    if local:
        for name, r in v.items():
            if name == "local":
                continue
            parts = [f"test E MAE ×{_ratio(local['test'], r['test'], 'energy_mae'):.1f}",
                     f"F MAE ×{_ratio(local['test'], r['test'], 'forces_mae'):.1f}"]
            parts += [f"{h} E RMSE ×{_ratio(local['held_out'][h], r['held_out'][h], 'energy_rmse'):.1f}"
                      for h in held]
            lines.append(f"local/{name}: " + ", ".join(parts))
    return "\n".join(lines)


def _calculators(out: Path, names) -> dict:
    from ..calculators import AttnCalculator
    return {name: AttnCalculator(out / name / "model.pt", default_dtype="float64") for name in names}
