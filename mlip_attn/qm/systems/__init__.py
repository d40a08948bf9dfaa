"""Reference systems: geometry recipes of the long-range benchmark and `mlip-attn data`.

Each module registers one system in `mlip_attn.registry.REFERENCE_SYSTEMS`; a new system is a
new module here (contract: `mlip_attn.qm.systems.base.ReferenceSystem`). A system whose
analysis of trained models is large keeps it in a companion module that registers nothing
(`charge_transfer_reach`, `sn2_analysis`).
"""
