#!/usr/bin/env python
"""Forward + forces time and peak memory growth of painn+efa-l1 (width 32, 2 layers, cutoff 4 Å)
on a random C/H/O cluster, physics 1 (Lebedev, linear) vs physics 2 (exact kernel × switch)."""
import time, resource, sys, torch
from mlip_attn import build_model
from mlip_attn.apps.bench import random_box
from mlip_attn.data import AtomicData, Batch
n, physics = int(sys.argv[1]), int(sys.argv[2])
atoms = random_box(n, periodic=False)
data = AtomicData.from_atoms(atoms)
m = build_model({"backbone": "painn", "elements": [1, 6, 8], "width": 32, "layers": 2, "cutoff": 4.0,
                 "attention": {"type": "efa", "grid": 50, "d_qk": 16, "d_v": 16, "vectors": True,
                               "r_max": data.extent + 1.0}, "physics": physics}).eval().requires_grad_(False)
b = Batch.collate([data.with_graph(4.0)]).to(dtype=torch.float32)
m.predict(b)
t = time.perf_counter(); m.predict(b); dt = time.perf_counter() - t
print(f"N={n} physics {physics}: {dt:.3f} s, peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024:.0f} MB")
