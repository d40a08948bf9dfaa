"""Reference methods: GFN2-/GFN1-xTB (tblite), B3LYP/def2-SVP (PySCF), the analytic NaCl toy.

`compute_label` gives the energy (eV) and forces (eV/Å) of one structure; `method_metadata`
the strings recorded with every labelled frame. xTB runs single-threaded (see
`mlip_attn.qm.threads`) and walks `XTB_SCF_LADDER` when an SCF fails.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
from ase import Atoms

from . import rigid_ion
from .analytic import REF_METHOD, REF_SETTINGS, nacl_energy_forces
from .threads import single_thread_openmp

METHODS = ("gfn2-xtb", "gfn1-xtb", "pyscf-b3lyp", "nacl-analytic", "rigid-ion-ewald",
           "gfn1-xtb-pbc", "gfn2-xtb-pbc")
# methods for periodic cells: `compute_periodic_label` (energy, forces and stress); the xTB
# ones are tblite's periodic GFN1/GFN2 (Ewald electrostatics, Γ-point), one thread
PERIODIC_METHODS = ("rigid-ion-ewald", "gfn1-xtb-pbc", "gfn2-xtb-pbc")

PYSCF_HINT = ("the 'pyscf-b3lyp' method needs PySCF: pip install 'mlip-attn[qm]' "
              "(or pip install pyscf)")


def _tblite_version() -> str:
    try:
        from importlib.metadata import version

        return version("tblite")
    except Exception:  # pragma: no cover
        return "unknown"


def method_metadata(method: str, electronic_temperature: float = 300.0,
                    accuracy: float = 1.0, smearing: float | None = None) -> tuple[str, str]:
    """(ref_method, ref_settings) strings recorded on every frame."""
    method = method.lower()
    if method in ("gfn1-xtb-pbc", "gfn2-xtb-pbc"):
        name = "GFN2-xTB" if method.startswith("gfn2") else "GFN1-xTB"
        return name + " (periodic)", (f"tblite {_tblite_version()}; periodic cell, Γ point; "
                                      f"electronic_temperature={electronic_temperature:g} K; "
                                      f"accuracy={accuracy:g}; SCF retries: eeq guess / "
                                      "mixer damping")
    if method in ("gfn2-xtb", "gfn1-xtb"):
        name = "GFN2-xTB" if method == "gfn2-xtb" else "GFN1-xTB"
        return name, (f"tblite {_tblite_version()}; electronic_temperature="
                      f"{electronic_temperature:g} K; accuracy={accuracy:g}; "
                      "SCF retries: eeq guess / mixer damping")
    if method == "pyscf-b3lyp":
        try:
            from importlib.metadata import version

            v = version("pyscf")
        except Exception:
            v = "unknown"
        sm = f"fermi smearing {smearing:g} Ha" if smearing else "no smearing"
        return "B3LYP/def2-SVP", f"pyscf {v}; density fitting def2-universal-jkfit; {sm}"
    if method == "nacl-analytic":
        return REF_METHOD, REF_SETTINGS
    if method == "rigid-ion-ewald":
        return rigid_ion.REF_METHOD, rigid_ion.REF_SETTINGS
    raise ValueError(f"unknown method {method!r}; choose from {METHODS}")


# SCF settings tried in turn for xTB (same fixed point, only the route changes). Seen:
# Br- + CH3Br at > 5 A, where Broyden mixing from the SAD guess oscillates. A
# non-converging SCF with tblite's defaults costs ~0.5 s (its Broyden history length equals
# max_iterations), so the first attempt stops at 100 iterations (converging cases here
# need < 60, and their iterations are identical to the defaults); tblite's exact defaults
# (250 iterations) are still tried before the last resort.
XTB_SCF_LADDER: tuple[dict, ...] = (
    {"max_iterations": 100},
    {"mixer_damping": 0.1, "mixer_memory": 40},
    {"guess": "eeq", "mixer_memory": 40},
    {},
    {"mixer_damping": 0.05, "guess": "eeq", "max_iterations": 500, "mixer_memory": 40},
)


_TBLITE_CLASS = None


def _single_thread_tblite_class():
    """tblite.ase.TBLite whose calculations run with one OpenMP thread (restored after)."""
    global _TBLITE_CLASS
    if _TBLITE_CLASS is None:
        from tblite.ase import TBLite

        class SingleThreadTBLite(TBLite):
            def calculate(self, *args, **kwargs):
                with single_thread_openmp():
                    return super().calculate(*args, **kwargs)

        _TBLITE_CLASS = SingleThreadTBLite
    return _TBLITE_CLASS


def make_calculator(method: str = "gfn2-xtb", charge: int = 0, multiplicity: int | None = None,
                    electronic_temperature: float = 300.0, accuracy: float = 1.0,
                    max_iterations: int = 250, **tblite_kwargs):
    """ASE calculator for the xTB methods: ``tblite.ase.TBLite`` that computes with one
    OpenMP thread (see :func:`single_thread_openmp`). ``charge`` in e; ``multiplicity``
    2S+1 or None (tblite's default: closed shell / from initial magnetic moments).
    Extra keyword arguments go to ``tblite.ase.TBLite`` (e.g. ``guess``, ``mixer_damping``)."""
    method = method.lower()
    if method not in ("gfn2-xtb", "gfn1-xtb"):
        raise ValueError(f"make_calculator supports gfn2-xtb/gfn1-xtb, not {method!r}")
    return _single_thread_tblite_class()(method="GFN2-xTB" if method == "gfn2-xtb" else "GFN1-xTB",
                  charge=int(charge), multiplicity=multiplicity,
                  electronic_temperature=float(electronic_temperature),
                  accuracy=float(accuracy), max_iterations=int(max_iterations), verbosity=0,
                  **tblite_kwargs)


def xtb_energy_forces(numbers, positions, charge: int = 0, multiplicity: int | None = None,
                      method: str = "gfn2-xtb", electronic_temperature: float = 300.0,
                      accuracy: float = 1.0, factory: Callable[..., Any] | None = None,
                      calc=None) -> tuple[float, np.ndarray, Any]:
    """xTB energy (eV) and forces (eV/A), single-threaded, walking ``XTB_SCF_LADDER`` when
    the SCF fails. ``calc``: a calculator to try first (e.g. the previous optimisation
    step's, which restarts from its density). Returns (energy, forces, calculator used)."""
    from ase.calculators.calculator import CalculationFailed

    factory = factory or _calculator_factory
    err: Exception | None = None
    attempts = ([calc] if calc is not None else []) + list(XTB_SCF_LADDER)
    for att in attempts:
        if isinstance(att, dict):
            att = factory(method, charge=charge, multiplicity=multiplicity,
                          electronic_temperature=electronic_temperature, accuracy=accuracy,
                          **att)
        a = Atoms(numbers=numbers, positions=positions)
        a.calc = att
        try:
            with single_thread_openmp():
                e = float(a.get_potential_energy())
                f = np.array(a.get_forces(), dtype=float)
            return e, f, att
        except CalculationFailed as exc:
            err = exc
    assert err is not None
    raise err


def _pyscf_energy_forces(numbers, positions, charge: int, multiplicity: int | None,
                         smearing: float | None) -> tuple[float, np.ndarray]:
    try:
        from pyscf import dft, gto
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(PYSCF_HINT) from e
    from ase.data import chemical_symbols
    from ase.units import Bohr, Hartree

    nelec = int(np.sum(numbers)) - int(charge)
    spin = (multiplicity - 1) if multiplicity else nelec % 2
    mol = gto.M(atom=[(chemical_symbols[z], tuple(p)) for z, p in zip(numbers, positions)],
                unit="Angstrom", basis="def2-svp", charge=int(charge), spin=int(spin),
                verbose=0)
    mf = dft.RKS(mol) if spin == 0 else dft.UKS(mol)
    mf.xc = "b3lyp"
    mf = mf.density_fit(auxbasis="def2-universal-jkfit")
    mf.conv_tol = 1e-9
    mf.max_cycle = 200
    if smearing:
        from pyscf.scf import addons

        mf = addons.smearing_(mf, sigma=float(smearing), method="fermi")
    mf.kernel()
    if not mf.converged:
        raise RuntimeError("PySCF SCF did not converge")
    # with smearing the variational quantity is the Mermin free energy
    e = float(getattr(mf, "e_free", mf.e_tot)) if smearing else float(mf.e_tot)
    grad = mf.nuc_grad_method().kernel()
    return e * Hartree, -np.asarray(grad) * Hartree / Bohr


def compute_label(numbers: np.ndarray, positions: np.ndarray, charge: int = 0,
                  multiplicity: int | None = None, method: str = "gfn2-xtb",
                  electronic_temperature: float = 300.0, accuracy: float = 1.0,
                  smearing: float | None = None) -> tuple[float, np.ndarray]:
    """Energy (eV) and forces (eV/A) of one structure with the reference method."""
    method = method.lower()
    if method in ("gfn2-xtb", "gfn1-xtb"):
        e, f, _ = xtb_energy_forces(numbers, positions, charge, multiplicity, method,
                                    electronic_temperature, accuracy)
        return e, f
    if method == "pyscf-b3lyp":
        return _pyscf_energy_forces(numbers, positions, charge, multiplicity, smearing)
    if method == "nacl-analytic":
        return nacl_energy_forces(positions, numbers)
    raise ValueError(f"unknown method {method!r}; choose from {METHODS}")




# indirection so tests (and users) can swap the calculator in the calling process
_calculator_factory: Callable[..., Any] = make_calculator


def compute_periodic_label(numbers: np.ndarray, positions: np.ndarray, cell: np.ndarray,
                           method: str, charge: int = 0) -> tuple[float, np.ndarray, np.ndarray]:
    """Energy (eV), forces (N, 3) eV/Å and stress (3, 3) eV/Å³ of one periodic cell (rows of
    ``cell`` are lattice vectors, Å; ``charge`` e, xTB only) with a method of
    `PERIODIC_METHODS`."""
    method = method.lower()
    if method == "rigid-ion-ewald":
        return rigid_ion.salt_energy_forces_stress(positions, numbers, cell)
    if method in ("gfn1-xtb-pbc", "gfn2-xtb-pbc"):
        return xtb_periodic_label(numbers, positions, cell, method[:8], charge)
    raise ValueError(f"method {method!r} does not label periodic cells; choose from "
                     f"{PERIODIC_METHODS}")


def xtb_periodic_label(numbers, positions, cell, method: str = "gfn1-xtb", charge: int = 0
                       ) -> tuple[float, np.ndarray, np.ndarray]:
    """tblite GFN1/GFN2-xTB of a fully periodic cell: energy (eV), forces (eV/Å) and stress
    (3, 3) eV/Å³ (ASE sign: (1/V) dE/dε), single-threaded, walking ``XTB_SCF_LADDER``."""
    from ase.calculators.calculator import CalculationFailed
    from ase.stress import voigt_6_to_full_3x3_stress
    err: Exception | None = None
    for settings in XTB_SCF_LADDER:
        atoms = Atoms(numbers=numbers, positions=positions, cell=cell, pbc=True)
        atoms.calc = _calculator_factory(method, charge=charge, **settings)
        try:
            with single_thread_openmp():
                e = float(atoms.get_potential_energy())
                f = np.array(atoms.get_forces(), dtype=float)
                stress = voigt_6_to_full_3x3_stress(atoms.get_stress())
            return e, f, np.asarray(stress, dtype=float)
        except CalculationFailed as exc:
            err = exc
    assert err is not None
    raise err
