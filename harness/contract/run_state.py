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
a cut metrics.jsonl would otherwise stand in for the finished run) -- or there is no
result.json and metrics.jsonl is not rows (the trainer rereads it at every start and would
fail each time). The detail names the file and the fix. Training again cannot mend such a
run -- the trainer returns an existing result.json as it is, and a resume from the final
checkpoint keeps the cut rows -- so `submit` skips it even with --retry-failed
(:func:`is_damaged`): restore the files, or delete the run directory and submit again (it
then trains from the start). A finished run whose spec.yaml no longer validates (checks
tightened since it trained) is failed too, but its files are intact: the detail says to
fix the spec, not to delete the run.

Every caller -- `submit`, the job deciding whether to train, `status`, the analysis -- asks
:func:`run_state`, so they agree on every run. Callers that read result.json and
metrics.jsonl anyway pass them in (:class:`RunFiles`) so that nothing is read twice, and
callers that loaded the spec pass its total_steps. A done run needs only metrics.jsonl's
last row (RunDir.last_metrics_row, read from the file's end), so `submit` over a finished
sweep reads no metrics file whole; `status` reads only the tail it shows
(RunDir.metrics_tail), and the analysis reads them whole anyway and also names damage in
earlier lines.

The dispatcher writes the marker files named here into a run directory; the analysis reads
the same files through :func:`run_state`, without a job. Job states are spelled as SLURM
spells them: that is the vocabulary every backend's probe speaks.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError
from .run_dir import RunDir, RunFileError, done_disagreement, read_json
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
    """result.json and metrics.jsonl as read (RunDir.result; RunDir.metrics, or the tail of it
    that `status` reads), and the steps its spec plans: what `status` and the analysis read
    anyway, handed to run_state."""

    result: dict | None
    metrics: list[dict]
    total_steps: int


class SpecNoLongerValid(ConfigError):
    """A finished run's spec.yaml fails today's checks (stricter than when it trained, or edited
    by hand). Its result and metrics are intact, so the fix is the spec's, never deleting the run."""

    def __init__(self, cause: ConfigError):
        super().__init__(f"spec.yaml no longer validates: {cause}; the run's result.json and metrics.jsonl "
                         "are intact: restore or fix spec.yaml, do not delete the run")


def _planned_steps(run: RunDir) -> int | None:
    """The steps spec.yaml plans; None without one (a directory without its spec is no run
    that `submit` or the analysis lists, and there is then no plan to check a result against)."""
    if not run.spec_path.exists():
        return None
    try:
        return load_spec(run.spec_path).total_steps
    except ConfigError as exc:
        raise SpecNoLongerValid(exc) from None


def _result_state(run: RunDir, files: RunFiles | None, total_steps: int | None) -> tuple[str, str] | None:
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
            if files is not None:
                last, total_steps = (files.metrics or [None])[-1], files.total_steps
            else:  # only the last row is compared: no need to parse a long file
                last = run.last_metrics_row()
                total_steps = _planned_steps(run) if total_steps is None else total_steps
            damage = done_disagreement(result, last, total_steps) if total_steps is not None else None
            if damage:
                return "failed", (f"damaged: {damage}; restore its metrics.jsonl and result.json, or delete "
                                  f"{run.path} and submit the run again")
        return status, note
    except ConfigError as exc:  # RunFileError, or SpecNoLongerValid: named, and out of the way of other runs
        return "failed", str(exc)


def _metrics_damage(run: RunDir) -> str | None:
    """Why metrics.jsonl cannot be read as rows (None: it can, or there is none). The trainer
    rereads it at every start (truncate_metrics), so a run with such a file fails each time."""
    try:
        run.metrics()
    except RunFileError as exc:
        return str(exc)
    return None


def is_damaged(run_dir: str | Path, state: str) -> bool:
    """Whether a failed run failed on its files (see the module's "Damaged"): a result.json
    run_state could not accept, or a metrics.jsonl that is not rows. Training again cannot
    mend either; run_state reports every other failure only when both are fine."""
    run = RunDir(run_dir)
    return state == "failed" and (run.result_path.exists() or _metrics_damage(run) is not None)


def run_state(run_dir: str | Path, job: JobView | None = None, files: RunFiles | None = None,
              total_steps: int | None = None) -> tuple[str, str]:
    """(state, detail) of one run; `job` is the job its lease names, None when no lease;
    `files` what the caller read of the run already (else run_state reads what it needs);
    `total_steps` the steps its spec plans, from a caller that loaded the spec (else it is read)."""
    run = RunDir(run_dir)
    finished = _result_state(run, files, total_steps)
    if finished is not None:
        return finished
    damage = _metrics_damage(run) if files is None else None  # a caller with `files` read them whole already
    if damage is not None:
        return "failed", damage
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
