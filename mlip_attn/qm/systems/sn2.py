"""Gas-phase SN2 X⁻ + CH3Y → XCH3 + Y⁻ (X, Y ∈ {Cl, Br}, total charge −1).

Two kinds of structures, all four pairs: relaxed scans along ξ = r(C–Y) − r(C–X) (constrained
GFN2-xTB optimisations, cached in memory per process) plus rattles, and *ion approaches*: the
free halide placed around the xTB-optimised methyl halide in a random direction at 3.5 Å up
to the pair's reach from the carbon, the molecule rattled. The ion–dipole (1/r²) and
ion–induced-dipole (1/r⁴) attraction reaches far beyond a local model's cutoff: with a 4 Å
cutoff a halide more than 4 Å from every atom is not even in the local model's graph.

**Where xTB can be trusted.** GFN2-xTB moves charge from a halide onto a distant CH3Br (a
delocalisation error of self-consistent tight binding, the artefact of separated charged
fragments), and the leak *grows* with distance, so the interaction energy stops decaying
(measured, backside approach; leak = 1 + Mulliken charge of the free halide, largest over 12
random directions):

==============  ==================================  ===========================================
pair            E_int (meV) at 8, 12, 16, 20 Å      leak (e) at 6, 8, 10 Å
==============  ==================================  ===========================================
Cl⁻ + CH3Cl     −80, −38, −22, −14 (∝ 1/r²)         0.000, 0.000, 0.000 (to 12 Å)
Br⁻ + CH3Cl     −81, −38, −24, −19                  0.000, 0.000, 0.000
Cl⁻ + CH3Br     −133, −74, −59, −56                 0.002, 0.001, 0.019
Br⁻ + CH3Br     −169, −146, −148, −154              0.032, 0.073, 0.095
==============  ==================================  ===========================================

So the free halide stays within `ION_REACH` of the carbon: 12 Å next to CH3Cl, 8 Å next to
CH3Br for Cl⁻ and 5 Å for Br⁻ (the ξ range of each pair follows, `xi_range`), and since the
leak also depends on the rattled C–Br bond, every structure whose halide is separated from the
molecule (> 3.5 Å from every atom) is checked with xTB and drawn again while more than 0.01 e
has left the halide (`sn2_structures`, ``max_leak``). Br⁻ + CH3Br therefore has no
long-range part in this data. (xTB's SCF also fails for F⁻ far from the molecule, so F is not
offered.)

Atom order: X (the nucleophile; the free ion in approach structures), C, Y, H, H, H.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from ase import Atoms

from ...registry import REFERENCE_SYSTEMS
from .base import HeldOut, Protocol, ReferenceSystem, finish, make_rng
# the geometry and the scans, re-exported: `sn2` is where the recipe's names are looked up
from .sn2_geometry import (CLOSEST, CONTACT_RANGE, ISOLATED, _amplitude,  # noqa: F401
                           hydrogen_contacts, isolated_fragments, methyl_halide, sn2_approach)
from .sn2_scans import (ion_distance, ION_REACH, PAIRS, sn2_scan, sn2_xi,  # noqa: F401
                        xi_range, _R_CX, _sn2_info)

# the free halide must keep its charge to within MAX_LEAK e once it is further than CONTACT Å
# from every atom (closer, charge transfer into hydrogen and halogen bonds is chemistry)
MAX_LEAK = 0.01
CONTACT = 3.5
SIDE_ON = (75.0, 105.0)  # degrees: the held-out band of approach directions (see SN2)
# Å: how far from CH3Cl a free Cl⁻ may go in `sn2_structures(far=...)`. Measured with
# `free_ion_charge`, 12 random directions per point: unrattled, Cl⁻ keeps its charge to
# 0.0000 e at 12–20 Å; with a 0.05 Å rattle ≥ 92 % of the structures leak ≤ 0.01 e (the rest
# are drawn again, MAX_LEAK). Br⁻ + CH3Cl is not extended: unrattled it leaks 0.013 e at 16 Å
# and 0.02 e at 18–20 Å.
FAR_REACH = 20.0
FAR_PAIRS = (("Cl", "Cl"),)

def free_ion_charge(atoms: Atoms) -> float:
    """GFN2-xTB Mulliken charge (e) of the free halide (X or Y, whichever is further from C)."""
    from ..methods import xtb_energy_forces
    p = atoms.positions
    ion = 0 if np.linalg.norm(p[0] - p[1]) >= np.linalg.norm(p[2] - p[1]) else 2
    _, _, calc = xtb_energy_forces(atoms.numbers, atoms.positions, charge=-1)
    return float(calc.results["charges"][ion])


def _separated(atoms: Atoms) -> bool:
    """Whether the free halide is further than `CONTACT` Å from every other atom."""
    p = atoms.positions
    ion = 0 if np.linalg.norm(p[0] - p[1]) >= np.linalg.norm(p[2] - p[1]) else 2
    others = np.delete(p, ion, axis=0)
    return bool(np.min(np.linalg.norm(others - p[ion], axis=1)) > CONTACT)


def _keeping_charge(make, max_leak: float | None, what: str, attempts: int = 200) -> Atoms:
    """``make()`` again until its free halide keeps its charge (`free_ion_charge` ≤ −1 +
    ``max_leak``) or touches the molecule; ``max_leak`` None accepts the first."""
    for _ in range(attempts):
        atoms = make()
        if max_leak is None or not _separated(atoms):
            return atoms
        charge = free_ion_charge(atoms)
        if charge <= -1.0 + max_leak:
            atoms.info["ion_charge"] = charge
            return atoms
    raise RuntimeError(f"{what}: in {attempts} tries xTB moved more than {max_leak} e off the "
                       f"free halide every time; lower its distance range")


def sn2_structures(n: int, seed=0, pairs=PAIRS, approach_fraction: float = 0.5,
                   xi_step: float = 0.25, xi_offset: float = 0.0,
                   rattle: float | tuple[float, float] = (0.0, 0.05),
                   distance: tuple[float, float] | None = None,
                   angles: tuple[float, float] | None = None,
                   exclude_angles: tuple[float, float] | None = SIDE_ON,
                   max_leak: float | None = MAX_LEAK, fmax: float = 0.05,
                   optimise: bool = True,
                   far: tuple[float, float, float] | None = None,
                   isolated: float = 0.0, contacts: float = 0.0) -> list[Atoms]:
    """``n`` SN2 structures (charge −1) spread round-robin over ``pairs``: a fraction
    ``approach_fraction`` of ion approaches (`sn2_approach` with ``distance``, ``angles`` and
    ``exclude_angles``; default: every direction but the side-on band `SIDE_ON`, which the
    default protocol holds out), the rest relaxed-scan points at ξ drawn uniformly from the
    pair's grid ``lo + xi_offset + k·xi_step`` inside its `xi_range` (so the constrained
    optimisations are shared), each rattled. ``rattle``: Å per component, or a (low, high)
    range drawn per structure. A structure whose free halide is further than `CONTACT` Å from
    every atom is drawn again (same rattle amplitude, new positions) while xTB moves more than
    ``max_leak`` e off it (`free_ion_charge`; the rattled C–Br bond lowers CH3Br's σ* level,
    so even within `ION_REACH` 10 % of the Cl⁻ + CH3Br structures at 7–8 Å leak over 0.01 e);
    the checked ones carry its charge, ``ion_charge`` (e). ``far`` = (fraction, low, high):
    that fraction of the Cl⁻ + CH3Cl approaches (`FAR_PAIRS`) is drawn at low–high Å from the carbon
    instead (at most `FAR_REACH`; the ion–dipole tail out to a global model's reach, so that
    the reach can be set from the data and the physical tails take over beyond it).
    ``isolated``: round(isolated × n) separated fragments appended after the n structures
    (`isolated_fragments`: rattled CH3Cl and CH3Br, charge 0, and the free Cl⁻ and Br⁻,
    charge −1), the limit that a halide far beyond a global block's reach reaches; the first
    n structures do not depend on it. ``contacts``: round(contacts × n) ion–hydrogen contacts
    appended after those (`hydrogen_contacts`: the free halide 1.5–2.6 Å from a hydrogen, the
    range `CLOSEST` keeps out of the approaches, where a hot MD run takes the ion). Tags: ``pair``, ``nucleophile``, ``leaving_group``, ``xi``,
    ``ion_distance`` (Å), ``angle`` (degrees, as drawn before the rattle; 180 for the collinear
    scans), ``rattle``; ``config_type`` ``sn2_scan`` or ``sn2_approach``."""
    rng = make_rng(seed)
    pairs = [tuple(p) for p in pairs]
    for x, y in pairs:
        for el in (x, y):
            if el not in _R_CX:
                raise ValueError(f"pairs: SN2 halogens must be Cl or Br (xTB fails for F-), "
                                 f"got {el!r}")
    if far is not None:
        fraction, far_lo, far_hi = (float(v) for v in far)
        if not (0.0 <= fraction <= 1.0 and CONTACT < far_lo < far_hi <= FAR_REACH):
            raise ValueError(f"far: (fraction in [0, 1], low, high) with {CONTACT} < low < high "
                             f"<= {FAR_REACH} Å (xTB checked to there), got {far}")
    for name, value in (("isolated", isolated), ("contacts", contacts)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name}: a fraction of n in [0, 1], got {value}")
    plan = []
    for k in range(n):
        x, y = pairs[k % len(pairs)]
        if rng.uniform() < approach_fraction:
            plan.append((x, y, None))
        else:
            lo, hi = xi_range(x, y, xi_step)
            grid = np.arange(lo + xi_offset, hi + 1e-9, xi_step)
            plan.append((x, y, round(float(grid[rng.integers(len(grid))]), 6)))
    scans = {}
    for x, y in pairs:
        wanted = sorted({xi for px, py, xi in plan if (px, py) == (x, y) and xi is not None})
        if wanted:
            scans[(x, y)] = dict(zip(wanted, sn2_scan(x, y, wanted, fmax=fmax,
                                                      optimise=optimise)))
    out = []
    for x, y, xi in plan:
        amplitude = _amplitude(rng, rattle)
        if xi is None:
            span, reach = distance, None
            if far is not None and (x, y) in FAR_PAIRS and rng.uniform() < far[0]:
                span, reach = (far_lo, far_hi), far_hi
            atoms = _keeping_charge(lambda: sn2_approach(x, y, rng, span, angles,
                                                         exclude_angles, amplitude, optimise,
                                                         reach),
                                    max_leak, f"{x}- + CH3{y} approach")
            kind = "sn2_approach"
        else:
            base = scans[(x, y)][xi]
            atoms = _keeping_charge(lambda: Atoms(base.numbers, positions=base.positions
                                                  + rng.normal(0.0, amplitude, (len(base), 3))),
                                    max_leak, f"{x}/{y} scan at ξ = {xi}")
            kind = "sn2_scan"
        checked = {"ion_charge": atoms.info["ion_charge"]} if "ion_charge" in atoms.info else {}
        out.append(finish(atoms, _sn2_info(x, y, sn2_xi(atoms) if xi is None else xi,
                                           config_type=kind, rattle=amplitude,
                                           ion_distance=ion_distance(atoms),
                                           angle=float(atoms.info.get("angle", 180.0)),
                                           **checked)))
    if isolated:
        out += isolated_fragments(int(round(isolated * n)), seed, rattle, optimise)
    if contacts:
        out += hydrogen_contacts(int(round(contacts * n)), pairs, seed, rattle, optimise)
    return out


EFA_L1 = {"type": "efa", "vectors": True, "grid": 50, "d_qk": 16, "d_v": 16}
CHARGES = {"type": "charges"}


@REFERENCE_SYSTEMS.register("sn2", summary="SN2 X⁻ + CH3Y (Cl, Br): relaxed ξ scans and ion "
                            "approaches from every direction; ion–dipole attraction beyond the "
                            "local cutoff")
class SN2(ReferenceSystem):
    """Options of `structures`: those of `sn2_structures` (pairs, approach fraction, ξ grid,
    rattle, approach distances and angles).

    The default protocol trains on ion approaches from every direction except the side-on band
    75–105° from the C–Y axis, where the ion–dipole term changes sign, and on rattled relaxed
    scans on the ξ grid k·0.25 Å. Its held-out sets, never trained on: side-on approaches
    (directions), fresh approaches at the trained directions (new structures), and scans at
    ξ = 0.125 + k·0.25 Å (between the trained grid points).
    """

    default_n = 200
    protocols = {
        "default": Protocol(
            "all four Cl/Br pairs: rattled relaxed ξ scans and ion approaches 3.5 Å to the "
            "pair's reach from the carbon; tests on side-on approaches (75–105°, never "
            "trained), fresh approaches and scans between the trained ξ grid points",
            n=4000,
            held_out={"side-on": HeldOut(400, {"approach_fraction": 1.0, "angles": SIDE_ON,
                                               "exclude_angles": None}, seed=2001),
                      "approach": HeldOut(400, {"approach_fraction": 1.0}, seed=2002),
                      "scan": HeldOut(200, {"approach_fraction": 0.0, "xi_offset": 0.125},
                                      seed=2003)},
            variants={"local": None, "efa": EFA_L1, "charges": CHARGES,
                      "efa+charges": [EFA_L1, CHARGES],
                      "electrostatics": {"type": "electrostatics"}},
            width=64, reference="efa",
            training={"epochs": 200, "batch_size": 16, "lr": 1e-3, "scheduler": "cosine",
                      "lr_min": 1e-5, "energy_weight": 10.0, "forces_weight": 1.0}),
        "tails": Protocol(
            "the default recipe plus Cl⁻ + CH3Cl approaches out to 20 Å (half of that pair's "
            "approaches at 12–20 Å, where xTB keeps the charge on the ion); the global blocks' "
            "reach is the largest training structure, so beyond it the physical tails take over; "
            "3 % isolated CH3Cl, CH3Br, Cl⁻ and Br⁻ (the separated limit beyond the reach); "
            "held out as in the default protocol plus fresh far approaches",
            n=4000, data={"far": (0.5, 12.0, FAR_REACH), "isolated": 0.03},
            held_out={"side-on": HeldOut(400, {"approach_fraction": 1.0, "angles": SIDE_ON,
                                               "exclude_angles": None}, seed=2001),
                      "approach": HeldOut(400, {"approach_fraction": 1.0}, seed=2002),
                      "scan": HeldOut(200, {"approach_fraction": 0.0, "xi_offset": 0.125},
                                      seed=2003),
                      "far": HeldOut(100, {"approach_fraction": 1.0, "pairs": [("Cl", "Cl")],
                                           "far": (1.0, 12.0, FAR_REACH)}, seed=2004)},
            variants={"local": None, "efa": EFA_L1, "charges": CHARGES,
                      "efa+charges": [EFA_L1, CHARGES],
                      "electrostatics": {"type": "electrostatics"},
                      "efa+electrostatics": [EFA_L1, {"type": "electrostatics"}]},
            width=64, reference="efa", reach_factor=1.0,
            training={"epochs": 200, "batch_size": 16, "lr": 1e-3, "scheduler": "cosine",
                      "lr_min": 1e-5, "energy_weight": 10.0, "forces_weight": 1.0}),
    }
    protocols["contacts"] = protocols["tails"].plus(
        "plus 5 % ion–hydrogen contacts (the free halide 1.5–2.6 Å from a hydrogen, closer "
        "than any approach: where a 600 K run of the tails-only sn2-efa collapsed)",
        contacts=0.05)
    card_description = (
        "Gas-phase SN2 X⁻ + CH3Y → XCH3 + Y⁻ with X, Y ∈ {Cl, Br}, total charge −1, GFN2-xTB: "
        "relaxed scans along ξ = r(C–Y) − r(C–X) and halide ions placed around the methyl "
        "halide from every direction at 3.5–12 Å from the carbon (8 Å for Cl⁻ and 5 Å for Br⁻ "
        "next to CH3Br, where xTB starts to leak charge onto the molecule), rattled by up to "
        "0.05 Å (protocol `tails`: Cl⁻ + CH3Cl also at 12–20 Å). The ion–dipole attraction "
        "reaches beyond a local model's cutoff.")
    card_limits = (
        "Total charge −1 (atoms.info['charge'] = -1); other charges are extrapolation.",
        "Elements H, C, Cl, Br in these reactions only; no solvent.",
        "A halide further than 8 Å (Cl⁻) or 5 Å (Br⁻) from CH3Br is outside the data: xTB "
        "itself is wrong there.",
        "Isolated structures only.",
        "Physics-2 files (the earlier sn2-local/-efa): the energy is not continuous where the "
        "free halide enters the carbon's bond window (C–X ≈ 2.4 Å), where the total charge "
        "moved from the ion to the whole complex at once (a 23 meV step for the physics-2 "
        "sn2-efa, 4 meV for sn2-local). Physics 3 moves it continuously through the window "
        "(docs/longrange-physics.md, 'Continuous charge placement').")

    def structures(self, n: int, seed: int = 0, **options) -> list[Atoms]:
        return sn2_structures(n, seed=seed, **options)

    def analysis(self, out: Path, calculators: dict, protocol: str) -> dict:
        """Energy profiles of the relaxed scans of every pair against xTB (``sn2_profile.png``;
        ξ between the trained grid points), and on every held-out set the energy and force MAE
        split by the free ion's distance from the carbon (``sn2_forces_by_distance.png``);
        see `sn2_analysis.analyse`."""
        from .sn2_analysis import analyse
        return analyse(out, calculators, list(self.protocols[protocol].held_out))

    def card_findings(self, analysis: dict, variant: str) -> list[str]:
        """Energy and force MAE per held-out set, split by the free ion's distance from the
        carbon, and the MAE of each pair's relaxed profile (`sn2_analysis.findings`)."""
        from .sn2_analysis import findings
        return findings(analysis, variant)
