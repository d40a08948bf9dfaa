"""A model's domain, recorded from its training data, for `AttnCalculator`'s `DomainWarning`s.

Two records, stored in the model file's metadata (plain lists and numbers; `save_model` and the
trainer's final step write them, ``mlip-attn analyze domain MODEL DATA`` adds them to an
existing file without touching its weights):

- ``training_environments``: the bonded environments seen in training. Atoms i and j are
  bonded when r_ij < ``bond_factor`` · (R_i + R_j) (covalent radii R, ASE's table;
  ``bond_factor`` 1.25 is the middle of the bond window of `mlip_attn.nn.charges`). An atom's
  radius-1 environment is its element and the sorted elements of its bonded neighbours,
  ``C(C,H,H)``; radius 2 is its element and the sorted radius-1 environments of its
  neighbours, ``C[C(C,C);H(C);H(C)]``. A structure with an atom whose environment is not in
  the set (a CH3 on a cumulene, a branch point) lies outside the training chemistry. Where
  the calibration structures show that the set does not saturate (`environments_seen`:
  ``usable`` False, e.g. a rattled ionic solid), the check is off and the feature novelty
  below speaks alone.
- ``feature_novelty``: per element Z, statistics of the backbone's final invariant per-atom
  scalars s (F,) (the readout's input) over the training atoms: the mean μ_Z, the top k
  principal directions U_Z (k, F) with variances λ_Z (k,), and the mean squared residual ρ_Z
  outside them. The per-atom novelty

      d_i² = (1/(k+1)) · [Σ_m (U_Z (s_i − μ_Z))_m² / λ_m + |(1 − U_Zᵀ U_Z)(s_i − μ_Z)|² / ρ_Z]

  (dimensionless; ≈ 1 for a typical training atom) is divided by a per-element threshold
  t_Z = ``margin`` × the ``quantile`` of d over calibration atoms (structures not used for
  μ, U, λ, ρ), so the reported score u_i = d_i / t_Z warns above 1. It is invariant to
  rotations and to the atom order because s is.

Both are heuristics of novelty, not error bars in eV: docs/longrange-physics.md ("Domain
signal") gives their calibration against GFN2-xTB on off-chemistry and held-out sets.
"""
from __future__ import annotations

import numpy as np
import torch

from ..data import AtomicData, Batch
from ..nn.charges import BOND_HIGH, BOND_LOW

BOND_FACTOR = 0.5 * (BOND_LOW + BOND_HIGH)   # 1.25 · (R_i + R_j)
ENVIRONMENT_RADIUS = 2
UNSEEN_LIMIT = 0.01  # calibration atoms with an environment the rest of training never had
COMPONENTS = 16      # principal directions kept per element
QUANTILE = 0.999     # of the calibration atoms' novelty ...
MARGIN = 1.5         # ... times this is the warning threshold (u = 1)
CALIBRATION_FRACTION = 0.2
# directions (and the residual) with less variance than this × the largest are not resolved:
# they would amplify round-off of the features into the score
VARIANCE_FLOOR = 1e-6
MAX_STRUCTURES = 5000  # for the feature statistics and the thresholds each (a random subset)


# ------------------------------------------------------------------ bonded environments

def bonded_neighbours(numbers, positions, cell=None, pbc=None,
                      bond_factor: float = BOND_FACTOR) -> list[list[int]]:
    """For each atom, the indices of the atoms bonded to it (periodic images map to their
    atom). ``positions`` (N, 3) Å."""
    from ase.data import covalent_radii
    from vesin import NeighborList
    numbers = np.asarray(numbers, dtype=int)
    positions = np.asarray(positions, dtype=float)
    periodic = pbc is not None and bool(np.any(np.asarray(pbc)))
    box = np.asarray(cell, dtype=float).reshape(3, 3) if periodic else np.zeros((3, 3))
    radii = covalent_radii[numbers]
    cutoff = bond_factor * 2.0 * float(radii.max()) if len(numbers) else 1.0
    i, j, d = NeighborList(cutoff=cutoff, full_list=True).compute(
        positions, box, periodic, quantities="ijd", copy=True)
    keep = np.asarray(d) < bond_factor * (radii[i] + radii[j])
    out: list[list[int]] = [[] for _ in numbers]
    for a, b in zip(np.asarray(i)[keep].tolist(), np.asarray(j)[keep].tolist()):
        out[a].append(b)
    return out


def atom_environments(numbers, positions, cell=None, pbc=None, radius: int = ENVIRONMENT_RADIUS,
                      bond_factor: float = BOND_FACTOR) -> list[str]:
    """Each atom's bonded environment of ``radius`` 1 or 2 (strings, see the module)."""
    from ase.data import chemical_symbols
    if radius not in (1, 2):
        raise ValueError(f"environment radius must be 1 or 2, got {radius!r}")
    numbers = np.asarray(numbers, dtype=int)
    neighbours = bonded_neighbours(numbers, positions, cell, pbc, bond_factor)
    symbol = [chemical_symbols[z] for z in numbers]
    first = [f"{symbol[a]}({','.join(sorted(symbol[b] for b in nb))})"
             for a, nb in enumerate(neighbours)]
    if radius == 1:
        return first
    return [f"{symbol[a]}[{';'.join(sorted(first[b] for b in nb))}]"
            for a, nb in enumerate(neighbours)]


def environments_of(data: AtomicData, record: dict) -> list[str]:
    """The environments of one structure, as ``record`` (``training_environments``) defines them."""
    return atom_environments(data.numbers, data.positions, data.cell, data.pbc,
                             int(record.get("radius", ENVIRONMENT_RADIUS)),
                             float(record.get("bond_factor", BOND_FACTOR)))


def environments_seen(structures: list[AtomicData], radius: int = ENVIRONMENT_RADIUS,
                      bond_factor: float = BOND_FACTOR, calibration=()) -> dict:
    """``training_environments``: the sorted set of environments in ``structures`` and
    ``calibration``. With ``calibration``, also ``unseen_fraction``: the fraction of its atoms
    whose environment ``structures`` never had. Above `UNSEEN_LIMIT` the environments do not
    saturate on this data (dense, rattled solids: bonds by covalent radii cut through a
    coordination shell, so nearly every atom's second shell is new; about half in the rigid-ion
    salt against < 0.1 % in the molecular recipes), and ``usable`` is False: a fresh structure
    of the training distribution would be flagged, so `AttnCalculator` does not check them."""
    record = {"radius": radius, "bond_factor": bond_factor}
    own = {e for d in structures for e in environments_of(d, record)}
    calibration = list(calibration)
    theirs = [e for d in calibration for e in environments_of(d, record)]
    unseen = float(np.mean([e not in own for e in theirs])) if theirs else 0.0
    return {**record, "environments": sorted(own | set(theirs)), "unseen_fraction": unseen,
            "usable": unseen <= UNSEEN_LIMIT}


def unseen_environments(data: AtomicData, record: dict) -> dict[str, list[int]]:
    """Environment → atom indices of ``data`` whose environment ``record`` never saw."""
    known = set(record["environments"])
    out: dict[str, list[int]] = {}
    for index, env in enumerate(environments_of(data, record)):
        if env not in known:
            out.setdefault(env, []).append(index)
    return out


# ------------------------------------------------------------------ feature-space novelty

@torch.no_grad()
def atom_features(model, structures: list[AtomicData], batch_size: int = 16
                  ) -> tuple[np.ndarray, np.ndarray]:
    """The backbone's final per-atom scalars of every atom of ``structures``: atomic numbers
    (N,) and features (N, F), float64, computed at the model's own dtype."""
    dtype = next(model.parameters()).dtype
    numbers, features = [], []
    for start in range(0, len(structures), batch_size):
        chunk = [d.with_graph(model.cutoff) for d in structures[start:start + batch_size]]
        b = Batch.collate(chunk).to(next(model.parameters()).device, dtype)
        _, s = model.energies_and_features(b.positions, b.numbers, b.batch, b.edge_index,
                                           b.shifts, b.cell, b.charge, b.spin)
        numbers.append(b.numbers.cpu().numpy())
        features.append(s.detach().cpu().double().numpy())
    if not numbers:
        raise ValueError("no structures to compute features of")
    return np.concatenate(numbers), np.concatenate(features)


def _raw_novelty(entry: dict, features: np.ndarray) -> np.ndarray:
    """d (M,) of features (M, F) against one element's statistics ``entry``."""
    x = features - np.asarray(entry["mean"])
    u = np.asarray(entry["components"]).reshape(-1, x.shape[1])
    p = x @ u.T
    residual = np.sum(x * x, axis=1) - np.sum(p * p, axis=1)
    d2 = np.sum(p * p / np.asarray(entry["variances"]), axis=1) + np.maximum(residual, 0.0) \
        / entry["residual"]
    return np.sqrt(d2 / (u.shape[0] + 1))


def novelty_fit(numbers: np.ndarray, features: np.ndarray, components: int = COMPONENTS) -> dict:
    """Per-element statistics (see the module) of training atoms: numbers (N,), features (N, F)."""
    out = {}
    for z in sorted(set(numbers.tolist())):
        x = features[numbers == z]
        mean = x.mean(axis=0)
        centred = x - mean
        _, sv, vt = np.linalg.svd(centred, full_matrices=False)
        var = sv ** 2 / max(len(x) - 1, 1)
        floor = VARIANCE_FLOOR * max(float(var.max(initial=0.0)), 1e-30)
        k = int(min(components, np.sum(var > floor)))
        u = vt[:k]
        p = centred @ u.T
        residual = float(np.mean(np.maximum(np.sum(centred ** 2, 1) - np.sum(p ** 2, 1), 0.0)))
        out[str(z)] = {"mean": mean.tolist(), "components": u.tolist(),
                       "variances": var[:k].tolist(), "residual": max(residual, floor),
                       "atoms": int(len(x))}
    return out


def novelty_scores(record: dict, numbers, features) -> np.ndarray:
    """u_i (N,): each atom's novelty over its element's threshold (> 1 warns); inf for an
    element the record does not know. ``features`` (N, F) from the model ``record`` was fit on."""
    numbers = np.asarray(numbers, dtype=int)
    features = np.asarray(features, dtype=float)
    width = len(next(iter(record["elements"].values()))["mean"])
    if features.ndim != 2 or features.shape[1] != width:
        raise ValueError(f"feature_novelty was recorded for {width} features per atom, got "
                         f"shape {tuple(features.shape)}: the statistics belong to another model")
    out = np.full(len(numbers), np.inf)
    for key, entry in record["elements"].items():
        mask = numbers == int(key)
        if mask.any():
            out[mask] = _raw_novelty(entry, features[mask]) / entry["threshold"]
    return out


def feature_novelty(model, train: list[AtomicData], calibration: list[AtomicData],
                    components: int = COMPONENTS, quantile: float = QUANTILE,
                    margin: float = MARGIN) -> dict:
    """``feature_novelty``: statistics from ``train``, thresholds from ``calibration`` (other
    structures of the same distribution; an element they lack takes its training atoms')."""
    numbers, features = atom_features(model, train)
    record = {"elements": novelty_fit(numbers, features, components), "quantile": quantile,
              "margin": margin, "calibration_structures": len(calibration)}
    cal_numbers, cal_features = (atom_features(model, calibration) if calibration
                                 else (numbers, features))
    for key, entry in record["elements"].items():
        z = int(key)
        x = cal_features[cal_numbers == z] if np.any(cal_numbers == z) else features[numbers == z]
        entry["threshold"] = margin * float(np.quantile(_raw_novelty(entry, x), quantile))
    return record


def domain_statistics(model, structures: list[AtomicData], calibration=None,
                      seed: int = 0) -> dict:
    """Both records for a model's metadata. Without ``calibration``, a random
    `CALIBRATION_FRACTION` of ``structures`` (``seed``) sets the thresholds and the rest the
    statistics (at least one structure each). The environments come from all structures, the
    feature statistics and thresholds from at most `MAX_STRUCTURES` of each part."""
    structures = list(structures)
    if not structures:
        raise ValueError("domain statistics need at least one structure")
    if calibration is None and len(structures) > 1:
        order = np.random.default_rng(seed).permutation(len(structures))
        n_cal = min(max(1, int(round(CALIBRATION_FRACTION * len(structures)))),
                    len(structures) - 1)
        calibration = [structures[k] for k in order[:n_cal]]
        train = [structures[k] for k in order[n_cal:]]
    else:
        train, calibration = structures, list(calibration or [])
    was_training = model.training
    model.eval()
    rng = np.random.default_rng(seed + 1)
    subset = lambda items: (items if len(items) <= MAX_STRUCTURES else
                            [items[k] for k in rng.choice(len(items), MAX_STRUCTURES, False)])
    try:
        novelty = feature_novelty(model, subset(train), subset(calibration))
    finally:
        model.train(was_training)
    return {"training_environments": environments_seen(train, calibration=calibration),
            "feature_novelty": novelty}
