"""Tuning trials: a sweep's ``tune`` block turns every planned run of its cells into one
run per combination of factors (sweep_spec.TuneSpec).

A trial multiplies what the rules gave the planned run: the LR, a model option
(alpha_init, alpha_lr_multiplier: only architectures whose options have it), the batch
(rounded, >= 1; tokens stay the planned ones, as whole steps of the new batch) and the
warmup fraction (or train.warmup_steps, rounded, where the base gives one). The trial with
every factor 1 at full tokens *is* the planned run (same spec, same run id), so tuning a
sweep keeps its untuned runs and the analysis can answer both ways (analysis/tuning.py).

Every trial is tagged: ``trial`` (its factors, e.g. ``lr=0.5,alpha_init=2``), one
``tune_<knob>`` per knob of its label's grid, and ``tune_stage``: ``trial``; ``planned``
for the run at factor 1 kept at full tokens when trials train on fewer tokens; ``final``
for a winner added at full tokens by ``plan --extend``. Trials of ``tune.extra`` also
carry ``trial_source: extend``.
"""
from __future__ import annotations

import hashlib
import itertools
import math
from dataclasses import replace

from ebt_scaling.harness.contract.errors import ConfigError, require
from ebt_scaling.harness.contract.spec import spec_hash

from . import rules
from .sweep_spec import OPTION_KNOBS, TUNE_KNOBS, TuneSpec


def knobs_of(tune: TuneSpec, options) -> tuple[str, ...]:
    """The knobs of ``tune`` that apply to an architecture with these model options."""
    return tuple(k for k in TUNE_KNOBS if tune.grid(k) and (k not in OPTION_KNOBS or hasattr(options, k)))


def trial_name(factors: dict[str, float]) -> str:
    return ",".join(f"{k}={factors[k]:g}" for k in TUNE_KNOBS if k in factors)


def label_grids(tune: TuneSpec, options_by_label: dict) -> tuple[dict[str, dict[str, tuple[float, ...]]], list[str]]:
    """Each label's grid (knob -> factors) and what equalising the trial counts did.

    With ``equal_trials`` a label whose grid has fewer combinations than the largest gets
    its LR grid extended at the grid's own log-spacing, alternately above and below, until
    the counts match (the extra trials go to the knob every architecture has)."""
    grids = {lb: {k: tune.grid(k) for k in knobs_of(tune, opt)} for lb, opt in options_by_label.items()}
    counts = {lb: math.prod(len(v) for v in g.values()) for lb, g in grids.items()}
    most = max(counts.values())
    notes = []
    if not tune.equal_trials or all(c == most for c in counts.values()):
        return grids, notes
    for lb, grid in grids.items():
        if counts[lb] == most:
            continue
        lr = grid.get("lr", ())
        rest = counts[lb] // max(1, len(lr))
        require(len(lr) >= 2 and most % rest == 0, "tune.equal_trials",
                f"{lb} has {counts[lb]} trial(s) per cell and another architecture {most}; give tune.lr >= 2 factors "
                f"so that {lb} can spend the difference on LR values (its other knobs combine to {rest}), or set "
                "equal_trials: false")
        ratio = (lr[-1] / lr[0]) ** (1 / (len(lr) - 1))
        values = list(lr)
        while len(values) < most // rest:
            above = len(values) % 2 == len(lr) % 2
            values.append(max(values) * ratio if above else min(values) / ratio)
        grid["lr"] = tuple(sorted(float(f"{v:.6g}") for v in values))
        added = sorted(set(grid["lr"]) - set(lr))
        notes.append(f"{lb}: LR grid extended by {', '.join(f'{v:g}' for v in added)} to {most} trials per cell, "
                     "as many as every architecture")
    return grids, notes


def expand_trials(planner, runs: list) -> list:
    """The planned runs with every run of a tuned cell replaced by its trials (see the module
    docstring), and the extra trials of ``tune.extra``."""
    tune: TuneSpec | None = planner.sweep.tune
    if tune is None:
        return runs
    values = list(dict.fromkeys(r.axis_value for r in runs))
    for i, v in enumerate(tune.at):
        require(v in values, f"tune.at[{i}]", f"{v!r} is not an axis value of this sweep; use one of "
                f"{', '.join(values[:12])}")
    options = {e.label: planner.templates[i].options for i, e in enumerate(planner.sweep.architectures)}
    grids, notes = label_grids(tune, options)
    planner.warnings.extend(notes)
    reduced = tune.token_fraction < 1
    out = []
    for run in runs:
        if tune.at and run.axis_value not in tune.at:
            out.append(run)
            continue
        grid = grids[run.arch_label]
        if reduced:
            out.append(_trial(planner, run, {k: 1.0 for k in grid}, 1.0, "planned"))
        for combo in itertools.product(*grid.values()):
            out.append(_trial(planner, run, dict(zip(grid, combo)), tune.token_fraction, "trial"))
    by_cell = {(r.arch_label, r.axis_value, r.size_name, r.seed): r for r in runs}
    for i, extra in enumerate(tune.extra):
        key = f"tune.extra[{i}]"
        grid = grids.get(extra.label)
        require(grid is not None, f"{key}.label", f"{extra.label!r} is not an architecture label of this sweep")
        require(set(extra.factors) == set(grid), f"{key}.factors",
                f"must give every knob of {extra.label}'s grid ({', '.join(grid)}), got {', '.join(extra.factors)}")
        bases = [r for (lb, av, size, _), r in by_cell.items() if (lb, av, size) == (extra.label, extra.axis_value,
                                                                                  extra.size)]
        require(bool(bases), key, f"no planned run of {extra.label} at axis value {extra.axis_value!r}, size "
                f"{extra.size!r}; remove the entry")
        fraction = 1.0 if extra.full_tokens else tune.token_fraction
        for base in bases:
            out.append(_trial(planner, base, dict(extra.factors), fraction, "final" if extra.full_tokens else "trial",
                              extended=True))
    return _unique(planner, out)


def _unique(planner, runs: list) -> list:
    seen: dict[str, object] = {}
    for r in runs:
        if r.run_id in seen:
            msg = f"{r.arch_label} {r.size_name} {r.spec.tags.get('trial')}: the same run twice; planned once"
            if msg not in planner.warnings:
                planner.warnings.append(msg)
            continue
        seen[r.run_id] = r
    return list(seen.values())


def _trial(planner, run, factors: dict[str, float], token_fraction: float, stage: str, extended: bool = False):
    """The planned run with its knobs multiplied by ``factors`` and its tokens by the fraction
    (``extended``: a trial of ``tune.extra``, tagged so that the analysis can tell the grid's
    trials from those `plan --extend` added)."""
    spec, train, model = run.spec, run.spec.train, run.spec.model
    where = f"{run.arch_label} at {run.axis_value} ({run.size_name})"
    f = {k: factors.get(k, 1.0) for k in TUNE_KNOBS}
    batch = max(1, round(train.batch_size * f["batch"]))
    tokens_per_step = batch * model.context
    tokens = rules.whole_steps(run.tokens * token_fraction, tokens_per_step) * tokens_per_step
    if train.warmup_steps is not None:  # an absolute warmup takes the factor (the run's step check applies)
        warmup = {"warmup_steps": round(train.warmup_steps * f["warmup"])}
    else:
        warmup = {"warmup_fraction": train.warmup_fraction * f["warmup"]}
        if warmup["warmup_fraction"] >= 1:
            raise ConfigError(f"tune.warmup: factor {f['warmup']:g} gives {where} a warmup fraction "
                              f"{warmup['warmup_fraction']:g} >= 1; use smaller factors")
    try:
        new_train = replace(train, lr=train.lr * f["lr"], batch_size=batch, tokens=tokens, **warmup)
        option_changes = {k: getattr(model.options, k) * f[k] for k in OPTION_KNOBS if k in factors}
        new_model = replace(model, options=replace(model.options, **option_changes)) if option_changes else model
        name = trial_name(factors)
        untouched = all(v == 1.0 for v in factors.values()) and token_fraction == 1.0
        pair_id = run.pair_id if untouched else hashlib.sha256(f"{run.pair_id}|{name}|{token_fraction:g}".encode()
                                                               ).hexdigest()[:12]
        tags = {**spec.tags, "pair_id": pair_id, "trial": name, "tune_stage": stage,
                **{f"tune_{k}": f"{v:g}" for k, v in factors.items()}}
        if token_fraction != 1.0:
            tags["tune_tokens"] = f"{token_fraction:g}"
        if extended:
            tags["trial_source"] = "extend"
        new_spec = replace(spec, model=new_model, train=new_train, tags=tags)
    except ConfigError as exc:
        raise ConfigError(f"tune: gives {where} an invalid {exc}; adjust the factors") from None
    fpt = planner.fpt(new_model)
    flops = {c: v * tokens for c, v in fpt.items()}
    return replace(run, spec=new_spec, run_id=spec_hash(new_spec), pair_id=pair_id, tokens=tokens,
                   steps=tokens // tokens_per_step, batch=batch, lr=new_train.lr, flops=flops, flops_per_token=fpt,
                   gpu_hours=run.rate.hours(flops["full"]) if run.rate else run.gpu_hours,
                   params=planner.params(new_model))
