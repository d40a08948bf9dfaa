"""The package's shape: no import cycles, small modules, and extension points that take a new
component as one module (shown with a toy global block and a toy reference system)."""
from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import _model_matrix, make_model, predict, random_molecule
from mlip_attn.attention.base import GlobalBlock
from mlip_attn.nn.graph import Features, Graph
from mlip_attn.qm.systems.base import Protocol, ReferenceSystem
from mlip_attn.registry import GLOBAL_BLOCKS, REFERENCE_SYSTEMS, PositiveInt
from mlip_attn.lammps.export import script

PACKAGE = Path(__file__).resolve().parents[1] / "mlip_attn"
# modules allowed over 400 lines, and why
LONG_MODULES = {
    "mlip_attn.attention.efa": "one algorithm: the fast form, its exact O(N²) reference and "
                               "the Lebedev grid utilities it is tested against",
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_edges(function_level: bool = True) -> dict[str, set[str]]:
    """Module → package modules it imports: every import statement, also those inside
    functions (which hide a dependency from the import-time order but not from the design),
    or top-level statements only with ``function_level=False``."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        targets = set()
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree) if function_level else tree.body:
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                targets.add(base)
                targets |= {f"{base}.{a.name}" for a in node.names}
        edges[name] = {t for t in targets if t in modules and t != name
                       and not name.startswith(t + ".")}  # a parent package is always imported first
    return edges


def _layer(module: str) -> str:
    """The package a module belongs to: ``mlip_attn.nn.policy`` -> ``nn``; top-level modules
    are their own layer (``mlip_attn.cli``), the command line's helpers belong to it
    (``mlip_attn.cli_openqdc``)."""
    parts = module.split(".")
    layer = parts[1] if len(parts) > 1 else parts[0]
    return "cli" if layer.startswith("cli_") else layer


# the packages from the foundations up: a package imports only packages listed before it
LAYERS = ["atomic", "registry", "ops", "nn", "threads", "data", "encoders", "attention",
          "backbones", "models", "qm", "training", "calculators", "lammps", "analysis", "apps",
          "cli", "mlip_attn"]


@pytest.mark.parametrize("function_level", [True, False])
def test_import_graph_has_no_cycles(function_level):
    edges = _import_edges(function_level)
    state: dict[str, int] = {}

    def visit(node, path):
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path + [node, nxt]))
            if nxt not in state:
                visit(nxt, path + [node])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [])
    assert len(edges) > 40  # the walk saw the whole package


def test_no_package_imports_upward():
    """Foundations (``ops``, ``nn``, ``data``) import nothing above them, and so on up to the
    applications (`LAYERS`), counting imports inside functions."""
    rank = {layer: k for k, layer in enumerate(LAYERS)}
    upward = []
    for module, targets in _import_edges().items():
        for target in targets:
            a, b = _layer(module), _layer(target)
            assert a in rank and b in rank, f"{module} or {target}: a package missing in LAYERS"
            if rank[b] > rank[a]:
                upward.append(f"{module} -> {target}")
    assert not upward, "imports upward: " + ", ".join(sorted(upward))


def test_modules_are_small_or_say_why():
    long = {_module_name(p): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    long = {m: n for m, n in long.items() if n > 400}
    assert set(long) <= set(LONG_MODULES), f"modules over 400 lines: {long}"


# ------------------------------------------------------------------ adding a component


@pytest.fixture
def toy_components():
    """A global block and a reference system, each registered the way a new module does."""
    from ase import Atoms

    @GLOBAL_BLOCKS.register("toy-mean-field", summary="toy: MLP of the structure's mean "
                            "feature", presets={"toy-mean-field": {"hidden": 8}})
    class ToyMeanField(GlobalBlock):
        def __init__(self, widths: tuple, hidden: PositiveInt = 16):
            super().__init__()
            width = widths[0]
            self.mlp = torch.nn.Sequential(torch.nn.Linear(width, hidden), torch.nn.SiLU(),
                                           torch.nn.Linear(hidden, width))

        def forward(self, x: Features, graph: Graph) -> Features:
            s = x.scalars
            sums = s.new_zeros((graph.num_graphs, s.shape[1])).index_add(0, graph.batch, s)
            counts = torch.bincount(graph.batch, minlength=graph.num_graphs).to(s.dtype)
            mean = sums / counts.clamp(min=1.0)[:, None]
            return Features(self.mlp(mean)[graph.batch], torch.zeros_like(x.vectors),
                            torch.zeros_like(x.tensors))

    @REFERENCE_SYSTEMS.register("toy-dimer", summary="toy: H2 at random bond lengths")
    class ToyDimer(ReferenceSystem):
        methods = ("gfn2-xtb",)
        protocols = {"default": Protocol("toy", n=10)}

        def structures(self, n: int, seed: int = 0, **options):
            rng = np.random.default_rng(seed)
            return [Atoms("H2", positions=[[0, 0, 0], [0, 0, rng.uniform(0.6, 1.0)]],
                          info={"config_type": "toy", "system": "toy-dimer", "total_charge": 0})
                    for _ in range(n)]

    yield
    del GLOBAL_BLOCKS._components["toy-mean-field"]
    del REFERENCE_SYSTEMS._components["toy-dimer"]


def test_a_new_global_block_is_one_module(toy_components, tmp_path):
    """Registered, it is a config option with a checked schema, a benchmark variant, a row of
    the model-test matrix and in `mlip-attn components`; models with it train and script."""
    from mlip_attn import build_model
    from mlip_attn.apps.longrange import variant_attention
    from mlip_attn.cli import main

    assert "painn+toy-mean-field" in _model_matrix()
    assert "toy-mean-field" in variant_attention()
    with pytest.raises(ValueError, match="model.attention.hidden: must be a positive integer"):
        build_model({"elements": [1], "attention": {"type": "toy-mean-field", "hidden": 0}})
    model = build_model({"elements": [1, 6, 8], "width": 16, "layers": 2,
                         "attention": {"type": "toy-mean-field"}}).double()
    assert model.is_global and model.r_max == 0.0  # unlimited reach
    atoms = random_molecule(6)
    out = predict(model, [atoms])
    other = atoms.copy()
    other.positions[0] += [3.0, 0.0, 0.0]   # moves the mean, changes every atom's energy
    far = predict(model, [other])["energies"]
    assert torch.isfinite(out["forces"]).all()
    assert (far[1:] - out["energies"][1:]).abs().max() > 0  # nothing is local in a global block
    assert script(model) is not None
    assert main(["components"]) == 0


def test_a_new_reference_system_is_one_module(toy_components, tmp_path, capsys):
    """Registered, `mlip-attn data` generates and labels it; the long-range benchmark reads its
    settings."""
    import ase.io

    from mlip_attn.cli import main
    from mlip_attn.qm import generate

    out = tmp_path / "toy.xyz"
    assert main(["data", "toy-dimer", "--n", "3", "--out", str(out)]) == 0
    frames = ase.io.read(out, ":")
    assert len(frames) == 3 and all("REF_energy" in a.info for a in frames)
    with pytest.raises(ValueError, match="method 'pyscf-b3lyp' is not available"):
        generate("toy-dimer", 1, str(tmp_path / "x.xyz"), method="pyscf-b3lyp")
    assert main(["data", "no-such-system", "--n", "1", "--out", str(tmp_path / "y.xyz")]) == 2
    assert "'no-such-system' is not one of" in capsys.readouterr().err


def test_every_registered_model_family_is_in_the_test_matrix():
    from mlip_attn.registry import BACKBONES, GLOBAL_BLOCKS
    matrix = _model_matrix()
    assert {c.name for c in BACKBONES} <= set(matrix)
    for block in GLOBAL_BLOCKS:
        for preset in block.presets:
            assert any(name.endswith("+" + preset) for name in matrix), preset
    assert make_model("painn").is_global is False
