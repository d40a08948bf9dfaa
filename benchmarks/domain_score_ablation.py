"""Which feature-space novelty score: an ablation on the sets of `domain_signal.py`.

    OMP_NUM_THREADS=1 python benchmarks/domain_score_ablation.py [--out benchmarks/results/domain]

Run `domain_signal.py` first (it builds, labels and caches the sets and writes domain.json with
each structure's error). For each shipped C/H model, the backbone's final per-atom scalars of
the training-like set (the same random 80 % for statistics, 20 % for thresholds as
`domain_statistics`), the held-out sets and the off-chemistry sets are scored four ways:

- ``pca+residual``: the shipped score (`mlip_attn.models.domain`, 16 principal directions);
- ``mahalanobis``: the full covariance, shrunk by 1e-3 × its mean eigenvalue;
- ``knn``: mean distance to the 5 nearest training atoms of the element in the whitened
  16-dimensional principal subspace;
- ``euclid``: distance to the element's mean feature.

Each is divided by its 99.9 % calibration quantile. A structure's score is its atoms' maximum.
Printed: the AUROC separating held-out from off-chemistry structures, the Spearman correlation
of the score with |ΔE| per atom (all structures), and how many structures pass 1.5 (the
shipped margin) on each side.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import ase.io
import numpy as np
from scipy.stats import rankdata, spearmanr

from mlip_attn.data import AtomicData
from mlip_attn.models import load_model
from mlip_attn.models.domain import (CALIBRATION_FRACTION, QUANTILE, _raw_novelty,
                                     atom_features, novelty_fit)

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = {"cumulene": ["cumulene-local", "cumulene-efa"],
            "charge-transfer": ["charge-transfer-local", "charge-transfer-efa"]}


def scorers(numbers, features):
    """name → function(numbers (M,), features (M, F)) -> raw per-atom scores (M,)."""
    pca = novelty_fit(numbers, features)
    stats = {}
    for z in sorted(set(numbers.tolist())):
        x = features[numbers == z]
        mean = x.mean(0)
        cov = np.cov(x - mean, rowvar=False)
        cov += 1e-3 * np.trace(cov) / len(cov) * np.eye(len(cov))
        entry = pca[str(z)]
        u = np.asarray(entry["components"])
        white = (x - mean) @ u.T / np.sqrt(entry["variances"])
        stats[z] = (mean, np.linalg.inv(cov), u, np.asarray(entry["variances"]), white,
                    np.sqrt(np.mean(np.sum((x - mean) ** 2, 1))))

    def per_element(fn):
        def score(nums, feats):
            out = np.zeros(len(nums))
            for z in set(nums.tolist()):
                m = nums == z
                out[m] = fn(z, feats[m])
            return out
        return score

    def mahalanobis(z, x):
        mean, inv = stats[z][:2]
        d = x - mean
        return np.sqrt(np.einsum("ij,jk,ik->i", d, inv, d))

    def knn(z, x, k=5):
        mean, _, u, var, white, _ = stats[z]
        q = (x - mean) @ u.T / np.sqrt(var)
        d = np.sqrt(((q[:, None, :] - white[None, :, :]) ** 2).sum(-1))
        return np.sort(d, axis=1)[:, :k].mean(1)

    return {"pca+residual": per_element(lambda z, x: _raw_novelty(pca[str(z)], x)),
            "mahalanobis": per_element(mahalanobis), "knn": per_element(knn),
            "euclid": per_element(lambda z, x: np.linalg.norm(x - stats[z][0], axis=1)
                                  / stats[z][5])}


def structure_scores(score, per_structure, thresholds):
    out = []
    for numbers, feats in per_structure:
        raw = score(numbers, feats)
        out.append(float(np.max(raw / np.array([thresholds[int(z)] for z in numbers]))))
    return np.array(out)


def auroc(negative, positive):
    ranks = rankdata(np.concatenate([negative, positive]))
    n, p = len(negative), len(positive)
    return float((ranks[n:].sum() - p * (p + 1) / 2) / (n * p))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/domain"))
    args = ap.parse_args()
    out = Path(args.out)
    report = json.loads((out / "domain.json").read_text())
    print("| model | score | AUROC held-out vs off | Spearman vs \\|ΔE\\|/atom | "
          "held-out > 1.5 | off-chemistry > 1.5 |\n|---|---|---|---|---|---|")
    for family, models in FAMILIES.items():
        train = [AtomicData.from_atoms(a) for a in
                 ase.io.read(out / f"train-like-{family}-300.xyz", ":")]
        order = np.random.default_rng(0).permutation(len(train))
        n_cal = int(round(CALIBRATION_FRACTION * len(train)))
        fit_set = [train[k] for k in order[n_cal:]]
        cal_set = [train[k] for k in order[:n_cal]]
        for name in models:
            model = load_model(ROOT / "potentials" / f"{name}.pt", dtype="float64")
            numbers, feats = atom_features(model, fit_set)
            cal_numbers, cal_feats = atom_features(model, cal_set)
            sets = {k: v for k, v in report[name].items() if k != "spearman"}
            frames = {}
            for set_name, entry in sets.items():
                path = (ROOT / "potentials/held_out" / f"{set_name}.xyz"
                        if entry["kind"] == "held-out" else
                        out / "sets" / (set_name.replace(" ", "_").replace("/", "-")
                                        .replace("°", "deg") + ".xyz"))
                read = ase.io.read(path, ":")      # the order of domain_signal.py's rows
                if entry["kind"] != "held-out":
                    read = sorted(read, key=lambda a: int(a.info["index"]))
                frames[set_name] = [atom_features(model, [AtomicData.from_atoms(a)])
                                    for a in read]
            for label, score in scorers(numbers, feats).items():
                cal = score(cal_numbers, cal_feats)
                thresholds = {int(z): float(np.quantile(cal[cal_numbers == z], QUANTILE))
                              for z in set(cal_numbers.tolist())}
                held, off, u_all, e_all = [], [], [], []
                for set_name, entry in sets.items():
                    s = structure_scores(score, frames[set_name], thresholds)
                    (held if entry["kind"] == "held-out" else off).append(s)
                    u_all += s.tolist()
                    e_all += [r["e_err"] / r["natoms"] for r in entry["rows"]]
                held, off = np.concatenate(held), np.concatenate(off)
                print(f"| {name} | {label} | {auroc(held, off):.3f} | "
                      f"{spearmanr(u_all, e_all).statistic:.2f} | {int((held > 1.5).sum())}/"
                      f"{len(held)} | {int((off > 1.5).sum())}/{len(off)} |")


if __name__ == "__main__":
    main()
