"""Cost of the electrostatics block against the local model: energy + forces of rattled rock-salt
supercells, PaiNN (width 32, 2 layers, r_c = 5 Å), float32, one thread, ``method`` as given.

    OMP_NUM_THREADS=1 python benchmarks/electrostatics_cost.py [--repeats 3 4 6] [--method auto]

Prints N, the local model's time, the electrostatics model's time and their ratio (median of 3
calls after one warm-up; neighbour list excluded).
"""
import argparse
import time

import numpy as np
import torch
from ase.build import bulk

from mlip_attn import build_model
from mlip_attn.data import AtomicData, Batch


def timed(model, batch, n=3):
    model.predict(batch)
    times = []
    for _ in range(n):
        t = time.perf_counter()
        model.predict(batch)
        times.append(time.perf_counter() - t)
    return 1e3 * float(np.median(times))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, nargs="+", default=[3, 4, 6])
    parser.add_argument("--method", default="auto")
    parser.add_argument("--accuracy", type=float, default=1e-5)
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()
    torch.set_num_threads(1)
    dtype = getattr(torch, args.dtype)
    common = {"backbone": "painn", "elements": [11, 17], "width": 32, "layers": 2, "cutoff": 5.0}
    local = build_model(common).to(dtype).eval()
    glob = build_model({**common, "attention": {"type": "electrostatics", "method": args.method,
                                                "accuracy": args.accuracy}}).to(dtype).eval()
    print(f"PaiNN width 32, 2 layers, r_c 5 Å, {args.dtype}, electrostatics method "
          f"{args.method}, accuracy {args.accuracy:g}; energy + forces, ms")
    print(f"{'N':>6}{'local':>10}{'electrostatics':>16}{'ratio':>8}")
    for r in args.repeats:
        atoms = bulk("NaCl", "rocksalt", a=5.74, cubic=True).repeat(r)
        atoms.rattle(0.1, seed=0)
        batch = Batch.collate([AtomicData.from_atoms(atoms).with_graph(5.0)]).to(dtype=dtype)
        t_local, t_glob = timed(local, batch), timed(glob, batch)
        print(f"{len(atoms):>6}{t_local:>10.0f}{t_glob:>16.0f}{t_glob / t_local:>8.1f}", flush=True)


if __name__ == "__main__":
    main()
