"""The models of ``mlip-attn bench --peers`` (`mlip_attn.apps.peers`): ours and the peers'
at matched sizes, each built as a call that computes energy + forces on one prepared graph.

A builder takes (width, layers, cutoff, num_basis, graph) and returns (call, parameters); a
peer that is not installed raises ImportError (the runner reports it with `INSTALL`).
"""
from __future__ import annotations

import numpy as np

# SchNetPack 2.0.4 imports a name that torch >= 2.6 no longer exports; it is only a type alias
_SHIM = "T_co"


def _import_schnetpack():
    import typing
    import torch.utils.data.dataloader as loader
    if not hasattr(loader, _SHIM):
        setattr(loader, _SHIM, typing.TypeVar(_SHIM, covariant=True))
    import schnetpack
    return schnetpack


class Graph:
    """One cluster and its neighbour list, as float32 tensors."""

    def __init__(self, n_atoms: int, cutoff: float, seed: int = 0):
        import torch
        from .bench import random_box
        from ..data.neighbours import neighbour_list
        atoms = random_box(n_atoms, seed=seed, periodic=False)
        self.atoms = atoms
        self.numbers = torch.tensor(atoms.numbers, dtype=torch.long)
        self.positions = torch.tensor(atoms.positions, dtype=torch.float32)
        edge_index, shifts = neighbour_list(atoms.positions, np.zeros((3, 3)), [False] * 3, cutoff)
        self.edge_index = torch.as_tensor(edge_index, dtype=torch.long)
        self.shifts = torch.as_tensor(shifts, dtype=torch.float32)
        self.n_atoms, self.n_edges = n_atoms, self.edge_index.shape[1]


def our_model(backbone: str, width: int, layers: int, cutoff: float, num_basis: int,
               **options):
    """Our model as the ASE calculator runs it (eval mode, frozen weights)."""
    from ..models import build_model
    model = build_model({"backbone": backbone, "elements": [1, 6, 8], "width": width,
                         "layers": layers, "cutoff": cutoff, "num_basis": num_basis, **options})
    return model.eval().requires_grad_(False)


def ours(backbone: str, width: int, layers: int, cutoff: float, num_basis: int, graph: Graph,
         **options):
    """The bare model call on a prepared batch."""
    import torch
    from ..data import AtomicData, Batch
    model = our_model(backbone, width, layers, cutoff, num_basis, **options)
    batch = Batch.collate([AtomicData.from_atoms(graph.atoms).with_graph(cutoff)])
    batch = batch.to(dtype=torch.float32)
    assert batch.edge_index.shape[1] == graph.n_edges

    def call():
        out = model.predict(batch, compute_forces=True)
        return out["energy"], out["forces"]
    return call, sum(p.numel() for p in model.parameters())


def ours_python_message(width: int, layers: int, cutoff: float, num_basis: int, graph: Graph):
    """Our PaiNN with its message on the Python route (`mlip_attn.nn.policy.message_policy(route="python")`):
    the model as it ran before the fused loops, for the before/after in one run."""
    from ..nn.policy import message_policy
    call, params = ours("painn", width, layers, cutoff, num_basis, graph)

    def python_call():
        with message_policy(route="python"):
            return call()
    return python_call, params


def ours_in_ase(width: int, layers: int, cutoff: float, num_basis: int, graph: Graph):
    """Our PaiNN through `AttnCalculator.get_forces` (input checks, neighbour list with skin,
    conversions), on positions that move by ~0.005 Å each call as in MD."""
    from ..calculators.ase_calculator import AttnCalculator
    model = our_model("painn", width, layers, cutoff, num_basis)
    atoms = graph.atoms.copy()
    atoms.calc = AttnCalculator(model)
    rng = np.random.default_rng(0)

    def call():
        atoms.positions = atoms.positions + rng.normal(0.0, 0.003, atoms.positions.shape)
        return atoms.get_potential_energy(), atoms.get_forces()
    return call, sum(p.numel() for p in model.parameters())


def _schnetpack_call(rep, width: int, graph: Graph):
    """A SchNetPack representation with an energy head and autograd forces, on our edges."""
    import torch
    spk = _import_schnetpack()
    props = spk.properties
    model = spk.model.NeuralNetworkPotential(
        representation=rep, input_modules=[spk.atomistic.PairwiseDistances()],
        output_modules=[spk.atomistic.Atomwise(n_in=width, output_key="energy"),
                        spk.atomistic.Forces(energy_key="energy", force_key="forces")])
    model = model.eval().requires_grad_(False)  # frozen like ours (no effect on plain autograd)
    n = graph.n_atoms
    inputs = {props.Z: graph.numbers, props.R: graph.positions,
              props.idx_i: graph.edge_index[0], props.idx_j: graph.edge_index[1],
              props.offsets: graph.shifts, props.n_atoms: torch.tensor([n]),
              props.idx_m: torch.zeros(n, dtype=torch.long),
              props.cell: torch.zeros(1, 3, 3), props.pbc: torch.zeros(1, 3, dtype=torch.bool)}

    def call():
        out = model(dict(inputs))  # the model adds keys to its input dict
        return out["energy"], out["forces"]
    return call, sum(p.numel() for p in model.parameters())


def schnetpack_painn(width: int, layers: int, cutoff: float, num_basis: int, graph: Graph):
    """SchNetPack's PaiNN with the same hyperparameters (Bessel = our sinc basis, cosine cutoff)."""
    spk = _import_schnetpack()
    rep = spk.representation.PaiNN(
        n_atom_basis=width, n_interactions=layers,
        radial_basis=spk.nn.radial.BesselRBF(n_rbf=num_basis, cutoff=cutoff),
        cutoff_fn=spk.nn.cutoff.CosineCutoff(cutoff))
    return _schnetpack_call(rep, width, graph)


def schnetpack_schnet(width: int, layers: int, cutoff: float, num_basis: int, graph: Graph):
    """SchNetPack's SchNet (invariant): width filters, layers interactions, Gaussian basis."""
    spk = _import_schnetpack()
    rep = spk.representation.SchNet(
        n_atom_basis=width, n_interactions=layers, n_filters=width,
        radial_basis=spk.nn.radial.GaussianRBF(n_rbf=num_basis, cutoff=cutoff),
        cutoff_fn=spk.nn.cutoff.CosineCutoff(cutoff))
    return _schnetpack_call(rep, width, graph)


def _mace_irreps(width: int, order: int) -> str:
    """MACE hidden irreps up to ℓ = ``order``, width channels each (MACE's residual
    interaction needs one channel count for every ℓ)."""
    return "+".join([f"{width}x0e", f"{width}x1o", f"{width}x2e"][:order + 1])


def mace(width: int, layers: int, cutoff: float, num_basis: int, graph: Graph,
         order: int = 0):
    """MACE (correlation 3, residual interactions, `layers` interactions, `num_basis` Bessel
    functions): ``order`` 0 is 128x0e features with ℓ ≤ 3 edge harmonics (MACE's invariant
    reference setting); order 1 and 2 carry features and edge harmonics up to that ℓ."""
    import torch
    # e3nn 0.4.4 torch.loads its own constants file, which holds `slice` objects: allow that
    # one harmless type for the weights-only loader rather than turning the check off
    with torch.serialization.safe_globals([slice]):
        from e3nn import o3
        from mace import modules
    block = modules.interaction_classes["RealAgnosticResidualInteractionBlock"]
    model = modules.MACE(
        r_max=cutoff, num_bessel=num_basis, num_polynomial_cutoff=5,
        max_ell=3 if order == 0 else order, interaction_cls=block, interaction_cls_first=block,
        num_interactions=layers, num_elements=3, hidden_irreps=o3.Irreps(_mace_irreps(width, order)),
        MLP_irreps=o3.Irreps("16x0e"), atomic_energies=np.zeros(3),
        avg_num_neighbors=graph.n_edges / graph.n_atoms, atomic_numbers=[1, 6, 8],
        correlation=3, gate=torch.nn.functional.silu, radial_MLP=[64, 64, 64])
    model = model.float().eval().requires_grad_(False)
    index = {1: 0, 6: 1, 8: 2}
    one_hot = torch.nn.functional.one_hot(
        torch.tensor([index[int(z)] for z in graph.numbers]), 3).float()
    n = graph.n_atoms
    data = {"positions": graph.positions, "node_attrs": one_hot, "edge_index": graph.edge_index,
            "shifts": graph.shifts, "unit_shifts": graph.shifts, "cell": torch.zeros(3, 3),
            "batch": torch.zeros(n, dtype=torch.long), "ptr": torch.tensor([0, n]),
            "head": torch.zeros(1, dtype=torch.long)}

    def call():
        out = model(dict(data), training=False, compute_force=True)
        return out["energy"], out["forces"]
    return call, sum(p.numel() for p in model.parameters())


def _given_edges(graph: Graph):
    """A module that stands in for TorchMD-Net's neighbour search: our edges (plus the
    self-loops its ``loop=True`` search returns), with vectors and lengths computed from the
    positions so that forces flow through them."""
    import torch

    class GivenEdges(torch.nn.Module):
        def __init__(self):
            super().__init__()
            loops = torch.arange(graph.n_atoms).repeat(2, 1)
            self.edge_index = torch.cat([graph.edge_index, loops], dim=1)

        def forward(self, pos, batch, box=None):
            i, j = self.edge_index
            vec = torch.index_select(pos, 0, i) - torch.index_select(pos, 0, j)
            return self.edge_index, torch.linalg.norm(vec, dim=1), vec
    return GivenEdges()


def tensornet(width: int, layers: int, cutoff: float, num_basis: int, graph: Graph):
    """TorchMD-Net's TensorNet (rank-2 Cartesian: ℓ ≤ 2, O(3)), width channels, `layers`
    interactions, `num_basis` expnorm radial functions, with its warp kernels (CPU)."""
    import torch
    from torchmdnet.models.model import create_model
    args = dict(model="tensornet", precision=32, embedding_dimension=width, num_layers=layers,
                num_rbf=num_basis, rbf_type="expnorm", trainable_rbf=False, activation="silu",
                cutoff_lower=0.0, cutoff_upper=cutoff, max_z=9, max_num_neighbors=256,
                derivative=True, atom_filter=-1, prior_model=None, output_model="Scalar",
                reduce_op="sum", equivariance_invariance_group="O(3)", static_shapes=False)
    model = create_model(args).eval().requires_grad_(False)
    model.representation_model.distance = _given_edges(graph)
    z, pos = graph.numbers, graph.positions

    def call():
        return model(z, pos.clone())
    return call, sum(p.numel() for p in model.parameters())


def _nequip_framework():
    """nequip's global state (once): it sets torch's default dtype to float64, which the
    other models must not inherit, so the default is restored."""
    import torch
    from nequip.utils.global_state import global_state_initialized, set_global_state
    if not global_state_initialized():
        dtype = torch.get_default_dtype()
        set_global_state()
        torch.set_default_dtype(dtype)


def _nequip_call(model, graph: Graph):
    import torch
    model = model.eval().requires_grad_(False)
    index = {1: 0, 6: 1, 8: 2}
    n = graph.n_atoms
    data = {"pos": graph.positions, "edge_index": graph.edge_index,
            "atom_types": torch.tensor([index[int(z)] for z in graph.numbers]),
            "batch": torch.zeros(n, dtype=torch.long), "num_atoms": torch.tensor([n])}

    def call():
        out = model(dict(data))
        return out["total_energy"], out["forces"]
    return call, sum(p.numel() for p in model.parameters())


def _nequip_common(cutoff: float, graph: Graph) -> dict:
    return dict(seed=0, model_dtype="float32", r_max=cutoff, type_names=["H", "C", "O"],
                avg_num_neighbors=graph.n_edges / graph.n_atoms, per_type_energy_scales=1.0,
                per_type_energy_shifts=0.0)


def nequip(width: int, layers: int, cutoff: float, num_basis: int, graph: Graph,
           order: int = 1):
    """NequIP (nequip >= 0.7 API): features up to ℓ = ``order`` with width channels (ℓ = 2:
    width / 2), no parity, `layers` convolutions, `num_basis` Bessel functions, its standard
    preset otherwise (type embedding 32, radial MLP 1 × 128)."""
    import warnings
    _nequip_framework()
    from nequip.model import NequIPGNNModel
    features = [width, width, max(width // 2, 1)][:order + 1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = NequIPGNNModel(num_layers=layers, l_max=order, parity=False,
                               num_features=features, num_bessels=num_basis,
                               type_embed_num_features=32, radial_mlp_depth=1,
                               radial_mlp_width=128, **_nequip_common(cutoff, graph))
    return _nequip_call(model, graph)


def allegro(width: int, layers: int, cutoff: float, num_basis: int, graph: Graph,
            order: int = 1):
    """Allegro (strictly local, edge-based): tensor track up to ℓ = ``order`` (no parity),
    `layers` Allegro layers, width scalar features and MLP width, width / 4 tensor features,
    `num_basis` Bessel functions."""
    import warnings
    _nequip_framework()
    from allegro.model import AllegroModel
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = AllegroModel(
            l_max=order, parity=False, num_layers=layers, num_scalar_features=width,
            num_tensor_features=max(width // 4, 1), allegro_mlp_hidden_layers_width=width,
            readout_mlp_hidden_layers_width=max(width // 2, 1),
            radial_chemical_embed={"_target_": "allegro.nn.TwoBodyBesselScalarEmbed",
                                   "num_bessels": num_basis},
            **_nequip_common(cutoff, graph))
    return _nequip_call(model, graph)


# name -> (builder, label, order): order is the highest ℓ of the features a model passes on
# (0 invariant, 1 vectors, 2 rank-2 tensors); "vs best peer" compares within an order
MODELS = {
    "egnn": (lambda w, l, c, b, g: ours("egnn", w, l, c, b, g), "mlip-attn EGNN", 0),
    "schnetpack-schnet": (schnetpack_schnet, "SchNetPack SchNet", 0),
    "mace": (mace, "MACE 128x0e (ℓ ≤ 3 edges)", 0),
    "painn": (lambda w, l, c, b, g: ours("painn", w, l, c, b, g), "mlip-attn PaiNN", 1),
    "painn-ase": (ours_in_ase, "mlip-attn PaiNN in AttnCalculator", 1),
    "painn-python": (ours_python_message, "mlip-attn PaiNN, Python message", 1),
    "schnetpack-painn": (schnetpack_painn, "SchNetPack PaiNN", 1),
    "nequip-l1": (lambda w, l, c, b, g: nequip(w, l, c, b, g, order=1), "NequIP ℓ ≤ 1", 1),
    "allegro-l1": (lambda w, l, c, b, g: allegro(w, l, c, b, g, order=1), "Allegro ℓ ≤ 1", 1),
    "mace-l1": (lambda w, l, c, b, g: mace(w, l, c, b, g, order=1), "MACE ℓ ≤ 1", 1),
    "painn-l2": (lambda w, l, c, b, g: ours("painn", w, l, c, b, g, lmax=2),
                 "mlip-attn PaiNN ℓ ≤ 2", 2),
    "tensornet": (tensornet, "TorchMD-Net TensorNet", 2),
    "nequip-l2": (lambda w, l, c, b, g: nequip(w, l, c, b, g, order=2), "NequIP ℓ ≤ 2", 2),
    "allegro-l2": (lambda w, l, c, b, g: allegro(w, l, c, b, g, order=2), "Allegro ℓ ≤ 2", 2),
    "mace-l2": (lambda w, l, c, b, g: mace(w, l, c, b, g, order=2), "MACE ℓ ≤ 2", 2),
}
OURS = ("egnn", "painn", "painn-ase", "painn-python", "painn-l2")
# the package each peer row comes from, and what installs it (after `pip install -e
# '.[bench]'`; docs/results/performance.md), for the "not installed" line
PACKAGE = {"schnetpack-schnet": "schnetpack", "schnetpack-painn": "schnetpack",
           "mace": "mace", "mace-l1": "mace", "mace-l2": "mace", "tensornet": "torchmdnet",
           "nequip-l1": "nequip", "nequip-l2": "nequip",
           "allegro-l1": "allegro", "allegro-l2": "allegro"}
INSTALL = {"schnetpack": "pip install 'schnetpack>=2.0.4,<2.1'",
           "mace": "pip install mace-torch==0.3.16",
           "torchmdnet": "pip install 'torchmd-net>=3.1'",
           "nequip": "pip install --no-deps e3nn==0.6.0 nequip==0.19.1",
           "allegro": "pip install --no-deps e3nn==0.6.0 nequip==0.19.1 nequip-allegro==0.8.3"}


def why_missing(name: str, exc: ImportError) -> str:
    """The line for a peer whose package is absent: the module missing, what installs it."""
    package = PACKAGE.get(name, (exc.name or "").split(".")[0])
    how = INSTALL.get(package, "see docs/results/performance.md")
    return f"not installed (no module {exc.name or exc}): {how} (docs/results/performance.md)"
