"""Jobs that are processes on the submitting host (local workers, debug runs): their
liveness and stopping them. One such process may hold several runs."""
from __future__ import annotations

import os
import signal

from ebt_scaling.harness.contract.run_state import JobView

from ..processes import hostname, pid_alive


def probe_processes(leases: list[dict]) -> list[JobView]:
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


def stop_processes(leases: list[dict], unfinished: list[dict]) -> list[str]:
    """SIGINT (what submitit's LocalJob.cancel sends its controller) each process whose
    unfinished runs are all being cancelled; a process that holds other runs too stops the
    cancelled ones at their next step, when it sees their marks."""
    cancelling = {lease["token"] for lease in leases}
    held: dict[int, set[str]] = {}
    for lease in unfinished:
        held.setdefault(int(lease.get("job_pid") or 0), set()).add(lease["token"])
    signalled: set[int] = set()
    lines = []
    for lease in leases:
        pid, job_id = int(lease.get("job_pid") or 0), lease.get("job_id")
        if pid in signalled:
            lines.append(f"stopped local job {job_id}")
        elif pid and held.get(pid, set()) <= cancelling and pid_alive(pid, lease.get("job_pid_start")):
            try:
                os.kill(pid, signal.SIGINT)
                signalled.add(pid)
                lines.append(f"stopped local job {job_id}")
            except ProcessLookupError:
                lines.append("marked cancelled (job already gone)")
        else:
            lines.append(f"marked cancelled; job {job_id} stops it at its next step")
    return lines
