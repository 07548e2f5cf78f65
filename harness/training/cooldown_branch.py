"""Cooldown branches in the trainer (sweeps/cooldown.py plans them).

A WSD run tagged ``keep_steps`` keeps its checkpoints at those steps (checkpoint.py never
rotates them away). A run tagged ``cooldown_of`` (its parent's run id) and ``branch_step``
that has no checkpoint of its own starts from the parent's checkpoint at branch_step, found
in the sibling run directory (SWEEP_DIR/runs/<parent id>/checkpoints/), when the parent's
spec equals this one but for train.tokens and train.warmup_fraction and the two learning
rates agree at every step before branch_step: the parent's state there is then exactly the
state this run would reach on its own. Its metrics.jsonl starts with the parent's rows up to
branch_step, so its curve is complete (their evaluation points are the parent's). Otherwise
it trains from scratch -- the same result, only slower -- and train.log says why.
"""
from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from ebt_scaling.harness.contract.errors import ConfigError
from ebt_scaling.harness.contract.run_dir import RunDir, atomic_write_text
from ebt_scaling.harness.contract.spec import RunSpec, load_spec

from .checkpoint import UnreadableCheckpoint, checkpoint_path, read_checkpoint
from .distributed import DistributedContext
from .schedule import first_lr_difference


def kept_steps(spec: RunSpec) -> frozenset[int]:
    """The steps tag ``keep_steps`` lists (comma-separated): checkpoints the run keeps."""
    text = spec.tags.get("keep_steps", "")
    try:
        return frozenset(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise ConfigError(f"tags.keep_steps: must be comma-separated step numbers, got {text!r}; "
                          "fix it or remove the tag") from None


def branch_start(run: RunDir, spec: RunSpec, ctx: DistributedContext) -> dict[str, Any] | None:
    """The parent checkpoint a cooldown branch without a checkpoint of its own starts from
    (its metrics.jsonl then holds the parent's rows up to it), or None: train from scratch.
    Rank 0 decides and loads first; the other processes follow its decision."""
    parent_id = spec.tags.get("cooldown_of")
    if not parent_id:
        return None
    state = _parent_state(run, spec, parent_id, ctx.world_size) if ctx.is_main else None
    usable = ctx.gather_objects(state is not None)[0]
    if not usable:
        return None
    if not ctx.is_main:
        state = read_checkpoint(checkpoint_path(RunDir(run.path.parent / parent_id), branch_step_of(spec)))
    return state


def branch_step_of(spec: RunSpec) -> int:
    """The branch step (tag ``branch_step``)."""
    text = spec.tags.get("branch_step", "")
    if not text.isdigit():
        raise ConfigError(f"tags.branch_step: must be the step where the branch's decay starts, got {text!r}; "
                          "re-plan the sweep or remove tag cooldown_of")
    return int(text)


def _parent_state(run: RunDir, spec: RunSpec, parent_id: str, world_size: int) -> dict[str, Any] | None:
    step = branch_step_of(spec)
    parent = RunDir(run.path.parent / parent_id)
    path = checkpoint_path(parent, step)
    why = _unusable(parent, parent_id, spec, step)
    state = None
    if why is None:
        try:
            state = read_checkpoint(path)
            if state["step"] != step:
                raise UnreadableCheckpoint(f"checkpoint {path.name} holds step {state['step']}")
        except UnreadableCheckpoint as exc:
            why, state = f"its {exc}", None
        else:
            if len(state["processes"]) != world_size:  # per-process RNG streams: exact only on as many
                why, state = (f"its checkpoint was written by {len(state['processes'])} process(es), this run has "
                              f"{world_size}"), None
    if state is None:
        run.log(f"cooldown branch of {parent_id}: {why}; training from scratch (the same result, only slower)")
        return None
    rows = [r for r in parent.metrics() if r["step"] <= step]
    atomic_write_text(run.metrics_path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    run.log(f"cooldown branch of {parent_id}: starting from its checkpoint at step {step} "
            f"({len(rows)} metrics rows copied)")
    return state


def _unusable(parent: RunDir, parent_id: str, spec: RunSpec, step: int) -> str | None:
    """Why the parent's checkpoint at `step` cannot stand for this run's first `step` steps (None: it can)."""
    if step >= spec.total_steps:
        return f"branch_step {step} is not before this run's last step {spec.total_steps}"
    if not parent.spec_path.exists():
        return f"no run directory {parent.path}"
    if not checkpoint_path(parent, step).exists():
        return f"the parent has no checkpoint at step {step} yet"
    try:
        theirs = load_spec(parent.spec_path)
    except ConfigError as exc:
        return f"its spec is unreadable ({exc})"
    if theirs.run_id != parent_id:
        return f"{parent.path} holds run {theirs.run_id}"
    as_branch = replace(theirs, train=replace(theirs.train, tokens=spec.train.tokens,
                                              warmup_fraction=spec.train.warmup_fraction))
    if as_branch.run_id != spec.run_id:
        return "its spec differs from this one in more than train.tokens and train.warmup_fraction"
    mine, total = spec.total_steps, theirs.total_steps
    differ = first_lr_difference(step, mine, spec.train, total, theirs.train)
    if differ is not None:
        return f"its learning rate differs from this run's at step {differ}"
    return None
