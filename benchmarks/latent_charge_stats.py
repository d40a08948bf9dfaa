"""The charges an electrostatics model puts on each element: mean ± std (e) per element over
the structures of an extxyz file (e.g. a benchmark's held-out set).

    OMP_NUM_THREADS=1 python benchmarks/latent_charge_stats.py RUN/model.pt DATA.xyz [...]
"""
import argparse

import ase.io
import numpy as np
import torch
from ase.data import chemical_symbols

from mlip_attn.attention.electrostatics import latent_charges
from mlip_attn.data import AtomicData, Batch
from mlip_attn.models import load_model


def charge_stats(model, frames) -> dict:
    """{symbol: (mean, std, min, max)} of the latent charges (e) over ``frames``."""
    per = {}
    for atoms in frames:
        batch = Batch.collate([AtomicData.from_atoms(atoms).with_graph(model.cutoff)])
        q = latent_charges(model, batch.to(dtype=torch.float64)).numpy()
        for z in np.unique(atoms.numbers):
            per.setdefault(chemical_symbols[z], []).append(q[atoms.numbers == z])
    return {s: (float(np.mean(np.concatenate(v))), float(np.std(np.concatenate(v))),
                float(np.min(np.concatenate(v))), float(np.max(np.concatenate(v))))
            for s, v in per.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("data", nargs="+")
    args = parser.parse_args(argv)
    model = load_model(args.model, dtype="float64")
    for path in args.data:
        stats = charge_stats(model, ase.io.read(path, ":"))
        print(path + ": " + ", ".join(f"{s} {m:+.3f} ± {sd:.3f} e [{lo:+.2f}, {hi:+.2f}]"
                                      for s, (m, sd, lo, hi) in stats.items()))


if __name__ == "__main__":
    main()
