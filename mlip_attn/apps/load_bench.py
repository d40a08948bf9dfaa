"""``mlip-attn bench --under-load``: the demo's workloads under each thread policy, with and
without a competing job.

Workloads (the demo's models, random weights and labels, so no xTB is needed):

* **MD step**: `AttnCalculator` (float64, as in the demo) with the demo's global model (PaiNN
  ℓ ≤ 2 + through-bond block) on C12H4, ASE velocity Verlet; median ms per step.
* **MD step, 1,000 atoms**: `AttnCalculator` (float32) with PaiNN 128 × 3 on a 1,000-atom
  random C/H/O cluster (the benchmarks' clusters), velocity Verlet; median ms per step.
* **fit**: `fit` of the demo's local model (PaiNN ℓ ≤ 2) on 64 rattled C12H4 cumulenes,
  batch 16, 2 epochs; seconds per epoch (validation, EMA and checkpoints included).

Thread policies, each in a fresh process (OpenMP reads its wait policy when it starts):
``before`` (``MLIP_ATTN_THREAD_POLICY=off``: torch's default thread count, OpenMP's default
spinning wait — what the package did before `mlip_attn.threads`), ``passive`` (the same count
with ``OMP_WAIT_POLICY=PASSIVE``: the package's policy before the per-call choice), ``1
thread``, and ``default`` (the package's policy: a count chosen per call). The competing job
is a busy loop pinned to CPU 0, like another user's single-threaded job.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import statistics
import tempfile
import time
from contextlib import contextmanager

POLICIES = {
    "before": {"MLIP_ATTN_THREAD_POLICY": "off"},
    "passive": {"OMP_WAIT_POLICY": "PASSIVE", "MLIP_ATTN_THREAD_POLICY": "off"},
    "1 thread": {"MLIP_ATTN_THREADS": "1"},
    "default": {},
}
_POLICY_KEYS = ("MLIP_ATTN_THREAD_POLICY", "OMP_WAIT_POLICY", "MLIP_ATTN_THREADS",
                "OMP_NUM_THREADS")


def _busy(cpu: int) -> None:  # pragma: no cover - runs in a child process until terminated
    try:
        os.sched_setaffinity(0, {cpu})
    except (AttributeError, OSError):
        pass
    x = 0
    while True:
        x += 1


@contextmanager
def competing_jobs(n: int):
    """``n`` busy-loop processes, pinned to CPUs 0, 1, ... (cycling), while the block runs."""
    ctx = mp.get_context("spawn")
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0]
    procs = [ctx.Process(target=_busy, args=(cpus[k % len(cpus)],), daemon=True)
             for k in range(n)]
    for p in procs:
        p.start()
    try:
        time.sleep(0.5 if n else 0.0)
        yield
    finally:
        for p in procs:
            p.terminate()
            p.join()


def _md_step_ms(steps: int, cluster: int = 0) -> float:
    """Median ms per velocity-Verlet step: the demo's C12H4 (``cluster`` = 0) or PaiNN 128 × 3
    on a random cluster of ``cluster`` atoms."""
    import numpy as np
    from ase import units
    from ase.md.verlet import VelocityVerlet
    from ase.md.velocitydistribution import thermalize_momenta
    from ..calculators import AttnCalculator
    from ..models import build_model
    if cluster:
        from .bench import random_box
        from .peer_models import our_model
        model = our_model("painn", 128, 3, 5.0, 20)
        atoms = random_box(cluster, seed=0, periodic=False)
        atoms.calc = AttnCalculator(model, range_check="warn")
    else:
        from ..qm import cumulene_structures
        from .demo import CARBONS, model_configs
        atoms = cumulene_structures([CARBONS], 1, seed=0, rattle=0.0, optimise=False)[0]
        model = build_model(model_configs()["global"])
        atoms.calc = AttnCalculator(model, default_dtype="float64", range_check="warn")
    thermalize_momenta(atoms, temperature_K=300, rng=np.random.default_rng(0))
    dyn = VelocityVerlet(atoms, timestep=0.5 * units.fs)
    times = []
    for _ in range(steps + 1):
        t = time.perf_counter()
        dyn.run(1)
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times[1:])


def _fit_epoch_s(structures: int, epochs: int) -> float:
    import ase.io
    import numpy as np
    from ..qm import cumulene_structures
    from ..training import fit, load_config
    from .demo import CARBONS, DISTORTIONS, model_configs
    rng = np.random.default_rng(0)
    frames = cumulene_structures([CARBONS], structures, seed=0, optimise=False, **DISTORTIONS)
    with tempfile.TemporaryDirectory() as tmp:
        for a in frames:  # random labels: the cost does not depend on them
            a.info["REF_energy"] = float(rng.normal())
            a.arrays["REF_forces"] = rng.normal(size=(len(a), 3))
        ase.io.write(f"{tmp}/train.xyz", frames)
        config = load_config(None, {
            "model": model_configs()["local"],
            "data": {"train": f"{tmp}/train.xyz", "valid": 0.1, "test": 0.1},
            "training": {"epochs": epochs, "batch_size": 16, "seed": 0, "progress": False},
            "output": f"{tmp}/run"})
        return fit(config, log=lambda s: None).seconds / epochs


WORKLOADS = {"md": _md_step_ms, "fit": lambda structures: _fit_epoch_s(structures, 2)}


def _run(workload: str, args: tuple, queue) -> None:
    from ..threads import configure, describe
    configure()
    queue.put((WORKLOADS[workload](*args), describe()))


def measure(policy: str, workload: str, args: tuple, competing: int) -> tuple[float, str]:
    """(ms per MD step or s per fit epoch, thread description) of ``WORKLOADS[workload](*args)``
    in a fresh process."""
    ctx = mp.get_context("spawn")
    saved = {k: os.environ.get(k) for k in _POLICY_KEYS}
    for k in _POLICY_KEYS:
        os.environ.pop(k, None)
    os.environ.update(POLICIES[policy])
    try:
        queue = ctx.Queue()
        proc = ctx.Process(target=_run, args=(workload, args, queue))
        with competing_jobs(competing):
            proc.start()
            result = queue.get()
            proc.join()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return result


def run_load_bench(policies=tuple(POLICIES), competing=(0, 1), md_steps: int = 40,
                   fit_structures: int = 64, large_atoms: int = 1000, large_steps: int = 10,
                   log=print) -> list[dict]:
    """Print and return one row per (policy, competing jobs): MD ms/step (C12H4, and PaiNN
    128 × 3 on ``large_atoms`` atoms) and fit s/epoch."""
    log(f"workloads: MD step = C12H4, demo's global model, AttnCalculator float64, median of "
        f"{md_steps} velocity-Verlet steps; MD step {large_atoms:,} atoms = PaiNN 128 × 3, "
        f"float32, median of {large_steps} steps; fit = demo's local model, {fit_structures} "
        f"cumulenes, batch 16, s/epoch; load average before: {os.getloadavg()[0]:.1f}")
    log(f"| policy | threads and waiting | competing jobs | MD step C12H4 (ms) | MD step "
        f"{large_atoms:,} atoms (ms) | fit epoch (s) |")
    log("|---|---|---|---|---|---|")
    rows = []
    for n in competing:
        for policy in policies:
            md, threads = measure(policy, "md", (md_steps,), n)
            large, _ = measure(policy, "md", (large_steps, large_atoms), n)
            epoch, _ = measure(policy, "fit", (fit_structures,), n)
            rows.append({"policy": policy, "threads": threads, "competing": n,
                         "md_step_ms": md, "md_large_step_ms": large, "fit_epoch_s": epoch})
            log(f"| {policy} | {threads} | {n} | {md:.1f} | {large:.1f} | {epoch:.2f} |")
    return rows
