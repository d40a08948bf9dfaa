"""Shared fixtures: small labelled data sets (ASE's EMT), models with non-trivial weights."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mlip_attn import build_model
from mlip_attn.data import AtomicData, Batch
from mlip_attn.nn.graph import Features, graph_without_edges
from mlip_attn.registry import BACKBONES, GLOBAL_BLOCKS

# options a test supplies where a preset leaves a required option open (it depends on the data)
TEST_OPTIONS = {"r_max": 40.0}
# the last potential shipped under physics 1 (sn2-charges until stop 34; replaced by a physics-4
# file), kept as a fixture: how old files load, what their violations are
LEGACY_SN2_CHARGES = Path(__file__).resolve().parent / "data/legacy/sn2-charges-physics1.pt"


def _model_matrix() -> dict:
    """Every model family the registries build: each backbone (and backbone preset) alone, and
    each that takes global blocks with every preset of every global block it can host.
    A new backbone or global block joins every model test without listing it here."""
    configs = {}
    for backbone in BACKBONES:
        for name, own in [(backbone.name, {}), *backbone.presets.items()]:
            configs[name] = {"backbone": backbone.name, **own}
            if not backbone.factory.accepts_global_blocks:
                continue
            for block in GLOBAL_BLOCKS:
                required = {k for k, p in block.parameters().items() if p.default is p.empty}
                for preset, options in block.presets.items():
                    options = {**{k: TEST_OPTIONS[k] for k in required - set(options)}, **options}
                    config = {"backbone": backbone.name, **own,
                              "attention": {"type": block.name, **options}}
                    try:
                        build_model({**config, "elements": [1], "width": 16})
                    except ValueError:  # e.g. vector channels on a scalar backbone
                        continue
                    configs[f"{name}+{preset}"] = config
    return configs


# EFA is rotation invariant up to the Lebedev quadrature error, which is ~1e-12 for structures
# well inside r_max (test structures here span < 12 Å); tests/test_efa.py covers the range limit.
MODEL_CONFIGS = _model_matrix()


def call_exact(block, s, v, positions, batch, num_graphs):
    """`call_block` through an EFA block's O(N²) reference."""
    x = Features(s, v, s.new_zeros((s.shape[0], 5, 0)))
    out = block.exact_pairwise(x, graph_without_edges(positions, batch, num_graphs))
    return out.scalars, out.vectors


def call_block(block, s, v, positions, batch, num_graphs):
    """A global block's (scalar, vector) output for features s (N, F), v (N, 3, F|0) of
    isolated structures."""
    x = Features(s, v, s.new_zeros((s.shape[0], 5, 0)))
    out = block(x, graph_without_edges(positions, batch, num_graphs))
    return out.scalars, out.vectors


def make_model(name: str, elements=(1, 6, 8), width: int = 16, layers: int = 2, cutoff: float = 4.0,
               dtype=torch.float64, seed: int = 0, physics: int | None = None):
    """A small model whose zero-initialised branches are randomised, so every path is tested
    (``physics``: the version of the physical contracts, default the current one)."""
    torch.manual_seed(seed)
    extra = {} if physics is None else {"physics": physics}
    model = build_model({**MODEL_CONFIGS[name], "elements": list(elements), "width": width,
                         "layers": layers, "cutoff": cutoff, **extra})
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return model.to(dtype).eval()


def random_molecule(n_atoms: int = 8, seed: int = 0, numbers=(1, 6, 8), spread: float = 2.2):
    """Random isolated C/H/O cluster with no pair closer than 0.8 Å."""
    from ase import Atoms
    rng = np.random.default_rng(seed)
    pos = []
    while len(pos) < n_atoms:
        p = rng.normal(scale=spread, size=3)
        if all(np.linalg.norm(p - q) > 0.8 for q in pos):
            pos.append(p)
    return Atoms(numbers=rng.choice(numbers, n_atoms), positions=np.array(pos))


def random_crystal(seed: int = 0):
    """A small periodic C/H/O cell (cell smaller than twice a 4 Å cutoff)."""
    from ase import Atoms
    rng = np.random.default_rng(seed)
    cell = np.diag([4.0, 4.5, 5.0]) + rng.uniform(-0.3, 0.3, (3, 3))
    frac = np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5], [0.25, 0.25, 0.25]])
    frac = frac + rng.uniform(-0.04, 0.04, frac.shape)
    return Atoms(numbers=rng.choice([1, 6, 8], len(frac)), scaled_positions=frac, cell=cell, pbc=True)


def to_batch(atoms_list, cutoff: float, dtype=torch.float64) -> Batch:
    return Batch.collate([AtomicData.from_atoms(a).with_graph(cutoff) for a in atoms_list]).to(dtype=dtype)


def predict(model, atoms_list, stress: bool = False):
    return model.predict(to_batch(atoms_list, model.cutoff), compute_forces=True, compute_stress=stress)


def emt_frames(n: int, seed: int = 0, kind: str = "molecule"):
    """Labelled frames (REF_* keys) from ASE's EMT: C/H/O clusters or periodic Cu cells."""
    from ase.build import bulk
    from ase.calculators.emt import EMT
    frames = []
    for k in range(n):
        if kind == "molecule":
            atoms = random_molecule(6, seed=seed * 1000 + k, spread=1.3)
        else:
            atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
            atoms.rattle(0.08, seed=seed * 1000 + k)
        atoms.calc = EMT()
        atoms.info["REF_energy"] = atoms.get_potential_energy()
        atoms.arrays["REF_forces"] = atoms.get_forces()
        if atoms.pbc.any():
            atoms.info["REF_stress"] = atoms.get_stress()
        atoms.calc = None
        frames.append(atoms)
    return frames


@pytest.fixture
def emt_xyz(tmp_path):
    import ase.io
    path = tmp_path / "emt.xyz"
    ase.io.write(path, emt_frames(40), format="extxyz")
    return path


def domain_warnings(calc, atoms) -> list[str]:
    """The `DomainWarning` messages ``calc`` gives for a copy of ``atoms`` (its info kept)."""
    import warnings

    from mlip_attn.calculators.ase_calculator import DomainWarning
    atoms = atoms.copy()
    atoms.calc = calc
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        atoms.get_potential_energy()
    return [str(w.message) for w in caught if issubclass(w.category, DomainWarning)]
