"""The training protocol of a run: this project's choices, or the reference code's setup.

Where the paper's reference code (alexiglad/EBT) and this project make a different choice
that is not a bug (initialisation, which parameters AdamW decays, the warmup, when the EBT
draws its random step size and where alpha's learning rate floors), the project's choice is
the default, and ``protocol: reference`` in a run spec (or a sweep's ``base``) is a *preset*:
before validation it fills the reference code's value of every item below, and of every
option the architecture's registry entry lists in ``reference_options``, that the spec does
not give itself, so explicit keys win. It is not a stored field: a spec holds only the
filled fields, so ``protocol: reference`` and writing those fields by hand are the same run
(same run id). ``protocol: project`` fills nothing.

Which protocol a run used is derived from its spec (:func:`protocol_of`), never stored:
"project", "reference", or "custom: <nearer one> except key=value, ..." (docs/ebt.md).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .architecture import ARCHITECTURES
from .errors import require
from .model_config import ModelConfig

PROTOCOLS = ("project", "reference")
OPTIONS_PREFIX = "model.options."  # items of one architecture's options live under this key


@dataclass(frozen=True)
class ProtocolItem:
    """One choice the reference code makes differently; the project's value is the field's default."""

    key: str  # dotted key of a run spec; under OPTIONS_PREFIX: an option of one architecture
    reference: Any  # the reference code's value
    given_by: str | None = None  # a key that sets the same thing another way: where given, the preset leaves this

    @property
    def option(self) -> str | None:
        """The option's name within model.options, or None for an item of every run."""
        return self.key.removeprefix(OPTIONS_PREFIX) if self.key.startswith(OPTIONS_PREFIX) else None


# The items of every run. An architecture's own items are its entry's ``reference_options``
# (EBT: one random alpha per forward, alpha annealed to lr x min_lr_ratio; models/architectures.py).
REFERENCE_ITEMS = (
    ProtocolItem("model.init", "reference"),  # Xavier-normal / N(0, 1), RMSNorm eps 1e-5
    ProtocolItem("train.decay_norms_and_embeddings", True),  # AdamW decays everything but alpha
    # 10k linear warmup steps; an explicit warmup_fraction says how long the warmup is instead
    ProtocolItem("train.warmup_steps", 10_000, given_by="train.warmup_fraction"),
)


def option_items(arch: str) -> tuple[ProtocolItem, ...]:
    """The items of architecture `arch`'s options. An unknown `arch` has none here: validation
    names it afterwards, under its own key."""
    if not isinstance(arch, str) or arch not in ARCHITECTURES:  # not hashable either: a YAML list
        return ()
    return tuple(ProtocolItem(OPTIONS_PREFIX + name, value)
                 for name, value in ARCHITECTURES.get(arch).reference_options.items())


def items_for(arch: str) -> tuple[ProtocolItem, ...]:
    """The items that apply to a run of architecture `arch`."""
    return REFERENCE_ITEMS + option_items(arch)


def protocol_name(value: Any, key: str) -> str:
    require(value in PROTOCOLS, key, f"must be one of {', '.join(PROTOCOLS)} (reference: the reference code's setup, "
            f"docs/ebt.md), got {value!r}")
    return value


def expand_protocol(data: dict, path: str = "") -> dict:
    """Run-spec data with ``protocol`` removed and, for ``reference``, every item the data
    does not give filled in (a copy; `data` is left as it is). `path` is where the data
    sits (``base`` of a sweep), for the error's key."""
    if not isinstance(data, dict) or "protocol" not in data:
        return data
    data = dict(data)
    if protocol_name(data.pop("protocol"), f"{path}.protocol" if path else "protocol") == "project":
        return data
    model = data.get("model")
    if isinstance(model, dict):  # legacy model.ebt moves to model.options first, so the preset fills those
        data["model"] = ModelConfig.prepare_input(model, f"{path}.model" if path else "model")
        model = data["model"]
    arch = model.get("arch", ModelConfig.arch) if isinstance(model, dict) else ModelConfig.arch
    for item in items_for(arch):
        if item.given_by is None or not _given(data, item.given_by.split(".")):
            data = _with_default(data, item.key.split("."), item.reference)
    return data


def preset_options(protocol: Any, arch: str, options: dict, key: str) -> dict:
    """An architecture's options (a sweep entry's) with the preset's values of that
    architecture filled where `options` does not give them; `key` names the protocol in errors."""
    if protocol is None or protocol_name(protocol, key) == "project":
        return options
    return {**{item.option: item.reference for item in option_items(arch)}, **options}


def protocol_of(spec: Any) -> str:
    """Which protocol a RunSpec follows: "project" (every item at its default), "reference"
    (every item at the reference value), else "custom: P except key=value, ..." naming the
    items that differ from P, the protocol it differs from in fewer items (project on a tie)."""
    off: dict[str, list[str]] = {"project": [], "reference": []}
    for item in items_for(spec.model.arch):
        value, default = _value_and_default(spec, item.key)
        shown = f"{item.key}={_text(value)}"
        if item.given_by is not None and value == default:
            # set the other way: name that key, not its value, which a sweep's rule sets per
            # run (one label per architecture, not one per size)
            shown = f"{item.key} by {item.given_by}"
        if value != default:
            off["project"].append(shown)
        if value != item.reference:
            off["reference"].append(shown)
    if not off["project"]:
        return "project"
    if not off["reference"]:
        return "reference"
    nearer = "reference" if len(off["reference"]) < len(off["project"]) else "project"
    return f"custom: {nearer} except {', '.join(off[nearer])}"


def reference_summary() -> str:
    """The reference protocol's items as one line (reports): those of every run, then each
    registered architecture's options (where the arch has them), each key once."""
    items = REFERENCE_ITEMS + tuple(item for name in ARCHITECTURES.names() for item in option_items(name))
    return ", ".join(dict.fromkeys(f"{item.key}={_text(item.reference)}" for item in items))


def _given(node: Any, parts: list[str]) -> bool:
    for part in parts:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _with_default(node: Any, parts: list[str], value: Any) -> Any:
    """`node` with `value` at `parts` unless a value is there; null counts as an empty mapping
    (``options: null`` means the defaults), any other non-mapping is left for validation to name."""
    node = {} if node is None else node
    if not isinstance(node, dict):
        return node
    head, rest = parts[0], parts[1:]
    if not rest:
        return node if head in node else {**node, head: value}
    return {**node, head: _with_default(node.get(head), rest, value)}


def _value_and_default(obj: Any, key: str) -> tuple[Any, Any]:
    """The value at dotted `key` of a typed config and its field's declared default."""
    *parents, name = key.split(".")
    for part in parents:
        obj = getattr(obj, part)
    spec_field = next(f for f in dataclasses.fields(obj) if f.name == name)
    default = spec_field.default if spec_field.default is not dataclasses.MISSING else spec_field.default_factory()
    return getattr(obj, name), default


def _text(value: Any) -> str:
    """A value as YAML writes it (true, null, 10000)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return "null" if value is None else f"{value:g}" if isinstance(value, float) else str(value)
