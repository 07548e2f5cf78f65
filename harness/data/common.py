"""Shared helpers of the data package: the error type, the cache directory, file locks
and atomic (temp + rename) writes.

Crash and concurrency safety of the cache rests on two rules:

* Nothing is ever written in place. A file is written to a temporary name in the same
  directory and renamed over; a directory (a whole token store) is built under a
  temporary name and renamed into place in one step, with its ``meta.json`` written
  last. A prepare killed at any point leaves at most a ``.tmp-*`` entry, which the
  next prepare of the same key deletes; readers only ever see complete entries.
* Work is serialised per cache key with a file lock (``<cache>/locks/KEY.lock``,
  :func:`cache_lock`), so 32 runs starting at once do the work once and the other 31
  wait, then reuse it. If two writers still race (a filesystem without working locks),
  the directory rename lets exactly one win and the loser deletes its copy and uses the
  winner's.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Iterator

from ebt_scaling.harness.contract.errors import ConfigError
from ebt_scaling.harness.contract.locks import file_lock
from ebt_scaling.harness.contract.run_dir import UMASK

class DataError(ConfigError):
    """A data problem the user can fix (bad path, corrupt download, too little text).

    A ConfigError, so every caller that reports config errors as one line reports these
    too; the message names the spec key (``data.tokens_path: ...``) where there is one.
    """


def cache_root(cache_dir: str | None) -> Path:
    """DataSpec.cache_dir, else $EBT_SCALING_DATA, else ~/.cache/ebt-scaling."""
    chosen = cache_dir or os.environ.get("EBT_SCALING_DATA") or "~/.cache/ebt-scaling"
    return Path(chosen).expanduser().resolve()


def short_hash(*parts: object, n: int = 16) -> str:
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode())
    return digest.hexdigest()[:n]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_lock(path: Path) -> contextlib.AbstractContextManager[bool]:
    """The lock of one cache key, held for the block; yields whether it is real. Where the
    filesystem refuses locks (some NFS mounts) the work goes on silently: the rename rule
    alone keeps the cache consistent (see the module)."""
    return file_lock(path, warn_if_refused=None)


def remove_stale_temps(final: Path, locked: bool) -> None:
    """Delete leftovers of killed writers of `final`: all of them while holding its lock,
    else only those untouched for an hour (they may belong to a live writer)."""
    older_than_s = 0.0 if locked else 3600.0
    now = time.time()
    for entry in final.parent.glob(f".tmp-{final.name}-*"):
        with contextlib.suppress(OSError):
            if now - entry.stat().st_mtime >= older_than_s:
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()


@contextlib.contextmanager
def atomic_directory(final: Path) -> Iterator[Path]:
    """Yield a fresh temporary directory beside `final`; on success rename it to `final`.

    If `final` appeared meanwhile (another writer won), the temporary copy is deleted
    and the winner's is kept. On an exception the temporary directory is deleted.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=final.parent))
    os.chmod(tmp, 0o777 & ~UMASK)  # mkdtemp makes it private; a shared cache must stay readable
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    # Data on disk before the name: a crash must never leave `final` with short files.
    for entry in tmp.iterdir():
        with open(entry, "rb") as f:
            os.fsync(f.fileno())
    try:
        os.rename(tmp, final)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not final.is_dir():
            raise
