"""The operations on a sweep's runs: submit them to a backend, wait for them, cancel them.

Each works on the snapshot of the sweep its command took (snapshot.py), or reads one.

Submit (SLURM job arrays, local workers, in-process) is idempotent: finished runs (done,
diverged) are skipped, runs a live job holds are skipped, partial runs are resumed, failed
and cancelled ones re-run only with ``retry_failed``. Damaged runs (contract/run_state.py:
a result.json that cannot be used, or a metrics.jsonl that is not rows) are skipped even
then, with the fix: training again cannot mend their files. Every submitted run first gets
a lease (see run_files.py), so two submissions racing on one sweep never start two jobs for
one run; the backend then starts the jobs.

Cancel marks each run cancelled, then has its backend stop the job that holds it. Wait
polls `status` (status.py) until none of the runs has a live job.
"""
from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from ebt_scaling.harness.contract.errors import ConfigError, DispatchError
from ebt_scaling.harness.contract.run_state import CANCELLED, FAILED, FINISHED, LEASE, STATES, is_damaged, run_state

from . import run_files
from .backend import BACKENDS, LeasedRun, Submission, SubmitReport
from .liveness import is_dead, probe
from .profiles import ClusterProfile
from .snapshot import SweepRun, SweepSnapshot
from .status import RunStatus, sweep_status

HELD = "held by a live job"  # the skip reasons of runs another job trains (or will): --wait waits for those too
DAMAGED = "damaged (see `status`: restore its files, or delete its run directory and submit again)"


# ---- submit ------------------------------------------------------------------------------------
def plan_submission(runs: Sequence[SweepRun], retry_failed: bool) -> tuple[list[SweepRun], dict[str, list[str]],
                                                                     dict[str, dict | None]]:
    """(runs to submit, skipped reason -> ids, run id -> the lease seen, or None)."""
    lease_list = [run_files.read_lease(r.path) for r in runs]
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

        lease = run_files.new_lease(cluster, profile=profile.name)
        ok, holder = run_files.take_lease(r.path, lease, dead)
        if not ok:
            skipped[f"{HELD} (taken meanwhile)"].append(r.run_id)
            continue
        if retry_failed:
            run_files.clear_markers(r.path, FAILED, CANCELLED)
        taken.append(LeasedRun(r, lease))
    return taken


def submit_sweep(sweep: str | Path | SweepSnapshot, cluster: str, profile: ClusterProfile,
                 retry_failed: bool = False, only: list[str] | None = None, wait: bool = False, poll_s: float = 5.0,
                 wait_timeout_s: float | None = None, echo=print, progress: bool = False) -> SubmitReport:
    """Submit the sweep's runs (`only`: those ids or prefixes) to backend `cluster`; with
    `wait`, poll until they have ended. `sweep`: a sweep directory, or the snapshot of it the
    command took."""
    backend = BACKENDS.get(cluster, key="--cluster")
    snapshot = SweepSnapshot.of(sweep).resolved().require_readable()  # jobs run elsewhere: absolute paths
    sweep_dir, runs = snapshot.sweep_dir, snapshot.select(only).runs
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
                    run_files.release_lease(member.run.path, member.lease["token"])
    # --wait: until the runs this call started have ended (an in-process backend has run them
    # already) and those another submission's or train's live job holds, which a concurrent
    # `submit --wait` would otherwise report as skipped at once, long before they end.
    held = [run_id for reason, ids in report.skipped.items() if reason.startswith(HELD) for run_id in ids]
    waiting = ([] if backend.in_process else list(report.submitted)) + held
    if wait and waiting:
        if held:
            echo(f"waiting for {len(held)} run(s) that other live jobs train")
        rows = wait_for(snapshot, waiting, poll_s=poll_s, timeout_s=wait_timeout_s, echo=echo, progress=progress)
        report.final_states.update({r.run_id: r.state for r in rows})
    return report


# ---- wait --------------------------------------------------------------------------------------
def wait_for(sweep: str | Path | SweepSnapshot, run_ids: list[str], poll_s: float = 5.0,
             timeout_s: float | None = None, echo=print, progress: bool = False) -> list[RunStatus]:
    """Poll until none of `run_ids` has a live job (or is waiting for one); the final rows.
    With `progress`, a bar of training tokens done over all of them. Every poll reads the
    runs' progress again, their specs never (the snapshot holds them)."""
    start, last = time.time(), ""
    if not run_ids:
        return []
    runs = SweepSnapshot.of(sweep).require_readable().select(run_ids)
    bar = None
    while True:
        rows = sweep_status(runs)
        active = [r for r in rows if r.state in ("pending", "running", "preempted") and r.job_alive]
        summary = ", ".join(f"{n} {s}" for s in STATES if (n := sum(1 for r in rows if r.state == s)))
        if progress:
            if bar is None:
                bar = tqdm(total=sum(r.tokens_total for r in rows), unit="tok", unit_scale=True, dynamic_ncols=True)
            bar.update(sum(r.tokens_done for r in rows) - bar.n)
            bar.set_postfix_str(summary)
        elif summary != last:
            echo(f"[{time.time() - start:6.0f}s] {summary}")
            last = summary
        if not active:
            if bar is not None:
                bar.close()
            return rows
        if timeout_s is not None and time.time() - start > timeout_s:
            raise DispatchError(f"--wait: {len(active)} runs still active after {timeout_s:.0f} s")
        time.sleep(poll_s)


# ---- cancel ------------------------------------------------------------------------------------
def cancel_runs(sweep: str | Path | SweepSnapshot, only: list[str] | None = None) -> list[tuple[str, str]]:
    """Cancel runs (all unfinished ones by default): mark each cancelled (a job stops a run
    at its next step when the mark appears), then ask the backend of each live job to stop
    it. Returns (run id, what was done)."""
    ended = FINISHED | {"cancelled"}
    snapshot = SweepSnapshot.of(sweep).require_readable()
    rows = sweep_status(snapshot, only)
    targets = [r for r in rows if r.state not in ended]
    actions = [(r.run_id, f"already {r.state}") for r in rows if r.state in ended]
    live = [r for r in targets if r.job_alive]
    # A backend's job may hold several runs (local workers): it learns which are left, read
    # before the marks below end them.
    unfinished = [r.lease for r in (rows if not only else sweep_status(snapshot))
                  if r.lease and r.state not in ended] if live else []
    done: dict[str, str] = {}
    for r in targets:
        lease = r.lease or {}
        run_files.mark_cancelled(r.path, job_id=lease.get("job_id"), cluster=lease.get("cluster"), previous=r.state)
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
