"""Cooldown branches of WSD runs (Hägele et al. 2024): one warmup-stable-decay run yields
several cooled-down token counts.

For every planned run (its *parent*) and every fraction f of the sweep's ``cooldown`` block,
a *branch* run: the parent's spec with train.tokens = round(f x parent steps) whole steps and
a warmup_fraction that gives exactly the parent's whole number of warmup steps (an absolute
train.warmup_steps stays as it is). Its decay starts at step ``branch_step`` = branch steps -
its decay steps, which must lie inside the parent's stable phase (warmup end <= branch_step <
parent's decay start); then its learning rate equals the parent's at every step before
branch_step (checked with the trainer's own ``lr_at``), so the parent's state after
branch_step steps *is* the branch's, and the trainer starts the branch from the parent's
checkpoint there (harness/training/cooldown_branch.py).
A branch that cannot be exact is skipped with a plan warning.

Tags: a branch copies its parent's (axis value, size, budget: the same sweep point), adds
``cooldown_of`` (the parent's run id), ``branch_step`` and ``cooldown_fraction`` (which makes
its analysis unit distinct: analysis/load.py), and gets a pair id of its own (the parent's
pair and the fraction: the branches of one pair at one fraction form a pair). The parent
gets ``keep_steps`` (its branches' branch steps), so the trainer keeps those checkpoints;
tags are not in the run id, so the parent's id does not change.

A branch's GPU-hours count its cooldown steps only (it starts from its parent's checkpoint);
its FLOPs are those of all its tokens (the compute its loss stands for). Tuning trials are
not branched (the tuning picks a value by final loss at its own tokens, and branching every
trial would multiply the grid's cost), except the one that is the planned run: every factor
1 at full tokens (tune_stage ``trial`` when trials train on full tokens, ``planned`` when they
do not). A full-token winner (tune_stage ``final``) is branched too: it answers for its cell.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, replace

import pandas as pd

from ebt_scaling.harness.contract.errors import ConfigError, require
from ebt_scaling.harness.contract.spec import TrainSpec, spec_hash
from ebt_scaling.harness.training.schedule import first_lr_difference, warmup_length, wsd_decay_start

from .sweep_spec import CooldownSpec


@dataclass(frozen=True)
class BranchSchedule:
    """A branch's training: its TrainSpec, its steps and the step where its decay starts."""

    train: TrainSpec
    steps: int
    branch_step: int


def warmup_fraction_for(warmup_steps: int, steps: int) -> float | None:
    """A warmup_fraction w with int(w x steps) == warmup_steps (the trainer's warmup), or None
    when none is a valid fraction (< 1)."""
    if warmup_steps >= steps:
        return None
    w = warmup_steps / steps
    # w x steps can round to just below warmup_steps; the next floats up reach it.
    for _ in range(4):
        if int(w * steps) >= warmup_steps:
            break
        w = math.nextafter(w, 1.0)
    return w if int(w * steps) == warmup_steps and w < 1 else None


def branch_schedule(train: TrainSpec, steps: int, tokens_per_step: int, fraction: float) -> BranchSchedule | str:
    """The branch at `fraction` of a WSD run of `steps` steps, or why it cannot be exact."""
    b_steps = round(fraction * steps)
    if not 1 <= b_steps < steps:
        return f"{b_steps} step(s) of the parent's {steps}: not a shorter run"
    warmup = warmup_length(steps, train)
    # An absolute train.warmup_steps carries over as it is; a fraction is re-aimed at the same steps.
    w = warmup_fraction_for(warmup, b_steps) if train.warmup_steps is None else train.warmup_fraction
    if w is None or warmup >= b_steps:
        return f"{b_steps} step(s) cannot hold the parent's {warmup} warmup steps"
    b_train = replace(train, tokens=b_steps * tokens_per_step, warmup_fraction=w)
    start, parent_start = wsd_decay_start(b_steps, b_train), wsd_decay_start(steps, train)
    if not max(warmup, 1) <= start < parent_start:
        return (f"its decay would start at step {start}, outside the parent's stable phase (steps {warmup} to "
                f"{parent_start - 1})")
    differ = first_lr_difference(start, b_steps, b_train, steps, train)
    if differ is not None:
        return f"its learning rate differs from the parent's at step {differ}"
    return BranchSchedule(b_train, b_steps, start)


def add_branches(planner, runs: list) -> list:
    """The planned runs (parents tagged with ``keep_steps``) followed by their branches."""
    cooldown: CooldownSpec | None = planner.sweep.cooldown
    if cooldown is None:
        return runs
    schedule = planner.base.train.schedule
    require(schedule == "wsd", "cooldown", f"needs base.train.schedule: wsd (branches leave a warmup-stable-decay "
            f"run's stable phase), got {schedule!r}; set base.train.schedule: wsd or remove cooldown")
    planned = {r.run_id for r in runs}
    skipped: dict[str, list[str]] = {}
    branches, trials = [], 0
    for run in runs:
        if not takes_branches(run.spec.tags):
            trials += 1
            continue
        mine = []
        for fraction in cooldown.fractions:
            made = _branch(run, fraction)
            if isinstance(made, str):
                skipped.setdefault(f"fraction {fraction:g}", []).append(f"{_name(run)}: {made}")
            elif made.run_id in planned:
                skipped.setdefault(f"fraction {fraction:g}", []).append(
                    f"{_name(run)}: the same run as planned run {made.run_id}")
            else:
                planned.add(made.run_id)
                mine.append(made)
        if mine:
            keep = sorted({int(b.spec.tags["branch_step"]) for b in mine})
            run.spec = replace(run.spec, tags={**run.spec.tags, "keep_steps": ",".join(map(str, keep))})
            branches.extend(mine)
    for what, reasons in skipped.items():
        planner.warnings.append(f"cooldown: {what} skipped for {len(reasons)} run(s) (a branch must equal its parent "
                                f"until its decay starts), e.g. {reasons[0]}")
    if trials:
        planner.warnings.append(f"cooldown: {trials} tuning trial(s) not branched (the tuning compares final losses; "
                                "each cell's planned run, every factor 1 at full tokens, is)")
    if branches:
        planner.warnings.append(
            f"cooldown: {len(branches)} branch run(s); a branch's GPU-hours count only its cooldown steps (it starts "
            "from its parent's checkpoint at tag branch_step; started before the parent has that checkpoint, it "
            "trains from scratch to the same result at its full cost)")
    return runs + branches


def takes_branches(tags: dict[str, str]) -> bool:
    """Whether a planned run gets cooldown branches: every run but a tuning trial other than
    the planned run (a factor other than 1, or reduced tokens: tag ``tune_tokens``)."""
    stage = tags.get("tune_stage")
    if stage is None or stage == "final":
        return True
    factors = [v for k, v in tags.items() if k.startswith("tune_") and k not in ("tune_stage", "tune_tokens")]
    return "tune_tokens" not in tags and all(float(v) == 1.0 for v in factors)


def is_branch(runs: pd.DataFrame) -> pd.Series:
    """Per row of a runs table (analysis/load.py), whether it is a cooldown branch (tag
    ``cooldown_of``); False for every row of a table without that column."""
    if "cooldown_of" not in runs:
        return pd.Series(False, index=runs.index)
    return runs["cooldown_of"].notna()


def _branch(run, fraction: float):
    """The branch PlannedRun of a planned run at `fraction`, or why there is none."""
    spec = run.spec
    made = branch_schedule(spec.train, spec.total_steps, spec.tokens_per_step, fraction)
    if isinstance(made, str):
        return made
    pair_id = hashlib.sha256(f"{run.pair_id}|cooldown {fraction!r}".encode()).hexdigest()[:12]
    tags = {**spec.tags, "pair_id": pair_id, "cooldown_of": run.run_id, "branch_step": str(made.branch_step),
            "cooldown_fraction": f"{fraction:g}"}
    try:
        branch = replace(spec, train=made.train, tags=tags)
    except ConfigError as exc:  # not expected: the parent's spec was valid
        return f"invalid branch spec ({exc})"
    tokens = made.train.tokens
    # The parent's rate (same model, batch, precision): GPU-hours are proportional to steps.
    cooldown_hours = run.gpu_hours * (made.steps - made.branch_step) / spec.total_steps
    return replace(run, spec=branch, run_id=spec_hash(branch), pair_id=pair_id, tokens=tokens, steps=made.steps,
                   flops={c: f * tokens for c, f in run.flops_per_token.items()}, gpu_hours=cooldown_hours)


def _name(run) -> str:
    return f"{run.arch_label} {run.size_name} seed {run.seed} ({run.run_id})"
