#!/usr/bin/env python
"""The issue's bond-stretch path: the far C–H of C12H3+ (held-out frame) stretched 1.0→2.6 Å;
max |dE/dr| for charge-transfer-efa as shipped (physics 1), its weights under physics 2, and xTB."""
import ase.io, numpy as np
from mlip_attn.analysis.physics_check import bond_stretch, load_as_physics
from mlip_attn.models import load_model
frame = next(a for a in ase.io.read("potentials/held_out/charge-transfer-C12.xyz", ":")
             if a.get_chemical_formula() == "C12H3")
pos = frame.positions
h = [k for k, z in enumerate(frame.numbers) if z == 1]
c = [k for k, z in enumerate(frame.numbers) if z == 6]
def carbon_of(k): return min(c, key=lambda j: np.linalg.norm(pos[j] - pos[k]))
owners = [carbon_of(k) for k in h]
lone = [k for k, o in zip(h, owners) if owners.count(o) == 1]   # H alone on its carbon
protonated = [o for o in owners if owners.count(o) == 2][0]
far = max(lone, key=lambda k: np.linalg.norm(pos[k] - pos[protonated]))
i, j = carbon_of(far), far
for name, model in (("physics 1 (shipped)", load_model("potentials/charge-transfer-efa.pt", dtype="float64")),
                    ("physics 2 (same weights)", load_as_physics("potentials/charge-transfer-efa.pt", 2)[0])):
    s = bond_stretch(model, frame, i, j, (1.0, 2.6), charge=1.0, points=321, xtb=name.startswith("physics 1"))
    r = np.array(s["r"]); k = int(np.argmax(np.abs(s["dEdr"])))
    print(f"{name}: max |dE/dr| {s['max_abs_dEdr']:.2f} eV/Å at r = {r[k]:.3f} Å", flush=True)
    if s.get("xtb_max_abs_dEdr") is not None:
        kx = int(np.argmax(np.abs(s["xtb_dEdr"])))
        print(f"xTB: max |dE/dr| {s['xtb_max_abs_dEdr']:.2f} eV/Å at r = {r[kx]:.3f} Å", flush=True)
