"""``mlip-attn benchmark longrange``: local vs global models on the long-range test systems.

Protocol: one data set per reference system (GFN2-xTB via tblite, or the analytic NaCl toy),
one split, the same training budget (epochs, batch size, LR schedule) for every variant, and
parameter counts matched within ±5 % by adjusting the width. Variants: ``local`` (PaiNN) and
PaiNN with every attention preset of `mlip_attn.registry.GLOBAL_BLOCKS` (``efa-l0``: EFA on
scalars, ``efa-l1``: + vector channels, ``efa-l2``: + rank-2 tensor channels,
``transformer``: softmax attention with a learned negative power-law bias, …).

Writes ``OUT/<system>/results.json``, a table on stdout, one run directory per variant, and the
system's own analysis (its `ReferenceSystem.analysis`: a torsion profile of a held-out chain
length, the SN2 profile along ξ, …).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from ..registry import GLOBAL_BLOCKS, REFERENCE_SYSTEMS


def variant_attention() -> dict[str, dict | None]:
    """Variant name → attention config (None for the local model): ``local`` and every
    attention preset. Global blocks with a finite reach get ``r_max`` later."""
    out: dict[str, dict | None] = {"local": None}
    for preset, (block, options) in GLOBAL_BLOCKS.presets().items():
        out[preset] = {"type": block, **options}
    return out


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def matched_width(model_cfg: dict, target: int, heads: int = 1) -> tuple[int, int]:
    """Width (a multiple of ``heads``) whose parameter count is closest to ``target``."""
    from ..models import build_model
    best = None
    for width in range(heads * 2, 513, heads):
        n = count_parameters(build_model({**model_cfg, "width": width}))
        if best is None or abs(n - target) < abs(best[1] - target):
            best = (width, n)
        if n > target:
            break
    return best


def variant_configs(system: str, base_width: int, elements: list[int], r_max: float) -> dict:
    """Model configs per variant with parameter counts matched to ``efa-l1`` at ``base_width``."""
    from ..models import build_model
    settings = REFERENCE_SYSTEMS[system].factory.benchmark
    common = {"backbone": "painn", "cutoff": settings.cutoff, "layers": settings.layers,
              "num_basis": 16, "elements": elements}
    atts = variant_attention()

    def cfg(att):
        if att is None:
            return {**common, "attention": None}
        att = dict(att)
        if "r_max" in GLOBAL_BLOCKS[att["type"]].parameters():
            att["r_max"] = r_max
        return {**common, "attention": att}

    target = count_parameters(build_model({**cfg(atts["efa-l1"]), "width": base_width}))
    out = {}
    for name, att in atts.items():
        heads = att.get("heads", 1) if att else 1
        width, n = matched_width(cfg(att), target, heads)
        if abs(n - target) > 0.05 * target:
            raise RuntimeError(f"{name}: cannot match {target} parameters within 5% (got {n})")
        out[name] = {**cfg(att), "width": width}
    return out


def make_data(system: str, out: Path, seed: int = 0, n: int | None = None, workers: int = 1) -> Path:
    from ..qm import generate
    settings = REFERENCE_SYSTEMS[system].factory.benchmark
    path = out / f"{system}.xyz"
    report = generate(system, n or settings.n, str(path), workers=workers, seed=seed,
                      **settings.data)
    if report.n_failed:
        print(f"{system}: {report.n_failed} structures failed in the reference method (skipped)")
    return path


def run_longrange(system: str, out: str | Path = "longrange", epochs: int = 60,
                  base_width: int = 32, n: int | None = None, variants=None, workers: int = 1,
                  seed: int = 0, log=print) -> dict:
    """Train every variant on ``system`` and compare; see the module docstring."""
    import ase.io
    from ..data import AtomicData
    from ..training import fit, load_config
    recipe = REFERENCE_SYSTEMS.get(system, "--system").factory()
    out = Path(out) / system
    out.mkdir(parents=True, exist_ok=True)
    data_path = make_data(system, out, seed, n, workers)
    frames = ase.io.read(data_path, ":")
    elements = sorted({int(z) for a in frames for z in a.numbers})
    extents = [AtomicData.from_atoms(a).extent for a in frames]
    r_max = float(np.ceil(1.5 * max(extents)))  # room for the held-out / larger structures
    configs = variant_configs(system, base_width, elements, r_max)
    chosen = variants or list(configs)
    results = {"system": system, "data": str(data_path), "structures": len(frames),
               "epochs": epochs, "r_max": r_max, "variants": {}}
    for name in chosen:
        run_dir = out / name
        energy_weight = recipe.benchmark.energy_weight
        config = load_config(None, {
            "model": configs[name],
            "data": {"train": str(data_path), "valid": 0.1, "test": 0.1, "split_seed": seed},
            "training": {"epochs": epochs, "batch_size": 8, "lr": 2e-3, "scheduler": "cosine",
                         "lr_min": 1e-5, "energy_weight": energy_weight, "forces_weight": 1.0,
                         "ema_decay": 0.99, "seed": seed, "progress": False},
            "output": str(run_dir)})
        log(f"{system}: training {name} ({configs[name]['width']} wide)")
        result = fit(config, resume=(run_dir / "checkpoint.pt").exists(), log=lambda s: None)
        from ..models import load_model
        model = load_model(run_dir / "model.pt")
        results["variants"][name] = {
            "parameters": count_parameters(model), "width": configs[name]["width"],
            "test": result.test, "train_seconds": result.seconds,  # summed over resumes
            "inference_ms": _inference_ms(model, frames[:32])}
    results["analysis"] = recipe.analysis(out, _calculators(out, chosen))
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


def format_table(results: dict) -> str:
    lines = [f"{results['system']}: {results['structures']} structures, {results['epochs']} epochs, "
             f"test split 10%",
             f"{'variant':<13}{'params':>8}{'E MAE':>9}{'E RMSE':>9}{'F MAE':>9}{'F RMSE':>9}"
             f"{'train s':>9}{'infer ms':>10}",
             f"{'':<13}{'':>8}{'meV':>9}{'meV':>9}{'meV/Å':>9}{'meV/Å':>9}"]
    for name, r in results["variants"].items():
        t = r["test"]
        lines.append(f"{name:<13}{r['parameters']:>8,}{1e3 * t['energy_mae']:>9.1f}"
                     f"{1e3 * t['energy_rmse']:>9.1f}{1e3 * t['forces_mae']:>9.1f}"
                     f"{1e3 * t['forces_rmse']:>9.1f}{r['train_seconds']:>9.0f}{r['inference_ms']:>10.1f}")
    local = results["variants"].get("local")
    if local:
        for name, r in results["variants"].items():
            if name != "local":
                lines.append(f"local/{name}: energy MAE ×{local['test']['energy_mae'] / r['test']['energy_mae']:.1f}, "
                             f"force MAE ×{local['test']['forces_mae'] / r['test']['forces_mae']:.1f}")
    return "\n".join(lines)


def _calculators(out: Path, names) -> dict:
    from ..calculators import AttnCalculator
    return {name: AttnCalculator(out / name / "model.pt", default_dtype="float64") for name in names}
