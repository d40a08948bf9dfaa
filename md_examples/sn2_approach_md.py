"""SN2 approach: Cl⁻ starts 7 Å from the carbon of CH3Cl, at rest. Is it drawn in?

The ion–dipole attraction (∝ 1/r²) acts far beyond a local model's cutoff: the local model sees
an isolated ion with zero force, the EFA model pulls it towards the molecule. Identical
starting conditions for both models (NVE, no initial velocities).

    python md_examples/sn2_approach_md.py [--steps 2000]

Prints the C···Cl⁻ distance over time per model and writes md_examples/output/sn2_approach_md.png (``--out DIR`` elsewhere).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from ase import Atoms, units
from ase.md.verlet import VelocityVerlet

from mlip_attn import AttnCalculator

from example_models import add_model_arguments, model_paths, output_file  # noqa: E402


def start_geometry(distance: float = 7.0) -> Atoms:
    """Cl⁻ on the C–Cl axis behind the carbon (backside attack), CH3Cl near its equilibrium."""
    h = 1.09
    pos = [[-distance, 0, 0], [0, 0, 0], [1.80, 0, 0]]
    for k in range(3):
        phi = 2 * np.pi * k / 3
        pos.append([-0.36, h * 0.94 * np.cos(phi), h * 0.94 * np.sin(phi)])
    atoms = Atoms("ClCClH3", positions=pos)
    atoms.info["charge"] = -1
    return atoms


def run(model: Path, steps: int) -> np.ndarray:
    atoms = start_geometry()
    atoms.calc = AttnCalculator(model)
    dyn = VelocityVerlet(atoms, 0.5 * units.fs)
    distances = []
    dyn.attach(lambda: distances.append(atoms.get_distance(0, 1)), interval=10)
    dyn.run(steps)
    return np.array(distances)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=2000, help="0.5 fs steps (default 1 ps)")
    add_model_arguments(p, "sn2")
    args = p.parse_args()
    models = model_paths(args, "sn2")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for variant, model in models.items():
        d = run(model, args.steps)
        t = np.arange(len(d)) * 10 * 0.5 / 1000
        ax.plot(t, d, label=variant)
        print(f"{variant:>6}: C···Cl⁻ {d[0]:.2f} Å at t = 0 → {d[-1]:.2f} Å at "
              f"{t[-1]:.2f} ps (closest {d.min():.2f} Å)")
    ax.set_xlabel("time (ps)")
    ax.set_ylabel("C···Cl⁻ distance (Å)")
    ax.set_title("Cl⁻ + CH3Cl from rest, NVE")
    ax.legend()
    fig.tight_layout()
    path = output_file(args, "sn2_approach_md.png")
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
