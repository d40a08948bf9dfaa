"""How far a proton's effect reaches along a polyyne: in GFN2-xTB (`proton_effect`,
`site_spread`: the evidence in `charge_transfer`'s docstring) and in trained models (`analyse`,
the long-range benchmark's analysis of the charge-transfer recipe, and `findings`, its lines on
a model card).

The test a local model fails by construction is `proton_moves`: one proton moves along a fixed
chain at fixed total charge, so the atoms far from every placement keep their surroundings and
the total charge, yet xTB's forces on them change.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from ase import Atoms

from .base import attach, distort_chain, make_rng
from .charge_transfer_chains import (DISTORTIONS, FAR, HELD_OUT_LENGTHS, add_protons,
                                     polyyne_ground_state, proton_distances, site_of)


# ------------------------------------------------------------ the evidence in xTB

def _xtb_charges_forces(atoms: Atoms, charge: int) -> tuple[np.ndarray, np.ndarray]:
    """Mulliken charges (e) and forces (eV/Å) from GFN2-xTB, one thread."""
    from ..methods import xtb_energy_forces
    _, forces, calc = xtb_energy_forces(atoms.numbers, atoms.positions, charge=charge)
    return np.array(calc.results["charges"]), forces


def proton_effect(n_carbons: int, carbons: Sequence[int], far: float = FAR,
                  optimise: bool = True) -> dict:
    """What the protons on ``carbons`` do to atoms more than ``far`` Å from all of them: the
    charged species at its ground state against the same geometry without the protons (charge
    0). Returns ``far_atoms``, ``sum_dq`` (e, Mulliken), ``mean_dF``/``max_dF`` (eV/Å, norm of
    the force change) and ``far_ch_dq`` (charge change of the far terminal CH group; the group
    with no proton, or of C(n−1) when both ends carry one)."""
    charged = polyyne_ground_state(n_carbons, carbons, optimise=optimise)
    k = len(carbons)
    bare = charged[:len(charged) - k]
    charged.info["n_protons"] = k
    distance = proton_distances(charged)[:len(bare)]
    q1, f1 = _xtb_charges_forces(charged, k)
    q0, f0 = _xtb_charges_forces(bare, 0)
    dq, df = q1[:len(bare)] - q0, np.linalg.norm(f1[:len(bare)] - f0, axis=1)
    mask = distance > far
    end = n_carbons - 1 if 0 in carbons else 0
    group = [end, n_carbons + (1 if end else 0)]
    return {"n_carbons": n_carbons, "sites": [site_of(c, n_carbons) for c in carbons],
            "far_atoms": int(mask.sum()), "sum_dq": float(dq[mask].sum()),
            "mean_dF": float(df[mask].mean()) if mask.any() else float("nan"),
            "max_dF": float(df[mask].max()) if mask.any() else float("nan"),
            "far_ch_dq": float(dq[group].sum())}


def site_spread(n_carbons: int, sites: Sequence[int], far: float = FAR,
                optimise: bool = True) -> dict:
    """What a local model cannot know: one proton (charge +1) placed by `add_protons` at each
    site of ``sites`` (from the first end) on one fixed geometry, the neutral ground state.
    Atoms more than ``far`` Å from every placement have identical surroundings within ``far``
    and the same total charge, so a local model gives them one force; returns how much xTB's
    forces (``spread_dF``, eV/Å: largest norm of the difference between two sites) and
    Mulliken charges (``spread_q``, e) on them differ, with ``far_atoms``."""
    chain = polyyne_ground_state(n_carbons, (), optimise=optimise)
    n = len(chain)
    forces, charges, distance = [], [], np.full(n, np.inf)
    for k in sites:
        atoms = add_protons(chain, [int(k)])
        atoms.info["n_protons"] = 1
        distance = np.minimum(distance, proton_distances(atoms)[:n])
        q, f = _xtb_charges_forces(atoms, 1)
        forces.append(f[:n])
        charges.append(q[:n])
    mask = distance > far
    f, q = np.array(forces)[:, mask], np.array(charges)[:, mask]
    pair = np.linalg.norm(f[:, None] - f[None, :], axis=-1) if mask.any() else np.zeros(1)
    return {"n_carbons": n_carbons, "sites": [int(k) for k in sites],
            "far_atoms": int(mask.sum()), "spread_dF": float(pair.max()),
            "spread_q": float((q.max(0) - q.min(0)).max()) if mask.any() else 0.0}


# ------------------------------------------------------------ trained models

def analyse(out: Path, calculators: dict, held_out: list[str]) -> dict:
    """`ChargeTransfer.analysis`: errors of every variant (``calculators``: name → ASE
    calculator) on the held-out sets ``held_out_<name>.xyz`` in ``out`` (`held_out_errors`,
    plot ``charge_transfer_forces.png``) and on `proton_moves` of the held-out lengths."""
    import ase.io
    bins = np.arange(0.0, 26.0, 2.0)
    result: dict = {"far_A": FAR, "bins_A": bins.tolist(), "held_out": {}}
    curves: dict = {}
    for name in held_out:
        frames = list(ase.io.read(out / f"held_out_{name}.xyz", ":"))
        result["held_out"][name] = entry = {}
        curves[name] = {}
        for variant, calc in calculators.items():
            entry[variant], curve = held_out_errors(frames, calc, bins)
            curves[name][variant] = curve
    _plot_force_errors(out / "charge_transfer_forces.png", bins, curves)
    moves = proton_moves(HELD_OUT_LENGTHS, seed=3000)
    result["proton_moves"] = {variant: proton_move_errors(moves, calc)
                              for variant, calc in calculators.items()}
    return result


def findings(analysis: dict, variant: str) -> list[str]:
    """`ChargeTransfer.card_findings`: the lines of `analyse`'s numbers for ``variant``."""
    lines = []
    for name, entry in analysis.get("held_out", {}).items():
        e = entry.get(variant)
        if e is None:
            continue
        groups = ", ".join(f"{k} {1e3 * v:.0f}" for k, v in e["energy_rmse_by"].items())
        lines.append(f"{name}: force MAE {1e3 * e['far_forces_mae']:.1f} meV/Å on the "
                     f"{e['far_atoms']} atoms more than {analysis['far_A']:g} Å from the "
                     f"nearest proton; energy RMSE {1e3 * e['energy_rmse']:.1f} meV "
                     f"(by group, meV: {groups})")
    move = analysis.get("proton_moves", {}).get(variant)
    if move and move.get("atoms"):
        chains = " and ".join(f"C{n}" for n in HELD_OUT_LENGTHS)
        lines.append(f"The proton moves along {chains} at charge +1 (sites 0 → 2, 3, 4): "
                     f"xTB changes the forces of atoms more than {analysis['far_A']:g} Å "
                     f"away by {1e3 * move['reference']:.0f} meV/Å on average, this model "
                     f"by {1e3 * move['model']:.0f} meV/Å, error {1e3 * move['mae']:.0f} "
                     f"meV/Å ({move['atoms']} atom moves)")
    return lines


def held_out_errors(frames: list[Atoms], calc, bins: np.ndarray) -> tuple[dict, list]:
    """Errors of ``calc`` on labelled ``frames``: energy RMSE (eV) overall, per chain length and
    per kind; force MAE (eV/Å, per component) on atoms further than `FAR` Å from the nearest
    proton; and the mean |ΔF| per distance bin (the curve, one value per bin, NaN if empty)."""
    de, groups, dist, err = [], {}, [], []
    for a in frames:
        b = attach(a, calc)
        e = b.get_potential_energy() - a.info["REF_energy"]
        de.append(e)
        for key in (f"C{a.info['n_carbons']}", str(a.info["kind"])):
            groups.setdefault(key, []).append(e)
        dist.append(proton_distances(a))
        err.append(b.get_forces() - a.arrays["REF_forces"])
    dist, err = np.concatenate(dist), np.concatenate(err)
    far = np.isfinite(dist) & (dist > FAR)
    norm = np.linalg.norm(err, axis=1)
    idx = np.digitize(dist, bins)
    curve = [float(norm[idx == k].mean()) if (idx == k).any() else float("nan")
             for k in range(1, len(bins) + 1)]
    rmse = lambda x: float(np.sqrt(np.mean(np.square(x))))  # noqa: E731
    return {"energy_rmse": rmse(de), "energy_rmse_by": {k: rmse(v) for k, v in groups.items()},
            "far_atoms": int(far.sum()),
            "far_forces_mae": float(np.abs(err[far]).mean()) if far.any() else float("nan"),
            "forces_mae": float(np.abs(err).mean())}, curve


def proton_moves(n_carbons: Sequence[int], n_geometries: int = 8, sites=(0, 2, 3, 4),
                 seed: int = 0, optimise: bool = True) -> list[dict]:
    """The test a local model fails by construction, with xTB labels: ``n_geometries`` distorted
    neutral chains per length (`DISTORTIONS`), one proton (charge +1) placed by `add_protons` at
    each of ``sites`` in turn, every other atom unmoved. Returns one entry per geometry: the
    structures (``frames``, one per site, labelled with xTB forces in ``arrays['REF_forces']``)
    and ``far``, the mask of atoms more than `FAR` Å from every placement — whose surroundings
    within `FAR` and total charge are the same in all of them."""
    from ..methods import xtb_energy_forces
    rng = make_rng(seed)
    out = []
    for n in n_carbons:
        ground = polyyne_ground_state(int(n), (), optimise=optimise)
        for _ in range(n_geometries):
            rattle = float(rng.uniform(*DISTORTIONS["rattle"]))
            chain = distort_chain(ground, rng, rattle, DISTORTIONS["bend"] * (n / 10.0) ** 1.5,
                                  DISTORTIONS["stretch"])
            frames, distance = [], np.full(len(chain), np.inf)
            for k in sites:
                atoms = add_protons(chain, [int(k)])
                _, forces, _ = xtb_energy_forces(atoms.numbers, atoms.positions, charge=1)
                atoms.arrays["REF_forces"] = forces
                atoms.info.update(total_charge=1, n_protons=1, n_carbons=int(n), site=int(k))
                distance = np.minimum(distance, proton_distances(atoms)[:len(chain)])
                frames.append(atoms)
            out.append({"n_carbons": int(n), "frames": frames, "far": distance > FAR})
    return out


def proton_move_errors(moves: list[dict], calc) -> dict:
    """How well ``calc`` follows the far atoms' force change when the proton moves (see
    `proton_moves`): ``reference`` = mean |ΔF| of xTB (eV/Å) over the far atoms of every move
    (from the first site to each other), ``mae`` = mean |ΔF_model − ΔF_xTB|, ``model`` = mean
    |ΔF_model|. A local model's ΔF there is (nearly) zero, so its ``mae`` ≈ ``reference``."""
    ref, model, err = [], [], []
    for move in moves:
        far = move["far"]
        forces = [attach(a, calc).get_forces()[:len(far)][far] for a in move["frames"]]
        labels = [a.arrays["REF_forces"][:len(far)][far] for a in move["frames"]]
        for k in range(1, len(forces)):
            d_model, d_ref = forces[k] - forces[0], labels[k] - labels[0]
            ref.append(np.linalg.norm(d_ref, axis=1))
            model.append(np.linalg.norm(d_model, axis=1))
            err.append(np.linalg.norm(d_model - d_ref, axis=1))
    if not ref:
        return {"atoms": 0}
    ref, model, err = np.concatenate(ref), np.concatenate(model), np.concatenate(err)
    return {"atoms": int(len(ref)), "reference": float(ref.mean()), "model": float(model.mean()),
            "mae": float(err.mean())}


def _plot_force_errors(path: Path, bins: np.ndarray, curves: dict) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    k = len(curves)
    fig, axes = plt.subplots(1, k, figsize=(3.8 * k, 3.4), squeeze=False, sharey=True)
    for ax, (name, per_variant) in zip(axes[0], curves.items()):
        for variant, curve in per_variant.items():
            ax.plot(bins + 1.0, curve, marker="o", ms=3, label=variant)
        ax.axvline(FAR, color="grey", lw=0.8, ls="--")
        ax.set_title(f"held out: {name}", fontsize=9)
        ax.set_xlabel("distance from the nearest proton (Å)")
    axes[0][0].set_ylabel("mean |ΔF| (eV/Å)")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
