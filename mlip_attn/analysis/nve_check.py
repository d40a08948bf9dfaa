"""Short NVE runs of a potential: does the total energy stay put, and does anything blow up?

`nve_run` starts from one structure with Maxwell–Boltzmann velocities at a temperature (fixed
seed, no net momentum or rotation), integrates with ASE's velocity Verlet and `AttnCalculator`,
and reports the drift of the total energy (slope of a least-squares line, meV/atom/ps), its
largest excursion from the start (meV/atom), the mean temperature (K), the shortest
interatomic distance met (Å), the `DomainWarning`s raised, and whether the run blew up (a
non-finite energy, or the total energy leaving the start by more than `BLOW_UP` eV/atom).
`card_lines` turns a list of runs into a model card's "NVE check" section, and `with_section`
puts a section into an existing card (replacing an older one of the same heading).
"""
from __future__ import annotations

import math
import warnings

import numpy as np

BLOW_UP = 0.1  # eV/atom: a total-energy excursion this large counts as blown up


def nve_run(path, atoms, temperature: float, ps: float = 2.0, dt_fs: float = 0.5,
            seed: int = 0, dtype: str = "float32", every: int = 10) -> dict:
    """NVE from ``atoms`` (ASE Atoms; ``info['charge']`` is passed on) at ``temperature`` K for
    ``ps`` picoseconds with time step ``dt_fs`` fs, model file ``path`` in ``dtype``; the total
    energy is sampled every ``every`` steps. Returns the numbers of the module docstring."""
    from ase import units
    from ase.md import velocitydistribution as velocities
    from ase.md.velocitydistribution import Stationary, ZeroRotation
    from ase.md.verlet import VelocityVerlet
    from ..calculators.ase_calculator import AttnCalculator, DomainWarning
    atoms = atoms.copy()
    atoms.calc = AttnCalculator(str(path), default_dtype=dtype, threads=1)
    # ASE ≥ 3.29 calls it thermalize_momenta (MaxwellBoltzmannDistribution, deprecated there,
    # is the same draw)
    thermalize = getattr(velocities, "thermalize_momenta", None)
    if thermalize is None:
        velocities.MaxwellBoltzmannDistribution(atoms, temperature_K=temperature,
                                                rng=np.random.default_rng(seed))
    else:
        thermalize(atoms, temperature, rng=np.random.default_rng(seed))
    Stationary(atoms)
    if not atoms.pbc.any():
        ZeroRotation(atoms)
    steps = int(round(ps * 1000.0 / dt_fs))
    n = len(atoms)
    times, totals, temps, shortest = [], [], [], math.inf
    dyn = VelocityVerlet(atoms, timestep=dt_fs * units.fs)
    messages: set[str] = set()
    blown = False
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DomainWarning)
        for k in range(0, steps + 1, every):
            if k:
                dyn.run(every)
            e = atoms.get_potential_energy() + atoms.get_kinetic_energy()
            times.append(k * dt_fs / 1000.0)
            totals.append(e)
            temps.append(atoms.get_temperature())
            if n > 1:
                d = atoms.get_all_distances(mic=bool(atoms.pbc.any()))
                shortest = min(shortest, float(d[np.triu_indices(n, 1)].min()))
            if not math.isfinite(e) or abs(e - totals[0]) > BLOW_UP * n:
                blown = True
                break
        messages = {str(w.message) for w in caught if issubclass(w.category, DomainWarning)}
    t, e = np.array(times), (np.array(totals) - totals[0]) / n
    finite = np.isfinite(e)
    slope = float(np.polyfit(t[finite], e[finite], 1)[0]) if finite.sum() > 2 else math.nan
    return {"temperature": float(temperature), "ps": float(t[-1]), "dt_fs": dt_fs,
            "dtype": dtype, "atoms": n, "drift_meV_per_atom_ps": 1e3 * slope,
            "max_excursion_meV_per_atom": 1e3 * float(np.abs(e[finite]).max()),
            "mean_temperature": float(np.mean(temps)), "shortest_distance": shortest,
            "blew_up": blown, "domain_warnings": sorted(messages)}


def card_lines(runs: list[dict], command: str, start: str) -> list[str]:
    """A model card's "NVE check" section (markdown lines) from `nve_run` results."""
    lines = ["## NVE check",
             f"`{command}` (ASE velocity Verlet, `AttnCalculator`, start: {start}):", "",
             "| T start (K) | length (ps) | dt (fs) | dtype | drift (meV/atom/ps) | "
             "max excursion (meV/atom) | mean T (K) | shortest distance (Å) | blew up |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        lines.append(f"| {r['temperature']:g} | {r['ps']:g} | {r['dt_fs']:g} | {r['dtype']} | "
                     f"{r['drift_meV_per_atom_ps']:+.3f} | {r['max_excursion_meV_per_atom']:.3f} | "
                     f"{r['mean_temperature']:.0f} | {r['shortest_distance']:.2f} | "
                     f"{'yes' if r['blew_up'] else 'no'} |")
    warned = summarise_warnings([m for r in runs for m in r["domain_warnings"]])
    if warned:
        lines += ["", "Domain warnings during these runs:", *[f"- {m}" for m in warned]]
    return lines


def summarise_warnings(messages: list[str]) -> list[str]:
    """Distinct warnings, those that differ only in the atoms named and the novelty value
    merged into one (the atoms' union, the largest novelty): an MD run repeats them every step."""
    import re
    merged: dict[str, tuple[set, float]] = {}
    for message in messages:
        found = re.match(r"atoms ([0-9, ]+) (have .*novelty up to )([0-9.]+)(.*)", message)
        if found is None:
            merged.setdefault(message, (set(), -1.0))
            continue
        key = found.group(2) + "{}" + found.group(4)
        atoms, top = merged.get(key, (set(), -1.0))
        atoms |= {int(a) for a in found.group(1).split(",")}
        merged[key] = (atoms, max(top, float(found.group(3))))
    out = []
    for key, (atoms, top) in merged.items():
        out.append(key if top < 0 else
                   f"atoms {', '.join(str(a) for a in sorted(atoms))} "
                   + key.replace("{}", f"{top:.2f}"))
    return sorted(out)


def with_section(card: str, lines: list[str], before: str = "## Limits") -> str:
    """``card`` (markdown) with the section ``lines`` (its heading first) in place of an older
    section of that heading, or inserted before the ``before`` heading (else at the end)."""
    heading = lines[0]
    text = card.split("\n")
    if heading in text:
        start = text.index(heading)
        end = next((i for i in range(start + 1, len(text)) if text[i].startswith("## ")),
                   len(text))
        text = text[:start] + lines + [""] + text[end:]
    elif before in text:
        at = text.index(before)
        text = text[:at] + lines + [""] + text[at:]
    else:
        text = text + [""] + lines
    return "\n".join(text)
