"""Reference data for the long-range benchmarks: geometry recipes, GFN2-xTB / PySCF
labelling with resumable incremental extxyz writing, and the analytic NaCl toy.

Quick start::

    from mlip_attn.qm import generate
    report = generate("cumulene", 2000, "data/cumulene.xyz", workers=2, seed=0)
    print(report)

tblite is imported lazily (only when a calculation runs), so importing this package
does not fix the OpenMP thread count of the process.
"""

from .labelling import (
    METHODS,
    SYSTEMS,
    LabelReport,
    compute_label,
    generate,
    label_structures,
    make_calculator,
    method_metadata,
    read_done_indices,
    single_thread_openmp,
)
from .nacl import nacl_cluster, nacl_energy_forces, nacl_structures
from .systems import (
    charge_transfer_ground_state,
    charge_transfer_structures,
    cumulene_ground_state,
    cumulene_structures,
    cumulene_torsion_scan,
    rotate_terminal_group,
    sn2_scan,
    sn2_structures,
    sn2_xi,
    torsion_angle,
    xtb_energy,
)

__all__ = [
    "METHODS", "SYSTEMS", "LabelReport", "compute_label", "generate", "label_structures",
    "make_calculator", "method_metadata", "read_done_indices", "single_thread_openmp",
    "nacl_cluster", "nacl_energy_forces", "nacl_structures",
    "charge_transfer_ground_state", "charge_transfer_structures", "cumulene_ground_state",
    "cumulene_structures", "cumulene_torsion_scan", "rotate_terminal_group", "sn2_scan",
    "sn2_structures", "sn2_xi", "torsion_angle", "xtb_energy",
]
