"""The one advisory file lock: flock(2) on a lock file, for every layer that serialises work
through one (the data cache: one prepare per cache key; dispatch: the lease changes of a run
directory).

Where the filesystem refuses flock (some NFS mounts: ENOLCK, EOPNOTSUPP) the block still runs,
unlocked, and the lock yields False. What that costs differs by caller, so each caller says
what to do then (``warn_if_refused``): None proceeds silently, for a caller whose own rule
keeps it safe (the data cache's atomic directory rename); a message is warned once per
process, for a caller whose users should move to a filesystem with locks.
"""
from __future__ import annotations

import contextlib
import functools
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

try:  # POSIX only; elsewhere every lock is refused
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None


@functools.cache
def _warn_once(message: str, reason: str) -> None:
    warnings.warn(f"flock(2) refused ({reason}): {message}", RuntimeWarning, stacklevel=5)


@contextlib.contextmanager
def file_lock(path: Path, *, warn_if_refused: str | None) -> Iterator[bool]:
    """Exclusive flock on `path` (created, with its folder, if missing) held for the block;
    blocks until it is free. Yields whether the lock is real (see the module for a refused one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            if fcntl is None:
                raise OSError("flock is not available on this platform")
            fcntl.flock(fd, fcntl.LOCK_EX)
            locked = True
        except OSError as exc:
            if warn_if_refused is not None:
                _warn_once(warn_if_refused, exc.strerror or str(exc))
            locked = False
        yield locked
    finally:
        os.close(fd)  # closing the descriptor releases the lock
