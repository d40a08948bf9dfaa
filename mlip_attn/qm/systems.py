"""Geometry recipes for the long-range benchmark systems (unlabelled structures).

Every recipe is a pure function of its arguments and a seed (an ``int`` or a
``numpy.random.Generator``) and returns a list of :class:`ase.Atoms` with no
calculator, no periodicity and ``info`` tags:

* ``config_type`` (short string), ``system``, ``total_charge`` (int, e),
* system-specific tags (``n_carbons``, ``torsion_deg``, ``pair``, ``xi``, ...).

Ground-state / constrained optimisations use GFN2-xTB (tblite) at 300 K electronic
temperature; optimised geometries are cached in memory per process, so asking for more
structures of the same system does not optimise again.

Systems (see ``shared/specs/longrange.md``):

* cumulenes H2C=(C=)k=CH2, 3-12 carbons, one terminal CH2 rotated about the chain axis
  (0 deg = planar, 90 deg = perpendicular),
* SN2 X- + CH3Y -> XCH3 + Y- (X, Y in {Cl, Br}), relaxed scan along
  xi = r(C-Y) - r(C-X),
* non-local charge transfer H-C10-H (0) vs C10H3+ (+1, proton added at one end).

The analytic NaCl toy lives in :mod:`mlip_attn.qm.nacl`.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np
from ase import Atoms

__all__ = [
    "cumulene_ground_state",
    "cumulene_structures",
    "cumulene_torsion_scan",
    "torsion_angle",
    "rotate_terminal_group",
    "sn2_structures",
    "sn2_scan",
    "sn2_xi",
    "charge_transfer_ground_state",
    "charge_transfer_structures",
    "xtb_energy",
]

# recipe-level settings (recorded in info of optimised geometries)
OPT_ELECTRONIC_TEMPERATURE = 300.0

_CUMULENE_CACHE: dict[tuple, Atoms] = {}
_SN2_CACHE: dict[tuple, Atoms] = {}
_CT_CACHE: dict[tuple, Atoms] = {}


def _rng(seed) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)


def xtb_energy(atoms: Atoms, charge: int | None = None,
               electronic_temperature: float = OPT_ELECTRONIC_TEMPERATURE) -> float:
    """GFN2-xTB total energy (eV) of ``atoms`` (charge from ``info['total_charge']``),
    single-threaded, with the SCF fallback ladder of :func:`labelling.xtb_energy_forces`."""
    from .labelling import xtb_energy_forces

    if charge is None:
        charge = int(atoms.info.get("total_charge", 0))
    e, _, _ = xtb_energy_forces(atoms.numbers, atoms.positions, charge=int(charge),
                                electronic_temperature=electronic_temperature)
    return e


def _restart_safe_xtb(charge: int, electronic_temperature: float):
    """ASE calculator for optimisations: tblite restarted from the previous step's density,
    falling back to fresh SCFs with the ``XTB_SCF_LADDER`` settings when that fails
    (the restarted SCF fails for Br- + CH3Br at > 6 A)."""
    from ase.calculators.calculator import Calculator, all_changes

    from .labelling import xtb_energy_forces

    class RestartSafeXTB(Calculator):
        implemented_properties = ["energy", "free_energy", "forces"]

        def __init__(self):
            super().__init__()
            self.inner = None

        def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
            super().calculate(atoms, properties, system_changes)
            e, f, self.inner = xtb_energy_forces(
                self.atoms.numbers, self.atoms.positions, charge=charge,
                electronic_temperature=electronic_temperature, calc=self.inner)
            self.results = {"energy": e, "free_energy": e, "forces": f}

    return RestartSafeXTB()


def _optimise(atoms: Atoms, charge: int, fmax: float, steps: int,
              electronic_temperature: float = OPT_ELECTRONIC_TEMPERATURE) -> Atoms:
    """Optimise a copy of ``atoms`` (constraints kept) with GFN2-xTB and BFGS."""
    from ase.optimize import BFGS

    from .labelling import single_thread_openmp

    a = atoms.copy()
    a.calc = _restart_safe_xtb(charge, electronic_temperature)
    with single_thread_openmp():
        opt = BFGS(a, logfile=None, maxstep=0.1)
        opt.run(fmax=fmax, steps=steps)
    a.calc = None
    return a


def _finish(atoms: Atoms, info: dict) -> Atoms:
    out = Atoms(numbers=atoms.numbers, positions=atoms.positions.copy())
    out.pbc = False
    out.info.update(info)
    return out


# --------------------------------------------------------------------------- cumulenes

_CC_END = 1.31     # terminal C=C (Angstrom), initial guess only
_CC_IN = 1.28      # inner C=C
_CH = 1.09
_HCH = 117.0       # degrees


def _cumulene_guess(n_carbons: int, torsion_deg: float) -> Atoms:
    """H2C=(C=)k=CH2 along z; atoms C0..C{n-1}, then H,H on C0 and H,H on C{n-1}."""
    if n_carbons < 2:
        raise ValueError("a cumulene needs at least 2 carbons")
    z = [0.0]
    for i in range(1, n_carbons):
        z.append(z[-1] + (_CC_END if i in (1, n_carbons - 1) else _CC_IN))
    pos = [[0.0, 0.0, zi] for zi in z]
    half = math.radians(_HCH / 2.0)
    rho, dz = _CH * math.sin(half), _CH * math.cos(half)
    for s in (1, -1):
        pos.append([s * rho, 0.0, -dz])
    phi = math.radians(torsion_deg)
    for s in (1, -1):
        pos.append([s * rho * math.cos(phi), s * rho * math.sin(phi), z[-1] + dz])
    return Atoms(f"C{n_carbons}H4", positions=pos)


def _terminal_groups(atoms: Atoms):
    """Return ((c_a, [h, h]), (c_b, [h, h])): the two CH2 ends of a cumulene-like chain."""
    num = atoms.numbers
    pos = atoms.positions
    c_idx = np.where(num == 6)[0]
    h_idx = np.where(num == 1)[0]
    if len(c_idx) < 2 or len(h_idx) < 4:
        raise ValueError("torsion_angle needs a H2C...CH2 chain (>= 2 C, 4 H)")
    d = np.linalg.norm(pos[h_idx][:, None, :] - pos[c_idx][None, :, :], axis=-1)
    owner = c_idx[np.argmin(d, axis=1)]
    groups = {}
    for h, c in zip(h_idx, owner):
        groups.setdefault(int(c), []).append(int(h))
    ends = [(c, hs) for c, hs in groups.items() if len(hs) == 2]
    if len(ends) != 2:
        raise ValueError("could not find exactly two CH2 end groups")
    # order: the end group closest to the first carbon first
    ends.sort(key=lambda e: np.linalg.norm(pos[e[0]] - pos[c_idx[0]]))
    return ends[0], ends[1]


def torsion_angle(atoms: Atoms) -> float:
    """End-to-end H2C...CH2 torsion in degrees, folded to [0, 90] (0 = planar).

    The angle between the two H-H vectors projected onto the plane perpendicular to
    the axis through the two terminal carbons.
    """
    (ca, ha), (cb, hb) = _terminal_groups(atoms)
    pos = atoms.positions
    axis = pos[cb] - pos[ca]
    axis = axis / np.linalg.norm(axis)

    def proj(v):
        v = v - np.dot(v, axis) * axis
        return v / np.linalg.norm(v)

    u = proj(pos[ha[1]] - pos[ha[0]])
    w = proj(pos[hb[1]] - pos[hb[0]])
    c = min(1.0, abs(float(np.dot(u, w))))
    return math.degrees(math.acos(c))


def rotate_terminal_group(atoms: Atoms, angle_deg: float) -> Atoms:
    """Copy of ``atoms`` with the H atoms of the second CH2 end rigidly rotated by
    ``angle_deg`` about the axis through the two terminal carbons."""
    (ca, _), (cb, hb) = _terminal_groups(atoms)
    out = atoms.copy()
    pos = out.positions
    axis = pos[cb] - pos[ca]
    axis = axis / np.linalg.norm(axis)
    th = math.radians(angle_deg)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rot = np.eye(3) + math.sin(th) * k + (1 - math.cos(th)) * (k @ k)
    for h in hb:
        pos[h] = pos[cb] + rot @ (pos[h] - pos[cb])
    out.positions = pos
    return out


def cumulene_ground_state(n_carbons: int, optimise: bool = True, fmax: float = 0.01,
                          steps: int = 500) -> Atoms:
    """xTB-optimised H2C=(C=)k=CH2 ground state (odd n: perpendicular, even n: planar).

    Cached in memory per (n_carbons, optimise, fmax).
    """
    key = (int(n_carbons), bool(optimise), float(fmax))
    if key not in _CUMULENE_CACHE:
        guess = _cumulene_guess(n_carbons, 90.0 if n_carbons % 2 else 0.0)
        a = _optimise(guess, 0, fmax, steps) if optimise else guess
        _CUMULENE_CACHE[key] = a
    return _CUMULENE_CACHE[key].copy()


def _set_torsion(ground: Atoms, torsion_deg: float) -> Atoms:
    # ground-state torsion is 0 or 90 (by symmetry); rotate the second end to reach target
    t0 = torsion_angle(ground)
    t0 = 90.0 if t0 > 45.0 else 0.0
    return rotate_terminal_group(ground, torsion_deg - t0)


def _cumulene_info(n_carbons: int, torsion_deg: float, **extra) -> dict:
    info = {
        "config_type": "cumulene_torsion",
        "system": "cumulene",
        "total_charge": 0,
        "n_carbons": int(n_carbons),
        "torsion_deg": float(torsion_deg),
    }
    info.update(extra)
    return info


def cumulene_torsion_scan(n_carbons: int, angles_deg: Iterable[float], optimise: bool = True,
                          fmax: float = 0.01) -> list[Atoms]:
    """Rigid rotation of one terminal CH2 of the optimised ground state (no rattle).

    ``angles_deg`` are absolute torsions (0 = planar, 90 = perpendicular). The rigid
    barrier is ``|E(0) - E(90)|``.
    """
    ground = cumulene_ground_state(n_carbons, optimise=optimise, fmax=fmax)
    out = []
    for ang in angles_deg:
        a = _set_torsion(ground, float(ang))
        out.append(_finish(a, _cumulene_info(n_carbons, float(ang), rattle=0.0, scan=True)))
    return out


def cumulene_structures(n_carbons: Sequence[int], n_per_length: int | Sequence[int], seed=0,
                        rattle: float = 0.03, optimise: bool = True, fmax: float = 0.01,
                        scan_fraction: float = 0.5) -> list[Atoms]:
    """Rotated + rattled cumulenes.

    For each chain length, ``n_per_length`` structures (an int, or one count per length):
    a fraction ``scan_fraction`` on a regular torsion grid over [0, 90] deg, the rest at
    uniformly random torsions; every structure gets an isotropic Gaussian rattle of
    standard deviation ``rattle`` (Angstrom) per Cartesian component.
    Tags: ``n_carbons``, ``torsion_deg`` (nominal rigid torsion before the rattle).
    """
    rng = _rng(seed)
    lengths = [int(n) for n in n_carbons]
    counts = ([int(n_per_length)] * len(lengths) if np.isscalar(n_per_length)
              else [int(c) for c in n_per_length])
    if len(counts) != len(lengths):
        raise ValueError("n_per_length must be an int or have one entry per chain length")
    out: list[Atoms] = []
    for nc, m in zip(lengths, counts):
        if m <= 0:
            continue
        ground = cumulene_ground_state(nc, optimise=optimise, fmax=fmax)
        n_scan = int(round(scan_fraction * m))
        angles = list(np.linspace(0.0, 90.0, n_scan)) if n_scan > 1 else [0.0] * n_scan
        angles += list(rng.uniform(0.0, 90.0, m - n_scan))
        for ang in angles:
            a = _set_torsion(ground, float(ang))
            a.positions = a.positions + rng.normal(0.0, rattle, a.positions.shape)
            out.append(_finish(a, _cumulene_info(nc, float(ang), rattle=float(rattle))))
    return out


# --------------------------------------------------------------------------------- SN2

_R_CX = {"Cl": 1.80, "Br": 1.95}     # C-halogen bond length guesses (Angstrom)


def sn2_xi(atoms: Atoms) -> float:
    """xi = r(C-Y) - r(C-X) for an SN2 structure from this module (X = atom 0,
    C = atom 1, Y = atom 2)."""
    p = atoms.positions
    return float(np.linalg.norm(p[2] - p[1]) - np.linalg.norm(p[0] - p[1]))


def _sn2_guess(x: str, y: str, xi: float) -> Atoms:
    """Collinear X ... C ... Y along z (X at -z, Y at +z), CH3 umbrella interpolated."""
    r0x, r0y = _R_CX[x], _R_CX[y]
    # r_CX + r_CY ~ r0x + r0y + sqrt(xi^2 + 1) (TS: both ~0.5 A longer than bonds)
    s = r0x + r0y - 1.0 + math.sqrt(xi * xi + 1.0)
    r_cy = 0.5 * (s + xi)
    r_cx = 0.5 * (s - xi)
    # H-C-Y angle: 108.5 (CH3Y, xi<0) -> 90 (TS) -> 71.5 (XCH3, xi>0)
    ang = math.radians(90.0 + 18.5 * math.tanh(-xi / 0.6))
    pos = [[0.0, 0.0, -r_cx], [0.0, 0.0, 0.0], [0.0, 0.0, r_cy]]
    for k in range(3):
        phi = 2 * math.pi * k / 3
        pos.append([1.09 * math.sin(ang) * math.cos(phi), 1.09 * math.sin(ang) * math.sin(phi),
                    1.09 * math.cos(ang)])
    return Atoms([x, "C", y, "H", "H", "H"], positions=pos)


def _sn2_relaxed(x: str, y: str, xi: float, fmax: float, steps: int) -> Atoms:
    """Constrained GFN2-xTB optimisation at fixed xi from the analytic guess (pure
    function of its arguments, cached in memory)."""
    from ase.constraints import FixInternals

    key = (x, y, round(float(xi), 6), float(fmax), int(steps))
    if key not in _SN2_CACHE:
        a = _sn2_guess(x, y, xi)
        a.set_constraint(FixInternals(bondcombos=[[float(xi), [[1, 2, 1.0], [1, 0, -1.0]]]]))
        a = _optimise(a, -1, fmax, steps)
        a.set_constraint()
        _SN2_CACHE[key] = a
    return _SN2_CACHE[key].copy()


def _sn2_info(x: str, y: str, xi: float, **extra) -> dict:
    info = {
        "config_type": "sn2_scan",
        "system": "sn2",
        "total_charge": -1,
        "pair": f"{x}-{y}",
        "nucleophile": x,
        "leaving_group": y,
        "xi": float(xi),
    }
    info.update(extra)
    return info


def sn2_scan(x: str, y: str, xis: Iterable[float], fmax: float = 0.05, steps: int = 200,
             optimise: bool = True) -> list[Atoms]:
    """Relaxed scan of X- + CH3Y along xi = r(C-Y) - r(C-X) (no rattle; charge -1).

    Atom order: X, C, Y, H, H, H. Each point is a constrained GFN2-xTB optimisation
    (ase ``FixInternals`` bond combination, BFGS to ``fmax`` eV/A) started from an
    analytic collinear guess, so every point depends on (x, y, xi) only (reproducible,
    cached in memory).
    """
    for el in (x, y):
        if el not in _R_CX:
            raise ValueError(f"SN2 halogens must be Cl or Br (xTB fails for F-), got {el!r}")
    out = []
    for xi in xis:
        xi = float(xi)
        a = _sn2_relaxed(x, y, xi, fmax, steps) if optimise else _sn2_guess(x, y, xi)
        out.append(_finish(a, _sn2_info(x, y, xi, rattle=0.0, scan=True)))
    return out


def sn2_structures(n: int, seed=0, pairs=(("Cl", "Cl"), ("Cl", "Br"), ("Br", "Cl"), ("Br", "Br")),
                   xi_range: tuple[float, float] = (-6.0, 6.0), xi_step: float = 0.25,
                   rattle: float = 0.05, fmax: float = 0.05, optimise: bool = True) -> list[Atoms]:
    """``n`` SN2 structures X- + CH3Y (charge -1) spread round-robin over ``pairs``.

    Per pair the reaction coordinate xi is drawn uniformly from ``xi_range``
    (default -6 A, ion far on the reactant side, through the TS at xi ~ 0 to the
    product side) and snapped to a grid of ``xi_step`` (so the constrained optimisations
    are shared/cached); each structure is the relaxed scan point plus an isotropic
    Gaussian rattle of ``rattle`` Angstrom per component. Tags: ``pair``, ``xi``.
    """
    rng = _rng(seed)
    pairs = [tuple(p) for p in pairs]
    per_pair: list[list[float]] = [[] for _ in pairs]
    lo, hi = xi_range
    for k in range(n):
        xi = rng.uniform(lo, hi)
        if xi_step:
            xi = round(round(xi / xi_step) * xi_step, 6)
        per_pair[k % len(pairs)].append(float(xi))
    scans = {}
    for (x, y), xis in zip(pairs, per_pair):
        uniq = sorted(set(xis))
        if uniq:
            scans[(x, y)] = dict(zip(uniq, sn2_scan(x, y, uniq, fmax=fmax, optimise=optimise)))
    out = []
    counters = [0] * len(pairs)
    for k in range(n):
        j = k % len(pairs)
        x, y = pairs[j]
        xi = per_pair[j][counters[j]]
        counters[j] += 1
        base = scans[(x, y)][xi]
        pos = base.positions + rng.normal(0.0, rattle, base.positions.shape)
        a = Atoms(base.numbers, positions=pos)
        out.append(_finish(a, _sn2_info(x, y, xi, rattle=float(rattle))))
    return out


# ------------------------------------------------------------------- charge transfer

def _polyyne_guess(n_carbons: int = 10, protonated: bool = False) -> Atoms:
    """H-C#C-...-C#C-H along z (alternating 1.21/1.36 A); protonated: the first end is
    H2C= (sp2, H-C-H 117 deg) and the chain is given cumulenic bond lengths there."""
    z = [0.0]
    for i in range(1, n_carbons):
        z.append(z[-1] + (1.23 if i % 2 == 1 else 1.34))
    pos = [[0.0, 0.0, zi] for zi in z]
    sym = ["C"] * n_carbons
    if protonated:
        half = math.radians(_HCH / 2.0)
        for s in (1, -1):
            pos.append([s * _CH * math.sin(half), 0.0, -_CH * math.cos(half)])
            sym.append("H")
    else:
        pos.append([0.0, 0.0, -1.06])
        sym.append("H")
    pos.append([0.0, 0.0, z[-1] + 1.06])
    sym.append("H")
    return Atoms(sym, positions=pos)


def charge_transfer_ground_state(protonated: bool, n_carbons: int = 10, optimise: bool = True,
                                 fmax: float = 0.01, steps: int = 500) -> Atoms:
    """xTB-optimised H-C10-H (charge 0) or C10H3+ (charge +1, proton at the first end)."""
    key = (bool(protonated), int(n_carbons), bool(optimise), float(fmax))
    if key not in _CT_CACHE:
        guess = _polyyne_guess(n_carbons, protonated)
        _CT_CACHE[key] = (_optimise(guess, 1 if protonated else 0, fmax, steps)
                          if optimise else guess)
    return _CT_CACHE[key].copy()


def charge_transfer_structures(n: int, seed=0, n_carbons: int = 10, rattle: float = 0.04,
                               stretch: float = 0.02, optimise: bool = True) -> list[Atoms]:
    """``n`` structures alternating H-C10-H (charge 0) and C10H3+ (charge +1).

    Each is the xTB-optimised geometry, uniformly stretched along the chain axis by a
    factor drawn from [1 - stretch, 1 + stretch], plus an isotropic Gaussian rattle of
    ``rattle`` Angstrom. The atoms of the far end (last C and H) are the same species in
    both states, so the data set tests whether a model transfers the effect of the
    total charge / proton over > 10 A. Tags: ``protonated`` (0/1), ``n_carbons``,
    ``stretch``.
    """
    rng = _rng(seed)
    out = []
    for k in range(n):
        prot = k % 2 == 1
        g = charge_transfer_ground_state(prot, n_carbons, optimise=optimise)
        c = np.where(g.numbers == 6)[0]
        axis = g.positions[c[-1]] - g.positions[c[0]]
        axis /= np.linalg.norm(axis)
        f = float(rng.uniform(1.0 - stretch, 1.0 + stretch))
        p = g.positions - g.positions[c[0]]
        p = p + (f - 1.0) * np.outer(p @ axis, axis)
        p = p + rng.normal(0.0, rattle, p.shape)
        a = Atoms(g.numbers, positions=p)
        out.append(_finish(a, {
            "config_type": "charge_transfer",
            "system": "charge-transfer",
            "total_charge": 1 if prot else 0,
            "protonated": int(prot),
            "n_carbons": int(n_carbons),
            "stretch": f,
            "rattle": float(rattle),
        }))
    return out
