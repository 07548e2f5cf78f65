"""One live job per run: the lease file, its liveness, and the cancelled / failed markers.

``RUN_DIR/lease.json`` names the job that owns the run (cluster, job id, host, pid, times,
a random token). It is created with link(2) of a fully written temporary file, so it
appears atomically and only once (like O_EXCL, but never half-written); changes to an
existing lease happen under flock(2) on ``RUN_DIR/.lease.lock`` and are written with an
atomic rename. A lease is broken only after its job is known dead:

* SLURM: the job's state from squeue (one call for all leases; slurmctld's live view),
  and from sacct through submitit's watcher for jobs squeue no longer lists; when the
  query itself fails (error exit, timeout) the job counts as alive (UNREACHABLE);
* local: the submitit controller's pid is alive (same host, same process start time);
* debug, or a submission still in progress: the submitting process is alive.

The job checks the token before training, so a job whose lease was taken over (because
it looked dead) never trains alongside the new owner.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import subprocess
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ebt_scaling.harness.contract.run_dir import atomic_write_json, read_json

LEASE = "lease.json"
LOCK = ".lease.lock"
FAILED = "failed.json"
CANCELLED = "cancelled.json"
LAST_JOB = "last_job.json"

# SLURM states of a job that still exists and may still run (sacct / squeue spellings).
# PREEMPTED is final (a requeued job shows REQUEUED / PENDING instead), so it is not live.
SLURM_LIVE = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "COMPLETING",
              "SUSPENDED", "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED", "READY",
              "RESV_DEL_HOLD", "POWER_UP_NODE", "UNKNOWN"}
# slurm_states' word for a job whose state could not be queried (squeue / sacct failed):
# taken as alive, so a scheduler hiccup never makes a live job's lease look dead.
UNREACHABLE = "UNREACHABLE"
SLURM_RUNNING = {"RUNNING", "COMPLETING", "CONFIGURING", "SIGNALING", "STAGE_OUT", "RESIZING"}
# A job sacct and squeue do not know (yet) is taken as live for this long after submission.
UNKNOWN_GRACE_S = 120.0
# remove_stale_temporaries leaves younger temporaries of unknown writers alone.
STALE_TMP_S = 300.0


def hostname() -> str:
    return socket.gethostname()


# ---- processes ----------------------------------------------------------------------
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


# ---- the lease file ------------------------------------------------------------------
@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Exclusive flock on RUN_DIR/.lease.lock (serialises lease changes between processes)."""
    fd = os.open(Path(run_dir) / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def read_lease(run_dir: Path) -> dict | None:
    lease = read_json(Path(run_dir) / LEASE)
    return lease if isinstance(lease, dict) and "token" in lease else None


def new_lease(cluster: str, **fields) -> dict:
    now = time.time()
    pid = os.getpid()
    return {"token": uuid.uuid4().hex, "cluster": cluster, "state": "submitting", "job_id": None,
            "host": hostname(), "pid": pid, "pid_start": proc_start(pid), "time": now, "updated": now,
            "preemptions": 0, **fields}


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
        if not _create_exclusive(path, lease):  # only a process ignoring the lock gets here
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
    return read_json(Path(run_dir) / LAST_JOB)


# ---- liveness --------------------------------------------------------------------------
@dataclass(frozen=True)
class JobState:
    alive: bool
    state: str  # the scheduler's word: PENDING, RUNNING, CANCELLED, ... ; ALIVE / GONE for processes

    @property
    def running(self) -> bool:
        return self.alive and self.state in SLURM_RUNNING | {"ALIVE"}


def _normalise(state: str) -> str:
    return (state or "UNKNOWN").split()[0].rstrip("+").upper()  # "CANCELLED by 0" -> CANCELLED


def slurm_states(job_ids: Iterable[str]) -> dict[str, str]:
    """SLURM state of each job id (array tasks as 123_4): squeue first (slurmctld's live view,
    recently ended jobs included), then sacct through submitit's watcher (one call) for the
    jobs squeue no longer lists; UNKNOWN if neither knows the job, UNREACHABLE for the jobs
    whose query failed (an error exit or a timeout of squeue or sacct)."""
    ids = sorted({str(j) for j in job_ids if j})
    if not ids:
        return {}
    states: dict[str, str] = {}
    squeue_failed = False
    if shutil.which("squeue"):
        try:
            proc = subprocess.run(["squeue", "-h", "-r", "-t", "all", "-o", "%i %T", "-j", ",".join(ids)],
                                  capture_output=True, text=True, timeout=60)
            # "Invalid job id specified": slurmctld has forgotten every one of them (ask sacct)
            squeue_failed = proc.returncode != 0 and "invalid job id" not in (proc.stderr or "").lower()
            out = proc.stdout or ""
        except (OSError, subprocess.SubprocessError):
            squeue_failed, out = True, ""
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] in ids:
                states[parts[0]] = _normalise(parts[1])
    missing = [j for j in ids if j not in states]
    if missing and shutil.which("sacct"):
        from submitit.slurm.slurm import SlurmJob

        watcher = SlurmJob.watcher
        for job_id in missing:
            watcher.register_job(job_id)
        finished = getattr(watcher, "_finished", None)
        if isinstance(finished, set):  # re-read them: a requeued job can leave a final state
            finished.difference_update(missing)
        # The watcher's own update() swallows sacct errors (the states would read UNKNOWN and
        # the jobs look dead), so run its command here and notice a failure.
        command = watcher._make_command()
        if command:
            try:
                proc = subprocess.run(command, capture_output=True, text=True, timeout=60)
            except (OSError, subprocess.SubprocessError):
                proc = None
            if proc is None or proc.returncode != 0:
                return {j: states.get(j, UNREACHABLE) for j in ids}
            watcher._info_dict.update(watcher.read_info(proc.stdout or ""))
        for job_id in missing:
            states[job_id] = _normalise(watcher.get_state(job_id, mode="cache"))
    elif missing and squeue_failed:
        return {j: states.get(j, UNREACHABLE) for j in ids}
    return {j: states.get(j, "UNKNOWN") for j in ids}


def probe(leases: list[dict | None]) -> list[JobState | None]:
    """Liveness of each lease's job (None for no lease); SLURM jobs in one batch."""
    slurm_ids = [lease["job_id"] for lease in leases
                 if lease and lease.get("cluster") == "slurm" and lease.get("job_id")]
    states = slurm_states(slurm_ids) if slurm_ids else {}
    return [None if lease is None else _probe_one(lease, states) for lease in leases]


def is_dead(lease: dict) -> bool:
    return not _probe_one(lease, None).alive


def _probe_one(lease: dict, slurm: dict[str, str] | None) -> JobState:
    now = time.time()
    cluster, job_id = lease.get("cluster"), lease.get("job_id")
    if not job_id:  # still being submitted: its submitter must be alive
        if lease.get("host") == hostname():
            alive = pid_alive(lease.get("pid"), lease.get("pid_start"))
        else:
            alive = now - float(lease.get("time", 0)) < 600
        return JobState(alive, "SUBMITTING" if alive else "GONE")
    if cluster == "slurm":
        state = (slurm if slurm is not None else slurm_states([job_id])).get(str(job_id), "UNKNOWN")
        if state == UNREACHABLE:  # the scheduler could not be asked: never break a lease on that
            return JobState(True, UNREACHABLE)
        if state == "UNKNOWN":
            recent = now - float(lease.get("submitted_at") or lease.get("time", 0)) < UNKNOWN_GRACE_S
            return JobState(recent, "UNKNOWN" if recent else "GONE")
        return JobState(state in SLURM_LIVE, state)
    # local and debug: a process on the submitting host
    if lease.get("job_host", lease.get("host")) != hostname():
        return JobState(True, "REMOTE")  # cannot check another machine's processes: assume it lives
    alive = pid_alive(lease.get("job_pid"), lease.get("job_pid_start"))
    return JobState(alive, "ALIVE" if alive else "GONE")


# ---- markers ---------------------------------------------------------------------------------
def read_marker(run_dir: Path, name: str) -> dict | None:
    marker = read_json(Path(run_dir) / name)
    if marker is None and (Path(run_dir) / name).exists():
        return {"error": "unreadable marker"}
    return marker


def cancelled(run_dir: Path) -> dict | None:
    return read_marker(run_dir, CANCELLED)


def is_cancelled(run_dir: Path) -> bool:
    return (Path(run_dir) / CANCELLED).exists()


def mark_cancelled(run_dir: Path, **info) -> None:
    with run_lock(run_dir):  # under the lock: remove_stale_temporaries never deletes its temporary
        atomic_write_json(Path(run_dir) / CANCELLED,
                          {"time": time.time(), "host": hostname(), "pid": os.getpid(), **info})


def failure(run_dir: Path) -> dict | None:
    return read_marker(run_dir, FAILED)


def describe_error(exc: BaseException, where: str | Path | None = None) -> str:
    """One line: 'cannot write PATH: No space left on device', or 'Type: message'."""
    if isinstance(exc, OSError) and exc.strerror:
        target = exc.filename or where
        suffix = f" {target}" if target else ""
        # ENOSPC EROFS EACCES ENOTDIR EPERM EDQUOT EISDIR EEXIST: writing failed
        verb = "write" if exc.errno in (28, 30, 13, 20, 1, 122, 21, 17) else "access"
        return f"cannot {verb}{suffix}: {exc.strerror}"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def record_failure(run_dir: Path, exc: BaseException, **info) -> str:
    """Write failed.json (best effort: a full disk may refuse it too); the one-line error."""
    line = describe_error(exc, run_dir)
    tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
    payload = {"error": line, "type": type(exc).__name__, "traceback": "".join(tb)[-4000:],
               "time": time.time(), "host": hostname(), "pid": os.getpid(), **info}
    with contextlib.suppress(OSError):
        atomic_write_json(Path(run_dir) / FAILED, payload)
    return line


# Files whose temporaries only the lease holder writes (the run's own outputs), and files
# written only under run_lock (lease, last job, cancel marker): while the holder, starting,
# holds the lock, no writer of either can be mid-write, so their temporaries are stale.
_HOLDER_FILES = ("spec.yaml", "metrics.jsonl", "result.json", FAILED, "train.log")
_LOCKED_FILES = (LEASE, LAST_JOB, CANCELLED)


def remove_stale_temporaries(run_dir: Path, max_age_s: float = STALE_TMP_S) -> list[Path]:
    """Delete temporary files that killed writers left in a run directory (dot-files ending
    in .tmp from atomic writes, there and in checkpoints/). Only the lease holder calls
    this, when it starts, and it holds run_lock meanwhile: temporaries of the holder's own
    files, of checkpoints and of lock-guarded files go whatever their age; any other
    temporary (a writer this module does not know) only once older than `max_age_s`."""
    run_dir = Path(run_dir)
    removed = []
    known = tuple(f".{name}." for name in _HOLDER_FILES + _LOCKED_FILES)
    with run_lock(run_dir):
        now = time.time()
        for folder in (run_dir, run_dir / "checkpoints"):
            if not folder.is_dir():
                continue
            for tmp in folder.glob(".*.tmp"):
                with contextlib.suppress(OSError):
                    if folder == run_dir and not tmp.name.startswith(known) and \
                            now - tmp.stat().st_mtime < max_age_s:
                        continue
                    tmp.unlink()
                    removed.append(tmp)
    return removed


def clear_markers(run_dir: Path, *names: str) -> None:
    for name in names:
        (Path(run_dir) / name).unlink(missing_ok=True)
