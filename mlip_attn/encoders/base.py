"""The contract of an encoder (register it in `mlip_attn.registry.ENCODERS`), and the
covalent bond graph the topological encoders share.

An encoder maps a batch of structures to per-atom features::

    __init__(self, elements: list[int], <options>)    # the model's elements (host argument)
    forward(self, species (N,) rows of the element table, bonds: BondGraph) -> (N, dim)

Capabilities are class (or instance) attributes: ``dim`` (features per atom), ``smooth``
(the features are continuous functions of the positions: a model that uses only smooth
encoders keeps a continuous energy in MD), ``needs_bonds`` (reads the bond graph),
``exportable`` (the LAMMPS export may carry it: per-atom features that do not depend on atoms
a rank does not own). Encoder outputs carry no gradient to the positions: the bond graph is a
step function of the distances, so its features are piecewise constant.
"""
from typing import List, NamedTuple

import torch
from torch import nn

from ..nn.packing import pack, structure_layout

# bonded when r_ij < BOND_FACTOR · (r_cov,i + r_cov,j) (ASE's covalent radii, Cordero 2008)
BOND_FACTOR = 1.2


class BondGraph(NamedTuple):
    """The covalent bond graph of a batch, packed one structure per group.

    adjacency (G, n, n) float64, 1 for bonded pairs (no gradient) · valid (G, n) bool (real
    atoms, not padding) · counts (G,) float64 atoms per structure · group, slot (N,) where
    each atom sits in the packed layout.
    """

    adjacency: torch.Tensor
    valid: torch.Tensor
    counts: torch.Tensor
    group: torch.Tensor
    slot: torch.Tensor


def covalent_radii_table() -> List[float]:
    """ASE's covalent radii (Å) indexed by atomic number (0..118)."""
    from ase.data import covalent_radii
    return [float(r) for r in covalent_radii]


class BondGraphBuilder(nn.Module):
    """(positions (N, 3) Å, numbers (N,), batch (N,), num_graphs) -> `BondGraph`.

    Two atoms are bonded when r_ij < ``factor`` · (r_cov,i + r_cov,j). Distances come from
    the positions directly (not the neighbour list), so bonds longer than the model's cutoff
    are seen too. Memory O(n²) per structure.
    """

    def __init__(self, factor: float = BOND_FACTOR):
        super().__init__()
        self.factor = float(factor)
        self.register_buffer("radii", torch.tensor(covalent_radii_table(), dtype=torch.float64),
                             persistent=False)

    def forward(self, positions: torch.Tensor, numbers: torch.Tensor, batch: torch.Tensor,
                num_graphs: int) -> BondGraph:
        group, slot, sid = structure_layout(batch, num_graphs, "padded")
        valid = sid >= 0
        pos = pack(positions.detach().to(torch.float64), group, slot, sid)       # (G, n, 3)
        radius = pack(self.radii[numbers][:, None], group, slot, sid)[:, :, 0]     # (G, n)
        diff = pos[:, :, None, :] - pos[:, None, :, :]
        r = torch.sqrt((diff * diff).sum(-1))
        threshold = self.factor * (radius[:, :, None] + radius[:, None, :])
        n = sid.shape[1]
        eye = torch.eye(n, dtype=torch.bool, device=positions.device)[None, :, :]
        same = valid[:, :, None] & valid[:, None, :] & ~eye
        adjacency = (same & (r < threshold)).to(torch.float64)
        counts = valid.to(torch.float64).sum(dim=1)
        return BondGraph(adjacency, valid, counts, group, slot)


class Encoder(nn.Module):
    """Base class of the encoders: capabilities with their defaults (see the module docstring)."""

    dim = 0
    smooth = False
    needs_bonds = True
    exportable = False

    def forward(self, species: torch.Tensor, bonds: BondGraph) -> torch.Tensor:
        raise NotImplementedError


def unpack(x: torch.Tensor, bonds: BondGraph) -> torch.Tensor:
    """Packed per-atom values (G, n, ...) back to (N, ...) in batch order."""
    return x[bonds.group, bonds.slot]
