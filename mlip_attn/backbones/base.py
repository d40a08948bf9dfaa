"""The contract of a backbone (register it in `mlip_attn.registry.BACKBONES`).

A backbone turns element indices and geometry into per-atom features::

    __init__(self, num_elements: int, global_blocks: list[GlobalBlock | None], <options>)
    forward(self, species: (N,) int64 rows of the element table, graph: Graph) -> Features

Its initial per-atom features are its embedding plus ``graph.atom_inputs`` (the model's
encoder features, already in its width; `mlip_attn.nn.graph.with_atom_inputs`).
``global_blocks`` holds one block (or None) per layer; a backbone that takes blocks adds each
block's output to its features in that layer (``x ← x + local(x) + block(x, graph)``). Its
options are config keys of the ``model:`` section; a backbone that takes global blocks has
``width`` and ``layers`` options (the blocks are built to match). It sets ``self.width`` (the
scalar feature width the `Potential` reads out) and keeps its interaction layers in
``self.layers`` (the LAMMPS ghost shell is ``len(layers) × cutoff``).

Capabilities are class attributes (see `Backbone`), overridden where they differ.
"""

from torch import nn


class Backbone(nn.Module):
    """Base class of the backbones: capabilities with their defaults (see the module docstring).

    order: highest rotation order of the features it carries (0 scalars, 1 + vectors,
        2 + rank-2 tensors); global blocks attached to it may read and write up to this order.
        `feature_widths` gives the channels of each order from the options.
    accepts_global_blocks: whether ``model.attention`` may add blocks to its layers.
    is_global: an atom's energy depends on atoms at any distance even without blocks.
    uses_neighbour_list: reads ``graph.edge_index`` (False: graph-free).
    periodic: supports periodic cells.  invariant: energies are rotation invariant.
    direct_forces: forces from a head, not −dE/dr (then not conservative).
    """

    order: int = 0
    accepts_global_blocks: bool = True
    is_global: bool = False
    uses_neighbour_list: bool = True
    periodic: bool = True
    invariant: bool = True
    direct_forces: bool = False

    @classmethod
    def feature_widths(cls, options: dict) -> tuple[int, ...]:
        """Channels of each rotation order (scalars, vectors, …) of a backbone built with
        ``options``: by default ``width`` for every order up to `order`."""
        return (int(options.get("width", 0)),) * (cls.order + 1)
