"""Token, learning-rate, batch, warmup and beta2 rules (docs/scaling.md, docs/ebt.md).

N is the sweep's ``param_count`` (total by default) of the reference architecture at the
run's shape. Every function is pure and cheap; sweeps/generate.py caches per shape.

* Chinchilla: D = 20 N at the compute optimum (``tokens_per_param``).
* Compute-optimal law: N_opt = coefficient * C^exponent (``compute_optimal``); the default
  coefficient 1/sqrt(120) and exponent 1/2 are the 20-tokens-per-parameter optimum under
  C = 6 N D.
* OLMo-core ladder: LR = 0.0047 (N / 108M)^(-1/3); batch = 2048 * 160 * (N / 108M)^(2/3)
  tokens, i.e. that / context sequences, rounded; beta2 = 0.99 below 524,288-token
  batches, else 0.95; warmup = N tokens.
* The EBT paper: LRs of its named sizes (models/sizes.py); batch proportional to
  sqrt(params): 32 sequences at xxs (6.18M non-embedding) -> 46 / 90 / 170 / 256 for xs /
  small / medium / large.
"""
from __future__ import annotations

import math
from functools import lru_cache

from ebt_scaling.harness.contract.model_config import ModelConfig
from ebt_scaling.models.flops import param_counts
from ebt_scaling.models.sizes import PAPER_SIZES

OLMO_REFERENCE_PARAMS = 108e6
OLMO_LR = 0.0047
OLMO_BATCH_TOKENS = 2048 * 160
OLMO_BETA2_THRESHOLD_TOKENS = 524_288
CHINCHILLA_TOKENS_PER_PARAM = 20.0


# ------------------------------------------------------------------------- tokens
def chinchilla_tokens(n_params: float, tokens_per_param: float = CHINCHILLA_TOKENS_PER_PARAM) -> float:
    return tokens_per_param * n_params


def compute_optimal_params(budget: float, coefficient: float, exponent: float) -> float:
    """N_opt = coefficient * C^exponent."""
    return coefficient * budget ** exponent


def compute_for_params(n_params: float, coefficient: float, exponent: float) -> float:
    """The budget C whose optimum is N: C = (N / coefficient)^(1 / exponent)."""
    return (n_params / coefficient) ** (1.0 / exponent)


def whole_steps(tokens: float, tokens_per_step: int) -> int:
    """Optimizer steps closest to `tokens` (at least one)."""
    return max(1, round(tokens / tokens_per_step))


# ------------------------------------------------------------------------- OLMo-core
def olmo_lr(n_params: float) -> float:
    return OLMO_LR * (n_params / OLMO_REFERENCE_PARAMS) ** (-1.0 / 3.0)


def olmo_batch_tokens(n_params: float) -> float:
    return OLMO_BATCH_TOKENS * (n_params / OLMO_REFERENCE_PARAMS) ** (2.0 / 3.0)


def olmo_beta2(batch_tokens: float) -> float:
    return 0.99 if batch_tokens < OLMO_BETA2_THRESHOLD_TOKENS else 0.95


# ------------------------------------------------------------------------- batch
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


def batch_size(rule, n_params: float, context: int, default: int, size_name: str | None = None) -> int:
    """Global batch in sequences from a BatchRule (its table first, for named sizes)."""
    if size_name is not None and size_name in rule.table:
        return rule.table[size_name]
    if rule.rule == "constant":
        raw: float = rule.size if rule.size is not None else default
    elif rule.rule == "olmo":
        raw = olmo_batch_tokens(n_params) / context
    else:
        raw = sqrt_params_batch(n_params, rule.reference_params, rule.reference_batch)
    seqs = round_batch(raw, rule.round) if rule.rule != "constant" else int(raw)
    seqs = max(rule.min, seqs)
    return min(rule.max, seqs) if rule.max is not None else seqs


# ------------------------------------------------------------------------- learning rate
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


def learning_rate(rule, n_params: float, size_name: str | None, non_embedding_params: float, default: float) -> float:
    if rule.rule == "constant":
        return rule.value if rule.value is not None else default
    if rule.rule == "olmo":
        return olmo_lr(n_params)
    return paper_lr(size_name, non_embedding_params)


# ------------------------------------------------------------------------- warmup, beta2
def warmup_fraction(rule, n_params: float, tokens: int, default: float) -> float:
    """TrainSpec.warmup_fraction from a WarmupRule (olmo: N tokens; tokens: a fixed count),
    capped at max_fraction."""
    if rule.rule == "fraction":
        return rule.fraction if rule.fraction is not None else default
    warm_tokens = n_params if rule.rule == "olmo" else rule.tokens
    return min(rule.max_fraction, warm_tokens / tokens)


def beta2(rule, batch_tokens: int, default: float) -> float:
    if rule.rule == "olmo":
        return olmo_beta2(batch_tokens)
    return rule.value if rule.value is not None else default
