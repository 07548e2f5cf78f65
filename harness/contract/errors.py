"""The two user-facing error kinds. The CLI prints either as one line (exit status 2)."""
from __future__ import annotations


class ConfigError(ValueError):
    """A configuration value is wrong; the message names the key and the fix."""


class DispatchError(Exception):
    """A sweep cannot be submitted, queried or cancelled; the message says what to do."""


def require(ok: bool, key: str, message: str) -> None:
    """Raise ConfigError("key: message") unless ok: the one validation helper."""
    if not ok:
        raise ConfigError(f"{key}: {message}")
