"""The long-range benchmark runner: a protocol's data, held-out sets, matched variants,
results and table, end to end on a toy system (seconds)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from mlip_attn.qm.systems.base import HeldOut, Protocol, ReferenceSystem
from mlip_attn.registry import REFERENCE_SYSTEMS


@pytest.fixture
def toy_pair():
    from ase import Atoms

    @REFERENCE_SYSTEMS.register("toy-h2-pair", summary="toy: two H2 at a distance")
    class ToyPair(ReferenceSystem):
        protocols = {"tiny": Protocol(
            "two H2 molecules 3–6 Å apart", n=20, data={"gap": (3.0, 6.0)},
            held_out={"far": HeldOut(4, {"gap": (7.0, 8.0)})},
            backbone={"backbone": "painn", "cutoff": 2.0, "layers": 1, "num_basis": 4},
            variants={"local": None, "efa": {"type": "efa", "d_qk": 4, "d_v": 4}},
            width=16, reference="efa", training={"epochs": 2, "batch_size": 4})}
        calls = []

        def structures(self, n: int, seed: int = 0, gap=(3.0, 6.0)):
            rng = np.random.default_rng(seed)
            out = []
            for _ in range(n):
                d = rng.uniform(*gap)
                out.append(Atoms("H4", positions=[[0, 0, 0], [0, 0, 0.74], [d, 0, 0],
                                                  [d, 0, 0.74 + rng.uniform(-0.05, 0.05)]],
                                 info={"system": "toy-h2-pair", "total_charge": 0}))
            return out

        def analysis(self, out, calculators, protocol):
            type(self).calls.append((protocol, sorted(calculators)))
            return {"seen": protocol}

    yield ToyPair
    del REFERENCE_SYSTEMS._components["toy-h2-pair"]


def _ship_module(here):
    """potentials/ship.py as a module, writing into ``here`` instead of potentials/."""
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / "potentials" / "ship.py"
    spec = importlib.util.spec_from_file_location("ship_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    here.mkdir()
    module.HERE = here
    return module


def test_protocol_runs_end_to_end(toy_pair, tmp_path):
    import ase.io
    from scipy.spatial.distance import pdist
    from mlip_attn.apps.longrange import format_table, run_longrange
    lines = []
    results = run_longrange("toy-h2-pair", out=tmp_path, log=lines.append)
    folder = tmp_path / "toy-h2-pair" / "tiny"
    assert json.loads((folder / "results.json").read_text())["protocol"] == "tiny"
    assert set(results["variants"]) == {"local", "efa"}
    local, efa = results["variants"]["local"], results["variants"]["efa"]
    assert abs(local["parameters"] - efa["parameters"]) <= 0.05 * efa["parameters"]
    assert local["held_out"]["far"]["structures"] == 4
    assert np.isfinite(efa["held_out"]["far"]["energy_rmse"])
    # r_max from the training data only (1.5 × its largest distance, ≤ 1.5 × 6.05 Å): the
    # held-out pairs 7–8 Å apart play no part (issue 25)
    assert results["r_max"] == np.ceil(1.5 * max(float(pdist(a.positions).max())
                                                 for a in ase.io.read(results["data"], ":")))
    assert results["r_max"] <= np.ceil(1.5 * 6.05) < 1.5 * 7.0
    assert toy_pair.calls == [("tiny", ["efa", "local"])]
    assert results["analysis"] == {"seen": "tiny"}
    table = format_table(results)
    assert "held out far" in table and "local/efa" in table
    # potentials/ship.py: a card with the held-out sets and the system's findings, the
    # held-out files copied and their numbers reproducible from the shipped model
    ship = _ship_module(tmp_path / "potentials")
    toy_pair.card_findings = lambda self, analysis, variant: [f"{variant} saw {analysis['seen']}"]
    ship.main([str(tmp_path), "--system", "toy-h2-pair"])
    card = (tmp_path / "potentials" / "toy-h2-pair-efa.md").read_text()
    assert "efa model (tiny protocol)" in card and "| held out: far |" in card
    assert "- far: `potentials/held_out/toy-h2-pair-far.xyz`" in card
    assert "## Findings\n- efa saw tiny" in card and card.index("## Findings") < \
        card.index("## Limits")
    from mlip_attn.models import load_model
    from mlip_attn.training.evaluate import evaluate_file
    import torch
    shipped = json.loads((tmp_path / "potentials" / "toy-h2-pair-efa.held_out.json").read_text())
    errors = evaluate_file(load_model(tmp_path / "potentials" / "toy-h2-pair-efa.pt",
                                      dtype=torch.float64),
                           tmp_path / "potentials" / "held_out" / "toy-h2-pair-far.xyz")
    assert errors["forces_mae"] == pytest.approx(shipped["far"]["errors"]["forces_mae"], rel=1e-6)
    assert (tmp_path / "potentials" / "toy-h2-pair-local.lmp.pt").exists()
    # a second run resumes every variant instead of training again
    again = run_longrange("toy-h2-pair", out=tmp_path, log=lines.append)
    assert again["variants"]["efa"]["test"] == efa["test"]


def test_unknown_protocol_and_variant_are_named(toy_pair, tmp_path, capsys):
    from mlip_attn.cli import main
    assert main(["benchmark", "longrange", "--system", "toy-h2-pair", "--protocol", "huge",
                 "--out", str(tmp_path)]) == 2
    assert "'huge' is not one of ['tiny']" in capsys.readouterr().err
    assert main(["benchmark", "longrange", "--system", "toy-h2-pair", "--variants", "efa-l9",
                 "--out", str(tmp_path)]) == 2
    assert "'efa-l9' is not one of" in capsys.readouterr().err


def test_data_makes_a_protocols_training_and_held_out_sets(toy_pair, tmp_path, capsys):
    """`mlip-attn data S --protocol P [--held-out H]` writes exactly the files the benchmark
    makes, so a shipped potential can be evaluated on its card's held-out sets."""
    import ase.io
    from mlip_attn.apps.longrange import make_data, protocol_of
    from mlip_attn.cli import main
    held = tmp_path / "far.xyz"
    assert main(["data", "toy-h2-pair", "--protocol", "tiny", "--held-out", "far",
                 "--out", str(held), "--method", "gfn2-xtb"]) == 0
    train = tmp_path / "train.xyz"
    assert main(["data", "toy-h2-pair", "--protocol", "tiny", "--out", str(train)]) == 0
    _, spec = protocol_of("toy-h2-pair", "tiny")
    bench_train, bench_held = make_data("toy-h2-pair", spec, tmp_path / "bench")
    for mine, theirs in ((held, bench_held["far"]), (train, bench_train)):
        a, b = ase.io.read(mine, ":"), ase.io.read(theirs, ":")
        assert len(a) == len(b) and all(np.array_equal(x.positions, y.positions)
                                        for x, y in zip(a, b))
    assert len(ase.io.read(held, ":")) == 4
    capsys.readouterr()
    assert main(["data", "toy-h2-pair", "--protocol", "tiny", "--held-out", "near",
                 "--out", str(tmp_path / "x.xyz")]) == 2
    assert "--held-out: 'near' is not one of ['far']" in capsys.readouterr().err
    assert main(["data", "toy-h2-pair", "--held-out", "far", "--out", str(tmp_path / "y.xyz")]) == 2
    assert "--held-out: needs --protocol" in capsys.readouterr().err
    assert main(["data", "toy-h2-pair", "--protocol", "tiny", "--held-out", "far", "--seed", "3",
                 "--out", str(tmp_path / "z.xyz")]) == 2
    assert "--seed: a held-out set has its own seed (1000)" in capsys.readouterr().err


def _shipped_protocols():
    return [(system.name, name) for system in REFERENCE_SYSTEMS
            for name in system.factory.protocols]


@pytest.mark.parametrize("system, name", _shipped_protocols(),
                         ids=[f"{s}-{p}" for s, p in _shipped_protocols()])
def test_every_protocol_makes_its_data_and_matches_its_variants(system, name):
    """Each protocol of each reference system, with small n: its training options and every
    held-out set's options are accepted by the recipe (unoptimised geometries, no labels), and
    every variant builds within 5 % of the reference variant's parameter count."""
    from mlip_attn.apps.longrange import protocol_of, variant_configs
    from mlip_attn.models import build_model
    _, spec = protocol_of(system, name)
    recipe = REFERENCE_SYSTEMS[system].factory()
    sets = {"training": (0, spec.data)} | {h: (held.seed, held.options)
                                           for h, held in spec.held_out.items()}
    elements = set()
    for label, (seed, options) in sets.items():
        try:
            structures = recipe.structures(4, seed=seed, **options, optimise=False)
        except TypeError as err:  # a recipe that optimises nothing (nacl)
            if "optimise" not in str(err):
                raise
            structures = recipe.structures(4, seed=seed, **options)
        assert len(structures) == 4, label
        assert all("total_charge" in a.info for a in structures), label
        elements |= {int(z) for a in structures for z in a.numbers}
    configs = variant_configs(spec, sorted(elements), r_max=30.0)
    assert set(configs) == set(spec.variants or configs)
    counts = {v: sum(p.numel() for p in build_model(c).parameters()) for v, c in configs.items()}
    target = counts[spec.reference]
    assert all(abs(n - target) <= 0.05 * target for n in counts.values()), counts


def test_reach_comes_from_the_training_structures_only():
    """`training_reach`: factor × the true largest interatomic distance (not the centroid
    bound), rounded up; the SN2 ``tails`` protocol ends its reach where its data ends."""
    from ase import Atoms
    from mlip_attn.apps.longrange import protocol_of, training_reach
    frames = [Atoms("H3", positions=[[0, 0, 0], [10.2, 0, 0], [5.1, 0.5, 0]]),
              Atoms("H2", positions=[[0, 0, 0], [0, 0, 4.0]])]
    assert training_reach(frames) == np.ceil(1.5 * 10.2)
    assert training_reach(frames, 1.0) == 11.0
    assert protocol_of("sn2", "tails")[1].reach_factor == 1.0
    assert protocol_of("sn2", "default")[1].reach_factor == 1.5


def test_card_provenance_names_every_carry_over(tmp_path):
    """A file fine-tuned from a file that was itself carried over says both steps on its card
    (potentials/finetune.py records the chain, ship.py writes it)."""
    ship = _ship_module(tmp_path / "potentials")
    once = {"file": "x.pt", "physics": 1, "best_epoch": 148, "fine_tuning_epochs": 10,
            "missing": ["tail_alpha"]}
    twice = {"file": "x.pt", "physics": 2, "best_epoch": 10, "fine_tuning_epochs": 20,
             "missing": [], "from": once}
    assert ship.provenance({"physics": 4}) is None
    line = ship.provenance({"physics": 2, "initialised_from": once})
    assert "physics-1 `x.pt` (best epoch 148" in line and "fine-tuned 10 epochs under physics 2" in line
    line = ship.provenance({"physics": 4, "initialised_from": twice})
    assert ("physics-2 `x.pt` (itself the physics-1 file's weights, best epoch 148, fine-tuned "
            "10 epochs)") in line and "fine-tuned 20 epochs under physics 4" in line
    assert "--select last" not in line
    assert "the last epoch's weights (`--select last`)" in ship.provenance(
        {"physics": 4, "initialised_from": {**twice, "selected": "last"}})


def _finetune_and_a_toy_model(tmp_path):
    """potentials/finetune.py as a module, and a toy-h2-pair local model.pt to start from."""
    import importlib.util
    from pathlib import Path
    from mlip_attn.apps.longrange import run_longrange
    run_longrange("toy-h2-pair", out=tmp_path / "first", variants=["local"])
    init = tmp_path / "first" / "toy-h2-pair" / "tiny" / "local" / "model.pt"
    path = Path(__file__).resolve().parents[1] / "potentials" / "finetune.py"
    spec = importlib.util.spec_from_file_location("finetune_under_test", path)
    ft = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ft)
    return ft, init


def test_finetune_can_ship_the_last_epoch_and_rechoose_on_a_finished_run(toy_pair, tmp_path):
    """potentials/finetune.py --select last: the last epoch's (EMA) weights, test errors of
    those weights on the card's metadata; on a finished run folder it only re-chooses (no
    epoch is trained again) and keeps the carry-over record."""
    import torch
    from mlip_attn.models.model_file import read_model_file
    ft, init = _finetune_and_a_toy_model(tmp_path)
    runs = tmp_path / "tuned"
    best = ft.finetune(runs, "toy-h2-pair", None, "local", init, 3, 1e-3)
    chosen = read_model_file(best)["metadata"]
    metrics = (best.parent / "metrics.csv").read_text().splitlines()
    assert len(metrics) == 4 and chosen["initialised_from"]["fine_tuning_epochs"] == 3
    assert chosen["initialised_from"]["file"] == "tiny/local/model.pt"   # a run's, not "model.pt"
    last = ft.finetune(runs, "toy-h2-pair", None, "local", init, 3, 1e-3, select="last")
    meta = read_model_file(last)["metadata"]
    assert (last.parent / "metrics.csv").read_text().splitlines() == metrics   # nothing trained
    assert meta["best_epoch"] == 3 and meta["initialised_from"]["fine_tuning_epochs"] == 3
    assert meta["initialised_from"]["selected"] == "last"
    ema = torch.load(last.parent / "checkpoint.pt", weights_only=True)["ema"]["shadow"]
    weights = read_model_file(last)["state_dict"]
    assert all(torch.equal(weights[k], ema[k].to(weights[k].dtype)) for k in weights)
    again = ft.finetune(runs, "toy-h2-pair", None, "local", init, 3, 1e-3)     # best, again
    assert read_model_file(again)["metadata"]["best_epoch"] == chosen["best_epoch"]
    assert (last.parent / "metrics.csv").read_text().splitlines() == metrics
    with pytest.raises(SystemExit, match="stopped after epoch 3, not 5"):
        ft.finetune(runs, "toy-h2-pair", None, "local", init, 5, 1e-3, select="last")


def test_finetune_energy_weight_sets_the_runs_loss(toy_pair, tmp_path):
    """potentials/finetune.py --energy-weight: the fine-tuning run's loss takes that per-atom
    energy weight (config.yaml's training section), the forces' weight stays the protocol's."""
    import yaml
    ft, init = _finetune_and_a_toy_model(tmp_path)
    before = yaml.safe_load((init.parent / "config.yaml").read_text())["training"]
    tuned = ft.finetune(tmp_path / "tuned", "toy-h2-pair", None, "local", init, 1, 1e-4,
                        energy_weight=123.0)
    training = yaml.safe_load((tuned.parent / "config.yaml").read_text())["training"]
    assert training["energy_weight"] == 123.0 != before["energy_weight"]
    assert training["forces_weight"] == before["forces_weight"]
