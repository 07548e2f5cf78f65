"""The built-in token, learning-rate, batch, warmup and beta2 rules (docs/scaling.md, docs/ebt.md).

Each rule is one ``HparamRule`` entry of sweep_spec.SWEEP_RULES (its slot, its name, its
options dataclass and the function computing its value), registered through the entry
point ``ebt_scaling.sweep_rules`` like every other registry; a sweep file picks one per
slot by name (``tokens: {rule: chinchilla...}``, ``hparams: {lr: {rule: olmo}}``). The
functions below them (``batch_size``, ``learning_rate``, ...) are what the planner calls:
they ask the registry for the rule the options name, never branch on it.

N is the sweep's ``param_count`` (total by default) of the reference architecture at the
run's shape. Every function is pure and cheap; sweeps/generate.py caches per shape.

* Chinchilla: D = 20 N at the compute optimum (``tokens_per_param``).
* Compute-optimal law: N_opt = coefficient * C^exponent (``compute_optimal``); the default
  coefficient 1/sqrt(120) and exponent 1/2 are the 20-tokens-per-parameter optimum under
  C = 6 N D.
* OLMo-core ladder: LR = 0.0047 (N / 108M)^(-1/3); batch = 2048 * 160 * (N / 108M)^(2/3)
  tokens, i.e. that / context sequences, rounded; beta2 = 0.99 below 524,288-token
  batches, else 0.95; warmup = N tokens.
* The EBT paper: LRs of its named sizes (models/architectures.py); batch proportional to
  sqrt(params): 32 sequences at xxs (6.18M non-embedding) -> 46 / 90 / 170 / 256 for xs /
  small / medium / large.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

from ebt_scaling.harness.contract.errors import require
from ebt_scaling.harness.contract.typed_config import typed_value
from ebt_scaling.harness.contract.model_config import ModelConfig
from ebt_scaling.models.flops import param_counts
from ebt_scaling.models.architectures import PAPER_SIZES

from .sweep_spec import SWEEP_RULES, HparamRule

OLMO_REFERENCE_PARAMS = 108e6
OLMO_LR = 0.0047
OLMO_BATCH_TOKENS = 2048 * 160
OLMO_BETA2_THRESHOLD_TOKENS = 524_288
CHINCHILLA_TOKENS_PER_PARAM = 20.0


def _whole_counts(data: dict, path: str, names: tuple[str, ...]) -> dict:
    """A rule's count keys (YAML writes 1e9 as a float) as ints, as read from a sweep file:
    a fraction is "must be a whole number" rather than an int field's "expected an integer"."""
    data = dict(data)
    for name in names:
        if data.get(name) is not None:
            key = f"{path}.{name}" if path else name
            value = typed_value(data[name], float, key)
            require(value.is_integer(), key, f"must be a whole number, got {value!r}")
            data[name] = int(value)
    return data


# ------------------------------------------------------------------------- the planner's calls
def _rule(slot: str, options: Any) -> HparamRule:
    return SWEEP_RULES.get(f"{slot}.{options.rule}", f"{slot}.rule")


def training_tokens(options: Any, n_params: float, flops_per_token: float, tokens_per_step: int) -> float:
    """Training tokens of a size (before rounding to whole steps)."""
    return _rule("tokens", options).value(options, n_params, flops_per_token, tokens_per_step)


def compute_optimal_size(options: Any, budget: float, reference_at: Callable[[float], tuple[float, float]]) -> float:
    """The parameter target a token rule predicts as compute-optimal for a FLOP budget;
    ``reference_at(target)`` gives the reference architecture's (parameters, FLOPs per token)
    at the shape the shape rule picks for a target."""
    return _rule("tokens", options).optimum(options, budget, reference_at)


def batch_size(options: Any, n_params: float, context: int, default: int, size_name: str | None = None) -> int:
    """Global batch in sequences."""
    return _rule("batch", options).value(options, n_params, context, default, size_name)


def learning_rate(options: Any, n_params: float, size_name: str | None, non_embedding_params: float,
                  default: float) -> float:
    return _rule("lr", options).value(options, n_params, size_name, non_embedding_params, default)


def warmup_fraction(options: Any, n_params: float, tokens: int, default: float) -> float:
    """TrainSpec.warmup_fraction of a run of `tokens` tokens."""
    return _rule("warmup", options).value(options, n_params, tokens, default)


def beta2(options: Any, batch_tokens: int, default: float) -> float:
    return _rule("beta2", options).value(options, batch_tokens, default)


def whole_steps(tokens: float, tokens_per_step: int) -> int:
    """Optimizer steps closest to `tokens` (at least one)."""
    return max(1, round(tokens / tokens_per_step))


# ------------------------------------------------------------------------- tokens
@dataclass(frozen=True)
class TokenRule:
    """Options of the built-in token rules: ``tokens_per_param`` (D = r N; Chinchilla r =
    20), ``compute_optimal`` (N_opt = coefficient * C^exponent, so C = (N / coefficient)^(1 /
    exponent) and D = C / FLOPs-per-token; the defaults equal 20 tokens/param under C = 6ND),
    ``fixed`` (``tokens`` for every size) or ``steps`` (``steps`` optimizer steps: D = steps x
    batch x context, the paper's protocol)."""

    rule: str = "tokens_per_param"
    tokens_per_param: float = 20.0
    coefficient: float = 1 / math.sqrt(120.0)
    exponent: float = 0.5
    tokens: int | None = None
    steps: int | None = None

    @classmethod
    def prepare_input(cls, data: dict, path: str) -> dict:
        return _whole_counts(data, path, ("tokens", "steps"))

    def __post_init__(self) -> None:
        require(self.tokens_per_param > 0, "tokens_per_param", f"must be > 0, got {self.tokens_per_param}")
        require(self.coefficient > 0, "coefficient", f"must be > 0, got {self.coefficient}")
        require(0 < self.exponent < 1, "exponent", f"must be in (0, 1), got {self.exponent}")
        require(self.tokens is None or self.tokens > 0, "tokens", f"must be > 0, got {self.tokens}")
        require(self.steps is None or self.steps >= 1, "steps", f"must be >= 1, got {self.steps}")


def chinchilla_tokens(n_params: float, tokens_per_param: float = CHINCHILLA_TOKENS_PER_PARAM) -> float:
    return tokens_per_param * n_params


def compute_optimal_params(budget: float, coefficient: float, exponent: float) -> float:
    """N_opt = coefficient * C^exponent."""
    return coefficient * budget ** exponent


def compute_for_params(n_params: float, coefficient: float, exponent: float) -> float:
    """The budget C whose optimum is N: C = (N / coefficient)^(1 / exponent)."""
    return (n_params / coefficient) ** (1.0 / exponent)


def _tokens_per_param_optimum(options: TokenRule, budget: float, reference_at) -> float:
    """Solve C = fpt(N) * r * N, i.e. N = sqrt(C / (r * fpt(N) / N)). FLOPs per token per
    parameter (q) vary slowly with N, so iterate on q of the nearest real shape: a continuous
    optimum, unaffected by the jumps between discrete shapes. Every budget starts from the same
    guess (no state carried between budgets), so the sizes and run ids at a budget do not depend
    on which other budgets the sweep holds."""
    r = options.tokens_per_param
    n = math.sqrt(budget / (6.0 * r))
    for _ in range(8):
        achieved, flops_per_token = reference_at(n)
        q = flops_per_token / achieved
        new = math.sqrt(budget / (r * q))
        done = abs(math.log(new / n)) < 1e-3
        n = new
        if done:
            break
    return n


TOKEN_RULES = (
    HparamRule("tokens", "tokens_per_param", TokenRule,
               lambda o, n, fpt, step_tokens: chinchilla_tokens(n, o.tokens_per_param),
               optimum=_tokens_per_param_optimum),
    HparamRule("tokens", "compute_optimal", TokenRule,
               lambda o, n, fpt, step_tokens: compute_for_params(n, o.coefficient, o.exponent) / fpt,
               optimum=lambda o, budget, reference_at: compute_optimal_params(budget, o.coefficient, o.exponent)),
    HparamRule("tokens", "fixed", TokenRule, lambda o, n, fpt, step_tokens: o.tokens,
               required={"tokens": "the training tokens"}),
    HparamRule("tokens", "steps", TokenRule, lambda o, n, fpt, step_tokens: o.steps * step_tokens,
               required={"steps": "the optimizer steps"}),
)


# ------------------------------------------------------------------------- batch
@dataclass(frozen=True)
class BatchRule:
    """Options of the built-in batch rules, a global batch in sequences: ``constant``
    (``size``, default base.train.batch_size), ``olmo`` (2048 * 160 * (N / 108M)^(2/3) tokens /
    context) or ``sqrt_params`` (the paper: reference_batch * sqrt(N / reference_params)),
    rounded by ``round`` and clamped to [min, max]; ``table`` gives exact batches of named
    sizes (the paper's 32 / 46 / 90 / 170 / 256 for xxs .. large), which override the rule."""

    rule: str = "constant"
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
        require(self.size is None or self.size >= 1, "size", f"must be >= 1, got {self.size}")
        require(self.reference_params > 0, "reference_params", f"must be > 0, got {self.reference_params}")
        require(self.reference_batch >= 1, "reference_batch", f"must be >= 1, got {self.reference_batch}")
        require(self.min >= 1, "min", f"must be >= 1, got {self.min}")
        require(self.max is None or self.max >= self.min, "max", f"must be >= min ({self.min}), got {self.max}")


def olmo_lr(n_params: float) -> float:
    return OLMO_LR * (n_params / OLMO_REFERENCE_PARAMS) ** (-1.0 / 3.0)


def olmo_batch_tokens(n_params: float) -> float:
    return OLMO_BATCH_TOKENS * (n_params / OLMO_REFERENCE_PARAMS) ** (2.0 / 3.0)


def olmo_beta2(batch_tokens: float) -> float:
    return 0.99 if batch_tokens < OLMO_BETA2_THRESHOLD_TOKENS else 0.95


def round_batch(sequences: float, mode: str) -> int:
    """Round a batch in sequences: nearest integer, nearest power of 2 (in log), or nearest
    multiple of 8; never below the smallest value of that kind."""
    if mode == "pow2":
        return 2 ** max(0, round(math.log2(max(sequences, 1.0))))
    if mode == "multiple_of_8":
        return 8 * max(1, round(sequences / 8))
    if mode == "nearest":
        return max(1, round(sequences))
    raise ValueError(f"unknown batch rounding {mode!r}")


def sqrt_params_batch(n_params: float, reference_params: float, reference_batch: int) -> float:
    return reference_batch * math.sqrt(n_params / reference_params)


def _batch_rule(sequences: Callable[[BatchRule, float, int, int], float], rounded: bool):
    """A batch rule's function: the table's batch for a named size, else `sequences` (rounded
    by ``round`` when `rounded`), clamped to [min, max]."""
    def batch(options: BatchRule, n_params: float, context: int, default: int, size_name: str | None) -> int:
        if size_name is not None and size_name in options.table:
            return options.table[size_name]
        raw = sequences(options, n_params, context, default)
        seqs = max(options.min, round_batch(raw, options.round) if rounded else int(raw))
        return min(options.max, seqs) if options.max is not None else seqs
    return batch


BATCH_RULES = (
    HparamRule("batch", "constant", BatchRule,
               _batch_rule(lambda o, n, context, default: o.size if o.size is not None else default, rounded=False),
               base_option="size"),
    HparamRule("batch", "olmo", BatchRule,
               _batch_rule(lambda o, n, context, default: olmo_batch_tokens(n) / context, rounded=True)),
    HparamRule("batch", "sqrt_params", BatchRule,
               _batch_rule(lambda o, n, context, default: sqrt_params_batch(n, o.reference_params, o.reference_batch),
                           rounded=True)),
)


# ------------------------------------------------------------------------- learning rate
@dataclass(frozen=True)
class LrRule:
    """Options of the built-in LR rules: ``constant`` (``value``, default base.train.lr),
    ``paper`` (models/architectures.py's LR of a ladder size; other sizes interpolated log-log in
    non-embedding parameters), ``olmo`` (0.0047 * (N / 108M)^(-1/3))."""

    rule: str = "constant"
    value: float | None = None

    def __post_init__(self) -> None:
        require(self.value is None or self.value > 0, "value", f"must be > 0, got {self.value}")


@lru_cache(maxsize=1)
def _paper_lr_table() -> tuple[tuple[float, float, float], ...]:
    """(log non-embedding params, log LR, LR) of the paper's ladder, ascending in params."""
    rows = []
    for size in PAPER_SIZES.values():
        cfg = ModelConfig(n_layers=size.n_layers, d_model=size.d_model, n_heads=size.n_heads)
        rows.append((math.log(param_counts(cfg)["non_embedding"]), math.log(size.peak_lr), size.peak_lr))
    return tuple(sorted(rows))


def paper_lr(size_name: str | None, non_embedding_params: float) -> float:
    """The paper's LR of a named size; other sizes interpolated log-log in non-embedding
    parameters between neighbouring ladder sizes (clamped to the ends of the ladder)."""
    if size_name in PAPER_SIZES:
        return PAPER_SIZES[size_name].peak_lr
    table = _paper_lr_table()
    x = math.log(non_embedding_params)
    if x <= table[0][0]:
        return table[0][2]
    if x >= table[-1][0]:
        return table[-1][2]
    for (x0, y0, _), (x1, y1, _) in zip(table, table[1:]):
        if x0 <= x <= x1:
            return math.exp(y0 + (y1 - y0) * (x - x0) / (x1 - x0))
    raise AssertionError("unreachable")


LR_RULES = (
    HparamRule("lr", "constant", LrRule,
               lambda o, n, size_name, non_embedding, default: o.value if o.value is not None else default,
               base_option="value"),
    HparamRule("lr", "paper", LrRule,
               lambda o, n, size_name, non_embedding, default: paper_lr(size_name, non_embedding)),
    HparamRule("lr", "olmo", LrRule, lambda o, n, size_name, non_embedding, default: olmo_lr(n)),
)


# ------------------------------------------------------------------------- warmup, beta2
@dataclass(frozen=True)
class WarmupRule:
    """Options of the built-in warmup rules: ``fraction`` (of all steps; default
    base.train.warmup_fraction), ``olmo`` (warmup = N tokens) or ``tokens`` (a fixed count);
    the last two are capped at ``max_fraction``."""

    rule: str = "fraction"
    fraction: float | None = None
    tokens: int | None = None
    max_fraction: float = 0.5

    @classmethod
    def prepare_input(cls, data: dict, path: str) -> dict:
        return _whole_counts(data, path, ("tokens",))

    def __post_init__(self) -> None:
        require(self.fraction is None or 0 <= self.fraction < 1, "fraction", f"must be in [0, 1), got {self.fraction}")
        require(self.tokens is None or self.tokens >= 0, "tokens", f"must be >= 0, got {self.tokens}")
        require(0 < self.max_fraction < 1, "max_fraction", f"must be in (0, 1), got {self.max_fraction}")


@dataclass(frozen=True)
class Beta2Rule:
    """Options of the built-in beta2 rules: ``constant`` (``value``, default
    base.train.betas[1]) or ``olmo`` (0.99 below 524,288-token batches, else 0.95)."""

    rule: str = "constant"
    value: float | None = None

    def __post_init__(self) -> None:
        require(self.value is None or 0 <= self.value < 1, "value", f"must be in [0, 1), got {self.value}")


WARMUP_RULES = (
    HparamRule("warmup", "fraction", WarmupRule,
               lambda o, n, tokens, default: o.fraction if o.fraction is not None else default,
               base_option="fraction"),
    HparamRule("warmup", "olmo", WarmupRule, lambda o, n, tokens, default: min(o.max_fraction, n / tokens)),
    HparamRule("warmup", "tokens", WarmupRule, lambda o, n, tokens, default: min(o.max_fraction, o.tokens / tokens),
               required={"tokens": "the warmup tokens"}),
)

BETA2_RULES = (
    HparamRule("beta2", "constant", Beta2Rule,
               lambda o, batch_tokens, default: o.value if o.value is not None else default, base_option="value"),
    HparamRule("beta2", "olmo", Beta2Rule, lambda o, batch_tokens, default: olmo_beta2(batch_tokens)),
)

# The entry point ``ebt_scaling.sweep_rules`` (pyproject.toml) registers these; each slot's
# first rule is its default.
BUILTIN = (*TOKEN_RULES, *BATCH_RULES, *LR_RULES, *WARMUP_RULES, *BETA2_RULES)
