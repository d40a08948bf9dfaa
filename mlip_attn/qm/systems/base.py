"""The contract of a reference system (register it in `mlip_attn.registry.REFERENCE_SYSTEMS`),
and the helpers the recipes share (xTB optimisation, chain distortions, tags, plots).

A reference system is a class with a no-argument constructor::

    @REFERENCE_SYSTEMS.register("my-system", summary="one line for `mlip-attn components`")
    class MySystem(ReferenceSystem):
        protocols = {"default": Protocol("what it tests", n=600)}
        def structures(self, n: int, seed: int = 0, **options) -> list[Atoms]: ...
        def analysis(self, out: Path, calculators: dict, protocol: str) -> dict: ...

`structures` returns unlabelled `ase.Atoms` (no calculator, not periodic unless the system
is) with ``info`` tags: ``config_type``, ``system``, ``total_charge`` (e) and the recipe's own
(chain length, torsion, …). It is a pure function of its arguments and the seed, so a
resumed labelling run sees the same structures. ``mlip-attn data <name>`` labels them with
one of ``methods``; ``mlip-attn benchmark longrange --system <name> [--protocol P]`` trains
every variant of a `Protocol`, tests them on its held-out sets and then calls `analysis` with
one ASE calculator per variant, which writes the system's plots into ``out`` and returns its
numbers.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from ase import Atoms

# electronic temperature of the xTB optimisations (recorded in the geometry recipes)
OPT_ELECTRONIC_TEMPERATURE = 300.0


@dataclass(frozen=True)
class HeldOut:
    """A test set no variant is trained on: ``n`` structures of `ReferenceSystem.structures`
    with ``options`` (other chain lengths, distortions, …) and their own ``seed``."""

    n: int
    options: dict = field(default_factory=dict)
    seed: int = 1000


@dataclass(frozen=True)
class Protocol:
    """How the long-range benchmark trains and tests on a system.

    Data: ``n`` structures made with ``data`` options, split into ``valid``/``test`` fractions
    and the rest for training, plus ``held_out`` test sets made separately. Models:
    ``backbone`` options shared by every variant (cutoff, layers, lmax …); ``variants`` maps a
    name to its attention config (None: the local model; default: local and every attention
    preset); widths are matched to the parameter count of ``reference`` at ``width`` (±5 %).
    A global block with a reach gets ``r_max`` = ``reach_factor`` × the largest *training*
    structure (held-out sets play no part) unless its config sets one. ``training``: overrides of the training settings every variant shares
    (epochs, batch_size, lr, scheduler, energy_weight …).
    """

    description: str
    n: int
    data: dict = field(default_factory=dict)
    valid: float = 0.1
    test: float = 0.1
    held_out: dict = field(default_factory=dict)
    backbone: dict = field(default_factory=lambda: {"backbone": "painn", "cutoff": 4.0,
                                                    "layers": 2, "num_basis": 16})
    variants: dict | None = None
    width: int = 32
    reference: str = "efa-l1"
    training: dict = field(default_factory=dict)
    reach_factor: float = 1.5

    def plus(self, description: str, **data) -> "Protocol":
        """This protocol with more ``data`` options (recipes append their structures after the
        ones they make now, so a labelled file resumes) and ``description`` appended."""
        return replace(self, description=f"{self.description}; {description}",
                       data={**self.data, **data})


class ReferenceSystem:
    """Base class of the reference systems (see the module docstring).

    methods: the reference methods it can be labelled with, the default first.
    default_n: structures `mlip-attn data` makes by default.
    protocols: the long-range benchmark's `Protocol`s by name ("default" when none is named).
    card_description, card_limits: what a model card of a potential trained on it says.
    """

    methods: tuple[str, ...] = ("gfn2-xtb", "gfn1-xtb", "pyscf-b3lyp")
    default_n: int = 200
    protocols: dict = {}
    card_description: str = ""
    card_limits: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return type(self).registered_name

    def structures(self, n: int, seed: int = 0, **options) -> list[Atoms]:
        raise NotImplementedError

    def analysis(self, out: Path, calculators: dict, protocol: str) -> dict:
        """Plots and numbers of the trained variants (``calculators``: name → ASE calculator)
        on the system's own tests (a profile, a held-out length …); written into ``out``."""
        return {}

    def card_findings(self, analysis: dict, variant: str) -> list[str]:
        """Lines for the model card of ``variant`` from what `analysis` returned (one bullet
        each under "## Findings": barriers of unseen lengths, errors by distance …)."""
        return []


# ------------------------------------------------------------------ shared recipe helpers

def make_rng(seed) -> np.random.Generator:
    """A generator from an int seed (or the generator itself)."""
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)


def xtb_energy(atoms: Atoms, charge: int | None = None,
               electronic_temperature: float = OPT_ELECTRONIC_TEMPERATURE) -> float:
    """GFN2-xTB total energy (eV) of ``atoms`` (charge from ``info['total_charge']``),
    single-threaded, with the SCF fallback ladder of `mlip_attn.qm.methods.xtb_energy_forces`."""
    from ..methods import xtb_energy_forces

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

    from ..methods import xtb_energy_forces

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


def xtb_optimise(atoms: Atoms, charge: int, fmax: float, steps: int,
             electronic_temperature: float = OPT_ELECTRONIC_TEMPERATURE) -> Atoms:
    """Optimise a copy of ``atoms`` (constraints kept) with GFN2-xTB and BFGS."""
    from ase.optimize import BFGS

    from ..threads import single_thread_openmp

    a = atoms.copy()
    a.calc = _restart_safe_xtb(charge, electronic_temperature)
    with single_thread_openmp():
        opt = BFGS(a, logfile=None, maxstep=0.1)
        opt.run(fmax=fmax, steps=steps)
    a.calc = None
    return a


def distort_chain(atoms: Atoms, rng: np.random.Generator, rattle: float, bend: float = 0.0,
                  stretch: float = 0.0) -> Atoms:
    """A copy of a chain molecule with the distortions MD visits: a uniform stretch along the
    C…C axis by a factor in [1 − stretch, 1 + stretch], a smooth transverse bend (the first two
    bending modes, sin(πs) and sin(2πs) of the fractional position s along the axis, each with
    an amplitude up to ``bend`` Å in a random direction), and an isotropic Gaussian rattle of
    ``rattle`` Å per component."""
    out = atoms.copy()
    c = np.where(atoms.numbers == 6)[0]
    origin = atoms.positions[c[0]]
    axis = atoms.positions[c[-1]] - origin
    length = float(np.linalg.norm(axis))
    axis /= length
    p = atoms.positions - origin
    along = p @ axis
    if stretch:
        p = p + (float(rng.uniform(-stretch, stretch)) * along)[:, None] * axis
    if bend:
        frac = np.clip(along / length, 0.0, 1.0)
        for mode in (1, 2):
            d = rng.normal(size=3)
            d -= (d @ axis) * axis
            d /= np.linalg.norm(d)
            p = p + float(rng.uniform(-bend, bend)) * np.sin(mode * np.pi * frac)[:, None] * d
    out.positions = origin + p + rng.normal(0.0, rattle, p.shape)
    return out


def finish(atoms: Atoms, info: dict) -> Atoms:
    """A clean, non-periodic copy of ``atoms`` (no calculator, no constraints) tagged ``info``."""
    out = Atoms(numbers=atoms.numbers, positions=atoms.positions.copy())
    out.pbc = False
    out.info.update(info)
    return out


# ------------------------------------------------------------------ shared analysis helpers

def label(structures, path: Path) -> list[Atoms]:
    """``structures`` labelled with GFN2-xTB into ``path`` (resumable), in input order."""
    import ase.io

    from ..labelling import label_structures
    label_structures(structures, str(path), progress=False)
    frames = ase.io.read(path, ":")
    frames.sort(key=lambda a: int(a.info["index"]))
    return frames


def attach(atoms: Atoms, calc) -> Atoms:
    """A copy of the recipe's (or labelled) ``atoms`` with ``calc`` attached and the total
    charge where `AttnCalculator` reads it (``info['charge']``, from ``info['total_charge']``):
    without it a charged structure would be evaluated as neutral."""
    out = atoms.copy()
    if "total_charge" in out.info:
        out.info["charge"] = out.info["total_charge"]
    out.calc = calc
    return out


def energies(calc, frames) -> np.ndarray:
    """Energies (eV) of ``frames`` from an ASE calculator, at each frame's total charge."""
    return np.array([attach(a, calc).get_potential_energy() for a in frames])


def plot(path: Path, xlabel: str, ylabel: str, curves: dict, title: str) -> None:
    """Line plot of ``curves`` (label → (x, y)); labels starting 'reference' are drawn bold."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for name, (x, y) in curves.items():
        style = dict(color="black", lw=2.5) if name.startswith("reference") else dict(marker="o", ms=3)
        ax.plot(x, y, label=name, **style)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_panels(path: Path, panels: dict, xlabel: str, ylabel: str) -> None:
    """One panel per entry of ``panels`` (title → {label: (x, y)}); 'reference' curves bold."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    k = len(panels)
    fig, axes = plt.subplots(1, k, figsize=(3.6 * k, 3.4), squeeze=False)
    for ax, (title, curves) in zip(axes[0], panels.items()):
        for name, (x, y) in curves.items():
            style = (dict(color="black", lw=2.5) if name.startswith("reference")
                     else dict(marker="o", ms=3))
            ax.plot(x, y, label=name, **style)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
    axes[0][0].set_ylabel(ylabel)
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


__all__ = ["HeldOut", "Protocol", "ReferenceSystem", "OPT_ELECTRONIC_TEMPERATURE", "make_rng",
           "xtb_energy", "xtb_optimise", "distort_chain", "finish", "label", "attach", "energies", "plot",
           "plot_panels"]
