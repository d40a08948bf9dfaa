"""The encoder study's built-in property data sets, labelled with GFN2-xTB (tblite).

- ``local``: small organic C/H/N/O molecules (`molecules.small_molecules`): every property is
  set within a few bonds;
- ``longrange``: push–pull chains D–(CH=CH)ₙ–A / D–(C≡C)ₙ–A (`chains.push_pull_chains`):
  gap, dipole and polarisability depend on both ends and the length.

`generate_dataset` builds the molecules (RDKit) and labels them resumably into
``<out>/<name>.xyz`` (`mlip_attn.qm.properties.label_properties`); `add_derived` adds the
study's intensive and class targets (fixed definitions below, the same for every size).
Sizes: full ``local`` 1,000 molecules, ``longrange`` 720; ``quick``: 300 and 288. (Sized so
that the full study, 24 training runs per data set, runs in about an hour on 2 shared cores.)
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ase import Atoms


@dataclass(frozen=True)
class PropertyDataset:
    """A recipe: ``make(quick, seed)`` → unlabelled molecules; the study's regression
    ``targets`` (keys of ``atoms.info`` after `add_derived`, with units) and ``classes``
    (name → number of classes)."""

    name: str
    summary: str
    make: Callable[[bool, int], list]
    targets: dict = field(default_factory=dict)
    classes: dict = field(default_factory=dict)


def _local(quick: bool, seed: int) -> list[Atoms]:
    from .molecules import small_molecules
    return small_molecules(300 if quick else 1000, seed)


def _longrange(quick: bool, seed: int) -> list[Atoms]:
    from .chains import LENGTHS, push_pull_chains
    return push_pull_chains(seed, conformers=1, lengths=(1, 4, 7, 10) if quick else LENGTHS)


# class definitions (fixed thresholds, so a label never depends on the sample drawn)
POLAR_DIPOLE = 2.0                 # Debye: local "polar" = 1 at or above
GAP_CLASS_EDGES = (2.0, 3.0)       # eV: longrange "gap_class" 0 below 2, 1 in [2, 3), 2 above


def add_derived(atoms: Atoms) -> Atoms:
    """Add the study's derived targets to ``atoms.info`` (from the labelled properties):
    ``atomization_energy_per_atom`` (eV/atom), ``polarizability_per_atom`` (Å³/atom) —
    intensive, because the target heads average over atoms — ``polar`` (dipole ≥ 2 D) and
    ``gap_class`` (gap < 2, 2–3, ≥ 3 eV)."""
    info = atoms.info
    n = len(atoms)
    if "atomization_energy" in info:
        info["atomization_energy_per_atom"] = float(info["atomization_energy"]) / n
    if "polarizability" in info:
        info["polarizability_per_atom"] = float(info["polarizability"]) / n
    if "dipole_norm" in info:
        info["polar"] = int(float(info["dipole_norm"]) >= POLAR_DIPOLE)
    if "gap" in info:
        gap = float(info["gap"])
        info["gap_class"] = int(sum(gap >= edge for edge in GAP_CLASS_EDGES))
    return atoms


DATASETS = {
    "local": PropertyDataset(
        "local", "small C/H/N/O molecules (3–9 heavy atoms): local properties", _local,
        targets={"gap": "eV", "dipole_norm": "D", "atomization_energy_per_atom": "eV/atom"},
        classes={"polar": 2}),
    "longrange": PropertyDataset(
        "longrange", "push–pull polyene/polyyne chains, 1–10 units: properties of the whole "
        "chain", _longrange,
        targets={"gap": "eV", "dipole_norm": "D", "polarizability_per_atom": "Å³/atom"},
        classes={"gap_class": 3}),
}


def get_dataset(name: str) -> PropertyDataset:
    if name not in DATASETS:
        raise ValueError(f"--dataset: {name!r} is not one of {sorted(DATASETS)}")
    return DATASETS[name]


def generate_dataset(name: str, out: str | Path, quick: bool = False, seed: int = 0,
                     workers: int = 1, progress: bool = True, log=print) -> Path:
    """Molecules of data set ``name`` labelled with GFN2-xTB into ``<out>/<name>[-quick].xyz``
    (resumable: re-running continues where it stopped). Returns the path."""
    from .. import properties
    recipe = get_dataset(name)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}{'-quick' if quick else ''}.xyz"
    t0 = time.perf_counter()
    molecules = recipe.make(quick, seed)
    t_build = time.perf_counter() - t0
    report = properties.label_properties(molecules, str(path), workers=workers,
                                         progress=progress, log=log)
    log(f"{path}: {report['resumed'] + report['new']}/{len(molecules)} molecules labelled "
        f"(built in {t_build:.0f} s, labelled {report['new']} new in {report['elapsed_s']:.0f} s "
        f"with {workers} worker(s), {report['compute_s']:.0f} s of xTB)")
    return path
