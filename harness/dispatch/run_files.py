"""The files dispatch owns in a run directory: the lease, the failed / cancelled markers, and
the temporaries killed writers leave.

The lease: ``RUN_DIR/lease.json`` names the job that owns the run (cluster, job id, host,
pid, times, a random token). It is created with link(2) of a fully written temporary file,
so it appears atomically and only once (like O_EXCL, but never half-written); changes to an
existing lease happen under flock(2) on ``RUN_DIR/.lease.lock`` and are written with an
atomic rename. A lease is broken only after its job is known dead: the caller of
:func:`take_lease` says how to tell (liveness.py asks the lease's backend). The job checks
the token before training, so a job whose lease was taken over (because it looked dead)
never trains alongside the new owner.

The markers: ``failed.json`` holds the last failure (error line, traceback tail, job id); a
new attempt clears it. ``cancelled.json`` is written by ``ebt-scaling cancel``; a job stops
its run at the next step when it appears, and `submit` leaves the run alone unless
--retry-failed.

Temporaries: every whole-file write goes through a dot-file ending in .tmp beside its target
(see contract/run_dir.py); a writer killed mid-write leaves it behind. The lease holder, when
it starts, removes those it can prove stale (:func:`remove_stale_temporaries`).
"""
from __future__ import annotations

import contextlib
import json
import os
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from ebt_scaling.harness.contract.errors import DispatchError, describe_error
from ebt_scaling.harness.contract.locks import file_lock
from ebt_scaling.harness.contract.run_dir import RunDir, atomic_write_json, read_json
from ebt_scaling.harness.contract.run_state import CANCELLED, FAILED, LEASE, read_marker

from . import liveness

LOCK = ".lease.lock"
LAST_JOB = "last_job.json"
# remove_stale_temporaries leaves younger temporaries of unknown writers alone.
STALE_TMP_S = 300.0
UNLOCKED = ("lease changes of run directories proceed without the lock; lease.json is still created only once, "
            "but put sweeps on a filesystem with locks (not every NFS mount has them) before submitting from two "
            "places at once")


def run_lock(run_dir: Path) -> contextlib.AbstractContextManager[bool]:
    """Exclusive flock on RUN_DIR/.lease.lock (serialises lease changes between processes).
    Yields whether the lock is real: where the filesystem refuses flock (some NFS mounts:
    ENOLCK, EOPNOTSUPP) it warns once and proceeds without it."""
    return file_lock(Path(run_dir) / LOCK, warn_if_refused=UNLOCKED)


# ---- the lease -------------------------------------------------------------------------------
def read_lease(run_dir: Path) -> dict | None:
    lease = read_json(os.path.join(run_dir, LEASE))
    return lease if isinstance(lease, dict) and "token" in lease else None


def new_lease(cluster: str, **fields) -> dict:
    now = time.time()
    pid = os.getpid()
    return {"token": uuid.uuid4().hex, "cluster": cluster, "state": "submitting", "job_id": None,
            "host": liveness.hostname(), "pid": pid, "pid_start": liveness.proc_start(pid), "time": now,
            "updated": now, "preemptions": 0, **fields}


def _create_exclusive(path: Path, obj: dict) -> bool:
    """Create `path` holding `obj` if it does not exist; atomic and never half-written."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "w") as f:
            f.write(json.dumps(obj, indent=2, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        return True
    finally:
        tmp.unlink(missing_ok=True)


def take_lease(run_dir: Path, lease: dict, is_dead: Callable[[dict], bool]) -> tuple[bool, dict | None]:
    """Install `lease` unless a live one is there: (taken, the lease now in place).

    An existing lease is replaced only when ``is_dead(existing)`` says its job is gone (an
    unreadable lease file counts as dead: it cannot name a job)."""
    run_dir = Path(run_dir)
    path = run_dir / LEASE
    with run_lock(run_dir):
        if path.exists():
            current = read_lease(run_dir)
            if current is not None and not is_dead(current):
                return False, current
            path.unlink(missing_ok=True)
        if not _create_exclusive(path, lease):  # a process ignoring (or without) the lock got here first
            return False, read_lease(run_dir)
        return True, lease


def update_lease(run_dir: Path, token: str, state_from: tuple[str, ...] | None = None, **changes) -> dict | None:
    """Merge `changes` into the lease if it still carries `token`; the new lease or None.
    With `state_from`, a ``state`` change applies only from one of those states (the
    submitter's 'queued' must not overwrite the 'running' of a job that started first)."""
    run_dir = Path(run_dir)
    with run_lock(run_dir):
        current = read_lease(run_dir)
        if current is None or current["token"] != token:
            return None
        if state_from is not None and current.get("state") not in state_from:
            changes.pop("state", None)
        current.update(changes, updated=time.time())
        atomic_write_json(run_dir / LEASE, current)
        return current


def release_lease(run_dir: Path, token: str, outcome: str | None = None) -> bool:
    """Remove the lease if it still carries `token`, keeping its job in last_job.json."""
    run_dir = Path(run_dir)
    with run_lock(run_dir):
        current = read_lease(run_dir)
        if current is None or current["token"] != token:
            return False
        if outcome is not None:
            with contextlib.suppress(OSError):  # a record only: a full disk must not stop the release
                atomic_write_json(run_dir / LAST_JOB, {**current, "outcome": outcome, "ended": time.time()})
        (run_dir / LEASE).unlink(missing_ok=True)
        return True


def last_job(run_dir: Path) -> dict | None:
    return read_json(os.path.join(run_dir, LAST_JOB))


def describe_holder(lease: dict) -> str:
    job = lease.get("job_id") or "(being submitted)"
    return f"{lease.get('cluster')} job {job} on {lease.get('host')} (pid {lease.get('pid')})"


@contextlib.contextmanager
def training_lease(run_dir: Path, flag: str) -> Iterator[dict]:
    """Hold RUN_DIR's lease while this process trains the run itself (`ebt-scaling train`),
    as the debug backend's in-process job, so that `status`, `submit` and a second `train`
    see the run taken. A live holder is refused in one line naming it (DispatchError
    "FLAG: ..."); a dead one (a killed process, an ended job) is replaced. Yields a dict whose
    "outcome" the caller sets; released on exit with it (kept in last_job.json)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    pid = os.getpid()
    mine = new_lease("debug", job_id=f"train-{pid}", state="running", started_at=time.time(), job_pid=pid,
                     job_pid_start=liveness.proc_start(pid), job_host=liveness.hostname())
    taken, holder = take_lease(run_dir, mine, liveness.is_dead)
    if not taken:
        who = describe_holder(holder) if holder else "another job"
        raise DispatchError(f"{flag}: {run_dir} is being trained by {who}; wait for it to end, or stop it first "
                            "(`ebt-scaling cancel`)")
    ending = {"outcome": "failed"}
    try:
        yield ending
    except KeyboardInterrupt:
        ending["outcome"] = "interrupted"
        raise
    finally:
        release_lease(run_dir, mine["token"], ending["outcome"])


# ---- the markers -----------------------------------------------------------------------------
def is_cancelled(run_dir: Path) -> bool:
    return (Path(run_dir) / CANCELLED).exists()


def mark_cancelled(run_dir: Path, **info) -> None:
    with run_lock(run_dir):  # under the lock: remove_stale_temporaries never deletes its temporary
        atomic_write_json(Path(run_dir) / CANCELLED,
                          {"time": time.time(), "host": liveness.hostname(), "pid": os.getpid(), **info})


def failure(run_dir: Path) -> dict | None:
    return read_marker(run_dir, FAILED)


def record_failure(run_dir: Path, exc: BaseException, **info) -> str:
    """Write failed.json (best effort: a full disk may refuse it too); the one-line error."""
    line = describe_error(exc, run_dir)
    tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
    payload = {"error": line, "type": type(exc).__name__, "traceback": "".join(tb)[-4000:],
               "time": time.time(), "host": liveness.hostname(), "pid": os.getpid(), **info}
    with contextlib.suppress(OSError):
        atomic_write_json(Path(run_dir) / FAILED, payload)
    return line


def clear_markers(run_dir: Path, *names: str) -> None:
    for name in names:
        (Path(run_dir) / name).unlink(missing_ok=True)


# ---- temporaries -----------------------------------------------------------------------------
# Files whose temporaries only the lease holder writes (the run's own outputs), and files
# written only under run_lock (lease, last job, cancel marker): while the holder, starting,
# holds the lock, no writer of either can be mid-write, so their temporaries are stale.
_HOLDER_FILES = ("spec.yaml", "metrics.jsonl", "result.json", FAILED, "train.log")
_LOCKED_FILES = (LEASE, LAST_JOB, CANCELLED)


def remove_stale_temporaries(run_dir: Path, max_age_s: float = STALE_TMP_S) -> list[Path]:
    """Delete temporary files that killed writers left in a run directory (dot-files ending
    in .tmp from atomic writes, there and in checkpoints/). Only the lease holder calls
    this, when it starts, and it holds run_lock meanwhile: temporaries of the holder's own
    files and of checkpoints go whatever their age, and so do those of lock-guarded files
    while the lock is real; any other temporary (a writer this module does not know, or a
    lock-guarded writer on a filesystem without locks) only once older than `max_age_s`."""
    run_dir = Path(run_dir)
    removed = []
    holder = tuple(f".{name}." for name in _HOLDER_FILES)
    guarded = tuple(f".{name}." for name in _LOCKED_FILES)
    with run_lock(run_dir) as locked:
        known = holder + guarded if locked else holder
        now = time.time()
        for tmp in run_dir.glob(".*.tmp"):
            with contextlib.suppress(OSError):
                if not tmp.name.startswith(known) and now - tmp.stat().st_mtime < max_age_s:
                    continue
                tmp.unlink()
                removed.append(tmp)
        removed += RunDir(run_dir).remove_checkpoint_temporaries()  # the trainer calls the same on start
    return removed
