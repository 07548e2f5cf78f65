"""A named registry: the one extension mechanism of the harness.

Architectures, cluster backends and fit laws are each a ``Registry``: every other layer
asks the registry by name and never branches on the name itself. Built-ins register
where they are defined; a third-party package registers its own through a Python entry
point of the registry's group (``[project.entry-points."ebt_scaling.architectures"]``),
loaded the first time the registry is asked, so the contract never imports the layers
that provide the entries.
"""
from __future__ import annotations

from collections.abc import Iterable
from importlib.metadata import entry_points
from typing import Generic, TypeVar

from .errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, entry_point_group: str | None = None):
        self.kind = kind  # "architecture", "backend", ... (named in errors)
        self.group = entry_point_group
        self._entries: dict[str, T] = {}
        self._plugins_loaded = entry_point_group is None

    def register(self, name: str, entry: T, *, replace: bool = False) -> T:
        """Add `entry` under `name` (its ``name`` attribute, where it has one, must agree).
        The entry points load first, so `replace=True` really replaces a built-in."""
        self._load_plugins()
        own = getattr(entry, "name", name)
        if own != name:
            raise ConfigError(f"{self.kind} {name!r}: the entry calls itself {own!r}; register it under that name")
        if name in self._entries and not replace and self._entries[name] is not entry:
            raise ConfigError(f"{self.kind} {name!r}: already registered; pick another name or pass replace=True")
        self._entries[name] = entry
        return entry

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)

    def get(self, name: str, key: str | None = None) -> T:
        """The entry called `name`; ConfigError naming `key` (default: the kind) and the
        registered names otherwise."""
        self._load_plugins()
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            if not self._entries:  # an install whose metadata predates the entry points
                raise ConfigError(f"{key or self.kind}: no {self.kind} is registered (no entry points of group "
                                  f"{self.group!r}); reinstall the package: pip install -e .") from None
            raise ConfigError(f"{key or self.kind}: unknown {self.kind} {name!r}; registered: "
                              f"{', '.join(self.names())}") from None

    def names(self) -> tuple[str, ...]:
        self._load_plugins()
        return tuple(self._entries)

    def entries(self) -> tuple[T, ...]:
        self._load_plugins()
        return tuple(self._entries.values())

    def __contains__(self, name: object) -> bool:
        self._load_plugins()
        return name in self._entries

    def _load_plugins(self) -> None:
        """Register what the entry points of the group provide: an entry object with a
        ``name`` attribute, or an iterable of them. A plugin that fails to import is a
        one-line ConfigError naming it."""
        if self._plugins_loaded:
            return
        self._plugins_loaded = True  # first: a plugin that asks the registry must not recurse
        for point in entry_points(group=self.group):
            try:
                provided = point.load()
            except Exception as exc:  # any import error of a third-party plugin
                raise ConfigError(f"{self.kind} plugin {point.name!r} ({point.value}): cannot be loaded "
                                  f"({type(exc).__name__}: {exc}); fix or uninstall it") from None
            for entry in (provided if isinstance(provided, Iterable) else (provided,)):
                self._entries.setdefault(entry.name, entry)
