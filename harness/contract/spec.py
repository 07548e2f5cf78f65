"""RunSpec: the one typed config that fully determines a training run.

Loaded from and dumped to YAML; validated with one-line errors naming the key and the
fix. The run id is a stable hash of everything that can change the result (all fields
but ``tags``, which only label a run for the analysis -- pair id, sweep axis, size name --
and ``data.cache_dir``). A top-level ``protocol: reference`` is a preset, expanded into the
fields it stands for before validation and never stored (protocol.py).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

from .cli_flags import nested
from .errors import ConfigError, require
from .model_config import ModelConfig
from .protocol import expand_protocol
from .registry import Registry
from .typed_config import SINCE_DEFAULT, dump_yaml, from_dict, load_yaml, since, to_dict


@dataclass(frozen=True)
class DataSpec:
    """Where tokens come from and how they are batched (see harness/data/)."""

    source: Literal["shakespeare", "tokens", "hf"] = "shakespeare"
    cache_dir: str | None = None  # None: $EBT_SCALING_DATA, else ~/.cache/ebt-scaling
    batching: Literal["packed", "paper"] = "packed"  # paper: one document per row, truncated and padded
    val_fraction: float = 0.05  # share of documents held out for validation
    tokens_path: str | None = None  # source "tokens": a nanoGPT-style uint16/uint32 token file
    tokenizer_path: str | None = None  # tokenizer.json for "tokens"/"hf" (a hub name also works for "hf")
    hf_dataset: str | None = None  # source "hf": a hub dataset name or a local dataset directory
    hf_config: str | None = None
    hf_split: str = "train"
    hf_text_field: str = "text"

    def __post_init__(self) -> None:
        require(0 < self.val_fraction < 0.5, "val_fraction", f"must be in (0, 0.5), got {self.val_fraction}")
        if self.source == "tokens":
            require(bool(self.tokens_path), "tokens_path", "is required when source is 'tokens'; give the token file")
            require(bool(self.tokenizer_path), "tokenizer_path", "is required when source is 'tokens'; give its tokenizer.json")
        if self.source == "hf":
            require(bool(self.hf_dataset), "hf_dataset", "is required when source is 'hf'; give a dataset name or directory")
            require(bool(self.tokenizer_path), "tokenizer_path", "is required when source is 'hf'; give a tokenizer name or tokenizer.json")


@dataclass(frozen=True)
class TrainSpec:
    """Token budget, batch, AdamW and the learning-rate schedule."""

    tokens: int = 1_000_000  # training tokens (batch_size * context per step, pads included)
    batch_size: int = 32  # global sequences per optimizer step, over all processes
    micro_batch_size: int | None = None  # per process and forward pass; None: no accumulation
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.01
    decay_norms_and_embeddings: bool = False
    grad_clip: float = 1.0  # 0 turns clipping off
    schedule: Literal["cosine", "wsd", "constant"] = "cosine"
    warmup_fraction: float = 0.05  # of all steps, linear from 0
    warmup_steps: int | None = since(None)  # an absolute warmup length instead (the reference: 10,000)
    min_lr_ratio: float = 0.1  # floor of cosine / wsd decay, relative to lr (paper: peak / 10)
    decay_fraction: float = 0.2  # wsd: share of steps spent decaying at the end

    def __post_init__(self) -> None:
        require(self.tokens > 0, "tokens", f"must be > 0, got {self.tokens}")
        require(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        require(self.micro_batch_size is None or self.micro_batch_size >= 1, "micro_batch_size",
                 f"must be >= 1 or null, got {self.micro_batch_size}")
        require(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        require(all(0 <= b < 1 for b in self.betas), "betas", f"each must be in [0, 1), got {list(self.betas)}")
        require(self.eps > 0, "eps", f"must be > 0, got {self.eps}")
        require(self.weight_decay >= 0, "weight_decay", f"must be >= 0, got {self.weight_decay}")
        require(self.grad_clip >= 0, "grad_clip", f"must be >= 0 (0 = off), got {self.grad_clip}")
        require(0 <= self.warmup_fraction < 1, "warmup_fraction", f"must be in [0, 1), got {self.warmup_fraction}")
        require(self.warmup_steps is None or (type(self.warmup_steps) is int and self.warmup_steps >= 0),
                "warmup_steps", f"must be a whole number >= 0 or null, got {self.warmup_steps!r}")
        default_fraction = TrainSpec.__dataclass_fields__["warmup_fraction"].default
        require(self.warmup_steps is None or self.warmup_fraction == default_fraction, "warmup_steps",
                f"replaces warmup_fraction, which is set too ({self.warmup_fraction}); give one of the two")
        require(0 <= self.min_lr_ratio <= 1, "min_lr_ratio", f"must be in [0, 1], got {self.min_lr_ratio}")
        require(0 < self.decay_fraction <= 1, "decay_fraction", f"must be in (0, 1], got {self.decay_fraction}")


@dataclass(frozen=True)
class TaskGrammar:
    """The grammar of ``EvalSpec.tasks``. It belongs to the evaluation layer
    (harness/evaluation/task_grammar.py), which registers it through the entry point group of
    EVAL_TASK_GRAMMARS: a spec's tasks are checked when it loads, and the contract imports
    neither that layer nor torch."""

    BUILTIN: ClassVar[str] = "builtin"  # the grammar EvalSpec asks for; a plugin may replace it
    name: str
    validate: Callable[[tuple[str, ...], str], None]  # (tasks, key): ConfigError("<key>: ...") on the first bad one


EVAL_TASK_GRAMMARS: Registry[TaskGrammar] = Registry("evaluation-task grammar", "ebt_scaling.eval_task_grammars")


@dataclass(frozen=True)
class EvalSpec:
    """Held-out evaluation at log-spaced points of training FLOPs, plus the final step."""

    points: int = 8
    batches: int = 8  # validation batches (of eval batch_size sequences) per evaluation
    batch_size: int = 16
    tasks: tuple[str, ...] = ()  # end-of-run evaluations (grammar: harness/evaluation/task_grammar.py)

    def __post_init__(self) -> None:
        require(self.points >= 1, "points", f"must be >= 1, got {self.points}")
        require(self.batches >= 1, "batches", f"must be >= 1, got {self.batches}")
        require(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        if self.tasks:  # one line listing the valid names; loaders prefix "eval."
            EVAL_TASK_GRAMMARS.get(TaskGrammar.BUILTIN, "tasks").validate(self.tasks, "tasks")


# Seeds reach torch.manual_seed (offset per process by 1_000_003 x (rank + 1)), numpy's
# SeedSequence and HF datasets' shuffle; below 2^32 every one of them takes a seed.
SEED_LIMIT = 2 ** 32


def require_seed(seed: int, key: str) -> None:
    require(0 <= seed < SEED_LIMIT, key, f"must be in [0, 2^32) (every RNG the run seeds takes those), got {seed}")


def typed_tags(tags: dict, key: str) -> dict[str, str]:
    """Tags as text (a label, never a number to compute with): keys must be strings; true/false
    become 'true'/'false' and numbers ``str()`` of the value YAML read, not its spelling
    (``1.50`` -> '1.5', ``0x10`` -> '16'; quote a tag whose spelling matters); lists,
    mappings and null are refused."""
    out = {}
    for name, value in tags.items():
        require(isinstance(name, str), key, f"keys must be strings, got {name!r}; quote it: '{name}'")
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, (int, float)):
            value = str(value)
        require(isinstance(value, str), f"{key}.{name}",
                 f"must be a string (a label), got {type(value).__name__} {value!r}")
        out[name] = value
    return out


@dataclass(frozen=True)
class RunSpec:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataSpec = field(default_factory=DataSpec)
    train: TrainSpec = field(default_factory=TrainSpec)
    eval: EvalSpec = field(default_factory=EvalSpec)
    seed: int = 0  # model init, EBT noise and data order; both runs of a pair share it
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16 = autocast with fp32 master weights
    device: Literal["auto", "cpu", "cuda"] = "auto"
    compile: bool | None = None  # torch.compile the hot path; None: on where the device is CUDA
    checkpoint_every: int = 200  # optimizer steps between checkpoints
    log_every: int = 10  # optimizer steps between metrics rows
    tags: dict[str, str] = field(default_factory=dict)  # labels only; not part of the run id

    @classmethod
    def prepare_input(cls, data: dict, path: str) -> dict:
        """typed_config's hook on the raw mapping before validation: here it expands the
        ``protocol`` preset (protocol.py) into the fields it stands for, so no RunSpec holds
        a protocol and ``protocol: reference`` is the same run as those fields written out,
        and turns the tags YAML read as numbers or booleans into text (``typed_tags``)."""
        data = expand_protocol(data, path)
        if isinstance(data.get("tags"), dict):
            data = {**data, "tags": typed_tags(data["tags"], f"{path}.tags" if path else "tags")}
        return data

    def __post_init__(self) -> None:
        require_seed(self.seed, "seed")
        for name, value in self.tags.items():
            require(isinstance(name, str) and isinstance(value, str), "tags",
                    f"must map names to text (labels), got {name!r}: {value!r}; build a spec from a mapping "
                    "(spec_from_dict) to have numbers turned into text")
        require(self.checkpoint_every >= 1, "checkpoint_every", f"must be >= 1, got {self.checkpoint_every}")
        require(self.log_every >= 1, "log_every", f"must be >= 1, got {self.log_every}")
        micro = self.train.micro_batch_size
        require(micro is None or self.train.batch_size % micro == 0, "train.micro_batch_size",
                 f"must divide train.batch_size ({self.train.batch_size}), got {micro}")
        warmup = self.train.warmup_steps
        require(warmup is None or warmup < self.total_steps, "train.warmup_steps",
                f"{warmup} is not below the run's {self.total_steps} steps; lower it or use warmup_fraction")

    @property
    def tokens_per_step(self) -> int:
        return self.train.batch_size * self.model.context

    @property
    def total_steps(self) -> int:
        return max(1, -(-self.train.tokens // self.tokens_per_step))

    @property
    def run_id(self) -> str:
        return spec_hash(self)


def identity_dict(obj):
    """to_dict(obj) as the run id hashes it: fields marked ``since`` are dropped where they
    hold their default (recursively through nested configs)."""
    if not dataclasses.is_dataclass(obj):
        return to_dict(obj)
    out = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if f.metadata.get(SINCE_DEFAULT) and value == f.default:
            continue
        out[f.name] = identity_dict(value)
    return out


def spec_hash(spec: RunSpec) -> str:
    """12 hex digits of sha256 over the canonical JSON of the spec (identity_dict), without
    its tags and the data cache location (where a machine keeps its cache does not change
    the run)."""
    payload = identity_dict(spec)
    payload.pop("tags")
    payload["data"].pop("cache_dir")
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


def spec_from_dict(data: dict, source: str = "spec") -> RunSpec:
    try:
        return from_dict(RunSpec, data or {})
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def load_spec(path: str | Path, overrides: dict | None = None) -> RunSpec:
    """The spec of a YAML file, with ``--set``-style overrides ({"train.lr": 3e-4}) applied
    before validation, so an override is checked exactly like the file's own keys."""
    data = load_yaml(Path(path))
    if overrides:
        data = nested(overrides, data if isinstance(data, dict) else {})
    return spec_from_dict(data, str(path))


def spec_to_yaml(spec: RunSpec) -> str:
    return dump_yaml(to_dict(spec))
