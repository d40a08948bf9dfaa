"""The process-wide CPU thread policy: how many threads torch uses and how they wait.

OpenMP threads that have finished their share of an operation *spin* (busy-wait) until the
others are done. On a machine whose cores are shared with other jobs, the thread that still
has work is often descheduled while its partner spins on the core it needs, and every one of
the thousands of small operations of a model call waits for a time slice: with 2 threads on a
busy 2-core machine a call can be 10–100× slower than with one thread. The policy, set once
per process in this module:

* **Passive waiting.** ``OMP_WAIT_POLICY=PASSIVE`` (waiting threads sleep instead of
  spinning) is put in the environment when ``mlip_attn`` is imported, unless the variable is
  already set. OpenMP reads it only when its runtime starts (when torch is imported), so this
  works when ``mlip_attn`` is imported before torch — as the ``mlip-attn`` command, spawned
  worker processes and scripts that import it first do. `passive_wait` tells whether it took.
* **Thread count.** The default is min(torch's own default, the CPUs this process may run on:
  its affinity mask and its cgroup CPU quota). If the OpenMP runtime started before passive
  waiting could be set (torch imported first), threads spin, and the default also leaves out
  the CPUs that other jobs keep busy (from the 1-minute load average), down to one thread.
* **Overrides.** ``threads=N`` on `AttnCalculator`, ``--threads N`` on the command line, or
  ``MLIP_ATTN_THREADS=N`` in the environment set the count; ``OMP_NUM_THREADS`` set by the
  user is respected; ``MLIP_ATTN_THREAD_POLICY=off`` leaves torch's and OpenMP's defaults
  alone (what the package did before this policy).

`configure` applies the policy (once, or again with an explicit count); the entry points that
compute (CLI commands, `AttnCalculator`, the demo's and benchmarks' worker processes) call it.
"""
from __future__ import annotations

import math
import os
import sys

POLICY_ENV = "MLIP_ATTN_THREAD_POLICY"     # "off": leave torch/OpenMP defaults alone
THREADS_ENV = "MLIP_ATTN_THREADS"          # a thread count for every mlip-attn process
WAIT_ENV = "OMP_WAIT_POLICY"

_state = {"passive": None, "configured": False}


def policy_enabled() -> bool:
    return os.environ.get(POLICY_ENV, "on").strip().lower() not in ("off", "0", "false", "no")


def _openmp_loaded() -> bool:
    """Whether an OpenMP runtime (GNU or LLVM) is already mapped into this process."""
    try:
        with open("/proc/self/maps") as fh:
            maps = fh.read()
    except OSError:
        return "torch" in sys.modules
    return any(name in maps for name in ("libgomp", "libomp", "libiomp"))


def prefer_passive_wait() -> None:
    """Put ``OMP_WAIT_POLICY=PASSIVE`` in the environment if the user has not chosen a wait
    policy, and record whether it can still take effect (OpenMP not yet started). Called
    when ``mlip_attn`` is imported; later calls change nothing."""
    if _state["passive"] is not None:
        return
    if not policy_enabled():
        _state["passive"] = os.environ.get(WAIT_ENV, "").strip().upper() == "PASSIVE"
        return
    started = _openmp_loaded()
    if WAIT_ENV not in os.environ:
        os.environ[WAIT_ENV] = "PASSIVE"   # inherited by child processes in any case
        _state["passive"] = not started
    else:
        _state["passive"] = os.environ[WAIT_ENV].strip().upper() == "PASSIVE"


def passive_wait() -> bool:
    """Whether this process's OpenMP threads sleep while they wait (see the module doc)."""
    prefer_passive_wait()
    return bool(_state["passive"])


def _cgroup_cpus() -> float | None:
    """The CPU quota of this process's cgroup (v2 ``cpu.max`` or v1 cfs quota), in CPUs."""
    try:
        quota, period = open("/sys/fs/cgroup/cpu.max").read().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int(open("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read())
        period = int(open("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read())
        return None if quota <= 0 else quota / period
    except (OSError, ValueError):
        return None


def available_cpus() -> int:
    """CPUs this process may run on: its affinity mask, capped by its cgroup quota."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    quota = _cgroup_cpus()
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)


def idle_cpus(cpus: int) -> int:
    """Of ``cpus``, those that other jobs do not keep busy (1-minute load average), >= 1."""
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return cpus
    return max(1, min(cpus, int(cpus - load + 0.5)))


def default_threads() -> int:
    """The policy's thread count for this process (see the module doc)."""
    import torch
    env = os.environ.get(THREADS_ENV)
    if env:
        return _positive(env, THREADS_ENV)
    if os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()
    cpus = min(torch.get_num_threads(), available_cpus())
    return cpus if passive_wait() else idle_cpus(cpus)


def _positive(value, what: str) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = 0
    if n < 1:
        raise ValueError(f"{what}: a thread count must be a positive integer, got {value!r}")
    return n


def configure(threads: int | None = None) -> int:
    """Apply the policy: ``threads`` (a positive int) sets torch's intra-op thread count for
    the whole process and for the worker processes it starts (``MLIP_ATTN_THREADS``); None sets the default once per process (a count the user set with
    ``torch.set_num_threads`` before that is only ever lowered, never raised). Returns the
    thread count in use. With ``MLIP_ATTN_THREAD_POLICY=off`` only an explicit count acts."""
    import torch
    if threads is not None:
        n = _positive(threads, "threads")
        torch.set_num_threads(n)
        os.environ[THREADS_ENV] = str(n)   # worker processes this one starts follow it
        _state["configured"] = True
    elif policy_enabled() and not _state["configured"]:
        n = default_threads()
        if os.environ.get(THREADS_ENV) or n < torch.get_num_threads():
            torch.set_num_threads(n)
        _state["configured"] = True
    return torch.get_num_threads()


def describe() -> str:
    """One line for benchmark headers: threads, wait policy, CPUs available."""
    import torch
    wait = "passive" if passive_wait() else "active (spinning)"
    n = torch.get_num_threads()
    return (f"{n} thread{'' if n == 1 else 's'}, {wait} OpenMP waiting, "
            f"{available_cpus()} CPUs available")
