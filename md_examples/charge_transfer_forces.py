"""Charge transfer: move the proton along a polyyne and the far end's forces change.

One C16 chain (a length the shipped potentials never saw), the xTB-optimised neutral geometry
with one proton added at site 0 (the end) or at site 3, every other atom in the same place, total
charge +1 both times. Atoms more than 8 Å from both proton positions have the same surroundings
within 8 Å and the same total charge in the two structures, so a local model (2 layers × 4 Å)
must give them the same forces; GFN2-xTB does not, because the positive hole spreads over the
chain differently. A global model should follow xTB.

    python md_examples/charge_transfer_forces.py [--carbons 16] [--sites 0 3]

Prints |F(site b) − F(site a)| per atom by distance from the nearer proton position, the mean on
the far atoms for each model, and writes md_examples/output/charge_transfer_forces.png (``--out DIR`` elsewhere).
"""
from __future__ import annotations

import argparse

import numpy as np

from mlip_attn import AttnCalculator
from mlip_attn.qm import make_calculator
from mlip_attn.qm.systems.charge_transfer_chains import FAR, add_protons, polyyne_ground_state

from example_models import add_model_arguments, model_paths, output_file  # noqa: E402


def structures(n_carbons: int, sites: tuple[int, int]):
    """The chain with its proton at each of the two sites (atoms in the same order, the proton
    last), and each atom's distance from the nearer of the two proton positions."""
    chain = polyyne_ground_state(n_carbons)
    pair = [add_protons(chain, [site]) for site in sites]
    for atoms in pair:
        atoms.info["charge"] = 1
    n = len(chain)
    distance = np.min([np.linalg.norm(chain.positions - a.positions[-1], axis=1) for a in pair],
                      axis=0)
    return pair, n, distance


def forces(atoms, calc):
    a = atoms.copy()
    a.calc = calc
    return a.get_forces()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(p, "charge-transfer")
    p.add_argument("--carbons", type=int, default=16, help="chain length (even)")
    p.add_argument("--sites", type=int, nargs=2, default=[0, 3], help="the two proton sites")
    args = p.parse_args()
    models = model_paths(args, "charge-transfer")
    (a, b), n, distance = structures(args.carbons, tuple(args.sites))
    xtb = make_calculator(charge=1)
    delta = {"GFN2-xTB": forces(b, xtb)[:n] - forces(a, xtb)[:n]}
    for variant, model in models.items():
        calc = AttnCalculator(model)
        delta[variant] = forces(b, calc)[:n] - forces(a, calc)[:n]
    order = np.argsort(distance)
    symbols = a.get_chemical_symbols()
    print(f"C{args.carbons}H3+: proton at site {args.sites[0]} -> site {args.sites[1]}")
    print(f"{'atom':>5}{'dist Å':>8}" + "".join(f"{k + ' |ΔF|':>16}" for k in delta))
    for i in order:
        print(f"{symbols[i]:>5}{distance[i]:>8.2f}"
              + "".join(f"{np.linalg.norm(d[i]):>16.3f}" for d in delta.values()))
    far = distance > FAR
    print(f"mean |ΔF| on the {int(far.sum())} atoms more than {FAR:g} Å from both sites (eV/Å):")
    for name, d in delta.items():
        error = "" if name == "GFN2-xTB" else \
            f", error against xTB {np.linalg.norm(d[far] - delta['GFN2-xTB'][far], axis=1).mean():.3f}"
        print(f"  {name:<10} {np.linalg.norm(d[far], axis=1).mean():.3f}{error}")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for k, d in delta.items():
        ax.plot(distance[order], np.linalg.norm(d, axis=1)[order], marker="o", ms=3, label=k,
                **({"color": "black", "lw": 2.5} if k == "GFN2-xTB" else {}))
    ax.axvline(FAR, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("distance from the nearer proton position (Å)")
    ax.set_ylabel(f"|F(site {args.sites[1]}) − F(site {args.sites[0]})| (eV/Å)")
    ax.set_yscale("log")
    ax.set_title(f"C{args.carbons}H3⁺, the proton moves (charge +1 both times)", fontsize=9)
    ax.legend()
    fig.tight_layout()
    path = output_file(args, "charge_transfer_forces.png")
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
