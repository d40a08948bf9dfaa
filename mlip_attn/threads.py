"""The CPU thread policy: how many threads torch uses, chosen again before every model call.

OpenMP threads that have finished their share of an operation *spin* (busy-wait) a little
before they sleep. On a machine whose cores are shared with other jobs, the thread that still
has work is often descheduled while its partner spins on the core it needs, and every one of
the thousands of small operations of a model call waits for a time slice: with 2 threads on a
busy 2-core machine a call can be 10–100× slower than with one thread. Making threads sleep
instead (``OMP_WAIT_POLICY=PASSIVE``) avoids that, but every operation then pays a thread
wake-up: PaiNN 128 × 3 on 1,000 atoms took 2.8× longer on an idle machine (494 against 178 ms).
So the policy keeps OpenMP's own waiting and instead never runs more threads than there are
free CPUs when a call starts:

* **The cap** (`configure`): min(torch's default, the CPUs this process may run on: its
  affinity mask and its cgroup CPU quota).
* **Per call** (`threads_for_call`, before each `AttnCalculator` calculation and each `fit`
  step): one thread for a small structure (fewer than the message policy's
  ``one_thread_below`` neighbour pairs, `mlip_attn.nn.policy`: its many small operations gain
  nothing from a second thread), else the cap less the CPUs that other
  processes keep busy at that moment (`busy_elsewhere`: the kernel's count of runnable tasks,
  less this process's own), at least one.
* **Overrides.** ``threads=N`` on `AttnCalculator`, ``--threads N`` on the command line, or
  ``MLIP_ATTN_THREADS=N`` in the environment fix the count (no per-call choice);
  ``OMP_NUM_THREADS`` set by the user is respected the same way, and ``OMP_WAIT_POLICY`` is
  left to OpenMP; ``MLIP_ATTN_THREAD_POLICY=off`` leaves torch's defaults alone.
"""
from __future__ import annotations

import functools
import math
import os

from .nn.policy import current as message_policy

POLICY_ENV = "MLIP_ATTN_THREAD_POLICY"     # "off": leave torch/OpenMP defaults alone
THREADS_ENV = "MLIP_ATTN_THREADS"          # a thread count for every mlip-attn process

_state = {"configured": False, "cap": None}


def policy_enabled() -> bool:
    return os.environ.get(POLICY_ENV, "on").strip().lower() not in ("off", "0", "false", "no")


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


@functools.lru_cache(maxsize=1)
def available_cpus() -> int:
    """CPUs this process may run on: its affinity mask, capped by its cgroup quota (read
    once per process)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    quota = _cgroup_cpus()
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)


def _running_tasks_and_cpus(loadavg: str = "/proc/loadavg") -> tuple[int, int] | None:
    """(runnable tasks, online CPUs) as the kernel counts them now (the fourth field of
    /proc/loadavg, ``running/total``, and `os.cpu_count`), or None where that cannot be
    read."""
    try:
        with open(loadavg) as fh:
            running = int(fh.read().split()[3].split("/")[0])
    except (OSError, IndexError, ValueError):
        return None
    return running, os.cpu_count() or 1


def _own_running_threads(task_dir: str = "/proc/self/task") -> int:
    """Threads of this process that are running or runnable now (state R), at least 1."""
    running = 0
    try:
        names = os.listdir(task_dir)
    except OSError:
        return 1
    for name in names:
        try:
            with open(f"{task_dir}/{name}/stat") as fh:
                state = fh.read().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        running += state == "R"
    return max(running, 1)


def busy_elsewhere() -> int | None:
    """CPUs that other processes keep busy right now: runnable tasks system-wide less this
    process's own. None where the kernel's counts cover CPUs this process may not use (a
    container on a larger host shows the host's counts) or cannot be read."""
    counts = _running_tasks_and_cpus()
    if counts is None or counts[1] != available_cpus():
        return None
    return max(0, counts[0] - _own_running_threads())


def _positive(value, what: str) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = 0
    if n < 1:
        raise ValueError(f"{what}: a thread count must be a positive integer, got {value!r}")
    return n


def configure(threads: int | None = None) -> int:
    """Apply the policy: ``threads`` (a positive int) fixes torch's intra-op thread count for
    the whole process and for the worker processes it starts (``MLIP_ATTN_THREADS``); None
    sets the cap once per process (a count set with ``MLIP_ATTN_THREADS``, ``OMP_NUM_THREADS``
    or ``torch.set_num_threads`` before that is only ever lowered, never raised) and lets
    `threads_for_call` choose per call. Returns the thread count in use. With
    ``MLIP_ATTN_THREAD_POLICY=off`` only an explicit count acts."""
    import torch
    if threads is not None:
        n = _positive(threads, "threads")
        torch.set_num_threads(n)
        os.environ[THREADS_ENV] = str(n)   # worker processes this one starts follow it
        _state.update(configured=True, cap=None)
    elif policy_enabled() and not _state["configured"]:
        env = os.environ.get(THREADS_ENV)
        if env:
            torch.set_num_threads(_positive(env, THREADS_ENV))
        elif not os.environ.get("OMP_NUM_THREADS"):
            cap = min(torch.get_num_threads(), available_cpus())
            torch.set_num_threads(cap)
            _state["cap"] = cap
        _state["configured"] = True
    return torch.get_num_threads()


def adaptive() -> bool:
    """Whether `threads_for_call` chooses the count per call (no fixed count was set)."""
    return _state["cap"] is not None


def threads_for_call(pairs: int) -> int:
    """Set and return torch's thread count for a call on a structure (or batch) with ``pairs``
    neighbour pairs: one below the message policy's ``one_thread_below``, else the cap less the CPUs busy elsewhere, at
    least one. A fixed count (see `configure`) is left as it is."""
    import torch
    cap = _state["cap"]
    if cap is None:
        return torch.get_num_threads()
    n = 1
    if pairs >= message_policy().one_thread_below and cap > 1:
        busy = busy_elsewhere()
        n = max(1, cap - (busy or 0))
    if n != torch.get_num_threads():
        torch.set_num_threads(n)
    return n


def describe() -> str:
    """One line for benchmark headers: threads, how they are chosen, waiting, CPUs."""
    import torch
    n = torch.get_num_threads()
    wait = os.environ.get("OMP_WAIT_POLICY", "").strip().lower() or "OpenMP's default"
    count = (f"up to {_state['cap']} threads, chosen per call" if adaptive()
             else f"{n} thread{'' if n == 1 else 's'}")
    return f"{count}, {wait} waiting, {available_cpus()} CPUs available"
