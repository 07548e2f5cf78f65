"""The sweep file: a typed, validated description of a paired scaling sweep.

A sweep YAML names a base run spec (a partial RunSpec dict merged over RunSpec's
defaults), the architectures to pair (Transformer++, EBT System 1 / System 2 variants),
the seeds, the axis being swept and the rules that turn an axis value into a run: the
shape rule (sweeps/shapes.py), the token rule and the per-size hyperparameter rules
(sweeps/rules.py). Axes and rules are registries (SWEEP_AXES, SWEEP_RULES, below): a
package adds its own through the entry points ``ebt_scaling.sweep_axes`` /
``ebt_scaling.sweep_rules``, and the sweep file names them as it names the built-ins. Every error is one line ``FILE: key: message and fix`` (ConfigError),
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
      name: parameters               # a registered axis (SWEEP_AXES; built-ins in sweeps/axes.py):
                                     # parameters | data | width | depth | batch | compute | isoflop
      values: [xxs, xs, small]       # a list, or a log-spaced range {start, stop, num}; <= 10,000 values
      size: null                     # the fixed size of data / width / depth / batch sweeps
      points: 5                      # isoflop: sizes per budget
      spread: 2.0                    # isoflop: factor between neighbouring sizes
      extra_sizes: []                # isoflop: [{budget, offsets}] sizes beyond those (plan --extend)
    shape: {rule: aspect, aspect: 64, head_dim: 64, tolerance: 0.05, max_layers: 128}
    tokens: {rule: tokens_per_param, tokens_per_param: 20}   # | compute_optimal | fixed | steps
                                     # (every rule: a registered HparamRule, SWEEP_RULES; sweeps/rules.py)
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

What the built-in axis values mean (sweeps/axes.py):

* ``parameters``: sizes. A size is a ladder name of the paper (models/architectures.py: 4xs .. xl),
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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Protocol

from ebt_scaling.harness.contract.architecture import ARCHITECTURES, baseline_name
from ebt_scaling.harness.contract.cli_flags import nested
from ebt_scaling.harness.contract.errors import ConfigError, require
from ebt_scaling.harness.contract.paths import require_path_name
from ebt_scaling.harness.contract.protocol import preset_options
from ebt_scaling.harness.contract.registry import Registry
from ebt_scaling.harness.contract.spec import RunSpec, require_seed
from ebt_scaling.harness.contract.typed_config import dump_yaml, from_dict, load_yaml, not_in_file, to_dict, typed_value
from ebt_scaling.models.architectures import PAPER_SIZES

# Bounds checked before anything is expanded, so a typo (num: 1000000) fails in a line instead
# of planning for minutes: values of one axis, and runs of one plan (every seed, architecture,
# tuning trial and cooldown branch). A larger study is several sweeps.
MAX_AXIS_VALUES = 10_000
MAX_RUNS = 100_000


# --------------------------------------------------------------------------- registries: rules and axes


@dataclass(frozen=True)
class HparamRule:
    """One rule of a slot (``tokens``, ``lr``, ``batch``, ``warmup``, ``beta2``), registered in
    SWEEP_RULES as ``SLOT.RULE``. A sweep file picks it by name (``lr: {rule: olmo, ...}``):
    the mapping is read as ``options``, a frozen dataclass with a ``rule`` field (its own
    checks in ``__post_init__``), and ``value`` computes the slot's value from it:

    * tokens: ``value(options, n_params, flops_per_token, tokens_per_step)`` -> training tokens;
      ``optimum(options, budget, reference_at)`` -> the compute-optimal parameter target of a
      FLOP budget (``reference_at(target)`` -> (parameters, FLOPs per token) of the reference
      at the shape the shape rule picks), needed on budget axes; None: the rule cannot place
      sizes on budgets.
    * batch: ``value(options, n_params, context, default, size_name)`` -> sequences per step
    * lr: ``value(options, n_params, size_name, non_embedding_params, default)``
    * warmup: ``value(options, n_params, tokens, default)`` -> warmup fraction
    * beta2: ``value(options, batch_tokens, default)``

    N is the sweep's param_count of the reference architecture; ``default`` is the base
    spec's value. ``required`` names options the rule cannot do without (option -> what to
    give); ``base_option`` is the option whose None means "the base spec's value" (the
    rule then leaves the base's setting as it is)."""

    slot: str
    rule: str
    options: type
    value: Callable[..., Any]
    required: Mapping[str, str] = field(default_factory=dict)
    base_option: str | None = None
    optimum: Callable[..., float] | None = None

    @property
    def name(self) -> str:
        return f"{self.slot}.{self.rule}"

    def follows_base(self, options: Any) -> bool:
        """Whether these options leave the base spec's value as it is."""
        return self.base_option is not None and getattr(options, self.base_option) is None


SWEEP_RULES: Registry[HparamRule] = Registry("sweep rule", "ebt_scaling.sweep_rules")
RULE_SLOTS = ("tokens", "lr", "batch", "warmup", "beta2")


def rules_of(slot: str) -> dict[str, HparamRule]:
    """A slot's rules by name, in registration order (the first is the slot's default)."""
    return {e.rule: e for e in SWEEP_RULES.entries() if e.slot == slot}


def rule_entry(slot: str, options: Any) -> HparamRule:
    return SWEEP_RULES.get(f"{slot}.{options.rule}", f"{slot}.rule")


def default_rule(slot: str) -> Any:
    """The options of a slot's default rule, all at their defaults."""
    return next(iter(rules_of(slot).values())).options()


def rule_options(slot: str, data: Any, path: str) -> Any:
    """The typed options of the rule a sweep file's mapping ``{rule: NAME, ...}`` names
    (default: the slot's first rule); one-line ConfigErrors naming the key."""
    if not isinstance(data, dict):
        if dataclasses.is_dataclass(data):  # already typed (a SweepSpec built in code)
            return data
        raise ConfigError(f"{path}: expected a mapping {{rule: NAME, ...}}, got {type(data).__name__} {data!r}")
    known = rules_of(slot)
    name = data.get("rule", next(iter(known)))
    if name not in known:
        raise ConfigError(f"{path}.rule: must be one of {', '.join(repr(n) for n in known)}; got {name!r}")
    entry = known[name]
    options = from_dict(entry.options, {**data, "rule": name}, path)
    for option, what in entry.required.items():
        require(getattr(options, option) is not None, f"{path}.{option}",
                f"is required when rule is {name!r}; give {what}")
    return options


@dataclass(frozen=True)
class FittedAxis:
    """How the analysis shows an axis it fits the final loss against (analysis/points.py,
    laws/power.py, report.py, plots.py), with the EBT paper's scaling-rate advantage on it
    (docs/ebt.md, arXiv 2507.02092)."""

    column: str | None   # the run table's column (None: the analysis picks it, e.g. by FLOP convention)
    noun: str            # "final validation loss vs <noun>"
    unit: str            # what one value counts, in tables: "d_model", "sequences per step"
    label: str           # a plot's x-axis label ({conv} / {params}: the analysis' convention / count)
    paper_name: str | None = None                        # the paper's name of the axis
    paper_advantage: tuple[float, float | None] | None = None   # % in v1, in a later revision (or None)


@dataclass(frozen=True)
class SweepAxis:
    """What a sweep's ``axis.name`` means, registered in SWEEP_AXES (built-ins: sweeps/axes.py).

    ``parse_value(value, key)`` types one of ``axis.values`` (a one-line ConfigError naming
    `key` otherwise); ``points(planner, values)`` turns the typed values into the plan's points
    (sweeps/axes.py: AxisPoint: a shape, and what the point fixes: tokens, a budget, a batch,
    model fields). ``fixed_size``: ``axis.size`` gives the size every point starts from.
    ``budgets``: the values are FLOP budgets, so the token rule must place sizes on them.
    ``sizes_per_budget``: several sizes per budget (``axis.points``, ``spread``,
    ``extra_sizes``; an isoFLOP frontier for the analysis and ``plan --extend``).
    ``mapping_values``: a value may itself be a mapping (an explicit shape). ``fitted``: the
    analysis also fits the final loss against the axis' own column."""

    name: str
    parse_value: Callable[[Any, str], Any]
    points: Callable[[Any, list], list]
    fixed_size: bool = False
    budgets: bool = False
    sizes_per_budget: bool = False
    mapping_values: bool = False
    fitted: FittedAxis | None = None


SWEEP_AXES: Registry[SweepAxis] = Registry("sweep axis", "ebt_scaling.sweep_axes")


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
    name: str  # a registered sweep axis (SWEEP_AXES)
    values: Any  # a list, or {start, stop, num} (log-spaced); meaning depends on the axis
    size: Any = None  # the fixed size of data / width / depth / batch sweeps
    points: int = 5  # isoflop: sizes per budget
    spread: float = 2.0  # isoflop: ratio of neighbouring sizes' parameter counts
    extra_sizes: tuple[ExtraSizes, ...] = ()  # isoflop: sizes beyond the planned ones at some budgets

    def __post_init__(self) -> None:
        require(self.name in SWEEP_AXES, "name",
                f"must be one of {', '.join(repr(n) for n in SWEEP_AXES.names())}; got {self.name!r}")
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
class FlopsSpec:
    convention: Literal["paper", "full"] = "full"  # the convention FLOP budgets are stated in
    reference: str | None = None  # architecture label whose FLOPs/params define budgets and targets


class RuleOptions(Protocol):
    """The options of a registered rule (typed by ``rule_options``, not by from_dict)."""

    rule: str


@dataclass(frozen=True)
class HparamRules:
    lr: RuleOptions = field(default_factory=lambda: default_rule("lr"))
    batch: RuleOptions = field(default_factory=lambda: default_rule("batch"))
    warmup: RuleOptions = field(default_factory=lambda: default_rule("warmup"))
    beta2: RuleOptions = field(default_factory=lambda: default_rule("beta2"))

    @classmethod
    def prepare_input(cls, data: dict, path: str) -> dict:
        """Each slot's mapping as the typed options of the rule it names."""
        return {k: rule_options(k, v, f"{path}.{k}" if path else k) if k in RULE_SLOTS else v
                for k, v in data.items()}


@dataclass(frozen=True)
class Throughput:
    """What a GPU-hour buys: GPU-hours = training FLOPs (``full`` convention: the FLOPs the
    step really executes) / achieved FLOP/s. ``mfu`` unset (the default): each architecture's
    measured rate from the throughput file `ebt-scaling bench --save` writes, else its
    documented default MFU x ``peak_tflops`` (sweeps/throughput.py). ``mfu`` set:
    ``peak_tflops`` x mfu for every architecture (a number), or for the ones a mapping names
    (``{ebt: 0.05, transformer: 0.2}``; the others as if unset)."""

    peak_tflops: float = 989.0
    mfu: float | dict[str, float] | None = None
    device: str = "H100 SXM (dense bf16 peak)"

    @classmethod
    def prepare_input(cls, data: dict, path: str) -> dict:
        """A per-architecture ``mfu`` mapping's values as numbers (a mapping field keeps its values as given)."""
        mfu = data.get("mfu")
        if not isinstance(mfu, dict):
            return data
        key = f"{path}.mfu" if path else "mfu"
        return {**data, "mfu": {arch: typed_value(value, float, f"{key}.{arch}") for arch, value in mfu.items()}}

    def __post_init__(self) -> None:
        require(self.peak_tflops > 0, "peak_tflops", f"must be > 0, got {self.peak_tflops}")
        if isinstance(self.mfu, dict):
            for arch, value in self.mfu.items():
                ARCHITECTURES.get(arch, f"mfu.{arch}")
                require(0 < value <= 1, f"mfu.{arch}", f"must be in (0, 1], got {value:g}")
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

    @classmethod
    def prepare_input(cls, data: dict, path: str) -> dict:
        """Each knob's factors as read: numbers > 0, each once (errors name the factor as the
        file lists it), kept in ascending order."""
        grids = {}
        for knob in TUNE_KNOBS:
            if knob not in data:
                continue
            key = f"{path}.{knob}" if path else knob
            values = typed_value(data[knob], tuple[float, ...], key)
            for i, v in enumerate(values):
                require(v > 0, f"{key}[{i}]", f"must be a factor > 0, got {v!r}")
                require(v not in values[:i], f"{key}[{i}]", f"duplicate factor {v:g}; list each factor once")
            grids[knob] = tuple(sorted(values))
        return {**data, **grids}

    def __post_init__(self) -> None:
        require(any(self.grid(k) for k in TUNE_KNOBS), "tune",
                f"names no knob; give factor lists for some of {', '.join(TUNE_KNOBS)}, e.g. lr: [0.5, 1, 2]")
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
    tokens: RuleOptions = field(default_factory=lambda: default_rule("tokens"))
    flops: FlopsSpec = field(default_factory=FlopsSpec)
    hparams: HparamRules = field(default_factory=HparamRules)
    throughput: Throughput = field(default_factory=Throughput)
    tune: TuneSpec | None = None
    cooldown: CooldownSpec | None = None
    repeat: RepeatSeeds | None = None
    source: str = not_in_file("")   # where the sweep came from (file or preset path)

    @classmethod
    def prepare_input(cls, data: dict, path: str) -> dict:
        """``tokens`` as the typed options of the rule it names. ``base.model.ebt`` once held
        options shared by every EBT entry: read them as defaults of each ``arch: ebt`` entry's
        options (the entry's own keys win)."""
        if "tokens" in data:
            data = {**data, "tokens": rule_options("tokens", data["tokens"], f"{path}.tokens" if path else "tokens")}
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
    start, stop = typed_value(value["start"], float, f"{key}.start"), typed_value(value["stop"], float, f"{key}.stop")
    num = value["num"]
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
    target = typed_value(value, float, key)
    require(target > 0, key, f"must be > 0 (a parameter count), got {value!r}")
    return target


def axis_values(sweep: SweepSpec) -> list:
    """The axis values as a list of typed values (validated; keys named)."""
    axis, key = sweep.axis, "axis.values"
    entry = SWEEP_AXES.get(axis.name, "axis.name")
    raw = axis.values
    if isinstance(raw, dict):
        require(not entry.mapping_values or {"start", "stop", "num"} >= set(raw), key,
                 f"a {axis.name} axis takes a list of values or a range {{start, stop, num}} of numbers")
        raw = log_range(raw, key)
    elif not isinstance(raw, (list, tuple)):
        raise ConfigError(f"{key}: expected a list or a range {{start, stop, num}}, got {type(raw).__name__} {raw!r}")
    require(len(raw) >= 1, key, f"must not be empty; give at least one {axis.name} value")
    require(len(raw) <= MAX_AXIS_VALUES, key, f"must list at most {MAX_AXIS_VALUES} values, got {len(raw)}; split the "
            "axis into several sweeps")
    values = [entry.parse_value(v, f"{key}[{i}]") for i, v in enumerate(raw)]
    first: dict = {}
    for i, v in enumerate(values):
        require(first.setdefault(v, i) == i, f"{key}[{i}]", f"duplicate value {v!r}; list each value once")
    return values


def positive_number(value: Any, key: str) -> float:
    """An axis value that is a number > 0 (budgets, tokens)."""
    number = typed_value(value, float, key)
    require(number > 0, key, f"must be > 0, got {value!r}")
    return number


def positive_integer(value: Any, key: str) -> int:
    """An axis value that is an integer > 0 (d_model, layers, sequences)."""
    number = positive_number(value, key)
    require(float(number).is_integer(), key, f"must be an integer, got {value!r}")
    return int(number)


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
    return dataclasses.replace(sweep, source=source)


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
        if not rule_entry("warmup", sweep.hparams.warmup).follows_base(sweep.hparams.warmup):
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
    warmup = sweep.hparams.warmup
    require(warmup_steps is None or rule_entry("warmup", warmup).follows_base(warmup), "base.train.warmup_steps",
            f"gives the warmup, and so does hparams.warmup (rule {sweep.hparams.warmup.rule}); remove one of the two")
    base_spec(sweep)  # the base must be a valid partial run spec
    for i in range(len(sweep.architectures)):
        arch_options(sweep, i)
    values = axis_values(sweep)
    axis = sweep.axis
    entry = SWEEP_AXES.get(axis.name, "axis.name")
    if entry.fixed_size:
        require(axis.size is not None, "axis.size", f"is required for a {axis.name} sweep; give the fixed size "
                 f"(a ladder name such as xxs, a parameter count or {{n_layers, d_model, n_heads}})")
        parse_size(axis.size, "axis.size")
    else:
        fixed = [a.name for a in SWEEP_AXES.entries() if a.fixed_size]
        require(axis.size is None, "axis.size", f"is only used by {', '.join(fixed)} sweeps; remove it "
                 f"(a {axis.name} sweep derives its sizes from axis.values)")
    for i, extra in enumerate(axis.extra_sizes):
        require(entry.sizes_per_budget, "axis.extra_sizes", f"only applies to sweeps with several sizes per budget "
                f"({', '.join(a.name for a in SWEEP_AXES.entries() if a.sizes_per_budget)}; this axis is "
                 f"{axis.name}); remove it")
        require(any(math.isclose(extra.budget, v, rel_tol=1e-6) for v in values), f"axis.extra_sizes[{i}].budget",
                 f"{extra.budget:g} is not one of axis.values; give one of the budgets")
    if entry.budgets and rule_entry("tokens", sweep.tokens).optimum is None:
        placing = [r for r, e in rules_of("tokens").items() if e.optimum is not None]
        raise ConfigError(f"tokens.rule: {sweep.tokens.rule!r} cannot place a size on a {axis.name} axis (the budget "
                          f"fixes the tokens); use {' or '.join(placing)}")


def dump_sweep(sweep: SweepSpec, resolve: bool = True) -> dict:
    """Plain data for sweep.yaml; with ``resolve`` the axis values are written out as a list."""
    data = to_dict(sweep)
    if resolve:
        values = []
        for v in axis_values(sweep):
            values.append(to_dict(v) if dataclasses.is_dataclass(v) else v)
        data["axis"]["values"] = [{k: x for k, x in v.items() if x is not None} if isinstance(v, dict) else v
                                  for v in values]
    return data


def sweep_to_yaml(sweep: SweepSpec) -> str:
    return dump_yaml(dump_sweep(sweep))
