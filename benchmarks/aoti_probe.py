"""``python benchmarks/aoti_probe.py``: the AOTInductor export route, measured against the eager
call and the TorchScript + compiled-ops export (the route the LAMMPS plugin runs).

The same PaiNN as `lammps_bench` is traced with its forces (``torch.autograd.grad`` inside
the traced function) by ``make_fx`` with symbolic shapes, exported with dynamic atom and edge
counts (``torch.export``) and compiled by ``torch._inductor.aoti_compile_and_package`` into a
``.pt2`` package, which is then called from Python. The chunked message cannot be traced
(its loop runs over a data-dependent number of edge chunks), so the trace uses the one-pass
message (`mlip_attn.nn.painn_message.message_reference`'s maths) and Inductor fuses what it
can. The plugin does not load ``.pt2`` packages: this is a measurement of the option.
"""
from __future__ import annotations

import contextlib
import tempfile
import time
from pathlib import Path

from mlip_attn.apps.lammps_bench import _copper, _save_model, _side_by_side


@contextlib.contextmanager
def _one_pass_message():
    """PaiNN layers use a one-pass message (traceable with a symbolic edge count)."""
    import torch
    from mlip_attn.backbones.painn import PaiNNLayer
    from mlip_attn.nn.painn_message import _edge_messages

    def message(self, phi, features, geometry, rho, weight, i, j):
        ds_e, d_e = _edge_messages(phi, features, geometry, rho, weight, j, self.first)
        ds = phi.new_zeros((phi.shape[0], ds_e.shape[1])).index_add(0, i, ds_e)
        return ds, [torch.zeros_like(f).index_add(0, i, d) for f, d in zip(features, d_e)]

    original = PaiNNLayer._chunked_message
    PaiNNLayer._chunked_message = message
    try:
        yield
    finally:
        PaiNNLayer._chunked_message = original


def _energy_forces(model):
    import torch

    class EnergyForces(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, positions, numbers, edge_index, shifts):
            pos = positions.detach().requires_grad_(True)
            batch = torch.zeros_like(numbers)
            cell = torch.zeros((1, 3, 3), dtype=pos.dtype, device=pos.device)
            zero = torch.zeros(1, dtype=pos.dtype, device=pos.device)
            energy = self.model.atomic_energies(pos, numbers, batch, edge_index, shifts, cell,
                                                zero, zero).sum()
            (grad,) = torch.autograd.grad([energy], [pos])
            return energy, -grad

    return EnergyForces()


def aoti_package(model, args, out: Path) -> Path:
    """Compile energy + forces of ``model`` for inputs like ``args`` (positions, numbers,
    edge_index, shifts) into ``out`` (.pt2), dynamic in the atom and edge counts."""
    import torch
    from torch.fx.experimental.proxy_tensor import make_fx
    with _one_pass_message():
        traced = make_fx(_energy_forces(model), tracing_mode="symbolic",
                         _allow_non_fake_inputs=True)(*args)
    atoms, edges = torch.export.Dim("atoms", min=2), torch.export.Dim("edges", min=2)
    program = torch.export.export(traced, args, strict=False, dynamic_shapes=(
        {0: atoms}, {0: atoms}, {1: edges}, {0: edges}))
    return Path(torch._inductor.aoti_compile_and_package(program, package_path=str(out)))


def run_aoti_probe(sizes=(1000, 10000), width: int = 64, layers: int = 2, cutoff: float = 5.0,
                   steps: int = 10, threads: int | None = None,
                   dtypes=("float32", "float64")) -> list[dict]:
    """Print and return ms per call (energy + forces): eager, TorchScript + ops, AOTInductor."""
    import torch
    from mlip_attn.data import AtomicData, Batch
    from mlip_attn.lammps.export import LammpsModel, use_compiled_ops
    from mlip_attn.ops import load_ops
    from mlip_attn.models import load_model

    threads = threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    load_ops()
    rows = []
    print(f"AOTInductor vs eager vs TorchScript + ops, {threads} threads, PaiNN {width} × "
          f"{layers}, periodic fcc Cu; ms per energy + forces call, interleaved, median of "
          f"{steps} after warm-up")
    print(f"{'atoms':>7}{'dtype':>9}{'compile s':>11}{'AOTI':>9}{'eager':>9}{'TS+ops':>9}"
          f"{'max |ΔF|':>11}")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "painn.pt"
        _save_model(path, width, layers, cutoff)
        for dtype in dtypes:
            model = load_model(path, dtype=dtype).requires_grad_(False)
            packaged, compile_s = None, 0.0
            for n in sizes:
                atoms = _copper(n, periodic=True)
                batch = Batch.collate([AtomicData.from_atoms(atoms).with_graph(cutoff)]).to(
                    dtype=getattr(torch, dtype))
                args = (batch.positions, batch.numbers, batch.edge_index, batch.shifts)
                if packaged is None:   # compiled once per dtype, dynamic shapes
                    t = time.perf_counter()
                    packaged = torch._inductor.aoti_load_package(
                        str(aoti_package(model, args, Path(tmp) / f"painn-{dtype}.pt2")))
                    compile_s = time.perf_counter() - t
                _, forces = packaged(*args)
                want = model.predict(batch)["forces"]
                scripted = torch.jit.script(LammpsModel(use_compiled_ops(
                    load_model(path, dtype=dtype))))
                zero = torch.zeros(1, dtype=torch.float64)
                script_args = (batch.positions.double(), batch.numbers, batch.edge_index,
                               batch.shifts.double(), len(atoms), zero, zero, False)
                times = _side_by_side({"aoti_ms": lambda: packaged(*args),
                                       "eager_ms": lambda: model.predict(batch),
                                       "script_ms": lambda: scripted(*script_args)}, steps)
                row = {"atoms": len(atoms), "dtype": dtype, "compile_s": compile_s, **times,
                       "force_diff": float((forces - want).abs().max())}
                rows.append(row)
                print(f"{row['atoms']:>7}{dtype:>9}{compile_s:>11.0f}{row['aoti_ms']:>9.1f}"
                      f"{row['eager_ms']:>9.1f}{row['script_ms']:>9.1f}"
                      f"{row['force_diff']:>11.1e}", flush=True)
    return rows


if __name__ == "__main__":
    run_aoti_probe()
