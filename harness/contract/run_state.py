"""What state a run is in, from its directory and (when one holds it) its job.

States:
  pending    not started, or queued (a live job holds its lease but has not started it)
  running    its job is running it
  preempted  stopped part-way (preemption, time limit, node failure, a killed job) with
             checkpoints to resume from; queued again when a live job holds it, else
             resumed by `submit` (no --retry-failed needed)
  done / diverged   result.json
  failed     failed.json, or the job ended FAILED / OUT_OF_MEMORY / BOOT_FAIL / DEADLINE (or
             TIMEOUT / NODE_FAIL before its first checkpoint) without a result (re-run with
             `submit --retry-failed`), or a damaged run (below)
  cancelled  cancelled.json from `ebt-scaling cancel` (or the job was scancelled)

Damaged: result.json exists but cannot be used -- it is not what the trainer writes
(run_dir.RunFileError), it has a status other than done/diverged, or it says done while
metrics.jsonl or the spec disagree about how far the run trained (run_dir.done_disagreement:
a cut metrics.jsonl would otherwise stand in for the finished run). The detail names the
file and the fix. Training again cannot mend such a run -- the trainer returns an existing
result.json as it is, and a resume from the final checkpoint keeps the cut rows -- so
`submit` skips it even with --retry-failed (:func:`is_damaged`): restore the files, or
delete the run directory and submit again (it then trains from the start).

Every caller -- `submit`, the job deciding whether to train, `status`, the analysis -- asks
:func:`run_state`, so they agree on every run. Callers that read result.json and
metrics.jsonl anyway pass them in (:class:`RunFiles`) so that nothing is read twice.

The dispatcher writes the marker files named here into a run directory; the analysis reads
the same files through :func:`run_state`, without a job. Job states are spelled as SLURM
spells them: that is the vocabulary every backend's probe speaks.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError
from .run_dir import RunDir, done_disagreement, read_json
from .spec import load_spec

LEASE = "lease.json"  # the live job that owns the run
FAILED = "failed.json"  # the last failure: one error line, traceback tail, job id
CANCELLED = "cancelled.json"  # written by `ebt-scaling cancel`

STATES = ("pending", "running", "preempted", "done", "diverged", "failed", "cancelled")
FINISHED = frozenset({"done", "diverged"})

# Job states that end a run without its result: failures, and interruptions from outside
# (resumable once the run has a checkpoint, a failure before its first one).
FAILED_JOB_STATES = frozenset({"FAILED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE"})
INTERRUPTED_JOB_STATES = frozenset({"PREEMPTED", "TIMEOUT", "NODE_FAIL"})
REQUEUED_JOB_STATES = frozenset({"REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED"})


@dataclass(frozen=True)
class JobView:
    """A run's job as its backend's probe saw it, with what the run's lease says of it."""

    job_id: str | None  # None while its submission is in progress
    state: str  # the job's state in SLURM's words (PENDING, RUNNING, CANCELLED, ...)
    alive: bool  # it exists and may still run (a job whose scheduler cannot be asked counts as alive)
    running: bool = False  # it is training this run now
    unreachable: bool = False  # its scheduler could not be asked
    lease_state: str | None = None  # submitting / queued / running / preempted
    preemptions: int = 0  # graceful preemptions the lease has counted

    @classmethod
    def of_lease(cls, lease: dict, state: str, alive: bool, running: bool = False,
                 unreachable: bool = False) -> "JobView":
        return cls(job_id=lease.get("job_id"), state=state, alive=alive, running=running, unreachable=unreachable,
                   lease_state=lease.get("state"), preemptions=int(lease.get("preemptions", 0) or 0))


def read_marker(run_dir: str | Path, name: str) -> dict | None:
    """A marker file's content; a marker that exists but cannot be read still counts."""
    marker = read_json(Path(run_dir) / name)
    if marker is None and (Path(run_dir) / name).exists():
        return {"error": f"unreadable {name}"}
    return marker


@dataclass(frozen=True)
class RunFiles:
    """result.json and metrics.jsonl as read (RunDir.result, RunDir.metrics), and the steps
    its spec plans: what `status` and the analysis read anyway, handed to run_state."""

    result: dict | None
    metrics: list[dict]
    total_steps: int


def _planned_steps(run: RunDir) -> int | None:
    """The steps spec.yaml plans; None without one (a directory without its spec is no run
    that `submit` or the analysis lists, and there is then no plan to check a result against)."""
    return load_spec(run.spec_path).total_steps if run.spec_path.exists() else None


def _result_state(run: RunDir, files: RunFiles | None) -> tuple[str, str] | None:
    """(state, detail) from result.json; None when there is none."""
    try:
        result = run.result() if files is None else files.result
        if result is None:
            return None
        status = result.get("status", "failed")
        note = str(result.get("note", "") or "")
        if status not in FINISHED:
            return "failed", note or f"result.json says status {status!r}"
        if status == "done":
            metrics, total_steps = (run.metrics(), _planned_steps(run)) if files is None else \
                (files.metrics, files.total_steps)
            damage = done_disagreement(result, metrics, total_steps) if total_steps is not None else None
            if damage:
                return "failed", (f"damaged: {damage}; restore its metrics.jsonl and result.json, or delete "
                                  f"{run.path} and submit the run again")
        return status, note
    except ConfigError as exc:  # RunFileError, or an unreadable spec: named, and out of the way of other runs
        return "failed", str(exc)


def is_damaged(run_dir: str | Path, state: str) -> bool:
    """Whether a failed run failed on its result.json (see the module's "Damaged"): run_state
    reports every other failure only when there is no result.json."""
    return state == "failed" and RunDir(run_dir).result_path.exists()


def run_state(run_dir: str | Path, job: JobView | None = None, files: RunFiles | None = None) -> tuple[str, str]:
    """(state, detail) of one run; `job` is the job its lease names, None when no lease;
    `files` what the caller read of the run already (else run_state reads what it needs)."""
    run = RunDir(run_dir)
    finished = _result_state(run, files)
    if finished is not None:
        return finished
    cancelled = read_marker(run.path, CANCELLED)
    if cancelled is not None:
        return "cancelled", "cancelled" + (f" (job {cancelled['job_id']})" if cancelled.get("job_id") else "")
    if job is not None and job.alive:
        if job.unreachable:
            return ("running" if job.lease_state == "running" else "pending"), \
                f"scheduler query failed; assuming job {job.job_id} lives"
        if job.running:
            return "running", ""
        if job.lease_state in ("running", "preempted") or job.state in REQUEUED_JOB_STATES:
            # it had started and is queued again (preemption, time limit, scontrol requeue)
            return "preempted", f"requeued ({job.preemptions} graceful preemptions)"
        return "pending", "queued" if job.job_id is not None else "submitting"
    failed = read_marker(run.path, FAILED)
    if failed is not None:
        return "failed", str(failed.get("error", ""))
    has_checkpoint = bool(run.checkpoints())
    if job is not None:  # its job is gone without a result
        if job.state == "CANCELLED":
            return "cancelled", f"job {job.job_id} was cancelled"
        if job.state in INTERRUPTED_JOB_STATES and has_checkpoint:
            return "preempted", f"job {job.job_id} ended {job.state} part-way; resumable"
        if job.state in FAILED_JOB_STATES:
            return "failed", f"job {job.job_id} ended {job.state} without a result"
        if has_checkpoint:
            return "preempted", f"job {job.job_id} ended ({job.state}) part-way; resumable"
    if has_checkpoint:
        return "preempted", "stopped part-way; resumable"
    return "pending", ""
