"""Reference data: geometry recipes of the reference systems, GFN2-xTB / PySCF / analytic
labels, and the resumable extxyz store they are written to.

Quick start::

    from mlip_attn.qm import generate
    report = generate("cumulene", 2000, "data/cumulene.xyz", workers=2, seed=0)
    print(report)

Modules: `methods` (the reference methods), `threads` (OpenMP control), `store` (resumable
extxyz), `labelling` (`label_structures`), `generate`, `systems/` (one module per system),
`properties` (graph-level GFN2-xTB properties: gap, dipole, polarisability, atomisation
energy) and `datasets/` (the encoder study's local and long-range property data sets).
tblite is imported lazily (only when a calculation runs), so importing this package does not
fix the OpenMP thread count of the process.
"""

from .generate import generate
from .labelling import LabelReport, label_structures
from .methods import METHODS, compute_label, make_calculator, method_metadata
from .store import read_done_indices
from .systems.base import xtb_energy
from .systems.charge_transfer import charge_transfer_structures
from .systems.charge_transfer_chains import polyyne_ground_state, proton_distances
from .systems.cumulene import (cumulene_ground_state, cumulene_structures,
                               cumulene_torsion_scan, rotate_terminal_group, torsion_angle)
from .systems.nacl import nacl_cluster, nacl_energy_forces, nacl_structures
from .systems.sn2 import sn2_structures
from .systems.sn2_scans import sn2_scan, sn2_xi
from .threads import single_thread_openmp

__all__ = [
    "METHODS", "LabelReport", "compute_label", "generate", "label_structures",
    "make_calculator", "method_metadata", "read_done_indices", "single_thread_openmp",
    "nacl_cluster", "nacl_energy_forces", "nacl_structures",
    "charge_transfer_structures", "polyyne_ground_state", "proton_distances", "cumulene_ground_state",
    "cumulene_structures", "cumulene_torsion_scan", "rotate_terminal_group", "sn2_scan",
    "sn2_structures", "sn2_xi", "torsion_angle", "xtb_energy",
]
