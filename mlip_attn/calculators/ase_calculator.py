"""`AttnCalculator`: an ASE calculator for mlip-attn model files.

Results: ``energy``/``free_energy`` (eV), ``energies`` (N,) eV, ``forces`` (N,3) eV/Å, ``stress``
(Voigt-6 ``[xx, yy, zz, yz, xz, xy]``, eV/Å³, periodic cells only). Total charge and spin come
from ``atoms.info["charge"]`` and ``atoms.info["spin"]`` (ASE's keys), else from the data files'
``total_charge`` and ``total_spin``, else 0; where both are set and disagree, ``charge``/``spin``
win and a warning says so. With several model files
(a committee) the results are means and ``energy_var``/``forces_comm`` are added. Model files
with a recorded domain (`mlip_attn.models.domain`: written by `fit`, or added by
``mlip-attn analyze domain``) add ``atom_uncertainty`` (N,), each atom's feature-space novelty
over its element's threshold (the largest over a committee), and ``uncertainty``, its maximum;
above 1 a `DomainWarning` names the atoms.
"""
from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import torch
from ase.calculators.calculator import CalculationFailed, Calculator, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from ..data import AtomicData, Batch, LabelKeys
from ..data.atomic_data import check_elements
from ..data.neighbours import VerletList
from ..data.statistics import describe_seen, outside_seen
from ..models import Potential, load_model
from ..models.domain import novelty_scores, unseen_environments
from ..models.model_file import resolve_dtype
from ..threads import configure as configure_threads, threads_for_call

_INPUT_KEYS = LabelKeys(charge="charge", spin="spin")


class RangeWarning(UserWarning):
    """A structure larger than the global attention's reach r_max."""


class DomainWarning(UserWarning):
    """A structure outside what the model was trained on: an interatomic distance shorter than
    any in training, a composition outside the span its per-element energies were fit on, a
    bonded environment never seen in training, atoms whose features are far from the training
    atoms' (novelty ``uncertainty`` > 1), or a charged structure whose atoms form groups
    farther apart than the model's reach (where the charge sits is then decided by a rule, or,
    in physics 1, spread over every atom)."""


# a distance this much below the training set's shortest warns (held-out structures of the
# training distribution dip a little below it)
SHORT_DISTANCE_MARGIN = 0.95


class ChargeWarning(UserWarning):
    """A total charge or spin outside what the model saw in training."""


class AttnCalculator(Calculator):
    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress"]

    def __init__(self, model, device: str = "cpu", default_dtype: str = "float32",
                 range_check: str = "warn", skin: float = 1.0, charge_check: str = "warn",
                 threads: int | None = None, **kwargs):
        """``model``: path, `Potential`, or a list of either (committee).
        ``range_check``: "warn" or "raise" when a structure exceeds a global model's r_max.
        ``charge_check``: "warn" (`ChargeWarning`) or "raise" when a structure's total charge
        or spin lies outside those the model was trained on (recorded in model files written
        by `fit`; older files are not checked).
        ``skin`` (Å): the neighbour list holds pairs within cutoff + skin and is searched again
        only after an atom has moved more than skin / 2 (results are the same; 0 searches
        every call).
        ``threads``: a fixed CPU thread count, for the whole process (torch has one setting);
        None applies the package's policy (`mlip_attn.threads`): before each calculation, one
        thread for a small structure, else the CPUs this process may use that other jobs do
        not keep busy."""
        super().__init__(**kwargs)
        configure_threads(threads)
        if range_check not in ("warn", "raise"):
            raise ValueError(f"range_check must be 'warn' or 'raise', got {range_check!r}")
        if charge_check not in ("warn", "raise"):
            raise ValueError(f"charge_check must be 'warn' or 'raise', got {charge_check!r}")
        self.charge_check = charge_check
        dtype = resolve_dtype(default_dtype, "default_dtype")
        models = model if isinstance(model, (list, tuple)) else [model]
        self.models: list[Potential] = []
        for m in models:
            if isinstance(m, (str, Path)):
                # inference only: frozen weights let the backward skip their gradients
                m = load_model(m, device=device, dtype=dtype).requires_grad_(False)
            else:
                m = m.to(device=device, dtype=dtype).eval()
            self.models.append(m)
        first = self.models[0]
        for m in self.models[1:]:
            if m.elements != first.elements or m.cutoff != first.cutoff:
                raise ValueError("committee models must share elements and cutoff")
        self.device, self.dtype, self.range_check = torch.device(device), dtype, range_check
        self.neighbours = VerletList(skin)
        self.cutoff = max(m.cutoff for m in self.models)
        # a structure larger than a block's reach is only a problem for forms that are not
        # separable (EFA's Lebedev sums alias beyond r_max); separable forms (physics 2) simply
        # see no interaction there, so their reach gives no range warning
        self.r_max = max((m.r_max for m in self.models if not math.isfinite(m.separation)),
                         default=0.0)
        self.elements = set(first.elements)
        self.is_global = any(m.is_global for m in self.models)
        self.periodic = all(m.periodic for m in self.models)
        if not all(m.conservative for m in self.models):
            warnings.warn("this model predicts forces with a direct head: they are not -dE/dr, "
                          "so MD does not conserve energy", UserWarning, stacklevel=2)
        if not all(getattr(m, "smooth", True) for m in self.models):
            warnings.warn("this model uses bond-graph encoders (topological/laplacian): its "
                          "energy jumps when a bond forms or breaks, so forces are not the "
                          "gradient of a continuous energy there; it is a property model, not a "
                          "force field (model file: force_field_safe = false)", UserWarning,
                          stacklevel=2)
        if not all(m.invariant for m in self.models):
            warnings.warn("this model embeds raw coordinates: its predictions depend on the "
                          "orientation of the structure", UserWarning, stacklevel=2)

    def check_state(self, atoms, tol=1e-15):
        changes = super().check_state(atoms, tol)
        if self.atoms is not None:
            for key in ("charge", "spin", "total_charge", "total_spin"):
                if atoms.info.get(key) != self.atoms.info.get(key):   # set, unset or changed
                    changes.append("info")
                    break
        return changes

    def _input(self, atoms) -> Batch:
        check_elements(atoms.numbers, self.elements, "atoms")
        data = AtomicData.from_atoms(atoms, _INPUT_KEYS, name="atoms").validate()
        self._check_range(data)
        self._check_charge_spin(data)
        self._check_domain(data)
        return Batch.collate([data.with_graph(self.cutoff, self.neighbours)]).to(self.device,
                                                                             self.dtype)

    def _check_range(self, data: AtomicData) -> None:
        if data.is_periodic and not self.periodic:
            raise ValueError("this model has global attention, which does not support periodic "
                             "cells yet; use a local model for periodic systems")
        extent = data.extent if self.r_max > 0 else 0.0
        if extent > self.r_max > 0:
            msg = (f"structure extent {extent:.2f} Å exceeds the model's global reach r_max = "
                   f"{self.r_max:g} Å; predictions may depend on orientation")
            if self.range_check == "raise":
                raise ValueError(msg)
            warnings.warn(msg, RangeWarning, stacklevel=3)

    def _check_domain(self, data: AtomicData) -> None:
        """`DomainWarning`s (see the class); checks whose training record is missing from the
        model file (files written before it) are skipped."""
        from ..data.statistics import outside_composition_span, shortest_distance
        problems = []
        for m in self.models:
            shortest = m.metadata.get("training_min_distance")
            if shortest is not None:
                d = shortest_distance(data.positions, data.cell, data.pbc)
                if d < SHORT_DISTANCE_MARGIN * shortest:
                    problems.append(f"an interatomic distance of {d:.3f} Å, shorter than any in "
                                    f"training ({shortest:.3f} Å)")
            span = m.metadata.get("training_composition_span")
            if span and outside_composition_span(data.numbers, span):
                problems.append("a composition outside the span of the training compositions "
                                "(the per-element energies E0 are extrapolated)")
            record = m.metadata.get("training_environments")
            usable = record and record.get("usable", True)   # older files: not measured
            unseen = unseen_environments(data, record) if usable else {}
            if unseen:
                listed = ", ".join(f"{env} (atoms {_atom_list(atoms)})"
                                   for env, atoms in list(unseen.items())[:4])
                more = f" and {len(unseen) - 4} more" if len(unseen) > 4 else ""
                problems.append(f"bonded environments never seen in training: {listed}{more}")
            if problems:
                break
        if data.charge != 0 and not data.is_periodic:
            groups = self._groups_within(data, max(m.separation for m in self.models))
            if groups > 1:
                physics = self.models[0].model_config.get("physics", 1)
                where = ("the whole charge sits on one fragment, chosen by electronegativity "
                         "(mlip_attn.nn.charges)" if physics >= 2 else
                         "this model (physics 1) adds the total charge to every atom of every "
                         "fragment, however far")
                problems.append(f"total charge {data.charge:g} on {groups} groups of atoms "
                                f"farther apart than the model's reach: {where}")
        if problems:
            warnings.warn("; ".join(problems), DomainWarning, stacklevel=4)

    @staticmethod
    def _groups_within(data: AtomicData, reach: float) -> int:
        """How many groups the atoms form when atoms closer than ``reach`` (Å) are joined."""
        from ..nn.charges import fragment_labels
        pos = torch.as_tensor(np.asarray(data.positions, dtype=float))
        close = torch.triu(torch.cdist(pos, pos) < reach, 1)
        i, j = torch.nonzero(close, as_tuple=True)
        return int(torch.unique(fragment_labels(len(pos), i, j)).numel())

    def _check_charge_spin(self, data: AtomicData) -> None:
        problems = []
        for key, what, value in (("charge", "total charge", data.charge),
                                 ("spin", "spin multiplicity", data.spin)):
            for m in self.models:
                seen = m.metadata.get(f"training_{key}")
                if seen and outside_seen(value, seen):
                    problems.append(f"{what} {value:g} (atoms.info['{key}']) lies outside the "
                                    f"{key}s the model saw in training ({describe_seen(seen)})")
                    break
        if not problems:
            return
        msg = "; ".join(problems) + ": the prediction is an extrapolation"
        if self.charge_check == "raise":
            raise ValueError(msg)
        warnings.warn(msg + " (charge_check='raise' refuses)", ChargeWarning, stacklevel=4)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        batch = self._input(self.atoms)
        threads_for_call(int(batch.edge_index.shape[1]))
        periodic = bool(self.atoms.pbc.any())
        features: dict[int, torch.Tensor] = {}
        hooks = [m.readout.register_forward_pre_hook(
                     lambda _, inputs, k=k: features.__setitem__(k, inputs[0].detach()))
                 for k, m in enumerate(self.models) if m.metadata.get("feature_novelty")]
        try:
            outs = [m.predict(batch, compute_forces=True, compute_stress=periodic)
                    for m in self.models]
        finally:
            for hook in hooks:
                hook.remove()
        _check_finite(outs)
        self._novelty(features)
        energies = np.array([float(o["energy"][0]) for o in outs])
        forces = np.stack([o["forces"].detach().cpu().double().numpy() for o in outs])
        self.results["energy"] = float(energies.mean())
        self.results["free_energy"] = self.results["energy"]
        self.results["energies"] = np.mean(
            [o["energies"].detach().cpu().double().numpy() for o in outs], axis=0)
        self.results["forces"] = forces.mean(axis=0)
        if periodic:
            stress = np.mean([o["stress"][0].detach().cpu().double().numpy() for o in outs], axis=0)
            self.results["stress"] = full_3x3_to_voigt_6_stress(stress)
        if len(self.models) > 1:
            self.results["energy_var"] = float(energies.var())
            self.results["forces_comm"] = forces


    def _novelty(self, features: dict) -> None:
        """``atom_uncertainty``/``uncertainty`` from the readout inputs ``features`` (model
        index → (N, F)), and a `DomainWarning` above 1."""
        if not features:
            return
        numbers = self.atoms.numbers
        u = np.max([novelty_scores(self.models[k].metadata["feature_novelty"], numbers,
                                   s.cpu().double().numpy()) for k, s in features.items()], axis=0)
        self.results["atom_uncertainty"] = u
        self.results["uncertainty"] = float(u.max())
        if u.max() > 1.0:
            novel = np.nonzero(u > 1.0)[0]
            warnings.warn(f"atoms {_atom_list(novel.tolist())} have features unlike any atom of "
                          f"their element in training (novelty up to {u.max():.2f}, threshold 1): "
                          f"the prediction there is an extrapolation", DomainWarning,
                          stacklevel=3)


def _atom_list(indices: list[int], shown: int = 8) -> str:
    """``0, 3, 7`` or ``0, 3, … (12 atoms)``."""
    text = ", ".join(str(i) for i in indices[:shown])
    return text + (f", … ({len(indices)} atoms)" if len(indices) > shown else "")


def _check_finite(outs: list[dict]) -> None:
    """`CalculationFailed` when a model returned NaN or inf (never pass them on to MD)."""
    for k, out in enumerate(outs):
        for name in ("energy", "forces"):
            value = out[name].detach()
            if not torch.isfinite(value).all():
                which = f"committee model {k}" if len(outs) > 1 else "the model"
                shown = float(value.reshape(-1)[~torch.isfinite(value.reshape(-1))][0])
                hint = (" (default_dtype='float64' has more range)"
                        if value.dtype == torch.float32 else "")
                raise CalculationFailed(
                    f"{which} returned a non-finite {name} ({shown}) for this structure: a "
                    f"model with NaN or inf weights (e.g. from a diverged training run) computes "
                    f"only NaN; otherwise an input far outside what the model knows (charge, "
                    f"spin, coordinates) overflowed {value.dtype}{hint}")
