"""Whether a run's job lives: this host's processes, and each lease's job asked of its backend.

A process is named by its pid and its start time (clock ticks since boot): a pid alone may
have been reused by an unrelated process since it was recorded. Jobs that are processes on
the submitting host (local workers, debug runs) are probed that way; other backends ask
their scheduler. :func:`probe` asks each lease's backend, in one probe per backend.

A lease without a job id is still being submitted: it lives as long as its submitting
process does (on another host, for ten minutes), whatever the backend.
"""
from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from ebt_scaling.harness.contract.run_state import JobView

from . import backend

SUBMITTER_GRACE_S = 600.0  # a submission on another host is trusted this long


# ---- processes on this host ------------------------------------------------------------------
def hostname() -> str:
    return socket.gethostname()


def proc_start(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux), None if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def pid_alive(pid: int | None, start: int | None = None) -> bool:
    """A live, non-zombie process with that pid (and start time, when given) on this host."""
    if not pid or pid <= 0:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: fall back to a null signal
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):
        return False
    return start is None or int(fields[19]) == start


def probe_processes(leases: list[dict]) -> list[JobView]:
    """The jobs of leases whose job is a process on the submitting host (local, debug); one
    such process may hold several runs."""
    views = []
    for lease in leases:
        if lease.get("job_host", lease.get("host")) != hostname():
            views.append(JobView.of_lease(lease, "REMOTE", alive=True))  # another machine's process: assume it lives
            continue
        alive = pid_alive(lease.get("job_pid"), lease.get("job_pid_start"))
        # a worker holds several runs: it is training this one once the lease says so
        views.append(JobView.of_lease(lease, "ALIVE" if alive else "GONE", alive,
                                      running=alive and lease.get("state") == "running"))
    return views


# ---- any lease's job ---------------------------------------------------------------------------
def probe(leases: list[dict | None]) -> list[JobView | None]:
    """The job of each lease (None for no lease)."""
    views: list[JobView | None] = [None] * len(leases)
    by_backend: dict[str, list[int]] = {}
    for i, lease in enumerate(leases):
        if lease is None:
            continue
        if lease.get("job_id"):
            by_backend.setdefault(lease.get("cluster"), []).append(i)
        else:
            views[i] = _submitting(lease)
    for name, indices in by_backend.items():
        if name not in backend.BACKENDS:
            # A lease of a backend this install lacks (an uninstalled plugin): nobody can ask
            # about its job, so it counts as alive, like a failed scheduler query.
            for i in indices:
                views[i] = JobView.of_lease(leases[i], f"UNKNOWN BACKEND {name!r}", True, unreachable=True)
            continue
        for i, view in zip(indices, backend.BACKENDS.get(name).probe([leases[i] for i in indices])):
            views[i] = view
    return views


def is_dead(lease: dict) -> bool:
    return not probe([lease])[0].alive


def _submitting(lease: dict) -> JobView:
    if lease.get("host") == hostname():
        alive = pid_alive(lease.get("pid"), lease.get("pid_start"))
    else:
        alive = time.time() - float(lease.get("time", 0)) < SUBMITTER_GRACE_S
    return JobView.of_lease(lease, "SUBMITTING" if alive else "GONE", alive)
