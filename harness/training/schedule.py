"""Learning-rate schedules as a pure function of the step (nothing to checkpoint)."""
from __future__ import annotations

import math

from ebt_scaling.harness.contract.spec import TrainSpec


def warmup_length(total_steps: int, train: TrainSpec) -> int:
    """Warmup steps: train.warmup_steps when given (an absolute length, as the reference's
    10,000), else warmup_fraction of the run's steps. Every warmup computation reads this."""
    return train.warmup_steps if train.warmup_steps is not None else int(train.warmup_fraction * total_steps)


def lr_at(step: int, total_steps: int, train: TrainSpec, lr_scale: float = 1.0,
          floor_scale: float | None = None) -> float:
    """LR for optimizer step `step` (0-based) of a parameter group whose peak is lr x lr_scale
    and whose floor is lr x min_lr_ratio x floor_scale: linear warmup from 0 to the peak, then
    cosine to the floor (paper: peak/10), warmup-stable-decay, or constant. floor_scale None
    (or equal to lr_scale) is the shared schedule scaled by lr_scale; it is computed as exactly
    that product, so every group whose floor scales with its peak keeps the LRs it had before
    groups had their own floors (EBTOptions.alpha_lr_floor "shared" is the one that does not)."""
    if floor_scale is None or floor_scale == lr_scale:
        return _group_lr(step, total_steps, train, train.lr, train.lr * train.min_lr_ratio) * lr_scale
    return _group_lr(step, total_steps, train, train.lr * lr_scale, train.lr * train.min_lr_ratio * floor_scale)


def _group_lr(step: int, total_steps: int, train: TrainSpec, peak: float, floor: float) -> float:
    warmup = warmup_length(total_steps, train)
    if step < warmup:
        return peak * (step + 1) / warmup
    if train.schedule == "constant":
        return peak
    if train.schedule == "cosine":
        progress = (step - warmup) / max(1, total_steps - warmup - 1)
        return floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * min(1.0, progress)))
    # wsd: hold the peak, then decay linearly to the floor over the last decay_fraction.
    decay_start = wsd_decay_start(total_steps, train)
    if step < decay_start:
        return peak
    progress = (step - decay_start + 1) / (total_steps - decay_start)
    return peak + (floor - peak) * min(1.0, progress)


def wsd_decay_start(total_steps: int, train: TrainSpec) -> int:
    """The first step of a WSD run's decay (it decays over the last decay_fraction, >= 1 step)."""
    return total_steps - max(1, int(train.decay_fraction * total_steps))


def first_lr_difference(until: int, steps: int, train: TrainSpec, other_steps: int, other: TrainSpec) -> int | None:
    """The first step before `until` where the two runs' learning rates differ, or None when
    they are equal at every one (a cooldown branch and its parent must be: the parent's state
    then is the branch's). Checked step by step with lr_at rather than argued from the closed
    forms, because bitwise equality is what resuming from the parent relies on. Every group's
    LR is peak x a(step) + floor x b(step) (lr_at); the shared schedule and a zero-floor one
    pin a and b down, so where both agree every group's LR agrees (alpha's own floor too)."""
    def probes(step: int, total: int, spec: TrainSpec) -> tuple[float, float]:
        return lr_at(step, total, spec), lr_at(step, total, spec, floor_scale=0.0)

    return next((s for s in range(until) if probes(s, steps, train) != probes(s, other_steps, other)), None)
