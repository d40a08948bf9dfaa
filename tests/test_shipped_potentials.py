"""The potentials in potentials/: they load, are small, have a model card, and their LAMMPS
exports compute what the model files compute."""
from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import domain_warnings, random_molecule

POTENTIALS = Path(__file__).resolve().parents[1] / "potentials"
MODELS = sorted(p for p in POTENTIALS.glob("*.pt") if not p.name.endswith(".lmp.pt"))
EXPORTS = sorted(POTENTIALS.glob("*.lmp.pt"))


def _structure(elements, seed=0):
    """A small cluster made of the model's elements (H-rich, spread like a molecule)."""
    atoms = random_molecule(8, seed=seed, numbers=tuple(elements), spread=1.6)
    return atoms


@pytest.mark.parametrize("system", ["cumulene", "sn2", "charge-transfer"])
def test_every_shipped_system_has_a_local_and_an_attention_model(system):
    """The potentials are tracked in git: a missing one is a broken checkout, not a skip."""
    names = {p.stem for p in MODELS}
    for variant in ("local", "efa"):
        assert f"{system}-{variant}" in names, f"potentials/{system}-{variant}.pt is missing"
        assert (POTENTIALS / f"{system}-{variant}.lmp.pt").exists(), f"{system}-{variant}.lmp.pt"


# a random structure: closer pairs than the salt potentials' training data (they carry the
# training metadata, so their calculator says so)
@pytest.mark.filterwarnings("ignore::mlip_attn.calculators.ase_calculator.DomainWarning")
@pytest.mark.parametrize("path", MODELS, ids=[p.name for p in MODELS])
def test_shipped_potential_loads_and_has_a_card(path):
    from mlip_attn import AttnCalculator
    from mlip_attn.models.model_file import read_model_file
    assert path.stat().st_size < 5 * 2**20
    card = path.with_suffix(".md")
    assert card.exists(), f"{path.name} has no model card"
    text = card.read_text()
    for heading in ("## Model", "## Data and training", "## Errors", "## Limits"):
        assert heading in text, (card.name, heading)
    meta = read_model_file(path)["metadata"]
    assert np.isfinite(meta["test"]["energy_mae"]) and np.isfinite(meta["test"]["forces_mae"])
    atoms = _structure(meta["elements"])
    atoms.info["charge"] = meta.get("training_charge", {}).get("values", [0.0])[0]  # one it knows
    atoms.calc = AttnCalculator(path)
    # a random cluster is outside every model's domain: files with training metadata say so
    from mlip_attn.calculators.ase_calculator import DomainWarning
    with pytest.warns(DomainWarning) if "training_min_distance" in meta else nullcontext():
        assert np.isfinite(atoms.get_potential_energy())
    assert np.isfinite(atoms.get_forces()).all()


@pytest.mark.parametrize("path", EXPORTS, ids=[p.name for p in EXPORTS])
def test_shipped_lammps_export_matches_its_model_file(path):
    from mlip_attn.data import AtomicData, Batch
    from mlip_attn.lammps.export import load_torchscript, read_export_metadata
    from mlip_attn.models import load_model
    source = path.with_name(path.name.replace(".lmp.pt", ".pt"))
    assert source.exists(), f"{path.name}: no {source.name} next to it"
    model = load_model(source, dtype=torch.float64)
    meta = read_export_metadata(path)
    same_dtype = load_model(source, dtype=meta["dtype"])   # the precision the export runs in
    assert meta["elements"] == model.elements and meta["cutoff"] == model.cutoff
    atoms = _structure(model.elements, seed=1)
    batch = Batch.collate([AtomicData.from_atoms(atoms).with_graph(model.cutoff)]).to(
        dtype=torch.float64)
    ref = model.predict(batch)
    ref_same = same_dtype.predict(batch.to(dtype=getattr(torch, meta["dtype"])))
    if meta.get("route") == "torchscript+ops":   # the export calls the compiled mlip_attn ops
        from mlip_attn.ops.library import try_load_ops
        loaded, why = try_load_ops()
        if not loaded:
            pytest.skip(f"the compiled mlip_attn ops are not available here: {why}")
    scripted = load_torchscript(path)
    args = (batch.positions, batch.numbers, batch.edge_index, batch.shifts, len(atoms),
            batch.charge, batch.spin, False)
    if meta.get("box_input"):   # format 4: the box, zeros for an isolated structure
        args = args + (torch.zeros(3, 3, dtype=torch.float64),)
    energy, _, forces, _ = scripted(*args)
    # the shipped exports run in float32 (inputs and outputs are float64): against the model in
    # float32 they agree to a few float32 roundings; against float64 to float32's precision,
    # whose absolute size grows with the forces (this random structure is far from any
    # training data: |F| reaches ~200 eV/Å)
    scale = max(1.0, float(ref["forces"].abs().max()))
    torch.testing.assert_close(energy.reshape(()), ref_same["energy"][0].double(), rtol=1e-6,
                               atol=1e-5)
    torch.testing.assert_close(forces, ref_same["forces"].double(), rtol=0, atol=1e-6 * scale)
    torch.testing.assert_close(energy.reshape(()), ref["energy"][0], rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(forces, ref["forces"], rtol=0, atol=1e-4 * scale)


HELD_OUT = sorted(POTENTIALS.glob("*.held_out.json"))


@pytest.mark.parametrize("path", HELD_OUT, ids=[p.name for p in HELD_OUT])
def test_shipped_potential_reproduces_its_cards_held_out_numbers(path):
    """The card's errors on sets never trained on are what the shipped file computes on the
    shipped held-out structures (float64, as the card says)."""
    import json
    from mlip_attn.models import load_model
    from mlip_attn.training.evaluate import evaluate_file
    model = load_model(path.with_name(path.name.replace(".held_out.json", ".pt")),
                       dtype=torch.float64)
    root = POTENTIALS.parent
    card = path.with_name(path.name.replace(".held_out.json", ".md")).read_text()
    for name, entry in json.loads(path.read_text()).items():
        assert f"held out: {name}" in card
        errors = evaluate_file(model, root / entry["file"])
        for key in ("energy_mae", "energy_rmse", "forces_mae", "forces_rmse"):
            assert errors[key] == pytest.approx(entry["errors"][key], rel=1e-6), (name, key)


@pytest.mark.parametrize("name", ["rigid-ion-salt-local", "rigid-ion-salt-electrostatics"])
def test_shipped_salt_does_not_warn_on_its_held_out_cells(name):
    """Held-out cells of the training distribution raise no `DomainWarning` (issue 25): the
    bonded-environment check, which never saturates on rattled rock salt, is off in these
    files, and the feature novelty stays below its threshold."""
    import ase.io

    from mlip_attn import AttnCalculator
    calc = AttnCalculator(POTENTIALS / f"{name}.pt", default_dtype="float64")
    assert calc.models[0].metadata["training_environments"]["usable"] is False
    for atoms in ase.io.read(POTENTIALS / "held_out" / "rigid-ion-salt-3x3x3.xyz", ":4"):
        assert domain_warnings(calc, atoms) == [], name
