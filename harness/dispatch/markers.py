"""The failed / cancelled markers of a run directory, and the one-line error a failure records.

``failed.json`` holds the last failure (error line, traceback tail, job id); a new attempt
clears it. ``cancelled.json`` is written by ``ebt-scaling cancel``; a job stops its run at
the next step when it appears, and `submit` leaves the run alone unless --retry-failed.
"""
from __future__ import annotations

import contextlib
import os
import time
import traceback
from pathlib import Path

from ebt_scaling.harness.contract.run_dir import atomic_write_json
from ebt_scaling.harness.contract.run_state import CANCELLED, FAILED, read_marker

from .lease import run_lock
from .processes import hostname


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


def clear_markers(run_dir: Path, *names: str) -> None:
    for name in names:
        (Path(run_dir) / name).unlink(missing_ok=True)
