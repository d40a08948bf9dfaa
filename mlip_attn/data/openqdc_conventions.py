"""What each openQDC dataset stores and how it must be read: units, force sign and factor, which
energy methods have forces, the energies dtype, where ``preprocess`` puts the files.

openQDC writes none of this to disk: its dataset *classes* carry it. ``openqdc_table.json`` is
generated from openQDC's own classes by ``scripts/make_openqdc_goldens.py`` (openqdc 0.1.2,
``openqdc.datasets.AVAILABLE_DATASETS``); this module adds what that table cannot hold:

* **force sign** (``force_sign``): SPICE, SpiceV2 and SpiceVL2 store the *gradient*
  ``dft_total_gradient`` and openQDC's ``convert_forces`` negates it on load; we negate too.
  tests/test_openqdc_goldens.py checks it against openQDC and against physics (along SPICE's
  Na+ / acetylene scan the energy change equals minus the work of the imported forces).
* **force factor** (``force_factor``): openQDC multiplies ANI-1x's forces by 0.529177249
  ("correct the Dataset error"). We do not: the stored ANI-1x forces are hartree/Å as the class
  declares: ``benchmarks/ani1x_force_units.py`` recomputes a conformer of the ANI-1x release
  at its level of theory (ωB97x/6-31G(d), PySCF); the stored forces read as hartree/Å match
  (least-squares ratio 1.0003), read as hartree/bohr they would be 1.89x too large, and with
  openQDC's factor 0.53x too small. See docs/openqdc.md for what this does not cover.
* **what the charge column means** (``charge_column``): formal charges per atom (their sum is
  the total charge; zero where the source records none), the monomer's charge repeated on each
  of its atoms (interaction datasets: total = monomer A + monomer B), or core-electron counts
  (PubChemQC: not a charge at all).
* **name converters** of openQDC's main branch (newer than 0.1.2) for ANI-1x and ANI-1ccx, and
  the two classes only on its main branch (BPA, MACEOFF), read from its source.
"""
from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Optional


_TABLE = json.loads(resources.files(__package__).joinpath("openqdc_table.json").read_text())
OPENQDC_VERSION = _TABLE["openqdc_version"]
UNIT_FACTORS = _TABLE["unit_factors"]

__all__ = ["Conventions", "DATASETS", "OPENQDC_VERSION", "UNIT_FACTORS", "conventions_for",
           "atom_energies"]

_WB97M = "wb97m-d3(bj)/def2-tzvppd"
# classes on openQDC's main branch but not in 0.1.2 (openqdc/datasets/potential/bpa.py, maceoff.py)
_MAIN_ONLY = {
    "bpa": dict(openqdc_class="BPA", energy_unit="ev", distance_unit="ang", force_unit="ev/ang",
                energy_methods=("wb97x/6-31g*",), force_mask=(True,), energies_dtype="float64",
                openqdc_force_factor=1.0, interaction=False, name_converter=None,
                layout="BPA/preprocessed"),
    "maceoff": dict(openqdc_class="MACEOFF", energy_unit="ev", distance_unit="ang",
                    force_unit="ev/ang", energy_methods=(_WB97M,), force_mask=(True,),
                    energies_dtype="float64", openqdc_force_factor=1.0, interaction=False,
                    name_converter=None, layout="maceoff/preprocessed"),
}
# openQDC main-branch __smiles_converter__ (0.1.2 returned the raw bytes for these two)
_NAME_CONVERTERS = {"ani1x": ("-", "-"), "ani1ccx": ("decode", ""), "ani1ccx_v2": ("decode", "")}
_CHARGE_COLUMN = {"pubchemqc_pm6": "core_electrons", "pubchemqc_b3lyp": "core_electrons",
                  "sn2_rxn": "zeros"}
# where we deliberately differ from openQDC's convert_forces, and why (see the module docstring)
_FORCE_FACTOR = {"ani1x": 1.0}
_NOTES = {
    "sn2_rxn": "openQDC's SN2RXN preprocessing stores no charges (the formal-charge column is "
               "all zero, the source's total charge is dropped), so every structure gets charge 0",
    "pubchemqc_pm6": "openQDC's PubChemQC stores core-electron counts, not formal charges, in "
                     "atomic_inputs column 1; total charges are set to 0",
    "ani1x": "openQDC multiplies ANI-1x forces by 0.529177249 on load; mlip-attn does not (the "
             "stored numbers are hartree/Å, checked against a recomputed conformer)",
}
_NOTES["pubchemqc_b3lyp"] = _NOTES["pubchemqc_pm6"]


@dataclass(frozen=True)
class Conventions:
    """How to read one openQDC dataset (directory name ``name``) into eV, Å, eV/Å."""

    name: str
    openqdc_class: str
    energy_unit: str
    distance_unit: str
    force_unit: str
    energy_methods: tuple
    force_mask: tuple                 # per energy method: does forces.mmap have its column?
    energies_dtype: str               # float64 or float32 (interaction, NablaDFT, PubChemQC)
    force_sign: float = 1.0           # -1: the file holds energy gradients
    force_factor: float = 1.0         # extra factor besides units (1.0 everywhere we agree)
    openqdc_force_factor: float = 1.0  # what openQDC's convert_forces multiplies by
    interaction: bool = False         # energies are interaction energies, n_atoms_ptr present
    name_converter: Optional[tuple] = None
    layout: str = ""                  # where openQDC's preprocess writes, under its cache
    charge_column: str = "formal"     # formal | monomer | core_electrons | zeros
    note: str = ""
    known: bool = True
    extra: dict = field(default_factory=dict)

    @property
    def force_methods(self) -> tuple:
        return tuple(m for m, has in zip(self.energy_methods, self.force_mask) if has)

    def force_column(self, method_index: int) -> Optional[int]:
        """Column of forces.mmap holding ``energy_methods[method_index]``'s forces, or None."""
        if not self.force_mask[method_index]:
            return None
        return sum(self.force_mask[:method_index])

    def method_index(self, method) -> int:
        """An energy method given by name (case-insensitive) or index -> its index."""
        if isinstance(method, str) and not method.strip().lstrip("-").isdigit():
            lowered = [m.lower() for m in self.energy_methods]
            if method.lower() not in lowered:
                raise KeyError(f"unknown energy method '{method}' for {self.name} "
                               f"(known: {list(self.energy_methods)})")
            return lowered.index(method.lower())
        return int(method)


def _build() -> dict:
    out = {}
    for name, entry in {**_TABLE["datasets"], **_MAIN_ONLY}.items():
        entry = dict(entry)
        entry["energy_methods"] = tuple(entry["energy_methods"])
        entry["force_mask"] = tuple(entry["force_mask"])
        if entry["name_converter"] is not None:
            entry["name_converter"] = tuple(entry["name_converter"])
        openqdc_factor = entry.pop("openqdc_force_factor")
        sign = -1.0 if openqdc_factor < 0 else 1.0
        factor = _FORCE_FACTOR.get(name, abs(openqdc_factor))
        charge = "monomer" if entry["interaction"] else _CHARGE_COLUMN.get(name, "formal")
        entry["name_converter"] = _NAME_CONVERTERS.get(name, entry["name_converter"])
        note = _NOTES.get(name, "") or (
            f"openQDC's {entry['openqdc_class']} holds interaction energies "
            f"(E_AB - E_A - E_B), written as REF_energy: do not train a potential on them as "
            f"total energies" if entry["interaction"] else "")
        out[name] = Conventions(name=name, force_sign=sign, force_factor=factor,
                                openqdc_force_factor=openqdc_factor, charge_column=charge,
                                note=note, **entry)
    return out


DATASETS: dict[str, Conventions] = _build()


def conventions_for(name: str) -> Optional[Conventions]:
    """The conventions of openQDC dataset ``name`` (its directory name, case-insensitive)."""
    return DATASETS.get(str(name).lower())


@lru_cache(maxsize=None)
def _atom_energy_tables() -> dict:
    blob = resources.files(__package__).joinpath("openqdc_atom_energies.json.gz").read_bytes()
    return json.loads(gzip.decompress(blob))


def atom_energies(method: str) -> Optional[dict]:
    """openQDC's isolated-atom energies for ``method`` (hartree), ``{(Z, charge): energy}``, as
    its ``energy_type="formation"`` subtracts them (openqdc/methods/atom_energies.txt); None
    when openQDC has no table for the method (it then subtracts zeros)."""
    rows = _atom_energy_tables().get(str(method))
    if not rows:
        return None
    return {(int(z), int(q)): float(e) for z, q, e in rows}


def markdown_table() -> str:
    """The table as markdown (``python -m mlip_attn.data.openqdc_conventions``)."""
    rows = ["| dataset (folder) | openQDC class | energy | distance | forces | methods "
            "(with forces) | energies | force transform | charge column |",
            "|---|---|---|---|---|---|---|---|---|"]
    for c in DATASETS.values():
        force = "-" if not any(c.force_mask) else (
            ("-gradient" if c.force_sign < 0 else "as stored")
            + (f" (openQDC: x{c.openqdc_force_factor:g})"
               if c.openqdc_force_factor != c.force_sign * c.force_factor else ""))
        rows.append(f"| {c.name} (`{c.layout}`) | {c.openqdc_class} | {c.energy_unit} | "
                    f"{c.distance_unit} | {c.force_unit if any(c.force_mask) else '-'} | "
                    f"{len(c.energy_methods)} ({sum(c.force_mask)}) | {c.energies_dtype}"
                    f"{' interaction' if c.interaction else ''} | {force} | {c.charge_column} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
