"""Dataset statistics: per-element reference energies (E0) and the per-atom energy scale."""
from __future__ import annotations

import numpy as np

from .atomic_data import AtomicData


def elements_of(structures: list[AtomicData]) -> list[int]:
    """Sorted atomic numbers present in ``structures``."""
    return sorted({int(z) for d in structures for z in d.numbers.unique().tolist()})


def isolated_atom_energies(structures: list[AtomicData]) -> dict[int, float]:
    """E0 from single-atom structures (``config_type=IsolatedAtom`` in MACE files)."""
    return {int(d.numbers[0]): float(d.energy) for d in structures
            if d.num_atoms == 1 and d.energy is not None and not d.is_periodic}


def least_squares_e0(structures: list[AtomicData], elements: list[int]) -> dict[int, float]:
    """E0 per element (eV) minimising Σ_b (E_b − Σ_Z n_bZ E0_Z)² over labelled structures.

    Elements that cannot be separated (always appearing in a fixed ratio) get the minimum-norm
    solution, which is still a valid reference.
    """
    labelled = [d for d in structures if d.energy is not None]
    if not labelled:
        raise ValueError("no structure has an energy label: cannot fit reference energies")
    index = {z: k for k, z in enumerate(elements)}
    counts = np.zeros((len(labelled), len(elements)))
    for b, d in enumerate(labelled):
        for z in d.numbers.tolist():
            counts[b, index[z]] += 1
    energies = np.array([d.energy for d in labelled])
    e0, *_ = np.linalg.lstsq(counts, energies, rcond=None)
    return {z: float(e0[k]) for z, k in index.items()}


def reference_energies(structures: list[AtomicData], elements: list[int], method) -> dict[int, float]:
    """E0 per element: ``"least_squares"``, ``"isolated"`` (isolated atoms in the data),
    ``"zero"``, or an explicit ``{Z or symbol: eV}`` dict."""
    if isinstance(method, dict):
        from ase.data import atomic_numbers
        e0 = {(z if isinstance(z, int) else atomic_numbers[z]): float(v) for z, v in method.items()}
        missing = [z for z in elements if z not in e0]
        if missing:
            raise ValueError(f"explicit E0s miss elements {missing}")
        return e0
    if method == "zero":
        return {z: 0.0 for z in elements}
    if method == "isolated":
        e0 = isolated_atom_energies(structures)
        missing = [z for z in elements if z not in e0]
        if missing:
            raise ValueError(f"E0s 'isolated' needs an isolated-atom structure for elements {missing}")
        return e0
    if method == "least_squares":
        return least_squares_e0(structures, elements)
    raise ValueError(f"unknown E0 method {method!r}")


def energy_scale(structures: list[AtomicData], e0: dict[int, float]) -> float:
    """Per-atom energy scale (eV): RMS of forces if present, else std of per-atom residual energy."""
    forces = [d.forces for d in structures if d.forces is not None]
    if forces:
        rms = float(np.sqrt(np.mean(np.concatenate([f.numpy().ravel() for f in forces]) ** 2)))
        if rms > 1e-6:
            return rms
    residual = [(d.energy - sum(e0[int(z)] for z in d.numbers.tolist())) / d.num_atoms
                for d in structures if d.energy is not None]
    std = float(np.std(residual)) if len(residual) > 1 else 0.0
    return std if std > 1e-6 else 1.0


def split_indices(n: int, fractions: tuple[float, float, float], seed: int
                  ) -> tuple[list[int], list[int], list[int]]:
    """Shuffle ``range(n)`` with ``seed`` and cut into train/valid/test by ``fractions``."""
    if abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"split fractions must sum to 1, got {fractions}")
    perm = np.random.default_rng(seed).permutation(n).tolist()
    n_valid = int(round(fractions[1] * n))
    n_test = int(round(fractions[2] * n))
    n_train = n - n_valid - n_test
    return perm[:n_train], perm[n_train:n_train + n_valid], perm[n_train + n_valid:]


MAX_LISTED_VALUES = 32   # more distinct charges (or spins) than this are recorded as a range


def _seen(values: list[float]) -> dict:
    distinct = sorted({round(float(v), 6) for v in values})
    if len(distinct) <= MAX_LISTED_VALUES:
        return {"values": distinct}
    return {"range": [distinct[0], distinct[-1]]}


def charge_spin_seen(structures: list[AtomicData]) -> dict:
    """The total charges (e) and spin multiplicities a model is trained on, for its metadata:
    ``{"training_charge": {"values": [...]}, "training_spin": {...}}`` (distinct values, or
    ``{"range": [min, max]}`` when there are more than `MAX_LISTED_VALUES`). `AttnCalculator`
    warns about structures outside them."""
    return {"training_charge": _seen([d.charge for d in structures]),
            "training_spin": _seen([d.spin for d in structures]),
            **domain_seen(structures)}


def shortest_distance(positions: np.ndarray, cell: np.ndarray, pbc, within: float = 3.0) -> float:
    """The shortest interatomic distance (Å) of one structure (periodic images included), or
    inf when no pair is closer than ``within``."""
    from vesin import NeighborList
    periodic = bool(np.any(np.asarray(pbc)))
    box = np.asarray(cell, dtype=float) if periodic else np.zeros((3, 3))
    d = NeighborList(cutoff=within, full_list=False).compute(
        np.asarray(positions, dtype=float), box, periodic, quantities="d", copy=True)
    d = np.asarray(d[0] if isinstance(d, (list, tuple)) else d)
    return float(d.min()) if d.size else float("inf")


def domain_seen(structures: list[AtomicData]) -> dict:
    """What else `AttnCalculator` checks a structure against (`DomainWarning`):
    ``training_min_distance`` (Å), the shortest interatomic distance in the training set, and
    ``training_composition_span`` — the elements and an orthonormal basis (rows) of the space
    the training structures' element counts span: the per-element energies (E0) are only
    determined along it, so a composition with a part outside it extrapolates them."""
    shortest = min((shortest_distance(d.positions, d.cell, d.pbc) for d in structures),
                   default=float("inf"))
    elements = sorted({int(z) for d in structures for z in np.asarray(d.numbers)})
    counts = np.array([[int(np.sum(np.asarray(d.numbers) == z)) for z in elements]
                       for d in structures], dtype=float)
    out = {}
    if np.isfinite(shortest):
        out["training_min_distance"] = round(shortest, 6)
    if counts.size:
        _, sv, vt = np.linalg.svd(counts, full_matrices=False)
        basis = vt[sv > 1e-8 * sv.max()]
        out["training_composition_span"] = {"elements": elements, "basis": basis.tolist()}
    return out


def outside_composition_span(numbers, span: dict, tol: float = 1e-6) -> bool:
    """Whether the element counts of ``numbers`` have a part outside ``span`` (relative ``tol``),
    or an element the span does not know."""
    numbers = np.asarray(numbers)
    elements = span["elements"]
    if not set(int(z) for z in numbers) <= set(elements):
        return True
    c = np.array([np.sum(numbers == z) for z in elements], dtype=float)
    basis = np.asarray(span["basis"], dtype=float).reshape(-1, len(elements))
    rest = c - basis.T @ (basis @ c)
    return bool(np.linalg.norm(rest) > tol * max(np.linalg.norm(c), 1.0))


def outside_seen(value: float, seen: dict) -> bool:
    """Whether ``value`` lies outside what `charge_spin_seen` recorded (to 1e-6)."""
    if "values" in seen:
        return all(abs(value - v) > 1e-6 for v in seen["values"])
    low, high = seen["range"]
    return not low - 1e-6 <= value <= high + 1e-6


def describe_seen(seen: dict) -> str:
    if "values" in seen:
        return ", ".join(f"{v:g}" for v in seen["values"])
    return f"{seen['range'][0]:g} to {seen['range'][1]:g}"
