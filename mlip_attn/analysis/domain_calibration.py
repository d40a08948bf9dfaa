"""``mlip-attn analyze domain MODEL [DATA]``: record a model's training domain in its file.

What `fit` records at the end of training, computed for an existing model file (one trained
before these records existed, or a potential re-shipped from a run folder): the charges and
spins, shortest distance and composition span of the data (`mlip_attn.data.statistics`), the
bonded environments and the feature-novelty statistics (`mlip_attn.models.domain`). Only the
file's ``metadata`` changes; the weights and the model config are written back as read, and
the command checks that the file it wrote loads to the same weights.

Data: with ``DATA`` (any file `mlip_attn.data.read_structures` reads), a random 20 % of it sets
the novelty thresholds and the rest the statistics. Without ``DATA``, the ``config.yaml`` next
to ``MODEL`` (a `fit` run folder) gives the data and its split exactly as in training: the
training structures give the statistics, the validation structures the thresholds.

The write is atomic (`mlip_attn.models.model_file.atomic_save`): in place, the original is
first copied to ``MODEL.bak`` (unless a backup of that name already exists, which is then the
older original and is kept); with ``out``, ``MODEL`` is not touched.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import torch

from ..data import read_structures
from ..data.atomic_data import check_elements
from ..data.statistics import charge_spin_seen
from ..models.domain import domain_statistics
from ..models.model_file import ModelFileError, atomic_save, load_model, read_model_file


def run_split(model_path: Path, model) -> tuple[list, list]:
    """The training and validation structures of the `fit` run whose folder holds
    ``model_path`` (its ``config.yaml``), split as the run split them."""
    import yaml

    from ..training.datasets import load_datasets
    config_path = model_path.parent / "config.yaml"
    if not config_path.exists():
        raise ValueError(f"analyze domain: no data file given and no {config_path} (a fit run "
                         f"folder's config) next to the model; give the training data file")
    config = yaml.safe_load(config_path.read_text())
    if not isinstance(config, dict) or "data" not in config:
        raise ValueError(f"{config_path}: not a fit run config (no 'data' section)")
    data = load_datasets(config["data"], model.cutoff, list(model.elements), require=())
    return data.train, data.valid


def calibrate_domain(model_path, data_path=None, out=None, log=print) -> dict:
    """Compute the domain records for ``model_path`` from ``data_path`` (or its run folder)
    and write the file (see the module). Returns the records written."""
    model_path = Path(model_path)
    content = read_model_file(model_path)
    model = load_model(model_path)
    if data_path is None:
        train, calibration = run_split(model_path, model)
        source = f"{model_path.parent / 'config.yaml'} (train {len(train)}, valid " \
                 f"{len(calibration)})"
    else:
        train, calibration = read_structures(data_path), None
        source = f"{data_path} ({len(train)} structures)"
    for d in train + (calibration or []):
        check_elements(d.numbers.tolist(), model.elements, f"{d.name} (analyze domain data)")
    records = {**charge_spin_seen(train), **domain_statistics(model, train, calibration)}
    target = Path(out) if out is not None else model_path
    if target.suffix != ".pt":
        raise ValueError(f"analyze domain: the output {target} must be a .pt model file")
    if target == model_path:
        backup = model_path.with_name(model_path.name + ".bak")
        if not backup.exists():
            shutil.copy2(model_path, backup)
            log(f"original kept as {backup}")
    atomic_save({**content, "metadata": {**content["metadata"], **records}}, target)
    _check_same_weights(target, content["state_dict"])
    novelty, envs = records["feature_novelty"], records["training_environments"]
    checked = "" if envs["usable"] else (
        f" (not checked: {100 * envs['unseen_fraction']:.0f} % of the calibration atoms have "
        f"one the rest never had)")
    log(f"{target}: domain from {source}: {len(envs['environments'])} bonded environments"
        f"{checked}, novelty statistics for elements "
        f"{sorted(int(z) for z in novelty['elements'])} (thresholds from "
        f"{novelty['calibration_structures']} structures)")
    return records


def _check_same_weights(path: Path, state_dict: dict) -> None:
    written = read_model_file(path)["state_dict"]
    if written.keys() != state_dict.keys() or not all(
            torch.equal(written[k], state_dict[k]) for k in state_dict):
        raise ModelFileError(f"{path}: the weights written differ from those read; the file "
                             f"is damaged (the original is in the backup)")
