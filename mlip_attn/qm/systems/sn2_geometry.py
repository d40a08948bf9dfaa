"""Geometry of the SN2 recipe's structures (`mlip_attn.qm.systems.sn2`): the xTB-optimised
methyl halides, ion approaches from a direction and distance, and the structures the recipe
appends after its own (isolated fragments, ion–hydrogen contacts). Atom order: X (the free
halide), C, Y, H, H, H."""
from __future__ import annotations

import math

import numpy as np
from ase import Atoms

from .base import finish, xtb_optimise
from .sn2_scans import ion_distance, ION_REACH, PAIRS, sn2_xi, _sn2_guess, _sn2_info

CLOSEST = 2.6        # Å: no atom of the molecule closer to the free halide (H···X⁻ contacts)

_MOLECULES: dict[tuple, Atoms] = {}


def methyl_halide(y: str, optimise: bool = True) -> Atoms:
    """CH3Y (atoms C, Y, H, H, H; C at the origin, Y near +z), GFN2-xTB-optimised (cached)."""
    key = (y, bool(optimise))
    if key not in _MOLECULES:
        molecule = _sn2_guess("Cl", y, -12.0)[1:]
        if optimise:
            molecule = xtb_optimise(molecule, 0, 0.01, 200)
        molecule.positions -= molecule.positions[0]
        _MOLECULES[key] = molecule
    return _MOLECULES[key].copy()


def _direction(rng, angles: tuple[float, float] | None, exclude: tuple[float, float] | None,
               axis: np.ndarray) -> np.ndarray:
    """A random unit vector whose angle to ``axis`` is inside ``angles`` (degrees, uniform on
    the sphere's zone) and outside ``exclude``."""
    lo, hi = angles or (0.0, 180.0)
    while True:
        cos = rng.uniform(math.cos(math.radians(hi)), math.cos(math.radians(lo)))
        phi = rng.uniform(0.0, 2 * math.pi)
        sin = math.sqrt(max(0.0, 1.0 - cos * cos))
        local = np.array([sin * math.cos(phi), sin * math.sin(phi), cos])
        angle = math.degrees(math.acos(np.clip(cos, -1.0, 1.0)))
        if exclude is None or not exclude[0] <= angle <= exclude[1]:
            # axis is +z for the molecules of `methyl_halide`; rotate if it is not
            return local if np.allclose(axis, [0, 0, 1]) else _rotate_z_to(axis) @ local


def _rotate_z_to(axis: np.ndarray) -> np.ndarray:
    """Rotation matrix taking +z onto the unit vector ``axis``."""
    z = np.array([0.0, 0.0, 1.0])
    v, c = np.cross(z, axis), float(z @ axis)
    if np.linalg.norm(v) < 1e-12:
        return np.eye(3) if c > 0 else np.diag([1.0, -1.0, -1.0])
    k = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + k + k @ k / (1.0 + c)


def _with_ion(x: str, molecule: Atoms, ion: np.ndarray, rng, rattle: float) -> Atoms:
    """X (the free halide at ``ion``, Å) + the molecule rattled by ``rattle`` Å (Gaussian per
    component), atom order X, C, Y, H, H, H."""
    moved = molecule.positions + rng.normal(0.0, rattle, molecule.positions.shape)
    return Atoms([x] + list(molecule.get_chemical_symbols()),
                 positions=np.vstack([ion[None, :], moved]))


def _angle(ion: np.ndarray, axis: np.ndarray) -> float:
    """Degrees between ``ion`` (from the carbon at the origin) and the unit vector ``axis``."""
    return math.degrees(math.acos(np.clip(ion @ axis / np.linalg.norm(ion), -1.0, 1.0)))


def _appended_rng(seed, stream: int) -> np.random.Generator:
    """The random stream ``stream`` of ``seed`` for structures appended after the recipe's
    own, so appending them changes no other structure."""
    return np.random.default_rng([int(seed) if not isinstance(seed, np.random.Generator)
                                  else 0, stream])


def sn2_approach(x: str, y: str, rng, distance: tuple[float, float] | None = None,
                 angles: tuple[float, float] | None = None,
                 exclude: tuple[float, float] | None = None, rattle: float = 0.05,
                 optimise: bool = True, reach: float | None = None) -> Atoms:
    """X⁻ placed around CH3Y: a direction at an angle to C→Y inside ``angles`` and outside
    ``exclude`` (degrees; 180 = backside), a distance from the carbon uniform in ``distance``
    (Å; default 3.5 Å to the pair's `ION_REACH`), no atom closer than `CLOSEST`; the molecule
    rattled by ``rattle`` Å (Gaussian per component), the ion where it was placed. Its
    ``info['angle']`` is the drawn angle (before the rattle). ``reach`` (Å): a larger limit
    than `ION_REACH` where xTB was checked to keep the charge on the ion (`FAR_REACH`)."""
    reach = ION_REACH[(x, y)] if reach is None else float(reach)
    lo, hi = distance or (3.5, reach)
    if hi > reach + 1e-9:
        raise ValueError(f"distance: at most {reach:g} Å for {x}- + CH3{y} (xTB leaks charge "
                         f"onto CH3Br further out, see ION_REACH), got {hi:g}")
    molecule = methyl_halide(y, optimise)
    axis = molecule.positions[1] / np.linalg.norm(molecule.positions[1])   # C at the origin
    for _ in range(1000):
        ion = _direction(rng, angles, exclude, axis) * rng.uniform(lo, hi)
        if np.min(np.linalg.norm(molecule.positions - ion, axis=1)) >= CLOSEST:
            break
    else:
        raise RuntimeError(f"{x}- + CH3{y}: no ion position {lo:g}–{hi:g} Å from the carbon "
                           f"at angles {angles} keeps {CLOSEST} Å from every atom")
    atoms = _with_ion(x, molecule, ion, rng, rattle)
    atoms.info["angle"] = _angle(ion, axis)
    return atoms


def _amplitude(rng, rattle) -> float:
    if np.isscalar(rattle):
        return float(rattle)
    return float(rng.uniform(float(rattle[0]), float(rattle[1])))


CONTACT_RANGE = (1.5, CLOSEST)   # Å from the hydrogen: below the approaches' closest contact


def hydrogen_contacts(n: int, pairs=PAIRS, seed=0,
                      rattle: float | tuple[float, float] = (0.0, 0.05),
                      optimise: bool = True) -> list[Atoms]:
    """``n`` X⁻ + CH3Y structures (cycling through ``pairs``) with the free halide at a distance
    drawn uniformly from `CONTACT_RANGE` Å of one hydrogen (drawn uniformly), on the outer side
    of its C–H bond (at most 70° from the C→H direction) and no closer to any other atom; the
    molecule rattled as `sn2_structures`. Their own random stream (``seed``, 26), so appending
    them changes no other structure. Tags as the approaches', ``config_type``
    ``sn2_contact``, ``h_distance`` (Å)."""
    rng = _appended_rng(seed, 26)
    out = []
    for k in range(n):
        x, y = tuple(pairs[k % len(pairs)])
        molecule = methyl_halide(y, optimise)
        hydrogens = [i for i, z in enumerate(molecule.numbers) if z == 1]
        for _ in range(1000):
            h = hydrogens[rng.integers(len(hydrogens))]
            out_of_bond = molecule.positions[h] - molecule.positions[0]
            out_of_bond /= np.linalg.norm(out_of_bond)
            u = rng.normal(size=3)
            u /= np.linalg.norm(u)
            if u @ out_of_bond < math.cos(math.radians(70.0)):
                continue
            d = float(rng.uniform(*CONTACT_RANGE))
            ion = molecule.positions[h] + d * u
            if np.min(np.linalg.norm(molecule.positions - ion, axis=1)) >= d - 1e-9:
                break
        else:
            raise RuntimeError(f"{x}- + CH3{y}: no ion position near a hydrogen")
        amplitude = _amplitude(rng, rattle)
        atoms = _with_ion(x, molecule, ion, rng, amplitude)
        axis = molecule.positions[1] / np.linalg.norm(molecule.positions[1])
        out.append(finish(atoms, _sn2_info(x, y, sn2_xi(atoms), config_type="sn2_contact",
                                           rattle=amplitude, ion_distance=ion_distance(atoms),
                                           angle=_angle(ion, axis), h_distance=d)))
    return out


# per 8 isolated fragments: 3 CH3Cl, 3 CH3Br (rattled), 1 Cl⁻, 1 Br⁻ (one atom: one energy)
ISOLATED = ("CH3Cl", "CH3Br", "CH3Cl", "CH3Br", "CH3Cl", "CH3Br", "Cl", "Br")


def isolated_fragments(n: int, seed=0, rattle: float | tuple[float, float] = (0.0, 0.05),
                       optimise: bool = True) -> list[Atoms]:
    """``n`` separated SN2 fragments, cycling through `ISOLATED`: the methyl halides (charge 0,
    rattled by ``rattle`` Å as `sn2_structures`) and the free halides (charge −1). Their own
    random stream (``seed``, 25), so appending them changes no other structure. Tags:
    ``config_type`` ``sn2_isolated``, ``fragment``, ``total_charge``, ``rattle``."""
    rng = _appended_rng(seed, 25)
    out = []
    for k in range(n):
        name = ISOLATED[k % len(ISOLATED)]
        if name.startswith("CH3"):
            atoms = methyl_halide(name[3:], optimise)
            amplitude = _amplitude(rng, rattle)
            atoms.positions += rng.normal(0.0, amplitude, atoms.positions.shape)
            charge = 0
        else:
            atoms, amplitude, charge = Atoms(name, positions=[[0.0, 0.0, 0.0]]), 0.0, -1
        out.append(finish(atoms, {"config_type": "sn2_isolated", "system": "sn2",
                                  "fragment": name + ("-" if charge else ""),
                                  "total_charge": charge, "rattle": amplitude}))
    return out
