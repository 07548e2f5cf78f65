"""The EBT's options (``model.options`` of an ``arch: ebt`` run spec), validated on
construction: every invalid value raises ConfigError naming the key and the fix, so a bad
YAML file or CLI flag fails in one readable line instead of deep inside a matmul.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Literal

from ebt_scaling.harness.contract.errors import require
from ebt_scaling.harness.contract.typed_config import since

EBT_VARIANTS = ("time_embed", "default")
# When a random step size is drawn (alpha_random_scale > 1): "step" draws a new factor before
# every refinement step (this project's default), "forward" draws one per training forward
# and keeps it for all of its steps (the reference code). Same distribution either way.
ALPHA_DRAWS = ("step", "forward")
# The learning-rate floor of alpha's optimizer group: "scaled" anneals it to the shared floor
# times alpha_lr_multiplier (lr x multiplier x min_lr_ratio: 150 x peak at the paper's
# settings), "shared" to the same absolute floor as every other group (lr x min_lr_ratio: the
# reference code's scheduler, which sets one eta_min for all groups).
ALPHA_LR_FLOORS = ("scaled", "shared")


@dataclass(frozen=True)
class EBTOptions:
    """Energy-Based Transformer options (System 1 by default; System 2 flags optional).

    Defaults follow the paper's S1 configuration (docs/ebt.md): time-step token, K=2
    refinement steps, learnable alpha initialised at 500 and trained with an LR multiplier.
    """

    variant: Literal["time_embed", "default"] = "time_embed"
    refine_steps: int = 2  # K: gradient steps on the candidate per training step
    alpha_init: float = 500.0
    learn_alpha: bool = True
    alpha_lr_multiplier: float = 1500.0
    alpha_min: float = 1e-4
    # --- System 2 options (all off by default) ---
    langevin_sigma: float = 0.0  # std of Gaussian noise added to the candidate before each step
    alpha_random_scale: float = 1.0  # alpha ~ U[alpha/s, alpha*s] per position; 1 = off
    random_extra_steps: tuple[int, int] = (0, 0)  # extra steps on the final landscape, U{lo..hi}
    # Replay buffer: every training forward stores its sequences with their final candidates;
    # the next ones append int(rows x replay_fraction) stored sequences, which continue their
    # own chains from those candidates (the reference code's algorithm, docs/ebt.md).
    replay_buffer_size: int = 0  # sequences kept; 0 = no replay buffer
    replay_fraction: float = 0.5  # replayed rows appended per forward, as a share of its rows
    truncate_unroll: bool = False  # loss and create_graph on the final step only
    alpha_random_draw: Literal["step", "forward"] = since("step")  # see ALPHA_DRAWS
    alpha_lr_floor: Literal["scaled", "shared"] = since("scaled")  # see ALPHA_LR_FLOORS

    @classmethod
    def prepare_input(cls, data: dict, path: str) -> dict:
        """``steps`` was renamed ``refine_steps`` (optimizer steps are "steps" elsewhere)."""
        if "steps" not in data:
            return data
        data = dict(data)
        data.setdefault("refine_steps", data.pop("steps"))
        data.pop("steps", None)
        warnings.warn(f"{path + '.' if path else ''}steps: deprecated key; use refine_steps", FutureWarning, stacklevel=2)
        return data

    def __post_init__(self) -> None:
        require(self.variant in EBT_VARIANTS, "variant", f"must be one of {EBT_VARIANTS}, got {self.variant!r}")
        require(isinstance(self.refine_steps, int) and self.refine_steps >= 1, "refine_steps",
                f"must be an integer >= 1, got {self.refine_steps!r}")
        require(self.alpha_init > 0, "alpha_init", f"must be > 0, got {self.alpha_init}")
        require(self.alpha_lr_multiplier > 0, "alpha_lr_multiplier", f"must be > 0, got {self.alpha_lr_multiplier}")
        require(self.alpha_min > 0, "alpha_min", f"must be > 0, got {self.alpha_min}")
        require(self.langevin_sigma >= 0, "langevin_sigma", f"must be >= 0 (0 turns noise off), got {self.langevin_sigma}")
        require(self.alpha_random_scale >= 1, "alpha_random_scale", f"must be >= 1 (1 turns it off), got {self.alpha_random_scale}")
        lo_hi = self.random_extra_steps
        require(isinstance(lo_hi, tuple) and len(lo_hi) == 2 and all(isinstance(v, int) for v in lo_hi)
                and 0 <= lo_hi[0] <= lo_hi[1],
                 "random_extra_steps", f"must be [lo, hi] integers with 0 <= lo <= hi, got {list(lo_hi)}")
        require(isinstance(self.replay_buffer_size, int) and self.replay_buffer_size >= 0,
                 "replay_buffer_size", f"must be an integer >= 0 (0 turns it off), got {self.replay_buffer_size!r}")
        require(0 < self.replay_fraction <= 1, "replay_fraction", f"must be in (0, 1], got {self.replay_fraction}")
        require(self.alpha_random_draw in ALPHA_DRAWS, "alpha_random_draw",
                f"must be one of {ALPHA_DRAWS}, got {self.alpha_random_draw!r}")
        require(self.alpha_lr_floor in ALPHA_LR_FLOORS, "alpha_lr_floor",
                f"must be one of {ALPHA_LR_FLOORS}, got {self.alpha_lr_floor!r}")

    @property
    def validation_steps(self) -> int:
        """Refinement steps of a deterministic (validation) forward: the base steps plus the
        most extra steps training can draw, as the reference code validates."""
        return self.refine_steps + self.random_extra_steps[1]

    @property
    def is_system2(self) -> bool:
        return (self.langevin_sigma > 0 or self.alpha_random_scale > 1 or self.random_extra_steps[1] > 0
                or self.replay_buffer_size > 0 or self.truncate_unroll)
