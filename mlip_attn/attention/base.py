"""The contract of a global block (register it in `mlip_attn.registry.GLOBAL_BLOCKS`).

A global block attends over all atoms of each structure and runs beside a backbone layer::

    __init__(self, widths: tuple[int, ...], <options>)   # the host backbone's feature widths
    forward(self, x: Features, graph: Graph) -> Features     # the branch output

``widths[ℓ]`` is the number of channels of the host's features of rotation order ℓ (scalars,
vectors, rank-2 tensors); ``len(widths) − 1`` is the host's order.

Its output is added to the layer's features, so its last layers start at zero: a freshly built
model equals the local model. It never mixes the structures of a batch (``graph.batch``), and
returns tensors of the shapes it was given (zeros in orders it does not write).
"""

import math

import torch
from torch import nn

from ..nn.graph import Features, Graph


class GlobalBlock(nn.Module):
    """Base class of the global blocks: capabilities with their defaults.

    order: highest rotation order it reads (set per instance when it depends on the options;
        the builder checks it against the backbone's).
    reach: the largest distance (Å) it resolves (``math.inf``: every pair of a structure).
    through_space: the distance (Å) beyond which two atoms that are not bonded never interact
        through it (separability; ``math.inf``: at any distance). Through-bond blocks: 0.
    periodic: supports periodic cells.
    distributed: can run on a structure split over processes (LAMMPS on several MPI ranks):
        it honours ``graph.owned`` (only owned nodes enter its per-structure sums, every node
        gets an output) and passes each per-structure sum through its ``sums`` submodule, a
        `LocalSums` that the LAMMPS export replaces by an all-reduce over the ranks.
    not_distributed: why a block that is not distributed cannot be split (LAMMPS prints it
        when such a model is run on several ranks).
    """

    order: int = 0
    reach: float = math.inf
    through_space: float = math.inf
    periodic: bool = False
    distributed: bool = False
    not_distributed: str = "no form whose sums split over ranks"


class GlobalBlocks(GlobalBlock):
    """Several global blocks beside one layer (``attention: [{type: …}, {type: …}]``): the sum
    of their outputs. Its reach is the shortest of theirs, its order the highest; it is
    periodic or distributed when all of them are."""

    def __init__(self, blocks: list):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.order = max(b.order for b in blocks)
        self.reach = min(b.reach for b in blocks)
        self.through_space = max(b.through_space for b in blocks)
        self.periodic = all(b.periodic for b in blocks)
        self.distributed = all(b.distributed for b in blocks)

    def forward(self, x: Features, graph: Graph) -> Features:
        s, v, t = torch.zeros_like(x.scalars), torch.zeros_like(x.vectors), torch.zeros_like(x.tensors)
        for block in self.blocks:
            y = block(x, graph)
            s, v, t = s + y.scalars, v + y.vectors, t + y.tensors
        return Features(s, v, t)


class NoGlobalBlock(nn.Module):
    """Stands in where a layer has no global block (keeps forward TorchScript-typed)."""

    def forward(self, x: Features, graph: Graph) -> Features:
        return Features(torch.zeros_like(x.scalars), torch.zeros_like(x.vectors),
                        torch.zeros_like(x.tensors))


class LocalSums(nn.Module):
    """The sums hook of a distributed global block: per-structure sums of this process's owned
    nodes in, sums over every process out. In one process that is the identity; the LAMMPS
    export swaps in an all-reduce over MPI ranks (`mlip_attn.lammps.export.RankSums`), whose
    backward all-reduces the gradient."""

    def forward(self, partial: torch.Tensor) -> torch.Tensor:
        return partial
