#!/usr/bin/env python
"""Held-out errors of each shipped file's weights under the physics-1 forms (what the file
computes) and the physics-2 forms (no retraining): energy and force MAE, meV and meV/Å."""
import json, sys
from pathlib import Path
from mlip_attn.analysis.physics_check import load_as_physics
from mlip_attn.models import load_model
from mlip_attn.training.evaluate import evaluate_file
for name in sys.argv[1:]:
    entries = json.loads(Path(f"potentials/{name}.held_out.json").read_text())
    old = load_model(f"potentials/{name}.pt", dtype="float64")
    new = load_as_physics(f"potentials/{name}.pt", 2)[0]
    for key, entry in entries.items():
        a, b = evaluate_file(old, entry["file"]), evaluate_file(new, entry["file"])
        print(f"{name:24s} {key:14s} E MAE {1e3*a['energy_mae']:8.1f} -> {1e3*b['energy_mae']:8.1f} meV"
              f"   F MAE {1e3*a['forces_mae']:7.1f} -> {1e3*b['forces_mae']:7.1f} meV/Å", flush=True)
