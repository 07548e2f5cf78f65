"""The sweep file: a typed, validated description of a paired scaling sweep.

A sweep YAML names a base run spec (a partial RunSpec dict merged over RunSpec's
defaults), the architectures to pair (Transformer++, EBT System 1 / System 2 variants),
the seeds, the axis being swept and the rules that turn an axis value into a run: the
shape rule (sweeps/shapes.py), the token rule and the per-size hyperparameter rules
(sweeps/rules.py). Every error is one line ``FILE: key: message and fix`` (ConfigError),
built by harness/contract/typed_config.py like the run spec's.

Schema (every key but ``name``, ``architectures`` and ``axis`` has a default)::

    name: tiny                       # labels the runs (tag "sweep")
    description: ""
    base: {model: {...}, data: {...}, train: {...}, eval: {...}, ...}   # partial RunSpec
                                     # (protocol: reference fills the reference code's setup in every
                                     # run, EBT options included: harness/contract/protocol.py)
    seeds: [0]                       # every point is run once per seed (same data order in a pair); < 2^32
    architectures:                   # one run per entry at every point; a "pair" = all of them
      - {label: T++, arch: transformer}
      - {label: EBT-S1, arch: ebt}                       # the EBT's default options (paper S1)
      - {label: EBT-S2, arch: ebt, options: {refine_steps: 1, random_extra_steps: [1, 2], langevin_sigma: 3.0,
         truncate_unroll: true}}                  # System 2 (paper_nlp.yaml has the reference's in full)
    pairing: tokens                  # tokens: same size and tokens (the paper's protocol)
                                     # flops: same size and training FLOPs (EBT gets fewer tokens)
    param_count: total               # which count "N" means everywhere: total | non_embedding
    axis:
      name: parameters               # parameters | data | width | depth | batch | compute | isoflop
      values: [xxs, xs, small]       # a list, or a log-spaced range {start, stop, num}; <= 10,000 values
      size: null                     # the fixed size of data / width / depth / batch sweeps
      points: 5                      # isoflop: sizes per budget
      spread: 2.0                    # isoflop: factor between neighbouring sizes
      extra_sizes: []                # isoflop: [{budget, offsets}] sizes beyond those (plan --extend)
    shape: {rule: aspect, aspect: 64, head_dim: 64, tolerance: 0.05, max_layers: 128}
    tokens: {rule: tokens_per_param, tokens_per_param: 20}   # | compute_optimal | fixed | steps
    flops: {convention: full, reference: null}               # the convention budgets are stated in
    hparams: {lr: {rule: constant}, batch: {rule: constant}, warmup: {rule: fraction},
              beta2: {rule: constant}}
    throughput: {peak_tflops: 989.0, mfu: null, device: "H100 SXM (dense bf16 peak)"}
                                     # mfu null: measured (`ebt-scaling bench --save`) or per-
                                     # architecture defaults; a number or {arch: mfu} overrides
    repeat: {at: [xs], seeds: [1, 2]}     # optional: more seeds at some axis values (seed spread)
    tune:                            # optional: tuning trials per cell (sweeps/tuning.py)
      lr: [0.5, 1, 2]                # factors of the rules' values; also alpha_init,
      alpha_init: [0.5, 1, 2]        # alpha_lr_multiplier (EBT options), batch, warmup
      at: []                         # axis values to tune at (default: all)
      token_fraction: 1.0            # < 1: trials on fewer tokens; plan --extend adds the winners
      equal_trials: true             # the same number of trials per cell for every architecture
    cooldown: {fractions: [0.25, 0.5]}   # optional, WSD only: cooldown branches (sweeps/cooldown.py)

What the axis values mean:

* ``parameters``: sizes. A size is a ladder name of the paper (models/sizes.py: 4xs .. xl),
  a parameter target (a number: solved by the shape rule), or an explicit shape
  ``{n_layers, d_model, n_heads, name?}``.
* ``data``: training tokens of the fixed ``axis.size`` (the token rule is not used).
* ``width``: d_model values (n_layers from ``axis.size``; n_heads = d_model / shape.head_dim).
* ``depth``: n_layers values (d_model and n_heads from ``axis.size``).
* ``batch``: global batch sizes in sequences (the batch rule is not used).
* ``compute``: FLOP budgets (in ``flops.convention``): one size per budget, the optimum the
  token rule predicts, trained for budget / FLOPs-per-token tokens.
* ``isoflop``: FLOP budgets: ``points`` sizes per budget, log-spaced by ``spread`` around
  the predicted optimum, each trained for budget / FLOPs-per-token tokens.

Budgets, parameter targets and the FLOPs a pair shares refer to the *reference*
architecture (``flops.reference``: an architecture label; default the first Transformer++
entry, else the first entry).
"""
from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from ebt_scaling.harness.contract.architecture import ARCHITECTURES, baseline_name
from ebt_scaling.harness.contract.cli_flags import nested
from ebt_scaling.harness.contract.errors import ConfigError, require
from ebt_scaling.harness.contract.paths import require_path_name
from ebt_scaling.harness.contract.protocol import preset_options
from ebt_scaling.harness.contract.spec import RunSpec, require_seed
from ebt_scaling.harness.contract.typed_config import from_dict, load_yaml, to_dict
from ebt_scaling.models.sizes import PAPER_SIZES

AXES = ("parameters", "data", "width", "depth", "batch", "compute", "isoflop")
# Bounds checked before anything is expanded, so a typo (num: 1000000) fails in a line instead
# of planning for minutes: values of one axis, and runs of one plan (every seed, architecture,
# tuning trial and cooldown branch). A larger study is several sweeps.
MAX_AXIS_VALUES = 10_000
MAX_RUNS = 100_000
FIXED_SIZE_AXES = ("data", "width", "depth", "batch")
BUDGET_AXES = ("compute", "isoflop")


def _whole(obj: Any, name: str) -> None:
    """Turn a float count field (YAML writes 1e9 as a float or a string) into an int."""
    value = getattr(obj, name)
    if value is not None:
        require(math.isfinite(value) and float(value).is_integer(), name,
                 f"must be a whole number, got {value!r}")
        object.__setattr__(obj, name, int(value))


@dataclass(frozen=True)
class ArchEntry:
    """One architecture of every pair: a label (tag "arch_label"), a registered model
    family and that family's options (its options dataclass's fields; defaults elsewhere)."""

    label: str
    arch: str
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def prepare_input(cls, data: dict, path: str) -> dict:
        """Entries once held EBT options under ``ebt``; read them as ``options``."""
        if "ebt" not in data:
            return data
        data = dict(data)
        legacy = data.pop("ebt")
        require(data.get("arch") == "ebt" or not legacy, f"{path}.ebt",
                 f"only applies to arch 'ebt' (this entry is {data.get('arch')!r}); remove it or set arch: ebt")
        data.setdefault("options", legacy)
        warnings.warn(f"{path}.ebt: deprecated key; write the EBT's options as {path}.options", FutureWarning,
                      stacklevel=2)
        return data

    def __post_init__(self) -> None:
        require(bool(self.label.strip()), "label", "must be a non-empty string; name the architecture, e.g. EBT-S1")
        ARCHITECTURES.get(self.arch, "arch")


@dataclass(frozen=True)
class ExtraSizes:
    """Sizes added to one isoFLOP budget beyond its planned ones (written by `ebt-scaling plan
    --extend`): the planned sizes sit at the token rule's optimum x spread^offset for offsets
    -(points-1)/2 .. (points-1)/2, these at the offsets listed."""

    budget: float
    offsets: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        require(len(self.offsets) >= 1, "offsets", "must list at least one offset, e.g. [3] (optimum x spread^3)")
        for i, o in enumerate(self.offsets):
            require(math.isfinite(o), f"offsets[{i}]", f"must be a finite number, got {o!r}")


@dataclass(frozen=True)
class AxisSpec:
    name: Literal["parameters", "data", "width", "depth", "batch", "compute", "isoflop"]
    values: Any  # a list, or {start, stop, num} (log-spaced); meaning depends on the axis
    size: Any = None  # the fixed size of data / width / depth / batch sweeps
    points: int = 5  # isoflop: sizes per budget
    spread: float = 2.0  # isoflop: ratio of neighbouring sizes' parameter counts
    extra_sizes: tuple[ExtraSizes, ...] = ()  # isoflop: sizes beyond the planned ones at some budgets

    def __post_init__(self) -> None:
        require(self.points >= 1, "points", f"must be >= 1, got {self.points}")
        require(self.spread > 1, "spread", f"must be > 1 (the factor between neighbouring sizes), got {self.spread}")

    def offsets(self, budget: float) -> list[float]:
        """isoflop: the sizes of a budget as powers of ``spread`` around the optimum, ascending."""
        mid = (self.points - 1) / 2
        extra = [o for e in self.extra_sizes if math.isclose(e.budget, budget, rel_tol=1e-6) for o in e.offsets]
        return sorted({j - mid for j in range(self.points)} | set(extra))


@dataclass(frozen=True)
class ShapeRule:
    """Target parameter count -> (n_layers, d_model, n_heads).

    ``aspect``: d_model is a multiple of head_dim, n_heads = d_model / head_dim, and
    d_model / n_layers lies within a factor ``aspect_slack`` of ``aspect``; among those
    shapes whose parameter count (``param_count``) is within ``tolerance`` of the target,
    the one whose d_model / n_layers is closest to ``aspect`` (in log); if none is, the
    closest count, with a warning. ``ladder``: the paper's named size nearest in log
    parameters (warns when it misses by more than ``tolerance``).
    """

    rule: Literal["aspect", "ladder"] = "aspect"
    aspect: float = 64.0  # d_model / n_layers (GPT-3 / Llama-like models sit at 64-128)
    aspect_slack: float = 4.0  # only shapes with aspect / slack <= d_model / n_layers <= aspect * slack
    head_dim: int = 64
    tolerance: float = 0.05
    max_layers: int = 128

    def __post_init__(self) -> None:
        require(self.aspect > 0, "aspect", f"must be > 0 (d_model per layer), got {self.aspect}")
        require(self.aspect_slack >= 1, "aspect_slack", f"must be >= 1 (1 = exactly the aspect), got {self.aspect_slack}")
        require(self.head_dim >= 2 and self.head_dim % 2 == 0, "head_dim",
                 f"must be an even integer >= 2 (RoPE rotates pairs), got {self.head_dim}")
        require(0 < self.tolerance < 1, "tolerance", f"must be in (0, 1), got {self.tolerance}")
        require(self.max_layers >= 1, "max_layers", f"must be >= 1, got {self.max_layers}")


@dataclass(frozen=True)
class TokenRule:
    """Training tokens of a size: ``tokens_per_param`` (D = r N; Chinchilla r = 20),
    ``compute_optimal`` (N_opt = coefficient * C^exponent, so C = (N / coefficient)^(1 /
    exponent) and D = C / FLOPs-per-token; the defaults equal 20 tokens/param under C = 6ND),
    ``fixed`` (``tokens`` for every size) or ``steps`` (``steps`` optimizer steps: D = steps x
    batch x context, the paper's protocol)."""

    rule: Literal["tokens_per_param", "compute_optimal", "fixed", "steps"] = "tokens_per_param"
    tokens_per_param: float = 20.0
    coefficient: float = 1 / math.sqrt(120.0)
    exponent: float = 0.5
    tokens: float | None = None  # a count; float so that YAML's 1.0e9 (read as a string) works too
    steps: float | None = None

    def __post_init__(self) -> None:
        _whole(self, "tokens")
        _whole(self, "steps")
        require(self.tokens_per_param > 0, "tokens_per_param", f"must be > 0, got {self.tokens_per_param}")
        require(self.coefficient > 0, "coefficient", f"must be > 0, got {self.coefficient}")
        require(0 < self.exponent < 1, "exponent", f"must be in (0, 1), got {self.exponent}")
        if self.rule == "fixed":
            require(self.tokens is not None, "tokens", "is required when rule is 'fixed'; give the training tokens")
        if self.tokens is not None:
            require(self.tokens > 0, "tokens", f"must be > 0, got {self.tokens}")
        if self.rule == "steps":
            require(self.steps is not None, "steps", "is required when rule is 'steps'; give the optimizer steps")
        if self.steps is not None:
            require(self.steps >= 1, "steps", f"must be >= 1, got {self.steps}")


@dataclass(frozen=True)
class FlopsSpec:
    convention: Literal["paper", "full"] = "full"  # the convention FLOP budgets are stated in
    reference: str | None = None  # architecture label whose FLOPs/params define budgets and targets


@dataclass(frozen=True)
class LrRule:
    """``constant`` (``value``, default base.train.lr), ``paper`` (models/sizes.py's LR of a
    ladder size; other sizes interpolated log-log in non-embedding parameters), ``olmo``
    (0.0047 * (N / 108M)^(-1/3))."""

    rule: Literal["constant", "paper", "olmo"] = "constant"
    value: float | None = None

    def __post_init__(self) -> None:
        require(self.value is None or self.value > 0, "value", f"must be > 0, got {self.value}")


@dataclass(frozen=True)
class BatchRule:
    """Global batch in sequences: ``constant`` (``size``, default base.train.batch_size),
    ``olmo`` (2048 * 160 * (N / 108M)^(2/3) tokens / context) or ``sqrt_params`` (the
    paper: reference_batch * sqrt(N / reference_params)), rounded by ``round`` and clamped
    to [min, max]; ``table`` gives exact batches of named sizes (the paper's 32 / 46 / 90 /
    170 / 256 for xxs .. large), which override the rule."""

    rule: Literal["constant", "olmo", "sqrt_params"] = "constant"
    size: int | None = None
    reference_params: float = 6.18e6  # the paper: xxs (6.18M non-embedding) -> 32 sequences
    reference_batch: int = 32
    round: Literal["nearest", "pow2", "multiple_of_8"] = "nearest"
    min: int = 1
    max: int | None = None
    table: dict[str, int] = field(default_factory=dict)  # size name -> sequences; overrides the rule

    def __post_init__(self) -> None:
        for name, value in self.table.items():
            require(isinstance(value, int) and not isinstance(value, bool) and value >= 1, f"table.{name}",
                     f"must be a batch size in sequences (an integer >= 1), got {value!r}")
        self._check()

    def _check(self) -> None:
        require(self.size is None or self.size >= 1, "size", f"must be >= 1, got {self.size}")
        require(self.reference_params > 0, "reference_params", f"must be > 0, got {self.reference_params}")
        require(self.reference_batch >= 1, "reference_batch", f"must be >= 1, got {self.reference_batch}")
        require(self.min >= 1, "min", f"must be >= 1, got {self.min}")
        require(self.max is None or self.max >= self.min, "max", f"must be >= min ({self.min}), got {self.max}")


@dataclass(frozen=True)
class WarmupRule:
    """``fraction`` (of all steps; default base.train.warmup_fraction), ``olmo`` (warmup =
    N tokens) or ``tokens`` (a fixed count); the last two are capped at ``max_fraction``."""

    rule: Literal["fraction", "olmo", "tokens"] = "fraction"
    fraction: float | None = None
    tokens: float | None = None
    max_fraction: float = 0.5

    def __post_init__(self) -> None:
        _whole(self, "tokens")
        require(self.fraction is None or 0 <= self.fraction < 1, "fraction", f"must be in [0, 1), got {self.fraction}")
        if self.rule == "tokens":
            require(self.tokens is not None, "tokens", "is required when rule is 'tokens'; give the warmup tokens")
        require(self.tokens is None or self.tokens >= 0, "tokens", f"must be >= 0, got {self.tokens}")
        require(0 < self.max_fraction < 1, "max_fraction", f"must be in (0, 1), got {self.max_fraction}")

    @property
    def sets_warmup(self) -> bool:
        """Whether the rule gives each run's warmup itself (not base.train.warmup_fraction)."""
        return self.rule != "fraction" or self.fraction is not None


@dataclass(frozen=True)
class Beta2Rule:
    """``constant`` (``value``, default base.train.betas[1]) or ``olmo`` (0.99 below
    524,288-token batches, else 0.95)."""

    rule: Literal["constant", "olmo"] = "constant"
    value: float | None = None

    def __post_init__(self) -> None:
        require(self.value is None or 0 <= self.value < 1, "value", f"must be in [0, 1), got {self.value}")


@dataclass(frozen=True)
class HparamRules:
    lr: LrRule = field(default_factory=LrRule)
    batch: BatchRule = field(default_factory=BatchRule)
    warmup: WarmupRule = field(default_factory=WarmupRule)
    beta2: Beta2Rule = field(default_factory=Beta2Rule)


@dataclass(frozen=True)
class Throughput:
    """What a GPU-hour buys: GPU-hours = training FLOPs (``full`` convention: the FLOPs the
    step really executes) / achieved FLOP/s. ``mfu`` unset (the default): each architecture's
    measured rate from the throughput file `ebt-scaling bench --save` writes, else its
    documented default MFU x ``peak_tflops`` (harness/contract/throughput.py). ``mfu`` set:
    ``peak_tflops`` x mfu for every architecture (a number), or for the ones a mapping names
    (``{ebt: 0.05, transformer: 0.2}``; the others as if unset)."""

    peak_tflops: float = 989.0
    mfu: float | dict[str, float] | None = None
    device: str = "H100 SXM (dense bf16 peak)"

    def __post_init__(self) -> None:
        require(self.peak_tflops > 0, "peak_tflops", f"must be > 0, got {self.peak_tflops}")
        if isinstance(self.mfu, dict):
            typed = {}
            for arch, value in self.mfu.items():
                ARCHITECTURES.get(arch, f"mfu.{arch}")
                value = _number(value, f"mfu.{arch}")
                require(0 < value <= 1, f"mfu.{arch}", f"must be in (0, 1], got {value:g}")
                typed[arch] = value
            object.__setattr__(self, "mfu", typed)
        elif self.mfu is not None:
            require(0 < self.mfu <= 1, "mfu", f"must be in (0, 1], got {self.mfu}")


TUNE_KNOBS = ("lr", "alpha_init", "alpha_lr_multiplier", "batch", "warmup")
OPTION_KNOBS = ("alpha_init", "alpha_lr_multiplier")   # model options: only architectures that have them


@dataclass(frozen=True)
class TuneExtra:
    """One trial added to one cell (written by `ebt-scaling plan --extend`): the cell is
    (label, axis_value, size) and ``factors`` gives every knob of the label's grid."""

    label: str
    axis_value: str
    size: str
    factors: dict[str, float] = field(default_factory=dict)
    full_tokens: bool = False   # a winner of reduced-token trials, trained at the planned tokens


@dataclass(frozen=True)
class TuneSpec:
    """Hyperparameter tuning as part of the sweep (sweeps/tuning.py): every (architecture,
    axis value, size, seed) cell of ``at`` trains once per combination of the knobs' factors.
    A factor multiplies the value the rules give (the LR rule's LR, the option's value,
    the batch rule's batch, the warmup fraction); knobs an architecture lacks do not apply
    to it. With ``equal_trials`` every architecture gets the same number of trials per
    cell: one whose knobs combine to fewer gets its LR grid extended at the grid's own
    ratio, alternately above and below. ``token_fraction`` < 1 trains the trials on that
    share of the planned tokens (the planned run at factor 1 is kept: the untuned answer);
    ``plan --extend`` then adds the winners at full tokens (``extra``)."""

    lr: tuple[float, ...] = ()
    alpha_init: tuple[float, ...] = ()
    alpha_lr_multiplier: tuple[float, ...] = ()
    batch: tuple[float, ...] = ()
    warmup: tuple[float, ...] = ()
    at: tuple[str, ...] = ()             # axis values (plan's axis_value) to tune at; empty: every value
    token_fraction: float = 1.0
    equal_trials: bool = True
    extra: tuple[TuneExtra, ...] = ()

    def grid(self, knob: str) -> tuple[float, ...]:
        return getattr(self, knob)

    def __post_init__(self) -> None:
        require(any(self.grid(k) for k in TUNE_KNOBS), "tune",
                f"names no knob; give factor lists for some of {', '.join(TUNE_KNOBS)}, e.g. lr: [0.5, 1, 2]")
        for knob in TUNE_KNOBS:
            values = self.grid(knob)
            for i, v in enumerate(values):
                require(math.isfinite(v) and v > 0, f"{knob}[{i}]", f"must be a factor > 0, got {v!r}")
                require(v not in values[:i], f"{knob}[{i}]", f"duplicate factor {v:g}; list each factor once")
            object.__setattr__(self, knob, tuple(sorted(values)))
        require(0 < self.token_fraction <= 1, "token_fraction", f"must be in (0, 1], got {self.token_fraction}")


@dataclass(frozen=True)
class CooldownSpec:
    """Cooldown branches of WSD runs (Hägele et al. 2024; sweeps/cooldown.py): besides its
    planned tokens, every run is also trained to each ``fractions`` share of them, starting
    from its own checkpoint where that branch's decay begins, so one stable phase yields
    several cooled-down token counts."""

    fractions: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        require(len(self.fractions) >= 1, "fractions", "must list at least one fraction of the planned tokens, "
                "e.g. [0.25, 0.5]")
        for i, f in enumerate(self.fractions):
            require(0 < f < 1, f"fractions[{i}]", f"must be in (0, 1) (a share of the planned tokens), got {f}")


@dataclass(frozen=True)
class RepeatSeeds:
    """More seeds at some axis values: seed-to-seed spread where it buys the most."""

    at: tuple[str, ...] = ()        # axis values (plan's axis_value)
    seeds: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        require(len(self.at) >= 1, "at", "must list the axis values to repeat, e.g. [L2-d96]")
        require(len(self.seeds) >= 1, "seeds", "must list the extra seeds, e.g. [1]")
        for i, seed in enumerate(self.seeds):
            require_seed(seed, f"seeds[{i}]")


@dataclass(frozen=True)
class SweepSpec:
    name: str
    architectures: tuple[ArchEntry, ...]
    axis: AxisSpec
    description: str = ""
    base: dict[str, Any] = field(default_factory=dict)
    seeds: tuple[int, ...] = (0,)
    pairing: Literal["tokens", "flops"] = "tokens"
    param_count: Literal["total", "non_embedding"] = "total"
    shape: ShapeRule = field(default_factory=ShapeRule)
    tokens: TokenRule = field(default_factory=TokenRule)
    flops: FlopsSpec = field(default_factory=FlopsSpec)
    hparams: HparamRules = field(default_factory=HparamRules)
    throughput: Throughput = field(default_factory=Throughput)
    tune: TuneSpec | None = None
    cooldown: CooldownSpec | None = None
    repeat: RepeatSeeds | None = None
    # Where the sweep came from (file or preset path); not a key of the file.
    source: str = field(default="", init=False, compare=False, repr=False)

    @classmethod
    def prepare_input(cls, data: dict, path: str) -> dict:
        """``base.model.ebt`` once held options shared by every EBT entry: read them as
        defaults of each ``arch: ebt`` entry's options (the entry's own keys win)."""
        base, model = data.get("base"), (data.get("base") or {}).get("model")
        if not isinstance(model, dict) or "ebt" not in model:
            return data
        shared = model["ebt"] or {}
        entries = data.get("architectures")
        data = {**data, "base": {**base, "model": {k: v for k, v in model.items() if k != "ebt"}}}
        if isinstance(entries, list):
            upgraded = []
            for entry in entries:
                if isinstance(entry, dict) and entry.get("arch") == "ebt":
                    options = {**shared, **(entry.get("ebt") or {}), **(entry.get("options") or {})}
                    entry = {**{k: v for k, v in entry.items() if k != "ebt"}, "options": options}
                upgraded.append(entry)
            data["architectures"] = upgraded
        warnings.warn("base.model.ebt: deprecated key; write the EBT's options as architectures[].options",
                      FutureWarning, stacklevel=2)
        return data

    def __post_init__(self) -> None:
        require_path_name(self.name, "name")  # runs/<name> is where `ebt-scaling run` writes
        require(len(self.architectures) >= 1, "architectures",
                 "must list at least one entry, e.g. [{label: T++, arch: transformer}, {label: EBT-S1, arch: ebt}]")
        labels = [a.label for a in self.architectures]
        for i, label in enumerate(labels):
            require(label not in labels[:i], f"architectures[{i}].label", f"duplicate label {label!r}; labels must be unique")
        require(len(self.seeds) >= 1, "seeds", "must list at least one seed, e.g. [0]")
        for i, seed in enumerate(self.seeds):
            require_seed(seed, f"seeds[{i}]")
            require(seed not in self.seeds[:i], f"seeds[{i}]", f"duplicate seed {seed}; list each seed once")
        ref = self.flops.reference
        require(ref is None or ref in labels, "flops.reference",
                 f"must be one of the architecture labels {labels}, got {ref!r}")

    @property
    def reference_label(self) -> str:
        """flops.reference, else the first entry of the baseline architecture, else the first."""
        if self.flops.reference is not None:
            return self.flops.reference
        baseline = baseline_name()
        return next((e.label for e in self.architectures if e.arch == baseline), self.architectures[0].label)


# --------------------------------------------------------------------------- values and sizes


@dataclass(frozen=True)
class ExplicitSize:
    n_layers: int
    d_model: int
    n_heads: int
    name: str | None = None


def log_range(value: dict, key: str) -> list[float]:
    """{start, stop, num} -> num log-spaced values from start to stop (both included)."""
    unknown = sorted(set(value) - {"start", "stop", "num"})
    require(not unknown, f"{key}.{unknown[0] if unknown else ''}",
             "unknown key; a range has exactly start, stop and num")
    for name in ("start", "stop", "num"):
        require(name in value, f"{key}.{name}", "missing required key (a range is {start, stop, num}, log-spaced)")
    start, stop, num = _number(value["start"], f"{key}.start"), _number(value["stop"], f"{key}.stop"), value["num"]
    require(isinstance(num, int) and not isinstance(num, bool) and num >= 1, f"{key}.num",
             f"must be an integer >= 1, got {num!r}")
    require(num <= MAX_AXIS_VALUES, f"{key}.num", f"must be at most {MAX_AXIS_VALUES} (values of one axis), got {num}; "
            "split the range into several sweeps")
    require(start > 0, f"{key}.start", f"must be > 0 (the range is log-spaced), got {start}")
    require(stop >= start, f"{key}.stop", f"must be >= start ({start:g}), got {stop:g}")
    if num == 1:
        require(stop == start, f"{key}.num", "must be >= 2 when stop differs from start")
        return [float(start)]
    ratio = math.log(stop / start) / (num - 1)
    return [float(start * math.exp(ratio * i)) for i in range(num - 1)] + [float(stop)]


def _number(value: Any, key: str) -> float:
    if isinstance(value, str):
        try:
            return float(value)  # PyYAML reads 1e18 (no dot) as a string
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    return float(value)


def parse_size(value: Any, key: str) -> str | float | ExplicitSize:
    """A size: a ladder name (str), a parameter target (number) or an explicit shape."""
    if isinstance(value, str):
        if value in PAPER_SIZES:
            return value
        try:
            value = float(value)
        except ValueError:
            raise ConfigError(f"{key}: unknown size {value!r}; use a ladder name ({', '.join(PAPER_SIZES)}), "
                              "a parameter count or {n_layers, d_model, n_heads}") from None
    if isinstance(value, dict):
        size = from_dict(ExplicitSize, value, key)
        for name in ("n_layers", "d_model", "n_heads"):
            require(getattr(size, name) >= 1, f"{key}.{name}", f"must be a positive integer, got {getattr(size, name)}")
        require(size.d_model % size.n_heads == 0 and (size.d_model // size.n_heads) % 2 == 0, f"{key}.d_model",
                 f"must be n_heads ({size.n_heads}) x an even head_dim, got {size.d_model}")
        return size
    target = _number(value, key)
    require(target > 0, key, f"must be > 0 (a parameter count), got {value!r}")
    return target


def axis_values(sweep: SweepSpec) -> list:
    """The axis values as a list of typed values (validated; keys named)."""
    axis, key = sweep.axis, "axis.values"
    raw = axis.values
    if isinstance(raw, dict):
        require(axis.name != "parameters" or {"start", "stop", "num"} >= set(raw), key,
                 "a parameters axis takes a list of sizes or a range {start, stop, num} of parameter counts")
        raw = log_range(raw, key)
    elif not isinstance(raw, (list, tuple)):
        raise ConfigError(f"{key}: expected a list or a range {{start, stop, num}}, got {type(raw).__name__} {raw!r}")
    require(len(raw) >= 1, key, f"must not be empty; give at least one {axis.name} value")
    require(len(raw) <= MAX_AXIS_VALUES, key, f"must list at most {MAX_AXIS_VALUES} values, got {len(raw)}; split the "
            "axis into several sweeps")
    values: list = []
    for i, v in enumerate(raw):
        k = f"{key}[{i}]"
        if axis.name == "parameters":
            values.append(parse_size(v, k))
            continue
        number = _number(v, k)
        require(number > 0, k, f"must be > 0, got {v!r}")
        if axis.name in ("width", "depth", "batch"):
            require(float(number).is_integer(), k, f"must be an integer, got {v!r}")
            number = int(number)
        values.append(number)
    first: dict = {}
    for i, v in enumerate(values):
        require(first.setdefault(v, i) == i, f"{key}[{i}]", f"duplicate value {v!r}; list each value once")
    return values


def require_run_count(runs: int) -> None:
    """Refuse plans above MAX_RUNS runs (read at call time: tests lower it)."""
    require(runs <= MAX_RUNS, "axis.values", f"the sweep plans more than {MAX_RUNS} runs ({runs} and counting); "
            "split it into several sweeps (fewer axis values, seeds, architectures or tuning factors)")


# --------------------------------------------------------------------------- loading


def preset_path(name: str) -> Path:
    return Path(str(resources.files("ebt_scaling.sweeps").joinpath("presets", f"{name}.yaml")))


def preset_names() -> list[str]:
    folder = Path(str(resources.files("ebt_scaling.sweeps").joinpath("presets")))
    return sorted(p.stem for p in folder.glob("*.yaml"))


def sweep_from_dict(data: Any, source: str = "sweep") -> SweepSpec:
    """Typed SweepSpec from plain data; ConfigError 'SOURCE: key: message' on any problem."""
    try:
        if not isinstance(data, dict):
            raise ConfigError(f"expected a mapping of sweep keys (name, architectures, axis, ...), "
                              f"got {type(data).__name__}")
        sweep = from_dict(SweepSpec, data)
        validate(sweep)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    object.__setattr__(sweep, "source", source)
    return sweep


def load_sweep(path_or_preset: str | Path, overrides: dict[str, Any] | None = None) -> SweepSpec:
    """A sweep from a YAML file or a shipped preset name (tiny, paper_nlp, isoflop, ...),
    with ``--set``-style overrides ({"base.train.lr": 3e-4}) applied before validation."""
    text = str(path_or_preset)
    path = Path(text)
    if not path.exists() and "/" not in text and not text.endswith((".yaml", ".yml")):
        names = preset_names()
        if text not in names:
            raise ConfigError(f"{text}: no such file or preset; give a sweep YAML path or one of the presets "
                              f"{', '.join(names)}")
        path = preset_path(text)
    data = load_yaml(path)
    if overrides:
        data = nested(overrides, data if isinstance(data, dict) else {})
    return sweep_from_dict(data, str(path))


# train.tokens of the base is the sweep's to set (refused in base): the base spec, a template,
# runs as long as a spec can, so checks of a run's length (train.warmup_steps below its steps,
# which `protocol: reference` sets to 10,000) apply to each planned run, whose tokens the rule gives.
_BASE_TOKENS = 2 ** 62


def base_spec(sweep: SweepSpec) -> RunSpec:
    base = dict(sweep.base)
    train = {} if base.get("train") is None else base["train"]  # null: the defaults, as in a run spec
    if isinstance(train, dict):
        train = {**train, "tokens": _BASE_TOKENS}
        if sweep.hparams.warmup.sets_warmup:
            # each run's warmup_fraction comes from the rule, and warmup_steps would replace it: the
            # base states "no warmup steps", which a `protocol` preset leaves as given (explicit keys win)
            train.setdefault("warmup_steps", None)
        base["train"] = train
    return from_dict(RunSpec, base, "base")


def arch_options(sweep: SweepSpec, index: int) -> Any:
    """The typed options of architecture entry `index` (its family's defaults + the entry's,
    over those a ``base.protocol`` preset gives that family: harness/contract/protocol.py)."""
    entry = sweep.architectures[index]
    options = preset_options(sweep.base.get("protocol"), entry.arch, entry.options, "base.protocol")
    return from_dict(ARCHITECTURES.get(entry.arch).options, options, f"architectures[{index}].options")


# base keys the sweep sets itself, and which sweep key to use instead
_OWNED_BASE_KEYS = {
    ("model", "arch"): "architectures[].arch",
    ("model", "options"): "architectures[].options (options belong to one architecture)",
    ("model", "n_layers"): "the axis sizes / shape rule",
    ("model", "d_model"): "the axis sizes / shape rule",
    ("model", "n_heads"): "the axis sizes / shape rule",
    ("train", "tokens"): "tokens (the token rule)",
    ("seed",): "seeds",
}


def validate(sweep: SweepSpec) -> None:
    """Checks that need more than one key: the base spec, EBT options, axis values and size."""
    for keys, instead in _OWNED_BASE_KEYS.items():
        node: Any = sweep.base
        for k in keys:
            node = node.get(k, dataclasses.MISSING) if isinstance(node, dict) else dataclasses.MISSING
        require(node is dataclasses.MISSING, "base." + ".".join(keys),
                 f"is set by the sweep ({instead}); remove it from base")
    train = sweep.base.get("train")
    warmup_steps = train.get("warmup_steps") if isinstance(train, dict) else None
    require(warmup_steps is None or not sweep.hparams.warmup.sets_warmup, "base.train.warmup_steps",
            f"gives the warmup, and so does hparams.warmup (rule {sweep.hparams.warmup.rule}); remove one of the two")
    base_spec(sweep)  # the base must be a valid partial run spec
    for i in range(len(sweep.architectures)):
        arch_options(sweep, i)
    values = axis_values(sweep)
    axis = sweep.axis
    if axis.name in FIXED_SIZE_AXES:
        require(axis.size is not None, "axis.size", f"is required for a {axis.name} sweep; give the fixed size "
                 f"(a ladder name such as xxs, a parameter count or {{n_layers, d_model, n_heads}})")
        parse_size(axis.size, "axis.size")
    else:
        require(axis.size is None, "axis.size", f"is only used by {', '.join(FIXED_SIZE_AXES)} sweeps; remove it "
                 f"(a {axis.name} sweep derives its sizes from axis.values)")
    for i, extra in enumerate(axis.extra_sizes):
        require(axis.name == "isoflop", "axis.extra_sizes", f"only applies to isoflop sweeps (this axis is "
                 f"{axis.name}); remove it")
        require(any(math.isclose(extra.budget, v, rel_tol=1e-6) for v in values), f"axis.extra_sizes[{i}].budget",
                 f"{extra.budget:g} is not one of axis.values; give one of the budgets")
    if sweep.tokens.rule in ("fixed", "steps") and axis.name in BUDGET_AXES:
        raise ConfigError(f"tokens.rule: {sweep.tokens.rule!r} cannot place a size on a {axis.name} axis (the budget "
                          "fixes the tokens); use tokens_per_param or compute_optimal")


def dump_sweep(sweep: SweepSpec, resolve: bool = True) -> dict:
    """Plain data for sweep.yaml; with ``resolve`` the axis values are written out as a list."""
    data = to_dict(sweep)
    data.pop("source", None)
    if resolve:
        values = []
        for v in axis_values(sweep):
            values.append(to_dict(v) if dataclasses.is_dataclass(v) else v)
        data["axis"]["values"] = [{k: x for k, x in v.items() if x is not None} if isinstance(v, dict) else v
                                  for v in values]
    return data


def sweep_to_yaml(sweep: SweepSpec) -> str:
    return yaml.safe_dump(dump_sweep(sweep), sort_keys=False)
