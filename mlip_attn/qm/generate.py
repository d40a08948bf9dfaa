"""`generate`: structures of a registered reference system, labelled into a resumable file."""
from __future__ import annotations

from ..registry import REFERENCE_SYSTEMS
from .labelling import LabelReport, label_structures


def generate(system: str, n: int, out: str, method: str | None = None, workers: int = 1,
             seed: int = 0, progress: bool = True, electronic_temperature: float = 300.0,
             **options) -> LabelReport:
    """Make ``n`` structures of ``system`` (a name in `REFERENCE_SYSTEMS`) with ``seed`` and
    label them into ``out`` with ``method`` (default: the system's own). ``options`` go to the
    system's `structures` recipe. Re-running the same call resumes."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n: the number of structures must be a positive integer, got {n!r}")
    recipe = REFERENCE_SYSTEMS.get(system, "system").factory()
    method = method or recipe.methods[0]
    if method not in recipe.methods:
        raise ValueError(f"{system}: method {method!r} is not available; choose from "
                         f"{list(recipe.methods)}")
    structures = recipe.structures(n, seed=seed, **options)
    return label_structures(structures, out, method=method, workers=workers,
                            electronic_temperature=electronic_temperature, progress=progress)
