"""``mlip-attn benchmark longrange``: local vs global models on the long-range test systems.

Protocol (shared/specs/longrange.md): one data set per system (GFN2-xTB via tblite, or the
analytic NaCl toy), one split, the same training budget (epochs, batch size, LR schedule) for
every variant, and parameter counts matched within ±5% by adjusting the width. Variants:

    local       PaiNN
    efa-l0      PaiNN + EFA on scalars
    efa-l1      PaiNN + EFA on scalars and vectors
    efa-l2      efa-l1 + rank-2 tensor channels (outer products of vectors)
    transformer PaiNN + softmax attention with a learned negative power-law bias

Writes ``OUT/<system>/results.json``, a table on stdout, one run directory per variant and the
system's plot (cumulene torsion profile of a held-out chain length, SN2 profile along ξ,
charge-transfer force error against distance from the protonated end, NaCl size transfer).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

SYSTEMS = ("cumulene", "sn2", "charge-transfer", "nacl")

VARIANTS = {
    "local": None,
    "efa-l0": {"type": "efa", "grid": 50, "d_qk": 16, "d_v": 16, "vectors": False},
    "efa-l1": {"type": "efa", "grid": 50, "d_qk": 16, "d_v": 16, "vectors": True},
    "efa-l2": {"type": "efa", "grid": 50, "d_qk": 16, "d_v": 16, "vectors": True,
               "tensors": True},
    "transformer": {"type": "transformer", "heads": 4, "bias": "power_law_negative"},
}

# per system: data recipe, cutoff, layers, held-out chain length, energy loss weight (cumulene:
# the torsion is an energy effect with small forces, so energies weigh more; same for all variants)
SETTINGS = {
    "cumulene": {"n": 600, "kwargs": {"n_carbons": [3, 4, 5, 6, 7, 8, 10, 11]},
                 "cutoff": 4.0, "layers": 2, "holdout": 9, "energy_weight": 100.0},
    "sn2": {"n": 600, "kwargs": {}, "cutoff": 4.0, "layers": 2},
    "charge-transfer": {"n": 400, "kwargs": {}, "cutoff": 4.0, "layers": 2},
    "nacl": {"n": 300, "kwargs": {"diameter": (8.0, 16.0)}, "cutoff": 3.5, "layers": 1},
}


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
    s = SETTINGS[system]
    common = {"backbone": "painn", "cutoff": s["cutoff"], "layers": s["layers"], "num_basis": 16,
              "elements": elements}

    def cfg(att):
        if att is None:
            return {**common, "attention": None}
        att = dict(att)
        if att["type"] == "efa":
            att["r_max"] = r_max
        return {**common, "attention": att}

    target = count_parameters(build_model({**cfg(VARIANTS["efa-l1"]), "width": base_width}))
    out = {}
    for name, att in VARIANTS.items():
        heads = att.get("heads", 1) if att else 1
        width, n = matched_width(cfg(att), target, heads)
        if abs(n - target) > 0.05 * target:
            raise RuntimeError(f"{name}: cannot match {target} parameters within 5% (got {n})")
        out[name] = {**cfg(att), "width": width}
    return out


def make_data(system: str, out: Path, seed: int = 0, n: int | None = None, workers: int = 1) -> Path:
    from ..qm import generate
    s = SETTINGS[system]
    path = out / f"{system}.xyz"
    report = generate(system, n or s["n"], str(path), workers=workers, seed=seed, **s["kwargs"])
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
    if system not in SYSTEMS:
        raise ValueError(f"unknown system {system!r}; choose from {SYSTEMS}")
    out = Path(out) / system
    out.mkdir(parents=True, exist_ok=True)
    data_path = make_data(system, out, seed, n, workers)
    frames = ase.io.read(data_path, ":")
    elements = sorted({int(z) for a in frames for z in a.numbers})
    extents = [AtomicData.from_atoms(a).extent for a in frames]
    r_max = float(np.ceil(1.5 * max(extents)))  # room for the held-out / larger structures
    configs = variant_configs(system, base_width, elements, r_max)
    variants = variants or list(configs)
    results = {"system": system, "data": str(data_path), "structures": len(frames),
               "epochs": epochs, "r_max": r_max, "variants": {}}
    for name in variants:
        run_dir = out / name
        energy_weight = SETTINGS[system].get("energy_weight", 10.0)
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
    plot = {"cumulene": _cumulene_profile, "sn2": _sn2_profile,
            "charge-transfer": _charge_transfer_forces, "nacl": _nacl_transfer}[system]
    results["analysis"] = plot(out, variants)
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


def _models(out: Path, variants):
    from ..calculators import AttnCalculator
    return {name: AttnCalculator(out / name / "model.pt", default_dtype="float64") for name in variants}


def _energies(calc, frames) -> np.ndarray:
    values = []
    for a in frames:
        a = a.copy()
        a.calc = calc
        values.append(a.get_potential_energy())
    return np.array(values)


def _plot(path: Path, xlabel: str, ylabel: str, curves: dict, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for label, (x, y) in curves.items():
        style = dict(color="black", lw=2.5) if label.startswith("reference") else dict(marker="o", ms=3)
        ax.plot(x, y, label=label, **style)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _labelled(structures, path: Path):
    import ase.io
    from ..qm import label_structures
    label_structures(structures, str(path), progress=False)
    frames = ase.io.read(path, ":")
    frames.sort(key=lambda a: int(a.info["index"]))
    return frames


def _cumulene_profile(out: Path, variants) -> dict:
    from ..qm import cumulene_torsion_scan
    n_c = SETTINGS["cumulene"]["holdout"]
    angles = np.linspace(0.0, 90.0, 10)
    frames = _labelled(cumulene_torsion_scan(n_c, angles), out / f"c{n_c}_scan.xyz")
    ref = np.array([a.info["REF_energy"] for a in frames])
    curves = {"reference (GFN2-xTB)": (angles, ref - ref.min())}
    barriers = {"reference": float(ref.max() - ref.min())}
    for name, calc in _models(out, variants).items():
        e = _energies(calc, frames)
        curves[name] = (angles, e - e.min())
        barriers[name] = float(e.max() - e.min())
    _plot(out / "cumulene_torsion.png", "end-to-end torsion (°)", "energy (eV)", curves,
          f"C{n_c}H4 (chain length not in training)")
    return {"holdout_carbons": n_c, "barrier_eV": barriers}


def _sn2_profile(out: Path, variants) -> dict:
    from ..qm import sn2_scan
    xis = np.linspace(-6.0, 6.0, 25)
    frames = _labelled(sn2_scan("Cl", "Cl", xis), out / "sn2_clcl_scan.xyz")
    ref = np.array([a.info["REF_energy"] for a in frames])
    curves = {"reference (GFN2-xTB)": (xis, ref - ref[0])}
    maes = {}
    for name, calc in _models(out, variants).items():
        e = _energies(calc, frames)
        curves[name] = (xis, e - e[0])
        maes[name] = float(np.mean(np.abs((e - e[0]) - (ref - ref[0]))))
    _plot(out / "sn2_profile.png", "ξ = r(C–Y) − r(C–X) (Å)", "energy − E(ξ = −6 Å) (eV)", curves,
          "Cl⁻ + CH3Cl, relaxed scan")
    return {"profile_mae_eV": maes}


def _charge_transfer_forces(out: Path, variants) -> dict:
    import ase.io
    frames = [a for a in ase.io.read(out / "charge-transfer.xyz", ":")][-40:]
    bins = np.arange(0.0, 16.0, 2.0)
    curves, table = {}, {}
    for name, calc in _models(out, variants).items():
        dist, err = [], []
        for a in frames:
            first_c = int(np.where(a.numbers == 6)[0][0])
            b = a.copy()
            b.calc = calc
            dist.append(np.linalg.norm(a.positions - a.positions[first_c], axis=1))
            err.append(np.linalg.norm(b.get_forces() - a.arrays["REF_forces"], axis=1))
        dist, err = np.concatenate(dist), np.concatenate(err)
        idx = np.digitize(dist, bins)
        means = [float(err[idx == k].mean()) if (idx == k).any() else float("nan")
                 for k in range(1, len(bins) + 1)]
        curves[name] = (bins + 1.0, means)
        table[name] = means
    _plot(out / "charge_transfer_forces.png", "distance from the protonated end (Å)",
          "mean |ΔF| (eV/Å)", curves, "H–C10–H / C10H3⁺ (last 40 structures)")
    return {"bins_A": bins.tolist(), "force_error_eV_per_A": table}


def _nacl_transfer(out: Path, variants) -> dict:
    from ..qm import nacl_structures
    sizes = (10.0, 20.0, 30.0)
    curves, table = {}, {}
    tests = {d: nacl_structures(6, seed=100 + int(d), diameter=(d, d)) for d in sizes}
    for name, calc in _models(out, variants).items():
        errs = []
        for d in sizes:
            e = _energies(calc, tests[d])
            ref = np.array([a.info["REF_energy"] for a in tests[d]])
            n = np.array([len(a) for a in tests[d]])
            errs.append(float(np.mean(np.abs(e - ref) / n)))
        curves[name] = (np.array(sizes), np.array(errs) * 1e3)
        table[name] = errs
    _plot(out / "nacl_size_transfer.png", "cluster diameter (Å)", "energy MAE (meV/atom)", curves,
          "NaCl-like clusters (trained on 8–16 Å)")
    return {"diameters_A": list(sizes), "energy_mae_eV_per_atom": table}
