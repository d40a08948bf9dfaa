"""How far a model sees: Jacobian sensitivities against interatomic distance.

The measure of long-range dependence from the City-Networks paper (Jacobians of a node's
output with respect to distant inputs), for atoms: for every pair i ≠ j of a structure,
the norm of a Jacobian block against r_ij, pooled over structures. Quantities:

- ``forces``: ‖∂F_i/∂r_j‖_F (3 × 3 blocks of the Hessian, −∂²E/∂r_i∂r_j). A local model
  with L layers and cutoff r_c gives exactly zero beyond 2·L·r_c: F_i and F_j share the
  atomic energies of atoms within L hops of both;
- ``energies``: ‖∂E_i/∂r_j‖ (atomic energies), exactly zero beyond L·r_c for a local model;
- ``targets``: ‖∂t_i/∂r_j‖_F of the per-atom contributions of a property model's target
  head (the prediction is their mean), also zero beyond L·r_c for a local model.

From the pooled (r_ij, ‖J_ij‖) it reports d90 and d99, the distances within which 90 % and
99 % of the total sensitivity Σ‖J_ij‖ lies, the largest distance with a non-zero block and the
share of sensitivity beyond L·r_c. Encoder features (bond-graph measures) carry no gradient,
so whatever a model learns through them is invisible here.
Rows of a Jacobian are computed by batched autograd (``is_grads_batched``), falling back to
one backward pass per row where a custom autograd function does not support batching.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

QUANTITIES = ("forces", "energies", "targets")


def _outputs(model, data, quantity: str):
    """(positions with grad, per-atom outputs (N, k) as a function of them)."""
    from ..data import Batch
    batch = Batch.collate([data.with_graph(model.cutoff)]).to(dtype=model.shift.dtype)
    positions = batch.positions.detach().requires_grad_(True)
    args = (positions, batch.numbers, batch.batch, batch.edge_index, batch.shifts, batch.cell,
            batch.charge, batch.spin)
    energies, features = model.energies_and_features(*args)
    if quantity == "energies":
        return positions, energies[:, None]
    if quantity == "targets":
        if not model.num_targets:
            raise ValueError("quantity 'targets': the model has no regression targets")
        return positions, model.target_head(features) * model.target_std
    (gradient,) = torch.autograd.grad(energies.sum(), positions, create_graph=True)
    return positions, -gradient


def jacobian_norms(model, data, quantity: str = "forces", chunk: int = 64) -> np.ndarray:
    """‖J_ij‖ (N, N) for one `AtomicData`: the Frobenius norm of ∂y_i/∂r_j over y_i's
    components (forces: 3, energies: 1, targets: T) and r_j's three coordinates."""
    if quantity not in QUANTITIES:
        raise ValueError(f"quantity: {quantity!r} is not one of {QUANTITIES}")
    model = model.eval()
    positions, y = _outputs(model, data, quantity)
    n, k = y.shape
    flat = y.reshape(-1)
    rows = []
    eye = torch.eye(flat.numel(), dtype=flat.dtype)
    for start in range(0, flat.numel(), chunk):
        basis = eye[start:start + chunk]
        try:
            (g,) = torch.autograd.grad(flat, positions, grad_outputs=basis,
                                       is_grads_batched=True, retain_graph=True,
                                       allow_unused=True)
        except RuntimeError:
            g = torch.stack([_row(flat, positions, b) for b in basis])
        if g is None:
            g = positions.new_zeros((basis.shape[0], n, 3))
        rows.append(g.detach())
    jac = torch.cat(rows).reshape(n, k, n, 3)                    # (i, component, j, xyz)
    return torch.sqrt((jac ** 2).sum(dim=(1, 3))).double().numpy()


def _row(flat, positions, grad_output):
    (g,) = torch.autograd.grad(flat, positions, grad_outputs=grad_output, retain_graph=True,
                               allow_unused=True)
    return g if g is not None else torch.zeros_like(positions)


def pair_sensitivities(model, structures, quantity: str = "forces"):
    """Pooled (r_ij (P,), ‖J_ij‖ (P,)) over i ≠ j of every structure."""
    distances, norms = [], []
    for data in structures:
        j = jacobian_norms(model, data, quantity)
        pos = data.positions.numpy()
        r = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
        off = ~np.eye(len(pos), dtype=bool)
        distances.append(r[off])
        norms.append(j[off])
    return np.concatenate(distances), np.concatenate(norms)


def reach_summary(distances: np.ndarray, norms: np.ndarray, local_bound: float) -> dict:
    """d90, d99 (Å), the largest distance with a non-zero block, the share of the total
    sensitivity beyond ``local_bound`` (Å) and the largest norm there."""
    order = np.argsort(distances)
    r, s = distances[order], norms[order]
    total = float(s.sum())
    cumulative = np.cumsum(s) / total if total > 0 else np.zeros_like(s)
    nonzero = r[s > 0]
    beyond = r > local_bound
    return {"d90": float(r[np.searchsorted(cumulative, 0.90)]) if total > 0 else 0.0,
            "d99": float(r[np.searchsorted(cumulative, 0.99)]) if total > 0 else 0.0,
            "max_nonzero_distance": float(nonzero.max()) if nonzero.size else 0.0,
            "largest_distance": float(r.max()),
            "bound": float(local_bound),
            "share_beyond_bound": float(s[beyond].sum() / total) if total > 0 else 0.0,
            "max_norm_beyond_bound": float(s[beyond].max()) if beyond.any() else 0.0,
            "pairs": int(r.size)}


def local_bound(model, quantity: str) -> float:
    """Where a local model's sensitivity must vanish: layers × cutoff (× 2 for forces)."""
    hops = 2 if quantity == "forces" else 1
    return hops * len(model.backbone.layers) * model.cutoff


def analyze_reach(model_paths, data_path, out="analysis", quantity: str = "auto",
                  max_structures: int = 10, log=print) -> dict:
    """Reach of every model in ``model_paths`` on the first ``max_structures`` structures of
    ``data_path``: writes ``<out>/reach.json`` and ``<out>/reach.png``; returns the numbers.
    ``quantity``: one of `QUANTITIES`, or ``auto`` (targets for property models, else forces)."""
    import ase.io
    from ..data import AtomicData
    from ..data.atomic_data import check_elements
    from ..models import load_model
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    frames = ase.io.read(data_path, f":{int(max_structures)}")
    results, curves = {}, {}
    for path in model_paths:
        model = load_model(path, dtype="float64")
        q = quantity if quantity != "auto" else ("targets" if model.num_targets else "forces")
        structures = []
        for k, a in enumerate(frames):
            check_elements(a.numbers, model.elements, f"{data_path}#{k} ({path})")
            d = AtomicData.from_atoms(a, name=f"{data_path}#{k}")
            d.charge = float(a.info.get("total_charge", a.info.get("charge", 0)))
            structures.append(d)
        distances, norms = pair_sensitivities(model, structures, q)
        summary = {"quantity": q, "global": model.is_global, "layers": len(model.backbone.layers),
                   "cutoff": model.cutoff, "structures": len(structures),
                   **reach_summary(distances, norms, local_bound(model, q))}
        name = Path(path).stem if Path(path).stem != "model" else Path(path).parent.name
        results[name] = summary
        curves[name] = (distances, norms, q)
        log(f"{name}: {q} d90 {summary['d90']:.1f} Å, d99 {summary['d99']:.1f} Å, non-zero up to "
            f"{summary['max_nonzero_distance']:.1f} Å (largest pair {summary['largest_distance']:.1f} Å), "
            f"{100 * summary['share_beyond_bound']:.2f} % beyond {summary['bound']:.0f} Å")
    (out / "reach.json").write_text(json.dumps(results, indent=1))
    plot_reach(curves, out / "reach.png")
    log(f"wrote {out / 'reach.json'}, {out / 'reach.png'}")
    return results


def plot_reach(curves: dict, path: Path, bins: int = 30) -> None:
    """Mean ‖J_ij‖ per distance bin (log scale) and the cumulative share of sensitivity."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 3.8))
    top = max(float(d.max()) for d, _, _ in curves.values())
    edges = np.linspace(0.0, top + 1e-9, bins + 1)
    for name, (d, s, q) in curves.items():
        which = np.digitize(d, edges) - 1
        mean = np.array([s[which == b].mean() if (which == b).any() else np.nan for b in range(bins)])
        centres = 0.5 * (edges[1:] + edges[:-1])
        ax.semilogy(centres, np.where(mean > 0, mean, np.nan), marker="o", ms=3, label=f"{name} ({q})")
        order = np.argsort(d)
        total = s.sum()
        bx.plot(d[order], np.cumsum(s[order]) / (total if total > 0 else 1.0), label=name)
    ax.set_xlabel("r_ij (Å)")
    ax.set_ylabel("mean ‖J_ij‖")
    ax.set_title("sensitivity against distance (empty = exactly 0)", fontsize=9)
    bx.axhline(0.9, color="grey", lw=0.5)
    bx.axhline(0.99, color="grey", lw=0.5)
    bx.set_xlabel("r_ij (Å)")
    bx.set_ylabel("cumulative share of Σ‖J_ij‖")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
