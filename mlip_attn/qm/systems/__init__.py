"""Reference systems: geometry recipes of the long-range benchmark and `mlip-attn data`.

Each module registers one system in `mlip_attn.registry.REFERENCE_SYSTEMS`; a new system is a
new module here (contract: `mlip_attn.qm.systems.base.ReferenceSystem`). A large system keeps
its geometry and its analysis of trained models in companion modules that register nothing
(`charge_transfer_chains`, `charge_transfer_reach`; `sn2_scans`, `sn2_analysis`), and the
analysis imports the geometry, never the system.
"""
