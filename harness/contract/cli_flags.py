"""Command-line flags derived from typed-config field paths, and ``--set key=value``.

A dataclass field ``d_model`` becomes ``--d-model``; a nested one ``ebt.refine_steps``
becomes ``--ebt.refine-steps``. Values are read as YAML scalars and validated by the same
``from_dict`` as a file, so a flag and a YAML key accept and reject exactly the same
values, and an error names the flag the user typed (``flag_error``).
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import types
import typing
from typing import Any, Literal, get_args, get_origin, get_type_hints

from .errors import ConfigError
from .typed_config import YamlSyntaxError, parse_yaml


def flag_name(path: str) -> str:
    return "--" + path.replace("_", "-")


def _scalar(tp: Any) -> Any | None:
    """The scalar type of a field (Optional unwrapped), or None for nested / container fields."""
    if get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        tp = args[0] if len(args) == 1 else None
    if get_origin(tp) is Literal or tp in (int, float, str, bool):
        return tp
    return None


def add_dataclass_flags(parser: argparse.ArgumentParser | Any, cls: type, prefix: str = "",
                        aliases: dict[str, list[str]] | None = None, skip: tuple[str, ...] = ()) -> list[str]:
    """One flag per scalar field of `cls` (dest = the field path; help = the field's
    ``metadata["help"]`` where given); returns the paths added. `aliases` maps a path to
    extra spellings kept for older command lines."""
    aliases = aliases or {}
    hints = get_type_hints(cls)
    added = []
    for field in dataclasses.fields(cls):
        path = prefix + field.name
        tp = _scalar(hints[field.name])
        if tp is None or field.name in skip or not field.init:
            continue
        # No argparse choices: from_dict checks every value, so a bad one is the same
        # one-line error as in a file.
        choices = [str(a) for a in get_args(tp)] if get_origin(tp) is Literal else None
        if tp is bool:
            choices = ["true", "false"]
        metavar = "{" + ",".join(choices) + "}" if choices else None
        parser.add_argument(flag_name(path), *aliases.get(path, []), dest=path, default=None, metavar=metavar,
                            help=field.metadata.get("help", f"{cls.__name__}.{field.name}"))
        added.append(path)
    return added


def given_flags(args: argparse.Namespace, paths: list[str]) -> dict[str, Any]:
    """{path: value} of the flags the user gave, values parsed as YAML scalars."""
    out = {}
    for path in paths:
        value = getattr(args, path, None)
        if value is not None:
            out[path] = _yaml_value(value, flag_name(path))
    return out


def _yaml_value(text: str, source: str) -> Any:
    """A flag's value read as YAML (1e-3, [0, 1], true); text YAML cannot read stays text.
    Alias bombs and loops are refused as in files (ConfigError naming `source`)."""
    if not isinstance(text, str):
        return text
    try:
        return parse_yaml(text, source)
    except YamlSyntaxError:
        return text


def nested(pairs: dict[str, Any], into: dict | None = None) -> dict:
    """{"a.b": 1} -> {"a": {"b": 1}}, merged over a deep copy of `into`."""
    out = copy.deepcopy(into) if into else {}
    for path, value in pairs.items():
        node = out
        keys = path.split(".")
        for key in keys[:-1]:
            child = node.get(key)
            if not isinstance(child, dict):
                child = node[key] = {}
            node = child
        node[keys[-1]] = value
    return out


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """``--set a.b=v`` items (repeatable) -> {"a.b": v}, v read as YAML (1e-3, [0, 1], true)."""
    pairs: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"--set {item}: expected KEY=VALUE with a dotted key, e.g. train.lr=3e-4")
        pairs[key] = _yaml_value(value, f"--set {key}")
    return pairs


def add_set_argument(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help=f"override a key of the {what} (dotted path, YAML value; repeatable), "
                             "validated like the file, e.g. --set train.lr=3e-4")


def flag_error(exc: ConfigError, paths: list[str]) -> ConfigError:
    """A ConfigError whose leading key is one of `paths`, renamed to its flag."""
    message = str(exc)
    for path in sorted(paths, key=len, reverse=True):
        if message.startswith(path + ":"):
            return ConfigError(flag_name(path) + message[len(path):])
    return exc
