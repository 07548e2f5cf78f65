"""Paths the user names: checked before a command writes anything.

``require_path_name``: a name that becomes one directory (a sweep's ``runs/<name>``) must not be
able to point elsewhere: no separators, no ``.`` / ``..``, no leading dot or dash.

``require_output_dir``: an output directory flag (``train --out``, ``plan --write``,
``analyze --out``, ``run --out``) must be a directory or creatable as one, and writable. The
check writes nothing: it walks up to the nearest existing ancestor and opens an anonymous
temporary file there (O_TMPFILE where the filesystem has it), which is the only test that
also holds for root, whom permission bits do not stop but a read-only or pseudo filesystem
(/sys, /proc) and a regular file in the path do.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from .errors import ConfigError, require


def require_path_name(name: str, key: str) -> None:
    require(bool(name) and (name[0].isalnum() or name[0] == "_") and all(c.isalnum() or c in "-_." for c in name),
            key, f"must be a name of letters, digits, '-', '_' or '.' that starts with a letter, digit or '_' (it "
                 f"names a directory), got {name!r}")


def require_output_dir(path: str | Path, flag: str) -> Path:
    """`path` as a Path, if it is a directory or can be made one and written in; else
    ConfigError("FLAG: ...") naming the path and the fix. Creates nothing."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{flag}: {path} is a file, not a directory; give a directory (new or existing)")
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{flag}: cannot create {path}: {existing} is a file, not a directory; give a directory "
                          "path")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        where = "" if existing == path else f" (in {existing})"
        raise ConfigError(f"{flag}: cannot write {path}{where}: {exc.strerror or exc}; give a writable directory") \
            from None
    return path
