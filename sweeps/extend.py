"""`ebt-scaling plan --extend DIR`: what the finished runs of a sweep directory say is
missing, added to its sweep so that every grid can find its optimum (docs/scaling.md,
"Extending a sweep"). Each addition is one line "added WHAT: WHY".

* isoFLOP sizes: a budget whose loss minimum (per architecture label, over its finished
  runs) sits on the smallest or largest planned size gets one size beyond that edge, at the
  next power of ``axis.spread`` (``axis.extra_sizes``).
* tuning trials: a cell whose best factor of a knob is the smallest or largest tried gets
  one trial beyond it (x or / the ratio of the grid's outermost step), the other knobs at
  the cell's best factors; with ``tune.token_fraction`` < 1, a cell whose winner is settled
  (no knob on an edge) gets the winner at full tokens (``tune.extra``).
* budgets: when fewer than 3 budgets of some label have an interior minimum or may still
  get one, one budget beyond the largest at the budgets' geometric ratio (``axis.values``).

A change is kept only if the plan it gives holds runs the current plan lacks, so what is
already planned, finished or not, is never added twice and a second --extend without new
results adds nothing; every run planned before keeps its id and its spec (checked on each
change). The analysis layer sits above this one: the command reads the runs table and the
tuned cells (analysis/load.py, analysis/tuning.py) and hands them in as ``Findings``.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ebt_scaling.harness.contract.errors import ConfigError, require
from ebt_scaling.harness.contract.run_dir import read_json

from .cooldown import is_branch
from .generate import Plan, PlannedRun, make_plan
from .sweep_spec import SWEEP_AXES, SweepSpec, axis_values, dump_sweep, load_sweep, sweep_from_dict
from .throughput import ThroughputFile

SIZE_STEPS = 3   # offsets tried beyond an edge: the shape rule can map the next target onto a planned shape
MIN_BUDGETS = 3  # budgets with an interior minimum that make an N*(C) fit more than a line through two points


@dataclass(frozen=True)
class Findings:
    """What the analysis read from a sweep directory (the command builds it)."""

    runs: pd.DataFrame                        # analysis.load: one row per run, any status
    cells: tuple = ()                         # analysis.tuning.TunedCell of every tuned cell
    answer_ids: frozenset[str] | None = None  # tuned sweeps: the runs that answer for their cell; None: every run


@dataclass(frozen=True)
class BudgetMinimum:
    """Where one label's loss minimum at one isoFLOP budget sits."""

    label: str
    budget: str       # the axis value
    state: str        # interior | low | high (on the smallest / largest planned size) | open (not known yet)
    size: str = ""    # the finished size with the lowest mean loss
    loss: float = math.nan
    n_sizes: int = 0  # finished sizes


@dataclass(frozen=True)
class Extension:
    sweep: SweepSpec
    plan: Plan
    added: tuple[str, ...]      # "added WHAT: WHY", in the order applied
    not_added: tuple[str, ...]  # "not added WHAT: WHY": an edge that cannot be extended
    new_run_ids: tuple[str, ...]


def budget_minima(sweep: SweepSpec, findings: Findings) -> dict[tuple[str, str], BudgetMinimum]:
    """(label, axis value) -> where the label's minimum sits at that budget. As in Approach 2
    (analysis/approach2.py), a size's loss is the mean final loss of its finished runs and
    >= 3 sizes are needed; the edge is the planned grid's, so a minimum on the largest
    finished size while a larger one is still planned (or failed: resubmit it) is open."""
    runs = findings.runs[findings.runs["axis_value"].notna()]
    # A cooldown branch trains on less than its budget: no isoFLOP point (nor in Approach 2).
    runs = runs[~is_branch(runs)]
    col = f"params_{sweep.param_count}"
    out = {}
    for (label, value), g in runs.groupby(["arch_label", "axis_value"], sort=False):
        n = pd.to_numeric(g[col], errors="coerce")
        loss = pd.to_numeric(g["val_loss"], errors="coerce")
        answers = g["status"].eq("done") & np.isfinite(loss) & n.notna()
        if findings.answer_ids is not None:
            answers &= g["run_id"].isin(findings.answer_ids)
        mean = loss[answers].groupby(n[answers]).mean().sort_index()
        if len(mean) < 3:
            out[label, value] = BudgetMinimum(label, value, "open", n_sizes=len(mean))
            continue
        i = int(np.argmin(mean.to_numpy()))
        state = "interior" if 0 < i < len(mean) - 1 else "open"
        if i == 0 and mean.index[0] == n.min():
            state = "low"
        elif i == len(mean) - 1 and mean.index[-1] == n.max():
            state = "high"
        size = str(g.loc[n == mean.index[i], "size"].iloc[0])
        out[label, value] = BudgetMinimum(label, value, state, size, float(mean.iloc[i]), len(mean))
    return out


@dataclass
class _Draft:
    """The sweep being extended: an edit is kept when its plan adds runs."""

    sweep: SweepSpec
    plan: Plan
    throughput: ThroughputFile | None
    device: str | None
    data: dict = field(init=False)
    added: list[str] = field(default_factory=list)
    not_added: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.data = dump_sweep(self.sweep)

    def attempt(self, edit: Callable[[dict], None], what: str) -> list[PlannedRun] | None:
        """The runs the edited sweep plans beyond the current plan (then the edit is kept);
        [] when it plans nothing new; None when the edit is impossible (noted)."""
        data = copy.deepcopy(self.data)
        edit(data)
        try:
            sweep = sweep_from_dict(data, self.sweep.source)
            plan = make_plan(sweep, self.throughput, self.device)
        except ConfigError as exc:
            self.not_added.append(f"not added {what}: {exc}")
            return None
        by_id = {r.run_id: r for r in plan.runs}
        for run in self.plan.runs:  # a bug guard: a planned run (maybe trained) must never move or change
            if run.run_id not in by_id or by_id[run.run_id].spec != run.spec:
                raise RuntimeError(f"extending with {what} would change planned run {run.run_id}; nothing written")
        current = {r.run_id for r in self.plan.runs}
        new = [r for r in plan.runs if r.run_id not in current]
        if new:
            self.data, self.sweep, self.plan = data, sweep, plan
        return new


def extend_sweep(sweep_dir: str | Path, findings: Findings, throughput: ThroughputFile | None = None,
                 device: str | None = None) -> Extension:
    """The sweep of DIR/sweep.yaml with what its runs say is missing (nothing is written)."""
    root = Path(sweep_dir)
    require((root / "sweep.yaml").is_file(), str(root), "is not a sweep directory (no sweep.yaml); write one with "
            "`ebt-scaling plan SWEEP --write DIR`")
    sweep = load_sweep(root / "sweep.yaml")
    draft = _Draft(sweep, make_plan(sweep, throughput, device), throughput, device)
    listed = read_json(root / "plan.json") or {}
    planned = {r.run_id for r in draft.plan.runs}
    lost = [r.get("run_id") for r in listed.get("runs") or [] if r.get("run_id") not in planned]
    require(not lost, str(root / "sweep.yaml"), f"no longer plans run {lost[0] if lost else ''} of plan.json (planned "
            "by another version of the code?); extending would orphan it: extend with the version that planned it")
    minima = budget_minima(sweep, findings) if SWEEP_AXES.get(sweep.axis.name).sizes_per_budget else {}
    extended = _extend_sizes(draft, minima)
    _extend_trials(draft, findings.cells)
    _extend_budgets(draft, minima, extended)
    new = tuple(r.run_id for r in draft.plan.runs if r.run_id not in planned)
    return Extension(draft.sweep, draft.plan, tuple(draft.added), tuple(draft.not_added), new)


def _count(runs: list) -> str:
    return f"{len(runs)} run" + ("s" if len(runs) != 1 else "")


def _round(x: float) -> float:
    """6 significant digits, as axis values and factors are shown (1e+14, not 1.0000000000000002e+14)."""
    return float(f"{x:.6g}")


# ----------------------------------------------------------------------------- isoFLOP sizes


def _extend_sizes(draft: _Draft, minima: dict[tuple[str, str], BudgetMinimum]) -> set[str]:
    """One size beyond each edge some label's minimum sits on; the budgets (axis values) given one."""
    budgets = {r.axis_value: r.budget for r in draft.plan.runs}
    edges: dict[tuple[str, str], list[BudgetMinimum]] = {}
    for m in minima.values():
        if m.state in ("low", "high") and m.budget in budgets:
            edges.setdefault((m.budget, m.state), []).append(m)
    order = [a.label for a in draft.sweep.architectures]
    extended = set()
    for (value, side), found in sorted(edges.items(), key=lambda e: (budgets[e[0][0]], e[0][1])):
        found = sorted(found, key=lambda m: order.index(m.label) if m.label in order else len(order))
        axis, budget = draft.sweep.axis, budgets[value]
        offsets = axis.offsets(budget)
        edge, step = (offsets[-1], 1) if side == "high" else (offsets[0], -1)
        word = "largest" if side == "high" else "smallest"
        why = (f"the loss minimum of {' and '.join(f'{m.label} ({m.size}, {m.loss:.4g})' for m in found)} sits on the "
               f"{word} size, of {max(m.n_sizes for m in found)} finished (grid edge)")
        for k in range(1, SIZE_STEPS + 1):
            offset = edge + step * k
            new = draft.attempt(lambda data, o=offset: _add_offset(data, budget, o), f"a size at budget {value}")
            if new is None:
                break
            if new:
                draft.added.append(f"added size {new[0].size_name} at budget {value} (optimum x {axis.spread:g}^"
                                   f"{offset:+g}, {_count(new)}): {why}")
                extended.add(value)
                break
        else:
            draft.not_added.append(f"not added a size beyond the {word} at budget {value}: the shape rule gives no "
                                   f"new shape within {SIZE_STEPS} steps of x{axis.spread:g}, and {why}")
    return extended


def _add_offset(data: dict, budget: float, offset: float) -> None:
    extras = data["axis"].setdefault("extra_sizes", [])
    for e in extras:
        if math.isclose(e["budget"], budget, rel_tol=1e-6):
            e["offsets"] = sorted([*e["offsets"], offset])
            return
    extras.append({"budget": budget, "offsets": [offset]})


# ----------------------------------------------------------------------------- budgets


def _extend_budgets(draft: _Draft, minima: dict[tuple[str, str], BudgetMinimum], extended: set[str]) -> None:
    """One budget beyond the largest when some label cannot reach MIN_BUDGETS interior minima
    with the budgets it has (interior ones plus those still open, or given a size just now)."""
    if not SWEEP_AXES.get(draft.sweep.axis.name).sizes_per_budget:
        return
    values = axis_values(draft.sweep)
    labels = {r.budget: r.axis_value for r in draft.plan.runs}
    short = []
    for entry in draft.sweep.architectures:
        states = [minima.get((entry.label, labels[v]), BudgetMinimum(entry.label, labels[v], "open")).state
                  for v in values]
        interior = states.count("interior")
        open_ = sum(s == "open" or (s != "interior" and labels[v] in extended) for v, s in zip(values, states))
        if interior + open_ < MIN_BUDGETS:
            short.append(f"{entry.label} has {interior} budget(s) with an interior minimum and {open_} still open")
    if not short:
        return
    why = "; ".join(short) + f" (an N*(C) fit wants >= {MIN_BUDGETS})"
    if len(values) < 2:
        draft.not_added.append(f"not added a budget: one budget gives no ratio to step by; list a second budget in "
                               f"axis.values ({why})")
        return
    ratio = (max(values) / min(values)) ** (1 / (len(values) - 1))
    budget = _round(max(values) * ratio)

    def add(data: dict) -> None:
        data["axis"]["values"] = [*values, budget]

    new = draft.attempt(add, f"budget {budget:g}")
    if new:
        sizes = len({r.size_name for r in new})
        draft.added.append(f"added budget {budget:g} ({ratio:.3g}x the largest, the budgets' ratio; {sizes} sizes, "
                           f"{_count(new)}): {why}")


# ----------------------------------------------------------------------------- tuning trials


def _extend_trials(draft: _Draft, cells) -> None:
    """A trial beyond each edge of a cell's best factors; the settled winner at full tokens."""
    tune = draft.sweep.tune
    if tune is None:
        return
    for cell in cells:
        if not cell.best_factors:
            continue
        where = f"{cell.label} at {cell.axis_value}" + (f" ({cell.size})" if cell.size != cell.axis_value else "")
        exploring = False  # a trial beyond an edge is planned: the winner may still change
        for knob, side in sorted(cell.edges.items()):
            grid = cell.grid[knob]
            best = cell.best_factors[knob]
            factor = _round(best * grid[-1] / grid[-2] if side == "high" else best * grid[0] / grid[1])
            factors = {**cell.best_factors, knob: factor}
            new = draft.attempt(lambda data, f=factors: _add_extra(data, cell, f, False),
                                f"trial {where} {_factors(factors)}")
            if new is None:
                continue
            exploring = True
            if new:
                word = "largest" if side == "high" else "smallest"
                draft.added.append(f"added trial {where} {_factors(factors)} ({_count(new)}): the best {knob} "
                                   f"factor of seed {cell.seed}, {best:g}, is the {word} tried "
                                   f"({', '.join(f'{g:g}' for g in grid)})")
        if tune.token_fraction < 1 and not exploring:
            new = draft.attempt(lambda data: _add_extra(data, cell, cell.best_factors, True),
                                f"{where} {_factors(cell.best_factors)} at full tokens")
            if new:
                draft.added.append(f"added {where} {_factors(cell.best_factors)} at full tokens ({_count(new)}): the "
                                   f"winner of seed {cell.seed}'s trials on {tune.token_fraction:g} of the tokens")


def _factors(factors: dict[str, float]) -> str:
    return " ".join(f"{k} x{v:g}" for k, v in factors.items())


def _add_extra(data: dict, cell, factors: dict[str, float], full_tokens: bool) -> None:
    data["tune"].setdefault("extra", []).append({"label": cell.label, "axis_value": cell.axis_value,
                                                 "size": cell.size, "factors": dict(factors),
                                                 "full_tokens": full_tokens})
