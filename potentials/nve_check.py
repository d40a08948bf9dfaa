"""2 ps NVE on shipped potentials at 300 K and 600 K; the result goes on each card.

    python potentials/nve_check.py [NAME ...] [--ps 2] [--temperatures 300 600] [--dt 0.5]

NAME: a shipped potential (``sn2-efa``; default: every ``potentials/*.pt`` but the LAMMPS
exports). Each starts from the first structure of its system's first held-out set
(``potentials/held_out/<system>-*.xyz``, sorted by name; its total charge comes with it) or,
for ``cu-emt-local``, a 2 × 2 × 2 cubic fcc Cu cell (a = 3.61 Å, periodic), with
Maxwell–Boltzmann velocities (seed 0), and runs in the model file's dtype (`AttnCalculator`,
as the card's "Use" line does). Writes ``potentials/<NAME>.nve.json`` and the card's
"NVE check" section (`mlip_attn.analysis.nve_check`).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from mlip_attn.analysis.nve_check import card_lines, nve_run, with_section

HERE = Path(__file__).resolve().parent


def start_structure(name: str):
    """(Atoms, description) the NVE runs of potential ``name`` start from."""
    import ase.io
    if name.startswith("cu-emt"):
        from ase.build import bulk
        return bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2), "fcc Cu, 2 × 2 × 2 cubic cells"
    system = name.rsplit("-", 1)[0]
    files = sorted((HERE / "held_out").glob(f"{system}-*.xyz"))
    if not files:
        raise FileNotFoundError(f"{name}: no held-out set potentials/held_out/{system}-*.xyz "
                                "to start from")
    atoms = ase.io.read(files[0], 0)
    charge = atoms.info.get("total_charge", 0)
    return atoms, (f"`potentials/held_out/{files[0].name}` frame 0, {atoms.get_chemical_formula()}"
                   f", charge {charge:+g}")


def check(name: str, temperatures, ps: float, dt: float) -> list[dict]:
    from mlip_attn.models.model_file import read_model_file
    path = HERE / f"{name}.pt"
    dtype = read_model_file(path)["metadata"].get("dtype", "float32")
    atoms, start = start_structure(name)
    runs = [nve_run(path, atoms, t, ps=ps, dt_fs=dt, dtype=dtype) for t in temperatures]
    (HERE / f"{name}.nve.json").write_text(json.dumps({"start": start, "runs": runs}, indent=1))
    command = (f"python potentials/nve_check.py {name}"
               + ("" if ps == 2.0 else f" --ps {ps:g}") + ("" if dt == 0.5 else f" --dt {dt:g}")
               + ("" if list(temperatures) == [300.0, 600.0] else
                  " --temperatures " + " ".join(f"{t:g}" for t in temperatures)))
    card = HERE / f"{name}.md"
    card.write_text(with_section(card.read_text(), card_lines(runs, command, start)))
    for r in runs:
        print(f"{name}: {r['temperature']:g} K, {r['ps']:g} ps, drift "
              f"{r['drift_meV_per_atom_ps']:+.3f} meV/atom/ps, max excursion "
              f"{r['max_excursion_meV_per_atom']:.3f} meV/atom, mean T "
              f"{r['mean_temperature']:.0f} K, blew up: {r['blew_up']}")
    return runs


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*")
    parser.add_argument("--ps", type=float, default=2.0)
    parser.add_argument("--temperatures", type=float, nargs="+", default=[300.0, 600.0])
    parser.add_argument("--dt", type=float, default=0.5, help="time step (fs)")
    args = parser.parse_args(argv)
    names = args.names or sorted(p.stem for p in HERE.glob("*.pt")
                                 if not p.name.endswith(".lmp.pt"))
    for name in names:
        if not (HERE / f"{name}.pt").exists():
            raise SystemExit(f"{name}: no potentials/{name}.pt")
        check(name, args.temperatures, args.ps, args.dt)


if __name__ == "__main__":
    main()
