"""Physical checks of model files (``mlip-attn analyze physics model.pt ... [--xtb]``, every
number also to ``OUT/physics.json``): what a long-range
model does off its training set, measured the same way for every model.

- **separability**: fragments A and B with their closest atoms 2× the model's reach
  (`Potential.separation`), 100 Å and 1,000 Å apart: ΔE = E(A + B) − E(A) − E(B) (eV) and the
  largest change of a force on A (eV/Å); neutral, and with a charge on A (E(A, q) + E(B, 0)).
- **charge leak**: the charge a neutral fragment 10, 30 and 100 Å from a charged one receives:
  the charge its atoms are embedded with (the total charge on every atom in physics 1) and the
  charges of every charges block (Σ over the fragment, largest channel).
- **tail**: a charged fragment pulled away from a neutral one from 12 to 60 Å: E(d) − E(12 Å)
  (eV) and the largest change of a force on the neutral fragment beyond 16 Å against the
  isolated fragment (eV/Å), optionally beside
  GFN2-xTB's (``xtb=True``, tblite).
- **bond stretch**: one bond stretched through and beyond the bonding range: the largest
  |dE/dr| (eV/Å) along the path, optionally beside xTB's on the same path.
- **entry step**: the charged fragment moved toward the neutral one along the tail path, 4 → 2 Å
  in 0.005 Å steps (through the bond window): the largest |ΔE − ∫ dE/dd dd| between consecutive
  points (trapezoid rule; eV), an energy step that the forces do not see (physics 2 places the
  charge discretely, physics 3 continuously: docs/longrange-physics.md).

The probe molecules follow the model's elements (`probes`): Cl⁻ + CH3Cl for models that know
C, H and Cl, C2H4 + C2H2 for C/H models, Cu clusters for copper. Everything runs in float64.
"""
from __future__ import annotations

import numpy as np
import torch
from ase import Atoms
from ase.build import molecule

SEPARATIONS = (100.0, 1000.0)
LEAK_GAPS = (10.0, 30.0, 100.0)
TAIL_DISTANCES = (12.0, 14.0, 16.0, 20.0, 30.0, 40.0, 60.0)


def probes(elements) -> dict:
    """Probe systems for a model knowing ``elements`` (atomic numbers): fragments ``a`` (carries
    ``charge``) and ``b`` (neutral), the tail path (``tail_axis``: b's atom the ion approaches
    and the unit direction), and the bond to stretch (``stretch``: molecule, i, j, r range)."""
    z = set(int(e) for e in elements)
    if {1, 6, 17} <= z:
        ch3cl = molecule("CH3Cl")              # C at the origin, Cl on +z
        ion = Atoms("Cl", positions=[[0.0, 0.0, 0.0]])
        return {"a": ion, "b": ch3cl, "charge": -1.0, "neutral_a": molecule("CH4"),
                "tail_axis": (int(np.where(ch3cl.numbers == 6)[0][0]), np.array([0, 0, -1.0])),
                "stretch": (ch3cl, 0, 1, (1.5, 3.5)), "stretch_charge": 0}
    if {1, 6} <= z:
        c2h4 = molecule("C2H4")
        return {"a": c2h4, "b": molecule("C2H2"), "charge": 1.0, "neutral_a": c2h4,
                "tail_axis": (0, np.array([1.0, 0, 0])),
                "stretch": (c2h4, 0, 2, (0.9, 2.6)), "stretch_charge": 0}
    if 29 in z:
        cu2 = Atoms("Cu2", positions=[[0, 0, 0], [2.3, 0, 0]])
        cu3 = Atoms("Cu3", positions=[[0, 0, 0], [2.4, 0, 0], [1.2, 2.08, 0]])
        return {"a": cu2, "b": cu3, "charge": 1.0, "neutral_a": cu2,
                "tail_axis": (0, np.array([1.0, 0, 0])),
                "stretch": (cu2, 0, 1, (2.0, 4.5)), "stretch_charge": 0}
    raise ValueError(f"physics-check: no probe molecules for elements {sorted(z)} "
                     f"(known: C/H/Cl, C/H, Cu)")


def evaluate(model, atoms: Atoms, charge: float = 0.0) -> tuple[float, np.ndarray]:
    """Energy (eV) and forces (N, 3) eV/Å of an isolated structure."""
    from ..data import AtomicData, Batch
    atoms = atoms.copy()
    atoms.pbc = False
    atoms.cell = None
    atoms.info["charge"] = float(charge)
    dtype = model.shift.dtype
    batch = Batch.collate([AtomicData.from_atoms(atoms).with_graph(model.cutoff)]).to(dtype=dtype)
    out = model.predict(batch, compute_forces=True)
    return float(out["energy"][0]), out["forces"].detach().cpu().numpy().astype(float)


def apart(a: Atoms, b: Atoms, gap: float) -> Atoms:
    """A + B, B moved along x so that their closest atoms are ``gap`` Å apart."""
    b = b.copy()
    b.positions[:, 0] += a.positions[:, 0].max() - b.positions[:, 0].min()
    for _ in range(60):
        d = np.linalg.norm(a.positions[:, None] - b.positions[None], axis=-1).min()
        b.positions[:, 0] += gap - d
    return a + b


def separability(model, a: Atoms, b: Atoms, charge: float = 0.0) -> list[dict]:
    """ΔE (eV) and max |ΔF| on A and on B (eV/Å) at 2× the reach, 100 Å and 1,000 Å; ``charge``
    on A (B neutral)."""
    e_a, f_a = evaluate(model, a, charge)
    e_b, f_b = evaluate(model, b, 0.0)
    rows = []
    gaps = (2.0 * model.separation,) if np.isfinite(model.separation) else ()
    for gap in (*gaps, *SEPARATIONS):
        e, f = evaluate(model, apart(a, b, gap), charge)
        rows.append({"gap": gap, "charge": charge, "dE": e - e_a - e_b,
                     "dF_A": float(np.abs(f[:len(a)] - f_a).max()),
                     "dF_B": float(np.abs(f[len(a):] - f_b).max())})
    return rows


def _block_charges(model, atoms: Atoms, charge: float, n_a: int) -> list[float]:
    """Σ of each charges block's charges over atoms n_a… (largest channel), every layer."""
    from ..attention.charge_equilibration import ChargeEquilibration
    found = []
    hooks = [m.register_forward_hook(lambda mod, args, out: found.append(
        mod.charges(args[0], args[1])[0].detach()))
        for m in model.modules() if isinstance(m, ChargeEquilibration)]
    try:
        evaluate(model, atoms, charge)
    finally:
        for h in hooks:
            h.remove()
    return [float(q[n_a:].sum(0).abs().max()) for q in found]


def charge_leak(model, a: Atoms, b: Atoms, charge: float) -> list[dict]:
    """Per gap: the largest charge an atom of the neutral B is embedded with (e), and the largest
    |Σ_B q| of any charges block (e; None without one)."""
    from ..data import AtomicData, Batch
    from ..nn.graph import Graph
    rows = []
    for gap in LEAK_GAPS:
        atoms = apart(a, b, gap)
        atoms.info["charge"] = charge
        d = Batch.collate([AtomicData.from_atoms(atoms).with_graph(model.cutoff)]).to(
            dtype=model.shift.dtype)
        vec = d.positions[d.edge_index[1]] - d.positions[d.edge_index[0]] + d.shifts
        graph = Graph(d.positions, d.numbers, d.batch, d.edge_index, vec,
                      torch.linalg.norm(vec, dim=1), d.shifts, d.cell, d.charge, d.spin,
                      d.positions.new_zeros((len(atoms), 0)), 1)
        embedding = getattr(model.backbone, "embedding", None)
        embedded = (float(embedding.atom_charges(graph)[len(a):].abs().max())
                    if embedding is not None and hasattr(embedding, "atom_charges") else None)
        blocks = _block_charges(model, atoms, charge, len(a))
        rows.append({"gap": gap, "embedded": embedded,
                     "block": max(blocks) if blocks else None})
    return rows


def tail(model, a: Atoms, b: Atoms, charge: float, site: int, direction: np.ndarray,
         xtb: bool = False) -> dict:
    """A (one ion or fragment, charge ``charge``) at distance d (Å) from atom ``site`` of B along
    ``direction``: E(d) − E(12 Å) (eV) and the largest change of a force on B beyond 16 Å against
    the isolated B (eV/Å), for the model and (``xtb``) GFN2-xTB."""
    out = {"d": list(TAIL_DISTANCES), "model": [], "max_force_B": 0.0}
    _, f_b = evaluate(model, b, 0.0)
    ref = [] if xtb else None
    centre = a.positions.mean(axis=0)
    for d in TAIL_DISTANCES:
        moved = a.copy()
        moved.positions += b.positions[site] + d * direction - centre
        atoms = moved + b
        e, f = evaluate(model, atoms, charge)
        out["model"].append(e)
        if d > 16.0:
            out["max_force_B"] = max(out["max_force_B"], float(np.abs(f[len(a):] - f_b).max()))
        if ref is not None:
            from ..qm.methods import xtb_energy_forces
            ref.append(xtb_energy_forces(atoms.numbers, atoms.positions, int(charge))[0])
    out["model"] = [e - out["model"][0] for e in out["model"]]
    if ref is not None:
        out["xtb"] = [e - ref[0] for e in ref]
    return out


def bond_stretch(model, atoms: Atoms, i: int, j: int, r_range: tuple[float, float],
                 charge: float = 0.0, points: int = 161, xtb: bool = False) -> dict:
    """Atom j moved along the i→j bond from r_range[0] to r_range[1] Å: the largest |dE/dr| (eV/Å,
    from the forces on j projected on the bond) for the model and (``xtb``) GFN2-xTB."""
    u = atoms.positions[j] - atoms.positions[i]
    u /= np.linalg.norm(u)
    out = {"r": [], "dEdr": [], "xtb_dEdr": [] if xtb else None}
    for r in np.linspace(*r_range, points):
        moved = atoms.copy()
        moved.positions[j] = moved.positions[i] + r * u
        _, f = evaluate(model, moved, charge)
        out["r"].append(float(r))
        out["dEdr"].append(float(-(f[j] - f[i]) @ u / 2.0))
        if xtb:
            from ..qm.methods import xtb_energy_forces
            fx = xtb_energy_forces(moved.numbers, moved.positions, int(charge))[1]
            out["xtb_dEdr"].append(float(-(fx[j] - fx[i]) @ u / 2.0))
    out["max_abs_dEdr"] = float(np.abs(out["dEdr"]).max())
    if xtb:
        out["xtb_max_abs_dEdr"] = float(np.abs(out["xtb_dEdr"]).max())
    return out


def entry_step(model, a: Atoms, b: Atoms, charge: float, site: int, direction: np.ndarray,
               d_range: tuple[float, float] = (2.0, 4.0), step: float = 0.005) -> dict:
    """A's centroid at b[site] + d·direction for d over ``d_range`` (Å) in ``step`` Å: the largest
    |E(d + h) − E(d) − h (E'(d) + E'(d + h))/2| (eV), E' = dE/dd from the forces on A, and where."""
    ds = np.arange(d_range[0], d_range[1] + 0.5 * step, step)
    centre = a.positions.mean(axis=0)
    energies, slopes = [], []
    for d in ds:
        moved = a.copy()
        moved.positions += b.positions[site] + d * direction - centre
        e, f = evaluate(model, moved + b, charge)
        energies.append(e)
        slopes.append(float(-(f[:len(a)] @ direction).sum()))
    slopes = np.array(slopes)
    residual = np.abs(np.diff(energies) - 0.5 * step * (slopes[1:] + slopes[:-1]))
    k = int(residual.argmax())
    return {"d_range": list(d_range), "step": step, "max_step": float(residual[k]),
            "at": float(0.5 * (ds[k] + ds[k + 1]))}


def physics_check(model, xtb: bool = False) -> dict:
    """Every check above for ``model`` (a `Potential`, evaluated in float64)."""
    model = model.double().eval()
    p = probes(model.elements)
    site, direction = p["tail_axis"]
    stretch_atoms, i, j, r_range = p["stretch"]
    return {
        "physics": model.model_config.get("physics", 1),
        "separation": model.separation,
        "separability": separability(model, p["neutral_a"], p["b"], 0.0)
        + separability(model, p["a"], p["b"], p["charge"]),
        "charge_leak": charge_leak(model, p["a"], p["b"], p["charge"]),
        "tail": tail(model, p["a"], p["b"], p["charge"], site, direction, xtb),
        "bond_stretch": bond_stretch(model, stretch_atoms, i, j, r_range,
                                     p["stretch_charge"], xtb=xtb),
        "entry_step": entry_step(model, p["a"], p["b"], p["charge"], site, direction),
    }


def card_lines(result: dict, file_name: str) -> list[str]:
    """A model card's "Physical checks" section (markdown lines) from a `physics_check` result."""
    sep = result["separability"]
    neutral = [r for r in sep if r["charge"] == 0]
    charged = [r for r in sep if r["charge"] != 0]
    leak = max((r["embedded"] or 0.0) for r in result["charge_leak"])
    block = [r["block"] for r in result["charge_leak"] if r["block"] is not None]
    t, s = result["tail"], result["bond_stretch"]
    k40 = t["d"].index(40.0)
    xtb_tail = f" (GFN2-xTB {t['xtb'][k40]:+.3f} eV)" if "xtb" in t else ""
    xtb_stretch = (f" (GFN2-xTB {s['xtb_max_abs_dEdr']:.2f} eV/Å)"
                   if s.get("xtb_max_abs_dEdr") is not None else "")
    return [
        "## Physical checks",
        f"`mlip-attn analyze physics potentials/{file_name}{' --xtb' if xtb_tail else ''}` "
        f"(float64; physics {result['physics']}; separation {result['separation']:g} Å; "
        "see docs/longrange-physics.md):",
        "- separability, neutral fragments: max |ΔE| "
        f"{max(abs(r['dE']) for r in neutral):.2e} eV, max |ΔF_A| "
        f"{max(r['dF_A'] for r in neutral):.2e} eV/Å at "
        + ", ".join(f"{r['gap']:g}" for r in neutral) + " Å",
        f"- charged fragment + neutral one: max |ΔE| {max(abs(r['dE']) for r in charged):.2e} eV "
        "(physics 2: the induced-dipole tail)",
        f"- charge embedded on a neutral fragment 10–100 Å away: {leak:.3f} e"
        + (f"; charges block Σq there: {max(block):.2e} e" if block else ""),
        f"- ion tail E(40 Å) − E(12 Å): {t['model'][k40]:+.3f} eV{xtb_tail}; max |ΔF| on the "
        f"neutral fragment beyond 16 Å: {t['max_force_B']:.3f} eV/Å",
        f"- bond stretch, max |dE/dr|: {s['max_abs_dEdr']:.2f} eV/Å{xtb_stretch}",
    ] + ([f"- charged fragment entering the bond window (4 → 2 Å, 0.005 Å steps): largest "
          f"energy step the forces do not integrate to {result['entry_step']['max_step']:.1e} "
          f"eV (at {result['entry_step']['at']:.3f} Å)"] if "entry_step" in result else [])


def format_report(name: str, result: dict) -> str:
    """The checks as plain-text tables."""
    lines = [f"# {name}  (physics {result['physics']}, separation {result['separation']:.1f} Å)",
             "separability      gap/Å   charge     ΔE/eV        max|ΔF_A|/(eV/Å)"]
    for row in result["separability"]:
        lines.append(f"                {row['gap']:8.1f}  {row['charge']:+5.1f}  {row['dE']:+.3e}"
                     f"   {row['dF_A']:.3e}")
    lines.append("charge leak       gap/Å   embedded on B/e   charges block Σ_B q/e")
    for row in result["charge_leak"]:
        emb = "-" if row["embedded"] is None else f"{row['embedded']:.3f}"
        blk = "-" if row["block"] is None else f"{row['block']:.3e}"
        lines.append(f"                {row['gap']:8.1f}   {emb:>15}   {blk:>12}")
    t = result["tail"]
    lines.append("tail              d/Å     E(d)-E(12)/eV" + ("   xTB/eV" if "xtb" in t else ""))
    for k, d in enumerate(t["d"]):
        ref = f"   {t['xtb'][k]:+.4f}" if "xtb" in t else ""
        lines.append(f"                {d:8.1f}   {t['model'][k]:+.4f}{ref}")
    lines.append(f"  max |ΔF| on the neutral fragment beyond 16 Å: {t['max_force_B']:.4f} eV/Å")
    s = result["bond_stretch"]
    ref = f", xTB {s['xtb_max_abs_dEdr']:.3f}" if s.get("xtb_max_abs_dEdr") is not None else ""
    lines.append(f"bond stretch      max |dE/dr| {s['max_abs_dEdr']:.3f} eV/Å{ref}")
    if "entry_step" in result:
        g = result["entry_step"]
        lines.append(f"entry step        max |ΔE − ∫dE/dd| {g['max_step']:.2e} eV at "
                     f"{g['at']:.3f} Å ({g['d_range'][1]:g} → {g['d_range'][0]:g} Å, "
                     f"{g['step']:g} Å steps)")
    return "\n".join(lines)


def load_as_physics(path, physics: int):
    """A model file's weights in the architecture of ``physics`` version (float64): what an old
    file's weights compute under the new forms before any retraining. Parameters the other
    version adds (e.g. the tails' polarisabilities) keep their initial values; weights it does
    not have are dropped. Returns (model, missing keys, unexpected keys)."""
    from ..models import build_model
    from ..models.model_file import read_model_file
    content = read_model_file(path)
    model = build_model({**content["model_config"], "physics": int(physics)}).double()
    state = {k: v.double() if v.is_floating_point() else v
             for k, v in content["state_dict"].items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    model.metadata = dict(content["metadata"])
    return model.eval(), list(missing), list(unexpected)


def check_files(paths, out, xtb: bool = False, physics: int | None = None) -> dict:
    """`physics_check` of each model file in ``paths`` (loaded in float64; ``physics``: its
    weights under that version's forms, `load_as_physics`): the report printed, every number
    written to ``out``/physics.json."""
    import json
    from pathlib import Path
    from ..models import load_model
    results = {}
    for path in paths:
        if physics is None:
            model = load_model(path, dtype="float64")
        else:
            model, missing, unexpected = load_as_physics(path, physics)
            print(f"{path}: weights under physics {physics}; new (initial values): "
                  f"{missing or 'none'}; dropped: {unexpected or 'none'}")
        results[str(path)] = physics_check(model, xtb=xtb)
        print(format_report(Path(path).stem, results[str(path)]), flush=True)
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / "physics.json").write_text(json.dumps(results, indent=1))
    return results
