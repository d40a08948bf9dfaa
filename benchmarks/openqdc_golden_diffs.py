"""Largest differences between our openQDC import and openQDC 0.1.2's own reader on the golden
folders (tests/data/openqdc), over every energy method and structure:
``python benchmarks/openqdc_golden_diffs.py``. ANI-1x forces are compared after undoing
openQDC's 0.529177249 factor (see docs/openqdc.md)."""
import json, warnings
import numpy as np
from pathlib import Path
from mlip_attn.data.openqdc import read_openqdc
from mlip_attn.data.openqdc_conventions import DATASETS, atom_energies
warnings.simplefilter("ignore")
G = Path(__file__).resolve().parents[1] / "tests" / "data" / "openqdc"
for p in sorted((G / "expected").glob("*.json")):
    ref, name = json.loads(p.read_text()), p.stem
    conv = DATASETS[name]
    de = df = dp = dform = 0.0
    for m, method in enumerate(conv.energy_methods):
        ours = read_openqdc(G / "cache" / conv.layout, energy_method=m)
        form = (read_openqdc(G / "cache" / conv.layout, energy_method=m, energy_type="formation",
                             read_forces=False)
                if not conv.interaction and atom_energies(method) else None)
        for k, (d, r) in enumerate(zip(ours, ref["structures"])):
            de = max(de, abs(d.energy - r["energies"][m]))
            dp = max(dp, float(np.abs(d.positions.numpy() - np.array(r["positions"])).max()))
            if form is not None:
                dform = max(dform, abs(form[k].energy - r["formation_energies"][m]))
            c = conv.force_column(m)
            if c is not None:
                f = np.array(r["forces"])[:, :, c] / (0.529177249 if name == "ani1x" else 1)
                df = max(df, float(np.abs(d.forces.numpy() - f).max()))
    print(f"{name:20s} max|dE| {de:.1e} eV  max|dE_form| {dform:.1e} eV  "
          f"max|dF| {df:.1e} eV/A  max|dR| {dp:.1e} A")
