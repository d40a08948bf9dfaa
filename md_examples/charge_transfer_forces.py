"""Charge transfer: adding a proton at one end of H–C10–H changes forces along the whole chain.

Compares, atom by atom, the force change F(C10H3⁺) − F(H–C10–H) at the xTB-optimised neutral
geometry from GFN2-xTB and from the local and EFA potentials. The local model can only change
forces within its receptive field (2 layers × 4 Å) of the new proton.

    python md_examples/charge_transfer_forces.py

Prints a table by distance from the protonated end and writes charge_transfer_forces.png.
"""
from __future__ import annotations

import argparse

import numpy as np

from mlip_attn import AttnCalculator
from mlip_attn.qm import charge_transfer_ground_state, make_calculator

from example_models import add_model_arguments, model_paths  # noqa: E402


def pair():
    """C10H3⁺ (xTB-optimised) and the same geometry with the extra proton removed (H–C10–H),
    so every other atom sits at exactly the same position in both."""
    cation = charge_transfer_ground_state(protonated=True)
    first_c = int(np.where(cation.numbers == 6)[0][0])
    hydrogens = [i for i in range(len(cation)) if cation.numbers[i] == 1]
    extra = min(hydrogens, key=lambda i: np.linalg.norm(cation.positions[i] - cation.positions[first_c]))
    keep = [i for i in range(len(cation)) if i != extra]
    neutral = cation[keep]
    cation = neutral + cation[[extra]]  # same order, extra proton last
    return neutral, cation, first_c if first_c < extra else first_c - 1


def forces(atoms, calc, charge):
    a = atoms.copy()
    a.info["charge"] = charge
    a.calc = calc(charge)
    return a.get_forces()[: len(atoms)]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(p, "charge-transfer")
    models = model_paths(p.parse_args(), "charge-transfer")
    neutral, cation, first_c = pair()
    n = len(neutral)
    dist = np.linalg.norm(neutral.positions - neutral.positions[first_c], axis=1)
    delta = {"GFN2-xTB": forces(cation, lambda q: make_calculator(charge=q), 1)[:n]
             - forces(neutral, lambda q: make_calculator(charge=q), 0)}
    for variant, model in models.items():
        calc = AttnCalculator(model)
        delta[variant] = forces(cation, lambda q: calc, 1)[:n] - forces(neutral, lambda q: calc, 0)
    order = np.argsort(dist)
    print(f"{'atom':>5}{'dist Å':>8}" + "".join(f"{k + ' |ΔF|':>16}" for k in delta))
    for i in order:
        print(f"{neutral.get_chemical_symbols()[i]:>5}{dist[i]:>8.2f}"
              + "".join(f"{np.linalg.norm(d[i]):>16.3f}" for d in delta.values()))
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for k, d in delta.items():
        ax.plot(dist[order], np.linalg.norm(d, axis=1)[order], marker="o", ms=3, label=k,
                **({"color": "black", "lw": 2.5} if k == "GFN2-xTB" else {}))
    ax.set_xlabel("distance from the protonated end (Å)")
    ax.set_ylabel("|F(cation) − F(neutral)| (eV/Å)")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    fig.savefig("charge_transfer_forces.png", dpi=120)
    print("wrote charge_transfer_forces.png")


if __name__ == "__main__":
    main()
