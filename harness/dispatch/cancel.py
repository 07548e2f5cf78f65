"""Cancelling a sweep's runs (`ebt-scaling cancel`): mark each cancelled, then have its
backend stop the job that holds it."""
from __future__ import annotations

from pathlib import Path

from ebt_scaling.harness.contract.run_state import FINISHED, LEASE

from .backend import BACKENDS
from .discovery import discover
from .markers import mark_cancelled
from .sweep_status import RunStatus, sweep_status


def cancel_runs(sweep_dir: str | Path, only: list[str] | None = None) -> list[tuple[str, str]]:
    """Cancel runs (all unfinished ones by default): mark each cancelled (a job stops a run
    at its next step when the mark appears), then ask the backend of each live job to stop
    it. Returns (run id, what was done)."""
    ended = FINISHED | {"cancelled"}
    rows = sweep_status(sweep_dir, runs=discover(sweep_dir, only))
    targets = [r for r in rows if r.state not in ended]
    actions = [(r.run_id, f"already {r.state}") for r in rows if r.state in ended]
    live = [r for r in targets if r.job_alive]
    # A backend's job may hold several runs (local workers): it learns which are left, read
    # before the marks below end them.
    unfinished = [r.lease for r in (rows if not only else sweep_status(sweep_dir))
                  if r.lease and r.state not in ended] if live else []
    done: dict[str, str] = {}
    for r in targets:
        lease = r.lease or {}
        mark_cancelled(r.path, job_id=lease.get("job_id"), cluster=lease.get("cluster"), previous=r.state)
        if not r.job_alive:
            done[r.run_id] = "marked cancelled"
    by_backend: dict[str, list[RunStatus]] = {}
    for r in live:
        by_backend.setdefault(r.lease["cluster"], []).append(r)
    for name, group in by_backend.items():
        if name not in BACKENDS:
            done.update((r.run_id, f"marked cancelled; its job on backend {name!r} (not installed here) was not "
                                   "signalled: cancel it with that scheduler's own tools") for r in group)
            continue
        backend = BACKENDS.get(name, key=f"{LEASE} cluster")
        lines = backend.cancel([r.lease for r in group], [lease for lease in unfinished if lease.get("cluster") == name])
        done.update(zip((r.run_id for r in group), lines))
    return actions + [(r.run_id, done[r.run_id]) for r in targets]
