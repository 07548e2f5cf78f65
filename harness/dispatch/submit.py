"""Submit a sweep directory's runs to a backend (SLURM job arrays, local workers, in-process).

Idempotent: finished runs (done, diverged) are skipped, runs a live job holds are skipped,
partial runs are resumed, failed and cancelled ones re-run only with ``retry_failed``.
Damaged runs (contract/run_state.py: a result.json that cannot be used, or a metrics.jsonl
that is not rows) are skipped even then, with the fix: training again cannot mend their files.
Every submitted run first gets a lease (see lease.py), so two submissions racing on one
sweep never start two jobs for one run; the backend then starts the jobs.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from ebt_scaling.harness.contract.errors import ConfigError, DispatchError
from ebt_scaling.harness.contract.run_state import CANCELLED, FAILED, FINISHED, is_damaged, run_state

from . import lease as leases
from .backend import BACKENDS
from .discovery import SweepRun, discover
from .liveness import is_dead, probe
from .markers import clear_markers
from .profiles import ClusterProfile
from .submission import LeasedRun, Submission, SubmitReport
from .wait import wait_for

HELD = "held by a live job"  # the skip reasons of runs another job trains (or will): --wait waits for those too
DAMAGED = "damaged (see `status`: restore its files, or delete its run directory and submit again)"


def plan_submission(runs: list[SweepRun], retry_failed: bool) -> tuple[list[SweepRun], dict[str, list[str]],
                                                                     dict[str, dict | None]]:
    """(runs to submit, skipped reason -> ids, run id -> the lease seen, or None)."""
    lease_list = [leases.read_lease(r.path) for r in runs]
    jobs = probe(lease_list)
    todo, skipped, seen = [], defaultdict(list), {}
    for r, lease, job in zip(runs, lease_list, jobs):
        state, _ = run_state(r.path, job, total_steps=r.spec.total_steps)  # its spec is loaded already
        if state in FINISHED:
            skipped[state].append(r.run_id)
        elif job is not None and job.alive:
            skipped[f"{HELD} ({state})"].append(r.run_id)
        elif is_damaged(r.path, state):
            skipped[DAMAGED].append(r.run_id)
        elif state in ("failed", "cancelled") and not retry_failed:
            skipped[f"{state} (resubmit with --retry-failed)"].append(r.run_id)
        else:
            todo.append(r)
            seen[r.run_id] = lease
    return todo, skipped, seen


def _take_leases(todo: list[SweepRun], seen: dict[str, dict | None], cluster: str, profile: ClusterProfile,
                 skipped: dict[str, list[str]], retry_failed: bool) -> list[LeasedRun]:
    taken = []
    for r in todo:
        old = seen.get(r.run_id)

        def dead(current: dict, old=old) -> bool:
            # The lease we found dead may have been replaced meanwhile: check a new one again.
            return (old is not None and current.get("token") == old.get("token")) or is_dead(current)

        lease = leases.new_lease(cluster, profile=profile.name)
        ok, holder = leases.take_lease(r.path, lease, dead)
        if not ok:
            skipped[f"{HELD} (taken meanwhile)"].append(r.run_id)
            continue
        if retry_failed:
            clear_markers(r.path, FAILED, CANCELLED)
        taken.append(LeasedRun(r, lease))
    return taken


def submit_sweep(sweep_dir: str | Path, cluster: str, profile: ClusterProfile, retry_failed: bool = False,
                 only: list[str] | None = None, wait: bool = False, poll_s: float = 5.0,
                 wait_timeout_s: float | None = None, echo=print, progress: bool = False) -> SubmitReport:
    backend = BACKENDS.get(cluster, key="--cluster")
    sweep_dir = Path(sweep_dir).resolve()
    runs = discover(sweep_dir, only)
    if not runs:
        raise DispatchError(f"{sweep_dir}: the sweep has no runs (runs/*/spec.yaml)")
    report = SubmitReport(backend.name, backend.job_kind)
    todo, skipped, seen = plan_submission(runs, retry_failed)
    report.skipped.update(skipped)
    try:
        resources = profile.for_runs({r.run_id: r.spec.tags for r in todo})
    except ConfigError as exc:
        raise DispatchError(f"profile {profile.name}: {exc}") from None
    taken = _take_leases(todo, seen, backend.name, profile, report.skipped, retry_failed)
    if taken:
        try:
            backend.submit(Submission(backend.name, sweep_dir, profile, taken, resources, report, echo))
        finally:
            # Anything not handed to a job gives its lease back; a run whose job the backend
            # started keeps it (Submission.record_job fills report.submitted first).
            for member in taken:
                if member.run_id not in report.submitted:
                    leases.release_lease(member.run.path, member.lease["token"])
    # --wait: until the runs this call started have ended (an in-process backend has run them
    # already) and those another submission's or train's live job holds, which a concurrent
    # `submit --wait` would otherwise report as skipped at once, long before they end.
    held = [run_id for reason, ids in report.skipped.items() if reason.startswith(HELD) for run_id in ids]
    waiting = ([] if backend.in_process else list(report.submitted)) + held
    if wait and waiting:
        if held:
            echo(f"waiting for {len(held)} run(s) that other live jobs train")
        rows = wait_for(sweep_dir, waiting, poll_s=poll_s, timeout_s=wait_timeout_s, echo=echo, progress=progress)
        report.final_states.update({r.run_id: r.state for r in rows})
    return report
