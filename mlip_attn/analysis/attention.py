"""Attention introspection: mean attention weight against distance per layer, and learned
power-law exponents p_h (for models with transformer attention or the graph-free transformer).

    from mlip_attn.analysis import attention_vs_distance, plot_attention_vs_distance
    profile = attention_vs_distance(model, [atoms, ...])     # dict of numpy arrays
    plot_attention_vs_distance(model, structures, "attention.png")
    plot_exponents(model, "exponents.png")

Attention weights are read with forward pre-hooks on the attention modules during one eager
forward (no gradients); each module's ``attention_weights`` recomputes its softmax from the
captured inputs. Only pairs of two different atoms of one structure are counted.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..attention.transformer_attention import TransformerAttention
from ..backbones.graph_free_transformer import TransformerLayer

ATTENTION_MODULES = (TransformerAttention, TransformerLayer)


def attention_modules(model) -> list[tuple[str, torch.nn.Module]]:
    """(name, module) of every attention layer of ``model`` in forward order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, ATTENTION_MODULES)]


def _as_batch(model, structures):
    from ..data import AtomicData, Batch
    items = []
    for s in structures:
        if isinstance(s, Batch):
            return s.to(device=model.shift.device, dtype=model.shift.dtype)
        d = s if isinstance(s, AtomicData) else AtomicData.from_atoms(s)
        items.append(d if d.edge_index is not None else d.with_graph(model.cutoff))
    return Batch.collate(items).to(device=model.shift.device, dtype=model.shift.dtype)


def attention_maps(model, structures) -> list[dict]:
    """Attention of every layer for ``structures`` (ASE Atoms, `AtomicData`, or one `Batch`).

    Returns one dict per attention layer: ``name``, ``weights`` (G, H, n, n), ``r`` (G, n, n) Å
    and ``pairs`` (G, n, n) bool in the packed layout of `mlip_attn.nn.packing`.
    """
    modules = attention_modules(model)
    if not modules:
        raise ValueError("this model has no transformer attention to analyse "
                         "(needs attention: {type: transformer} or backbone: transformer)")
    batch = _as_batch(model, structures)
    captured: dict[str, tuple] = {}
    handles = []
    for name, module in modules:
        def hook(mod, args, name=name):
            captured[name] = tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in args)
        handles.append(module.register_forward_pre_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model.predict(batch, compute_forces=False)
            out = []
            for name, module in modules:
                # both take their forward's arguments: (features, graph) for the global
                # block, (x, r, allowed, types, has_partner) for a graph-free layer
                w, r, pairs = module.attention_weights(*captured[name])
                out.append({"name": name, "weights": w, "r": r, "pairs": pairs})
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return out


def _positions(structure) -> np.ndarray:
    from ..data import AtomicData
    if isinstance(structure, AtomicData):
        return structure.positions.detach().double().cpu().numpy()
    return np.asarray(structure.positions, dtype=float)


def attention_vs_distance(model, structures, bins: int = 30, r_max: float | None = None,
                          relative: bool = False, log_bins: bool = False,
                          batch_size: int = 16) -> dict:
    """Mean attention weight A_ij against distance r_ij, binned, per layer and head.

    ``structures``: ASE Atoms or `AtomicData`, evaluated ``batch_size`` at a time (memory is
    O(batch_size · n²) per layer). ``relative``: report (n_b − 1)·A_ij, the weight relative to
    uniform attention over the n_b − 1 other atoms of the structure (1 = uniform), which
    compares structures of different sizes. ``log_bins``: geometric bins from the shortest
    distance (else linear from 0). Bins end at ``r_max`` (default: the largest distance).
    Returns numpy arrays: ``edges`` (bins+1,), ``centres`` (bins,) Å, ``mean`` (L, bins)
    averaged over heads, ``mean_per_head`` (L, H, bins), ``count`` (bins,) pairs per bin (means
    are NaN where a bin is empty), and ``layers`` (names).
    """
    from scipy.spatial.distance import pdist
    structures = list(structures)
    dists = [pdist(_positions(s)) for s in structures if len(_positions(s)) > 1]
    if not dists:
        raise ValueError("attention against distance needs structures with at least two atoms")
    r_lo = min(float(d.min()) for d in dists)
    top = float(r_max) if r_max is not None else max(float(d.max()) for d in dists) * (1 + 1e-9)
    if log_bins:
        edges = np.geomspace(r_lo * (1 - 1e-9), top, bins + 1)
    else:
        edges = np.linspace(0.0, top, bins + 1)
    sums, count, names = None, np.zeros(bins), []
    for start in range(0, len(structures), batch_size):
        maps = attention_maps(model, structures[start:start + batch_size])
        names = [m["name"] for m in maps]
        if sums is None:
            sums = np.zeros((len(maps), maps[0]["weights"].shape[1], bins))
        for k, m in enumerate(maps):
            w, r, pairs = m["weights"], m["r"], m["pairs"]
            if relative:
                partners = pairs.sum(-1, keepdim=True).clamp(min=1).to(w.dtype)   # (G, n, 1)
                w = w * partners[:, None]
            rr = r[pairs].double().cpu().numpy()
            ww = w.permute(1, 0, 2, 3)[:, pairs].double().cpu().numpy()          # (H, P)
            which = np.digitize(rr, edges) - 1
            keep = (which >= 0) & (which < bins)
            if k == 0:
                count += np.bincount(which[keep], minlength=bins)
            sums[k] += np.stack([np.bincount(which[keep], weights=wh[keep], minlength=bins)
                                 for wh in ww])
    with np.errstate(invalid="ignore", divide="ignore"):
        per_head = sums / count
    return {"edges": edges, "centres": 0.5 * (edges[1:] + edges[:-1]),
            "mean": per_head.mean(1), "mean_per_head": per_head, "count": count,
            "layers": names}


def learned_exponents(model) -> list[np.ndarray]:
    """Power-law exponents p_h (H,) of every attention layer that has a power-law bias."""
    out = []
    for _, module in attention_modules(model):
        p = module.exponents()
        if p is not None:
            out.append(p.detach().double().cpu().numpy())
    return out


def exponent_histogram(model, bins: int = 24, range_: tuple[float, float] | None = None) -> dict:
    """Histogram of all learned p_h: ``counts`` (L, bins) per layer, ``edges`` (bins+1,)."""
    exps = learned_exponents(model)
    if not exps:
        raise ValueError("this model has no power-law attention bias (bias: power_law*)")
    allp = np.concatenate(exps)
    lo, hi = range_ if range_ is not None else (float(allp.min()) - 0.5, float(allp.max()) + 0.5)
    edges = np.linspace(lo, hi, bins + 1)
    counts = np.array([np.histogram(p, edges)[0] for p in exps])
    return {"edges": edges, "counts": counts, "exponents": exps}


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_attention_vs_distance(model, structures, out_png, bins: int = 20,
                               relative: bool = False) -> Path:
    """Mean attention weight against distance, one line per layer (log-log), saved as PNG.
    A dashed r⁻¹ guide is drawn through the first layer's first point (the paper's finding)."""
    plt = _pyplot()
    prof = attention_vs_distance(model, structures, bins=bins, relative=relative, log_bins=True)
    fig, ax = plt.subplots(figsize=(5.5, 4))
    x = prof["centres"]
    for name, y in zip(prof["layers"], prof["mean"]):
        ok = np.isfinite(y) & (y > 0)
        ax.plot(x[ok], y[ok], marker="o", ms=3, label=name)
    first = prof["mean"][0]
    ok = np.flatnonzero(np.isfinite(first) & (first > 0))
    if len(ok):
        k = ok[0]
        ax.plot(x[ok], first[k] * x[k] / x[ok], "k--", lw=0.8, label="∝ 1/r")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("distance r_ij (Å)")
    ax.set_ylabel("mean attention weight" + (" × (n−1)" if relative else ""))
    return _save(fig, ax, out_png)


def _save(fig, ax, out_png) -> Path:
    """Legend, tight layout, write ``out_png`` (folders created) and close the figure."""
    ax.legend(fontsize=7)
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=120)
    _pyplot().close(fig)
    return out_png


def plot_exponents(model, out_png, bins: int = 24) -> Path:
    """Histogram of learned power-law exponents p_h, stacked by layer, saved as PNG."""
    plt = _pyplot()
    hist = exponent_histogram(model, bins=bins)
    fig, ax = plt.subplots(figsize=(5.5, 4))
    edges = hist["edges"]
    ax.hist([p for p in hist["exponents"]], bins=edges, stacked=True,
            label=[f"layer {k}" for k in range(len(hist["exponents"]))])
    ax.set_xlabel("learned exponent p_h")
    ax.set_ylabel("heads")
    return _save(fig, ax, out_png)
