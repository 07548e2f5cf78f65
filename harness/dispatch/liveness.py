"""Whether the job a lease names is alive: each lease's backend is asked, in one probe per backend.

A lease without a job id is still being submitted: it lives as long as its submitting
process does (on another host, for ten minutes), whatever the backend.
"""
from __future__ import annotations

import time

from ebt_scaling.harness.contract.run_state import JobView

from .backend import BACKENDS
from .processes import hostname, pid_alive

SUBMITTER_GRACE_S = 600.0  # a submission on another host is trusted this long


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
        if name not in BACKENDS:
            # A lease of a backend this install lacks (an uninstalled plugin): nobody can ask
            # about its job, so it counts as alive, like a failed scheduler query.
            for i in indices:
                views[i] = JobView.of_lease(leases[i], f"UNKNOWN BACKEND {name!r}", True, unreachable=True)
            continue
        backend = BACKENDS.get(name)
        for i, view in zip(indices, backend.probe([leases[i] for i in indices])):
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
