"""What an analysis is asked for: the FLOP convention, the parameter count N, the
bootstrap, the crossover range and the reference label.

Built from a plain dict by the contract's ``from_dict`` (typed; unknown keys and wrong
types are one-line errors naming the key); impossible values raise ConfigError("field:
message") here. ``ebt-scaling analyze`` shows the field as its flag.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ebt_scaling.harness.contract.errors import require
from ebt_scaling.models.flops import CONVENTIONS

PARAM_COUNTS = ("total", "non_embedding")


def _help(text: str) -> dict:
    return {"help": text}


@dataclass(frozen=True)
class AnalysisConfig:
    convention: str = field(default="full", metadata=_help(
        "FLOP convention of every compute axis (default: full = every matmul executed; paper = 6N / 20KN with N "
        "non-embedding)"))
    params: Literal["total", "non_embedding"] | None = field(default=None, metadata=_help(
        "parameter count used as N (default: sweep.yaml's param_count, else total)"))
    bootstrap: int = field(default=1000, metadata=_help(
        "paired-bootstrap resamples of matched units (default: 1000; 0: no intervals)"))
    seed: int = field(default=0, metadata=_help("bootstrap seed (default: 0)"))
    ci: float = field(default=0.95, metadata=_help("interval level (default: 0.95)"))
    budget: float = field(default=1e27, metadata=_help(
        "largest compute searched for a crossover and shown in the multiplier plot (default: 1e27)"))
    reference: str | None = field(default=None, metadata=_help(
        "reference architecture label (default: the first label of the baseline architecture, Transformer++)"))
    workers: int | None = field(default=None, metadata=_help(
        "processes for the slow refits (Approach 3, saturating-law bootstrap); default: one per CPU, at most 4; "
        "1: serial. The results do not depend on it"))

    def __post_init__(self) -> None:
        require(self.convention in CONVENTIONS, "convention",
                f"must be one of {', '.join(CONVENTIONS)} (got {self.convention!r})")
        # from_dict checks the Literal; a direct construction does not
        require(self.params is None or self.params in PARAM_COUNTS, "params",
                f"must be one of {', '.join(PARAM_COUNTS)} (got {self.params!r})")
        require(self.bootstrap >= 0, "bootstrap", f"must be >= 0 (got {self.bootstrap})")
        require(0 < self.ci < 1, "ci", f"must be in (0, 1) (got {self.ci})")
        require(self.budget > 0, "budget", f"must be > 0 (got {self.budget})")
        require(self.workers is None or self.workers >= 1, "workers", f"must be >= 1 (got {self.workers})")
