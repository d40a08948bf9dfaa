"""Model cards for shipped potentials: what a model was trained on, how, how well, and its limits.

Everything on the card is read from the model file (architecture, metadata, validation and test
errors written by ``fit``), the run's ``config.yaml`` and the data file's reference-method
metadata; nothing is typed in by hand except the system description and the limits.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import yaml


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


def held_out_section(results: dict, variant: str, system_lines: list[str]) -> list[str]:
    """Card lines for the held-out sets of a long-range benchmark run (``results.json``):
    the errors of ``variant`` on each set (never trained on), the command that remakes a set,
    and the system's own numbers (``system_lines``, from `ReferenceSystem.card_lines`)."""
    held = results["variants"][variant]["held_out"]
    if not held:
        return []
    lines = ["", "## Held-out sets (never trained on)", "",
             "| set | structures | E MAE (meV) | E RMSE (meV) | F MAE (meV/Å) | F RMSE (meV/Å) |",
             "|---|---|---|---|---|---|"]
    for name, e in held.items():
        lines.append(f"| {name} | {e['structures']} | {1e3 * e['energy_mae']:.1f} | "
                     f"{1e3 * e['energy_rmse']:.1f} | {1e3 * e['forces_mae']:.1f} | "
                     f"{1e3 * e['forces_rmse']:.1f} |")
    first = next(iter(held))
    lines += ["", f"Remake a set and check these numbers: `mlip-attn data {results['system']} "
              f"--protocol {results['protocol']} --held-out {first} --out {first}.xyz`, then "
              f"`mlip-attn eval <this model> {first}.xyz`."]
    return lines + ([""] + system_lines if system_lines else [])


def model_card(model_path: str | Path, run_dir: str | Path, title: str, description: str,
               limits: list[str], held_out: list[str] | None = None) -> str:
    """Markdown card for the model file ``model_path`` trained in ``run_dir``; ``held_out``:
    lines of `held_out_section` (for models of the long-range benchmark)."""
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
        f"{train['forces_weight']:g}, EMA {train['ema_decay']}; best validation epoch "
        f"{meta.get('best_epoch')}",
        "", "## Errors (held-out structures)", "",
        "| split | E MAE (meV) | E RMSE (meV) | E MAE (meV/atom) | F MAE (meV/Å) | F RMSE (meV/Å) |",
        "|---|---|---|---|---|---|",
        _errors_row("validation", meta["valid"]), _errors_row("test", meta["test"]),
        *(held_out or []),
        "", "## Limits", *[f"- {item}" for item in limits], "",
        "## Use", "```python",
        "from mlip_attn import AttnCalculator",
        f'atoms.calc = AttnCalculator("potentials/{model_path.name}")',
        "```", ""]
    return "\n".join(lines)
