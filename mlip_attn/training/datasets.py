"""Turn the ``data:`` section of a config into train/valid/test structures with graphs, and check
them against the model (`check_global_reach`)."""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..data import AtomicData, DataFileError, LabelKeys, read_structures
from ..data.atomic_data import check_elements
from ..data.statistics import elements_of, split_indices
from .run_files import FitError


@dataclass
class Datasets:
    train: list[AtomicData]
    valid: list[AtomicData]
    test: list[AtomicData]
    elements: list[int]


def _subset(structures, indices):
    return [structures[i] for i in indices]


def load_datasets(data_cfg: dict, cutoff: float, elements: list[int] | None = None,
                  require: tuple[str, ...] = ("energy", "forces"), targets: tuple[str, ...] = (),
                  classes: dict | None = None) -> Datasets:
    """Read files, split fractions by ``split_seed``, check labels and elements, build graphs.
    ``targets``: per-structure scalars read from ``atoms.info`` that every structure must have;
    ``classes``: class labels (name → number of classes C) read the same way, integers in
    0 … C − 1."""
    keys = LabelKeys(**data_cfg.get("keys", {}))
    classes = dict(classes or {})
    read = lambda path: read_structures(path, keys, tuple(targets) + tuple(classes))
    full = read(data_cfg["train"])
    fractions = [data_cfg[k] if isinstance(data_cfg[k], float) else 0.0 for k in ("valid", "test")]
    train_idx, valid_idx, test_idx = split_indices(
        len(full), (1.0 - sum(fractions), fractions[0], fractions[1]), data_cfg["split_seed"])
    train = _subset(full, train_idx)
    valid = (read(data_cfg["valid"]) if isinstance(data_cfg["valid"], str)
             else _subset(full, valid_idx))
    test = (read(data_cfg["test"]) if isinstance(data_cfg["test"], str)
            else _subset(full, test_idx))
    if not train:
        raise DataFileError(f"{data_cfg['train']}: no structures left for training after the split")
    if not valid:
        raise DataFileError("data.valid: the validation set is empty (more data or a larger fraction)")
    data_elements = elements_of(train)
    elements = elements or data_elements
    for name, structures in (("train", train), ("valid", valid), ("test", test)):
        for d in structures:
            check_elements(d.numbers.tolist(), elements, f"{d.name} (data.{name})", DataFileError)
            missing = [t for t in targets if t not in d.targets]
            if missing:
                raise DataFileError(f"{d.name}: missing target {missing[0]!r} in atoms.info "
                                    f"(model.targets lists {list(targets)})")
            for label, count in classes.items():
                value = d.targets.get(label)
                if value is None:
                    raise DataFileError(f"{d.name}: missing class label {label!r} in atoms.info "
                                        f"(model.classes lists {list(classes)})")
                if value != int(value) or not 0 <= value < count:
                    raise DataFileError(f"{d.name}: class label {label} = {value!r} is not an "
                                        f"integer in 0 … {count - 1} (model.classes.{label}: "
                                        f"{count})")
            for label in require:
                if getattr(d, label) is None:
                    key = getattr(keys, label)
                    raise DataFileError(
                        f"{d.name}: missing label '{key}' ({label}); set data.keys.{label} to the "
                        f"key your file uses, or training.{label}_weight: 0")
    with_graphs = lambda items: [d.with_graph(cutoff) for d in items]
    return Datasets(with_graphs(train), with_graphs(valid), with_graphs(test), elements)


def check_global_reach(model, data, log) -> None:
    """A model whose global blocks cannot handle periodic cells refuses periodic data; one
    with a finite reach warns about structures larger than it."""
    structures = data.train + data.valid + data.test
    if not model.periodic:
        periodic = [d.name for d in structures if d.is_periodic]
        if periodic:
            raise FitError(f"{periodic[0]}: periodic structure, but this model's global "
                           f"attention supports isolated structures only")
    if model.r_max > 0 and math.isinf(model.separation):   # separable forms just do not interact
        extents = [d.extent for d in structures]
        too_big = sum(e > model.r_max for e in extents)
        if too_big:
            log(f"warning: {too_big} structures are larger than the attention's reach "
                f"r_max = {model.r_max:g} Å (largest extent {max(extents):.1f} Å); raise "
                f"model.attention.r_max to cover them")
