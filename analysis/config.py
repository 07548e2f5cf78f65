"""What an analysis is asked for: the FLOP convention, the parameter count N, the
bootstrap, the crossover range and the reference label.

Built from a plain dict by the contract's ``from_dict`` (typed; unknown keys and wrong
types are one-line errors naming the key); impossible values raise ConfigError("field:
message") here. ``ebt-scaling analyze`` shows the field as its flag.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ebt_scaling.harness.contract.errors import require
from ebt_scaling.models.flops import CONVENTIONS

PARAM_COUNTS = ("total", "non_embedding")


@dataclass(frozen=True)
class AnalysisConfig:
    convention: str = "full"         # FLOP convention of every compute axis (models/flops.py CONVENTIONS)
    params: Literal["total", "non_embedding"] | None = None  # N (None: sweep.yaml's param_count, else total)
    n_boot: int = 1000               # paired-bootstrap resamples (0: no intervals)
    seed: int = 0
    ci: float = 0.95
    budget: float = 1e27             # largest compute searched for a crossover
    reference: str | None = None     # reference label (None: the Transformer++ label)
    workers: int | None = None       # processes for the slow refits (None: one per CPU, at most 4; 1: serial)

    def __post_init__(self) -> None:
        require(self.convention in CONVENTIONS, "convention",
                f"must be one of {', '.join(CONVENTIONS)} (got {self.convention!r})")
        # from_dict checks the Literal; a direct construction does not
        require(self.params is None or self.params in PARAM_COUNTS, "params",
                f"must be one of {', '.join(PARAM_COUNTS)} (got {self.params!r})")
        require(self.n_boot >= 0, "n_boot", f"must be >= 0 (got {self.n_boot})")
        require(0 < self.ci < 1, "ci", f"must be in (0, 1) (got {self.ci})")
        require(self.budget > 0, "budget", f"must be > 0 (got {self.budget})")
        require(self.workers is None or self.workers >= 1, "workers", f"must be >= 1 (got {self.workers})")
