"""Typed model configuration shared by Transformer++ and EBT, validated on construction.

Every invalid value raises :class:`ConfigError` naming the field and the fix, so a bad
YAML file or CLI flag fails in one readable line instead of deep inside a matmul.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ebt_scaling.harness.contract.errors import ConfigError

ARCHITECTURES = ("transformer", "ebt")
EBT_VARIANTS = ("time_embed", "default")


def _require(ok: bool, field_name: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{field_name}: {message}")


@dataclass(frozen=True)
class EBTConfig:
    """Energy-Based Transformer options (System 1 by default; System 2 flags optional).

    Defaults follow the paper's S1 configuration (notes/ebt.md): time-step token, K=2
    refinement steps, learnable alpha initialised at 500 and trained with an LR multiplier.
    """

    variant: Literal["time_embed", "default"] = "time_embed"
    steps: int = 2
    alpha_init: float = 500.0
    learn_alpha: bool = True
    alpha_lr_multiplier: float = 1500.0
    alpha_min: float = 1e-4
    # --- System 2 options (all off by default) ---
    langevin_sigma: float = 0.0  # std of Gaussian noise added to the candidate before each step
    alpha_random_scale: float = 1.0  # alpha ~ U[alpha/s, alpha*s] per position; 1 = off
    random_extra_steps: tuple[int, int] = (0, 0)  # extra steps on the final landscape, U{lo..hi}
    replay_buffer_size: int = 0  # samples kept; 0 = no replay buffer
    replay_fraction: float = 0.5  # share of a batch started from the buffer once it is full
    truncate_unroll: bool = False  # loss and create_graph on the final step only

    def __post_init__(self) -> None:
        object.__setattr__(self, "random_extra_steps", tuple(self.random_extra_steps))
        _require(self.variant in EBT_VARIANTS, "variant", f"must be one of {EBT_VARIANTS}, got {self.variant!r}")
        _require(isinstance(self.steps, int) and self.steps >= 1, "steps", f"must be an integer >= 1, got {self.steps!r}")
        _require(self.alpha_init > 0, "alpha_init", f"must be > 0, got {self.alpha_init}")
        _require(self.alpha_lr_multiplier > 0, "alpha_lr_multiplier", f"must be > 0, got {self.alpha_lr_multiplier}")
        _require(self.alpha_min > 0, "alpha_min", f"must be > 0, got {self.alpha_min}")
        _require(self.langevin_sigma >= 0, "langevin_sigma", f"must be >= 0 (0 turns noise off), got {self.langevin_sigma}")
        _require(self.alpha_random_scale >= 1, "alpha_random_scale", f"must be >= 1 (1 turns it off), got {self.alpha_random_scale}")
        lo_hi = self.random_extra_steps
        _require(len(lo_hi) == 2 and all(isinstance(v, int) for v in lo_hi) and 0 <= lo_hi[0] <= lo_hi[1],
                 "random_extra_steps", f"must be [lo, hi] integers with 0 <= lo <= hi, got {list(lo_hi)}")
        _require(isinstance(self.replay_buffer_size, int) and self.replay_buffer_size >= 0,
                 "replay_buffer_size", f"must be an integer >= 0 (0 turns it off), got {self.replay_buffer_size!r}")
        _require(0 < self.replay_fraction < 1, "replay_fraction", f"must be in (0, 1), got {self.replay_fraction}")

    @property
    def is_system2(self) -> bool:
        return (self.langevin_sigma > 0 or self.alpha_random_scale > 1 or self.random_extra_steps[1] > 0
                or self.replay_buffer_size > 0 or self.truncate_unroll)


@dataclass(frozen=True)
class ModelConfig:
    """Backbone shape shared by both architectures; `ebt` holds the EBT-only options."""

    arch: Literal["transformer", "ebt"] = "transformer"
    n_layers: int = 2
    d_model: int = 128
    n_heads: int = 2
    vocab_size: int = 2048
    context: int = 256
    ffn_hidden: int | None = None  # None = d_model, as in the paper's reference code
    rope_theta: float = 10_000.0
    init_std: float = 0.02
    ebt: EBTConfig = field(default_factory=EBTConfig)

    def __post_init__(self) -> None:
        _require(self.arch in ARCHITECTURES, "arch", f"must be one of {ARCHITECTURES}, got {self.arch!r}")
        for name in ("n_layers", "d_model", "n_heads", "vocab_size", "context"):
            value = getattr(self, name)
            _require(isinstance(value, int) and value >= 1, name, f"must be a positive integer, got {value!r}")
        _require(self.d_model % self.n_heads == 0, "d_model",
                 f"must be a multiple of n_heads ({self.n_heads}), got {self.d_model}; pick d_model = n_heads * head_dim")
        _require(self.head_dim % 2 == 0, "d_model",
                 f"d_model / n_heads must be even for RoPE, got head_dim {self.head_dim}")
        _require(self.vocab_size >= 2, "vocab_size", f"must be >= 2, got {self.vocab_size}")
        _require(self.ffn_hidden is None or (isinstance(self.ffn_hidden, int) and self.ffn_hidden >= 1),
                 "ffn_hidden", f"must be a positive integer or null (= d_model), got {self.ffn_hidden!r}")
        _require(self.rope_theta > 0, "rope_theta", f"must be > 0, got {self.rope_theta}")
        _require(self.init_std > 0, "init_std", f"must be > 0, got {self.init_std}")
        if isinstance(self.ebt, dict):  # convenience for callers building from plain dicts
            try:
                object.__setattr__(self, "ebt", EBTConfig(**self.ebt))
            except ConfigError as exc:
                raise ConfigError(f"ebt.{exc}") from None

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def hidden(self) -> int:
        return self.ffn_hidden or self.d_model
