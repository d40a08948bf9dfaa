"""The geometry every block receives (`Graph`) and the per-atom features they exchange
(`Features`), plus the per-structure segment helpers global blocks share.

Both are ``typing.NamedTuple``s, so TorchScript compiles code that takes them.

Shapes: N atoms, B structures, E edges, F feature channels. Units: Å, e.
"""

from typing import NamedTuple

import torch
from torch import Tensor


class Graph(NamedTuple):
    """One batch of structures as the model sees it.

    positions (N, 3) Å · numbers (N,) atomic numbers · batch (N,) structure index of each
    atom · edge_index (2, E) with receivers ``i = edge_index[0]`` and senders
    ``j = edge_index[1]`` · vectors (E, 3) Å,
    r_ij = positions[j] − positions[i] + shifts · lengths (E,) Å = |r_ij| · shifts (E, 3) Å
    (periodic images, zero for isolated structures) · cell (B, 3, 3) Å (zeros if isolated) ·
    charge (B,) total charge in e · spin (B,) multiplicity 2S+1 as given (0 = not given) ·
    atom_inputs (N, F) encoder features already projected into the backbone's width, added to
    its initial embedding (`with_atom_inputs`), or (N, 0) for a model without encoders ·
    num_graphs B.
    """

    positions: Tensor
    numbers: Tensor
    batch: Tensor
    edge_index: Tensor
    vectors: Tensor
    lengths: Tensor
    shifts: Tensor
    cell: Tensor
    charge: Tensor
    spin: Tensor
    atom_inputs: Tensor
    num_graphs: int


class Features(NamedTuple):
    """Per-atom features by rotation order.

    scalars (N, F) invariant · vectors (N, 3, F) ℓ = 1, Cartesian components · tensors (N, 5, F)
    ℓ = 2, symmetric traceless 3 × 3 matrices in the orthonormal basis of `mlip_attn.nn.rank2`.
    A backbone that carries no features of an order passes a tensor with 0 channels there
    ((N, 3, 0) or (N, 5, 0)).
    """

    scalars: Tensor
    vectors: Tensor
    tensors: Tensor


def empty_features(scalars: Tensor) -> Features:
    """`Features` with the given scalars and no vector or tensor channels."""
    n = scalars.shape[0]
    return Features(scalars, scalars.new_zeros((n, 3, 0)), scalars.new_zeros((n, 5, 0)))


def centred_positions(positions: Tensor, batch: Tensor, num_graphs: int) -> Tensor:
    """Positions (N, 3) minus their structure's centroid (empty structures are skipped)."""
    sums = positions.new_zeros((num_graphs, 3)).index_add(0, batch, positions)
    counts = positions.new_zeros((num_graphs,)).index_add(0, batch,
                                                           torch.ones_like(positions[:, 0]))
    return positions - (sums / counts.clamp(min=1.0).unsqueeze(-1))[batch]


def rank_in_segment(batch: Tensor, counts: Tensor) -> Tensor:
    """Position of each atom inside its structure (0 … count − 1), for any order of ``batch``."""
    n = batch.shape[0]
    ptr = torch.cumsum(counts, 0) - counts
    sorted_batch, order = torch.sort(batch, stable=True)
    rank_sorted = torch.arange(n, device=batch.device) - ptr[sorted_batch]
    return torch.empty_like(batch).index_put_((order,), rank_sorted)


def graph_without_edges(positions: Tensor, batch: Tensor, num_graphs: int) -> Graph:
    """A `Graph` of isolated, neutral structures of hydrogen atoms with no neighbour list: what
    a distance-based global block alone needs (its tests, `time_layouts`)."""
    zeros = positions.new_zeros((num_graphs,))
    return Graph(positions, torch.ones_like(batch), batch, batch.new_zeros((2, 0)),
                 positions.new_zeros((0, 3)),
                 positions.new_zeros((0,)), positions.new_zeros((0, 3)),
                 positions.new_zeros((num_graphs, 3, 3)), zeros, zeros,
                 positions.new_zeros((positions.shape[0], 0)), num_graphs)


def with_atom_inputs(embedding: Tensor, graph: Graph) -> Tensor:
    """A backbone's initial per-atom features (N, F) plus the projected encoder features
    ``graph.atom_inputs`` (unchanged when the model has no encoders)."""
    if graph.atom_inputs.shape[1] > 0:
        return embedding + graph.atom_inputs
    return embedding
