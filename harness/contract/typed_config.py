"""Build typed (nested, frozen) dataclasses from plain YAML/JSON dicts, and back.

Every error is one line naming the dotted key and the fix: unknown keys (with the valid
ones listed), wrong types, and impossible values (raised by the dataclasses' own
``__post_init__`` as ConfigError("field: message"), which gets the key path prefixed).
A dataclass may define ``prepare_input(data, path) -> data`` to rewrite its raw mapping
before validation: to read a renamed key's old spelling (with a deprecation warning) or to
expand a preset (RunSpec's ``protocol``). Every float must be finite: YAML's ``.inf`` / ``.nan``
(or "inf") is never a learning rate, a peak or a fraction.

YAML is read by one function, :func:`parse_yaml`, which refuses documents whose aliases
expand to more than ``MAX_YAML_NODES`` values (a "billion laughs" bomb is a few lines that
expand to 10^9) or refer to themselves: the typed configs copy every value, so an alias is
as costly as writing its target out.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin, get_type_hints

import yaml

from .errors import ConfigError

T = TypeVar("T")

# Values (scalars, lists, mappings) a YAML document may hold once its aliases are expanded;
# the largest shipped sweep holds a few hundred, a 10,000-value axis list about 10,000.
MAX_YAML_NODES = 200_000


# Floats as YAML 1.2 spells them: PyYAML's YAML 1.1 resolver wants a dot and a signed
# exponent, so 1e-3, 1E+5 and 1.0e5 would be strings. The one place this is resolved: the
# loader reads them as floats, and the dumper quotes a string spelled so, which then reads
# back as the string it is. (Subclasses: yaml's own loaders and dumpers are untouched.)
_YAML12_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$")


class _SafeLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """Safe types only, on libyaml's parser where PyYAML was built with it: ~5x faster than
    the pure-Python one (the analysis reads one spec.yaml per run)."""


class _SafeDumper(getattr(yaml, "CSafeDumper", yaml.SafeDumper)):
    """Safe types only, on libyaml's emitter where PyYAML was built with it."""


for _yaml_class in (_SafeLoader, _SafeDumper):
    _yaml_class.add_implicit_resolver("tag:yaml.org,2002:float", _YAML12_FLOAT, list("-+0123456789."))


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _type_name(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _from_text(value: Any) -> Any:
    """A number field given as text ("1e6": what PyYAML's own loader, YAML 1.1, makes of
    1e6; parse_yaml reads it as a float) as that number; any other value as it is."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    return value


def typed_value(value: Any, tp: Any, key: str) -> Any:
    """`value` converted to type `tp` as a field of that type is (ConfigError naming `key`):
    for values that a sweep file's own parsing reads outside a dataclass field."""
    return _convert(value, tp, key)


@functools.cache
def _shape(tp: Any) -> tuple[Any, tuple, bool]:
    """get_origin, get_args and is_dataclass of a field type, worked out once per type (a
    spec has ~60 values, and `status` may read thousands of specs)."""
    return get_origin(tp), get_args(tp), dataclasses.is_dataclass(tp)


def _convert(value: Any, tp: Any, path: str) -> Any:
    origin, args, is_dataclass = _shape(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        errors = []
        for option in non_none:
            try:
                return _convert(value, option, path)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else
                          f"{path}: expected {' or '.join(_type_name(a) for a in args)}, got {value!r}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{path}: must be {_type_name(tp)}; got {value!r}")
        return value
    if is_dataclass:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping of {tp.__name__} fields, got {type(value).__name__} {value!r}")
        return from_dict(tp, value, path)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {type(value).__name__} {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{path}: expected a list of {len(args)} items, got {len(value)}")
            return tuple(_convert(v, a, f"{path}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        converted = [_convert(v, item, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(converted) if origin is tuple else converted
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {type(value).__name__} {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        number = _from_text(value)
        if isinstance(number, float) and number.is_integer():  # 1e6
            return int(number)
        raise ConfigError(f"{path}: expected an integer, got {value!r}")
    if tp is float:
        number = _from_text(value)
        if isinstance(number, bool) or not isinstance(number, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        number = float(number)
        if not math.isfinite(number):
            raise ConfigError(f"{path}: expected a finite number, got {value!r}; give a value such as 3e-4")
        return number
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return value
    return value


@functools.cache
def _field_types(cls: type) -> dict[str, Any]:
    """A dataclass's field types, evaluated from its annotations once per class (evaluating
    them is most of the cost of reading a spec, and `status` reads thousands)."""
    return get_type_hints(cls)


@functools.cache
def _file_fields(cls: type) -> tuple[dict[str, dataclasses.Field], tuple[str, ...]]:
    """A dataclass's fields that a file gives (by name), and those of them it must give, once per class."""
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init and not f.metadata.get(NOT_IN_FILE)}
    return fields, tuple(n for n, f in fields.items()
                         if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)


def from_dict(cls: type[T], data: dict, path: str = "") -> T:
    """Instantiate dataclass `cls` from `data`, recursively, with named one-line errors."""
    if not isinstance(data, dict):
        raise ConfigError(f"{path or cls.__name__}: expected a mapping, got {type(data).__name__}")
    prepare = getattr(cls, "prepare_input", None)  # renamed keys, presets (see the module docstring)
    if prepare is not None:
        data = prepare(data, path)
    hints = _field_types(cls)
    fields, required = _file_fields(cls)
    unknown = sorted(set(data) - fields.keys())
    if unknown:
        key = _join(path, str(unknown[0]))
        raise ConfigError(f"{key}: unknown key; valid keys here: {', '.join(sorted(fields))}")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _convert(value, hints[name], _join(path, name))
    missing = [n for n in required if n not in kwargs]
    if missing:
        raise ConfigError(f"{_join(path, missing[0])}: missing required key")
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        # __post_init__ names its own field; give it the full dotted path. (Nested values
        # were converted above, outside this try, so their errors already carry theirs.)
        raise ConfigError(_join(path, str(exc))) from None


def to_dict(obj: Any) -> Any:
    """Plain, YAML-safe data (tuples become lists) with fields in declaration order."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)
                if not f.metadata.get(NOT_IN_FILE)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


# Spec fields added after runs were planned: ``x: T = since(default)``. At its default such a
# field is left out of the run id (spec.identity_dict), so every run id planned before the
# field existed stays the same.
SINCE_DEFAULT = "id_omits_default"  # the metadata key that marks a field as added later


def since(default: Any) -> Any:
    """A field added later: ``x: T = since(default)``; see SINCE_DEFAULT."""
    return dataclasses.field(default=default, metadata={SINCE_DEFAULT: True})


# What the loader knows of a config rather than what its file says (a sweep's ``source``:
# the file it came from): ``x: T = not_in_file(default)``. from_dict does not read it (it
# is no key of the file), to_dict does not write it, and it takes no part in equality; the
# loader passes it (dataclasses.replace).
NOT_IN_FILE = "not_in_file"


def not_in_file(default: Any) -> Any:
    """A field the loader sets: ``x: T = not_in_file(default)``; see NOT_IN_FILE."""
    return dataclasses.field(default=default, compare=False, repr=False, metadata={NOT_IN_FILE: True})


def load_yaml(path: Path) -> Any:
    """Parse a YAML file; unreadable, non-UTF-8 and invalid files become one line naming the
    file (and the line, where YAML knows it)."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror}); check the path") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a UTF-8 text file (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
                          "give a YAML file") from None
    return parse_yaml(text, str(path))


def dump_yaml(data: Any) -> str:
    """YAML text of plain data (to_dict's), keys in their order, that parse_yaml reads back as is."""
    return yaml.dump(data, Dumper=_SafeDumper, sort_keys=False)


class YamlSyntaxError(ConfigError):
    """Text that is not YAML at all (a flag's value may then be read as plain text)."""


def parse_yaml(text: str, source: str) -> Any:
    """The one YAML reader (safe types only), for files and flag values: syntax errors, alias
    expansions beyond MAX_YAML_NODES, self-referring aliases and nesting too deep for the
    parser are one line ``SOURCE: ...``."""
    loader = None
    try:
        loader = _SafeLoader(text)  # refuses control characters already
        node = loader.get_single_node()
        if node is None:
            return None
        if _may_expand(text):
            _require_bounded(node, source)
        return loader.construct_document(node)
    except yaml.reader.ReaderError as exc:
        raise YamlSyntaxError(f"{source}: invalid YAML (character #x{exc.character:04x} at position {exc.position} "
                              "is not allowed); give a YAML text file") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())  # one line, whatever PyYAML wrote
        raise YamlSyntaxError(f"{source}:{where} invalid YAML ({problem}); fix the syntax") from None
    except RecursionError:
        raise ConfigError(f"{source}: YAML nested too deeply to read; flatten it") from None
    finally:
        if loader is not None:
            loader.dispose()


def _may_expand(text: str) -> bool:
    """Whether a document may hold more than MAX_YAML_NODES values, or a loop: only through an
    alias (``*name``), or by being long. Without one a value takes at least a character of the
    text, or is one of the few empty ones an indicator implies (``[?]``: four values in three
    characters), so a short text without ``*`` needs no count -- a spec.yaml (1 KB) never does."""
    return "*" in text or len(text) > MAX_YAML_NODES // 4


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _require_bounded(root: yaml.Node, source: str) -> None:
    """Count the values of the document with every alias expanded (each shared node is
    counted once per use, memoised, so the count itself stays linear in the text), without
    recursion; refuse loops and totals above MAX_YAML_NODES."""
    expanded: dict[int, int] = {}  # id(node) -> values under it, aliases expanded
    open_nodes: set[int] = set()  # the nodes whose children are being counted (the path from root)
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, counted = stack.pop()
        key = id(node)
        if counted:
            open_nodes.discard(key)
            expanded[key] = 1 + sum(expanded[id(child)] for child in _children(node))
            if expanded[key] > MAX_YAML_NODES:
                raise ConfigError(f"{source}: line {node.start_mark.line + 1}: YAML aliases expand to more than "
                                  f"{MAX_YAML_NODES:,} values; write the values out or use fewer aliases")
            continue
        if key in expanded:
            continue
        open_nodes.add(key)
        stack.append((node, True))
        for child in _children(node):
            if id(child) in open_nodes:
                raise ConfigError(f"{source}: line {child.start_mark.line + 1}: a YAML alias refers to a value that "
                                  "contains it; aliases must not form a loop")
            if id(child) not in expanded:
                stack.append((child, False))
