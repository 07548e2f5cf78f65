"""The two user-facing error kinds. The CLI prints either as one line (exit status 2)."""
from __future__ import annotations

import errno


class ConfigError(ValueError):
    """A configuration value is wrong; the message names the key and the fix."""


class DispatchError(Exception):
    """A sweep cannot be submitted, queried or cancelled; the message says what to do."""


def require(ok: bool, key: str, message: str) -> None:
    """Raise ConfigError("key: message") unless ok: the one validation helper."""
    if not ok:
        raise ConfigError(f"{key}: {message}")


def file_error(exc: OSError) -> str:
    """An OSError from file I/O as one line naming the path (or the errno, for a write to an
    open file) and the reason."""
    if exc.filename is None:  # a write to an open file: ENOSPC, EDQUOT
        return f"{exc.strerror} ({errno.errorcode.get(exc.errno, exc.errno)})"
    where = f"{exc.filename} -> {exc.filename2}" if exc.filename2 else f"{exc.filename}"
    return f"cannot read or write {where}: {exc.strerror}"
