"""Model cards for shipped potentials: what a model was trained on, how, how well, and its limits.

Everything on the card is read from the model file (architecture, metadata, validation and test
errors written by ``fit``), the run's ``config.yaml`` and the data file's reference-method
metadata; nothing is typed in by hand except the system description and the limits.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import yaml

from .physics_check import card_lines


def _reference_method(data_path: Path) -> tuple[int, str, str]:
    """(number of structures, method, settings) from an extxyz file's per-frame metadata."""
    import ase.io
    frames = ase.io.read(data_path, ":")
    info = frames[0].info
    return len(frames), str(info.get("ref_method", "unknown")), str(info.get("ref_settings", ""))


def _errors_row(split: str, errors: dict) -> str:
    return (f"| {split} | {1e3 * errors['energy_mae']:.1f} | {1e3 * errors['energy_rmse']:.1f} | "
            f"{1e3 * errors['energy_per_atom_mae']:.2f} | {1e3 * errors['forces_mae']:.1f} | "
            f"{1e3 * errors['forces_rmse']:.1f} |")


def model_card(model_path: str | Path, run_dir: str | Path, title: str, description: str,
               limits: list[str], held_out: dict | None = None,
               findings: list[str] | None = None, physics: dict | None = None) -> str:
    """Markdown card for the model file ``model_path`` trained in ``run_dir``.

    ``held_out``: name → (data file, errors) of test sets never trained on (the card lists
    them and how to reproduce the numbers with ``mlip-attn eval``); ``findings``: lines of
    the system's own analysis (e.g. torsion barriers of unseen chain lengths); ``physics``: a
    `mlip_attn.analysis.physics_check.physics_check` result, listed as "Physical checks"."""
    from ..models.model_file import read_model_file
    from ..models import load_model
    model_path, run_dir = Path(model_path), Path(run_dir)
    content = read_model_file(model_path)
    meta, arch = content["metadata"], content["model_config"]
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    n_data, method, settings = _reference_method(Path(config["data"]["train"]))
    train = config["training"]
    from ase.data import chemical_symbols
    elements = ", ".join(chemical_symbols[z] for z in meta["elements"])
    attention = arch.get("attention")
    params = sum(p.numel() for p in load_model(model_path).parameters())
    digest = hashlib.sha256(model_path.read_bytes()).hexdigest()[:16]
    reach = (f"global blocks ({meta.get('attention')}), reach "
             f"{'r_max = ' + format(meta['r_max'], 'g') + ' Å' if meta['r_max'] else 'unlimited'}"
             if attention else
             f"local: receptive field {arch['layers']} × {arch['cutoff']:g} Å = "
             f"{arch['layers'] * arch['cutoff']:g} Å")
    lines = [
        f"# {title}", "", description, "",
        "## Model",
        f"- File: `{model_path.name}` ({model_path.stat().st_size / 1024:.0f} KiB, sha256 "
        f"`{digest}…`), mlip-attn {meta.get('mlip_attn_version')}, {meta.get('dtype')}",
        f"- Architecture: {arch['backbone']} width {arch['width']}, {arch['layers']} layers, "
        f"cutoff {arch['cutoff']:g} Å, {arch.get('num_basis')} radial functions; {reach}",
        f"- Attention settings: `{attention}`" if attention else "- Attention: none",
        f"- Parameters: {params:,}; elements: {elements}; conservative forces (−dE/dr)",
        "", "## Data and training",
        f"- {n_data} structures labelled with {method} ({settings})",
        f"- Split: {config['data']['valid']:g} validation, {config['data']['test']:g} test "
        f"(seed {config['data']['split_seed']}); E0s: {config['data']['e0s']}",
        f"- {train['epochs']} epochs, batch {train['batch_size']}, lr {train['lr']:g} "
        f"({train['scheduler']}), loss weights energy {train['energy_weight']:g} / forces "
        f"{train['forces_weight']:g}"
        + (f" / stress {train['stress_weight']:g}" if train.get("stress_weight") else "")
        + f", EMA {train['ema_decay']}; best validation epoch "
        f"{meta.get('best_epoch')}",
        "", "## Errors (held-out structures)", "",
        "| split | E MAE (meV) | E RMSE (meV) | E MAE (meV/atom) | F MAE (meV/Å) | F RMSE (meV/Å) |",
        "|---|---|---|---|---|---|",
        _errors_row("validation", meta["valid"]), _errors_row("test", meta["test"]),
        *[_errors_row(f"held out: {name}", errors) for name, (_, errors) in (held_out or {}).items()],
        *(["", "Held-out sets (never trained on), float64; reproduce with "
           "`mlip-attn eval potentials/" + model_path.name + " FILE --dtype float64`:",
           *[f"- {name}: `{path}`" for name, (path, _) in held_out.items()]] if held_out else []),
        *(["", "## Findings", *[f"- {line}" for line in findings]] if findings else []),
        *(["", *card_lines(physics, model_path.name)] if physics else []),
        "", "## Limits", *[f"- {item}" for item in limits], "",
        "## Use", "```python",
        "from mlip_attn import AttnCalculator",
        f'atoms.calc = AttnCalculator("potentials/{model_path.name}")',
        "```", ""]
    return "\n".join(lines)
