"""`AtomicData` (one structure) and `Batch` (many, concatenated) — the package's data contract.

Units: positions and cell in Å, energy in eV, forces in eV/Å, stress in eV/Å³ (3x3, positive =
tensile, ASE sign), total charge in e. Edge convention: ``edge_index = (i, j)`` with
``r_ij = positions[j] - positions[i] + shifts``.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Optional

import numpy as np
import torch

from .neighbours import neighbour_list

MIN_DISTANCE = 0.1  # Å; two atoms closer than this are treated as overlapping (a data error)


class DataFileError(ValueError):
    """A data file that cannot be read (missing, empty, malformed, missing labels)."""


class StructureError(ValueError):
    """A structure that no model can evaluate (NaN positions, overlapping atoms, ...)."""


def check_elements(numbers, known, where: str, error: type[ValueError] = ValueError) -> None:
    """Raise ``error`` naming ``where`` when ``numbers`` holds elements not in ``known``."""
    from ase.data import chemical_symbols
    unknown = sorted(set(int(z) for z in numbers) - set(int(z) for z in known))
    if unknown:
        names = [chemical_symbols[z] for z in unknown]
        raise error(f"{where}: elements {names} are unknown to the model (it knows "
                    f"{[chemical_symbols[z] for z in sorted(known)]})")


@dataclass
class AtomicData:
    """One structure. Tensors are float64 on the CPU until `Batch.to` casts them."""

    positions: torch.Tensor            # (N, 3) Å
    numbers: torch.Tensor              # (N,) int64 atomic numbers
    cell: torch.Tensor                 # (3, 3) Å, rows are lattice vectors (zeros if isolated)
    pbc: torch.Tensor                  # (3,) bool
    charge: float = 0.0                # total charge, e
    spin: float = 0.0                  # spin multiplicity 2S+1 as given in the data (0 = not given)
    energy: Optional[float] = None     # eV
    forces: Optional[torch.Tensor] = None   # (N, 3) eV/Å
    stress: Optional[torch.Tensor] = None   # (3, 3) eV/Å³
    targets: dict = field(default_factory=dict)  # extra per-structure scalar targets
    edge_index: Optional[torch.Tensor] = None    # (2, E) int64
    shifts: Optional[torch.Tensor] = None        # (E, 3) Å
    name: str = ""                     # where it came from, for error messages

    @property
    def num_atoms(self) -> int:
        return int(self.numbers.shape[0])

    @property
    def is_periodic(self) -> bool:
        return bool(self.pbc.any())

    @property
    def extent(self) -> float:
        """Upper bound (Å) on the largest interatomic distance: 2 × max distance from the centroid."""
        centred = self.positions - self.positions.mean(dim=0)
        return 2.0 * float(centred.norm(dim=1).max())

    def validate(self) -> "AtomicData":
        """Raise `StructureError` naming the problem for input no model can evaluate."""
        where = f" in {self.name}" if self.name else ""
        if self.num_atoms == 0:
            raise StructureError(f"empty structure{where}: it has no atoms")
        if not torch.isfinite(self.positions).all():
            bad = (~torch.isfinite(self.positions)).any(dim=1).nonzero().flatten().tolist()
            raise StructureError(f"non-finite (NaN or inf) positions{where} for atoms {bad[:10]}")
        if not torch.isfinite(self.cell).all():
            raise StructureError(f"non-finite cell{where}")
        if (self.numbers < 1).any() or (self.numbers > 118).any():
            raise StructureError(f"invalid atomic numbers{where}: {self.numbers.unique().tolist()}")
        if self.forces is not None and tuple(self.forces.shape) != (self.num_atoms, 3):
            raise StructureError(f"forces{where} have shape {tuple(self.forces.shape)}, "
                                 f"expected ({self.num_atoms}, 3)")
        for label, value in (("energy", self.energy), ("forces", self.forces), ("stress", self.stress)):
            if value is not None and not torch.isfinite(torch.as_tensor(value)).all():
                raise StructureError(f"non-finite {label} label{where}")
        return self

    def with_graph(self, cutoff: float, neighbours=neighbour_list) -> "AtomicData":
        """Return a copy with ``edge_index``/``shifts`` for ``cutoff`` Å; checks overlaps.
        ``neighbours``: `neighbour_list` (vesin) or a `VerletList` reused across MD steps."""
        self.validate()
        edge_index, shifts = neighbours(self.positions.numpy(), self.cell.numpy(),
                                        self.pbc.numpy(), cutoff)
        edge_index = torch.from_numpy(edge_index)
        shifts = torch.from_numpy(shifts)
        if edge_index.shape[1]:
            d = (self.positions[edge_index[1]] - self.positions[edge_index[0]] + shifts).norm(dim=1)
            if float(d.min()) < MIN_DISTANCE:
                k = int(d.argmin())
                i, j = edge_index[:, k].tolist()
                raise StructureError(
                    f"atoms {i} and {j} overlap{' in ' + self.name if self.name else ''}: "
                    f"distance {float(d[k]):.3g} Å < {MIN_DISTANCE} Å")
        return replace(self, edge_index=edge_index, shifts=shifts)

    @classmethod
    def from_atoms(cls, atoms, keys=None, name: str = "", targets: tuple = ()) -> "AtomicData":
        """Build from an `ase.Atoms`, reading labels with the given keys (see `LabelKeys`).

        Missing labels are left as None; charge/spin default to 0.
        """
        from .labels import LabelKeys, read_labels
        keys = keys or LabelKeys()
        try:
            labels = read_labels(atoms, keys, targets)
        except ValueError as exc:
            raise StructureError(f"{name}: {exc}" if name else str(exc)) from None
        return cls(
            positions=torch.tensor(np.asarray(atoms.positions), dtype=torch.float64),
            numbers=torch.tensor(np.asarray(atoms.numbers), dtype=torch.int64),
            # the cell of a structure periodic in no direction is meaningless: zero (see `cell`)
            cell=torch.tensor(np.asarray(atoms.cell.array) if atoms.pbc.any() else np.zeros((3, 3)),
                              dtype=torch.float64),
            pbc=torch.tensor(np.asarray(atoms.pbc), dtype=torch.bool),
            name=name,
            **labels,
        )

    def to_atoms(self):
        """An `ase.Atoms` (no calculator); charge in ``info['charge']``."""
        from ase import Atoms
        atoms = Atoms(numbers=self.numbers.numpy(), positions=self.positions.numpy(),
                      cell=self.cell.numpy(), pbc=self.pbc.numpy())
        atoms.info["charge"] = self.charge
        atoms.info["spin"] = self.spin
        return atoms


@dataclass
class Batch:
    """Many structures concatenated. N atoms, B structures, E edges.

    positions (N,3) Å · numbers (N,) · batch (N,) structure index · cell (B,3,3) · pbc (B,3) ·
    charge (B,) e · spin (B,) · edge_index (2,E) · shifts (E,3) Å · labels: energy (B,) eV,
    forces (N,3) eV/Å, stress (B,3,3) eV/Å³ (each None when any structure lacks it) ·
    targets {name: (B,)}.
    """

    positions: torch.Tensor
    numbers: torch.Tensor
    batch: torch.Tensor
    cell: torch.Tensor
    pbc: torch.Tensor
    charge: torch.Tensor
    spin: torch.Tensor
    edge_index: torch.Tensor
    shifts: torch.Tensor
    energy: Optional[torch.Tensor] = None
    forces: Optional[torch.Tensor] = None
    stress: Optional[torch.Tensor] = None
    targets: dict = field(default_factory=dict)

    @property
    def num_graphs(self) -> int:
        return int(self.cell.shape[0])

    @property
    def num_atoms(self) -> int:
        return int(self.numbers.shape[0])

    @classmethod
    def collate(cls, items: list[AtomicData]) -> "Batch":
        if not items:
            raise ValueError("cannot make a batch of zero structures")
        if any(d.edge_index is None for d in items):
            raise ValueError("structures need a neighbour list first (AtomicData.with_graph)")
        counts = torch.tensor([d.num_atoms for d in items])
        offsets = torch.cumsum(counts, 0) - counts
        edge_index = torch.cat([d.edge_index + off for d, off in zip(items, offsets.tolist())], 1)

        def stacked(name):
            vals = [getattr(d, name) for d in items]
            return None if any(v is None for v in vals) else vals

        energy = stacked("energy")
        forces = stacked("forces")
        stress = stacked("stress")
        target_names = set(items[0].targets)
        targets = {k: torch.tensor([float(d.targets[k]) for d in items], dtype=torch.float64)
                   for k in target_names if all(k in d.targets for d in items)}
        return cls(
            positions=torch.cat([d.positions for d in items]),
            numbers=torch.cat([d.numbers for d in items]),
            batch=torch.repeat_interleave(torch.arange(len(items)), counts),
            cell=torch.stack([d.cell for d in items]),
            pbc=torch.stack([d.pbc for d in items]),
            charge=torch.tensor([float(d.charge) for d in items], dtype=torch.float64),
            spin=torch.tensor([float(d.spin) for d in items], dtype=torch.float64),
            edge_index=edge_index,
            shifts=torch.cat([d.shifts for d in items]),
            energy=None if energy is None else torch.tensor(energy, dtype=torch.float64),
            forces=None if forces is None else torch.cat(forces),
            stress=None if stress is None else torch.stack(stress),
            targets=targets,
        )

    def to(self, device=None, dtype: Optional[torch.dtype] = None) -> "Batch":
        """Move to ``device``; cast floating tensors to ``dtype``."""
        def move(x):
            if isinstance(x, dict):
                return {k: move(v) for k, v in x.items()}
            if not isinstance(x, torch.Tensor):
                return x
            if dtype is not None and x.is_floating_point():
                return x.to(device=device, dtype=dtype)
            return x.to(device=device)
        return Batch(**{f.name: move(getattr(self, f.name)) for f in fields(self)})
