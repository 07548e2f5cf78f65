"""Removing the temporary files that killed writers leave in a run directory.

Every whole-file write goes through a dot-file ending in .tmp beside its target (see
contract/run_dir.py); a writer killed mid-write leaves it behind. The lease holder, when
it starts, removes those it can prove stale.
"""
from __future__ import annotations

import contextlib
import time
from pathlib import Path

from ebt_scaling.harness.contract.run_dir import RunDir
from ebt_scaling.harness.contract.run_state import CANCELLED, FAILED, LEASE

from .lease import LAST_JOB, run_lock

# remove_stale_temporaries leaves younger temporaries of unknown writers alone.
STALE_TMP_S = 300.0

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
