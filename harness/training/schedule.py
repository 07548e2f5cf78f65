"""Learning-rate schedules as a pure function of the step (nothing to checkpoint)."""
from __future__ import annotations

import math

from ebt_scaling.harness.contract.spec import TrainSpec


def lr_at(step: int, total_steps: int, train: TrainSpec) -> float:
    """LR for optimizer step `step` (0-based): linear warmup from 0, then
    cosine to lr*min_lr_ratio (paper: peak/10), warmup-stable-decay, or constant."""
    peak, floor = train.lr, train.lr * train.min_lr_ratio
    warmup = int(train.warmup_fraction * total_steps)
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
    forms, because bitwise equality is what resuming from the parent relies on."""
    return next((s for s in range(until) if lr_at(s, steps, train) != lr_at(s, other_steps, other)), None)
