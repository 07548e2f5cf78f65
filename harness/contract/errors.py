"""The two user-facing error kinds, which the CLI prints as one line (exit status 2), and the
one-line wording of any other error: of a file error the CLI reports, of a run's failure."""
from __future__ import annotations

import errno
from pathlib import Path


class ConfigError(ValueError):
    """A configuration value is wrong; the message names the key and the fix."""


class DispatchError(Exception):
    """A sweep cannot be submitted, queried or cancelled; the message says what to do."""


def require(ok: bool, key: str, message: str) -> None:
    """Raise ConfigError("key: message") unless ok: the one validation helper."""
    if not ok:
        raise ConfigError(f"{key}: {message}")


# The file errors that are the user's to fix (a full disk or quota, a read-only or foreign
# directory, a file where a directory belongs or the reverse): the CLI reports them in one line
# (any other OSError is a bug and keeps its traceback), and a run failing on one could not write.
FILE_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EISDIR, errno.ENOTDIR, errno.EEXIST, errno.ENOSPC,
                         errno.EDQUOT, errno.EROFS})


def file_error(exc: OSError, where: str | Path | None = None, verb: str = "read or write") -> str:
    """An OSError from file I/O as one line naming the path (`where` when the error names
    none; else the errno, for a write to an open file) and the reason."""
    target = exc.filename or where
    if target is None:  # a write to an open file: ENOSPC, EDQUOT
        return f"{exc.strerror} ({errno.errorcode.get(exc.errno, exc.errno)})"
    if exc.filename2:
        target = f"{target} -> {exc.filename2}"
    return f"cannot {verb} {target}: {exc.strerror}"


def describe_error(exc: BaseException, where: str | Path | None = None, limit: int | None = None) -> str:
    """Any error in one line: 'cannot write PATH: No space left on device' for a file error
    (PATH: the error's, else `where`), else 'Type: the first line of its message', cut to
    `limit` characters."""
    if isinstance(exc, OSError) and exc.strerror:
        line = file_error(exc, where, "write" if exc.errno in FILE_ERRNOS else "access")
    else:
        text = str(exc).strip().splitlines()
        line = f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
    return line if limit is None or len(line) <= limit else line[:limit - 3] + "..."
