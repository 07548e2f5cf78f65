"""What the tuning trials of a sweep found (sweeps/tuning.py plans them).

A *cell* is one (architecture label, axis value, size, seed) whose planned run was
replaced by trials. Per cell:

* the best trial: the lowest final held-out loss among its finished trials;
* the run that answers for the cell *tuned*: the best trial when trials train on the
  planned tokens, else the winner retrained at full tokens (``tune_stage: final``, added
  by ``plan --extend``; the planned run when every best factor is 1), else none (the cell
  is missing from the tuned answer);
* the run that answers *untuned*: the trial at every factor 1 on the planned tokens, i.e.
  the run the rules alone would have planned;
* edges: a knob whose best factor is the smallest or largest factor tried (finished or
  diverged) -- the optimum may lie beyond the grid.

Per label, LR(N): a power law of the best LR against the cell's parameter count, fitted
over sizes (seeds averaged in log), for transferring the LR to larger sizes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ebt_scaling.sweeps.cooldown import is_branch
from ebt_scaling.sweeps.sweep_spec import TUNE_KNOBS

TRIED = ("done", "diverged")   # a diverged trial was tried: its factor bounds the grid


@dataclass(frozen=True)
class TunedCell:
    label: str
    axis_value: str
    size: str
    seed: int
    params: float
    grid: dict[str, list[float]]          # knob -> sorted factors tried (done or diverged)
    n_trials: int                         # trials planned in the cell
    n_extra: int                          # of those, added beyond the grid by `plan --extend`
    n_done: int
    best_factors: dict[str, float] | None
    best_loss: float | None
    best_lr: float | None
    best_run_id: str | None
    tuned_run_id: str | None
    untuned_run_id: str | None
    untuned_loss: float | None
    edges: dict[str, str]                 # knob -> "low" | "high"

    @property
    def name(self) -> str:
        """The cell in words: its size, and the axis value when that is not the size (a budget)."""
        return self.size if self.axis_value == self.size else f"{self.size} at {self.axis_value}"

    def to_json(self) -> dict:
        return {"label": self.label, "axis_value": self.axis_value, "size": self.size, "seed": self.seed,
                "params": self.params, "grid": self.grid, "n_trials": self.n_trials, "n_done": self.n_done,
                "best_factors": self.best_factors, "best_loss": self.best_loss, "best_lr": self.best_lr,
                "best_run_id": self.best_run_id, "tuned_run_id": self.tuned_run_id,
                "untuned_run_id": self.untuned_run_id, "untuned_loss": self.untuned_loss, "edges": self.edges}


@dataclass(frozen=True)
class LrRule:
    """lr*(N) = coefficient x N^exponent of one label (None fields: < 2 sizes)."""

    label: str
    n_sizes: int
    n_edge: int                           # sizes whose best LR is at its grid's edge
    coefficient: float | None
    exponent: float | None

    def sentence(self) -> str:
        if self.exponent is None:
            return f"{self.label}: {self.n_sizes} size(s) with a best LR: no LR(N) fit (needs >= 2)"
        edge = (f"; {self.n_edge} of them with the best LR at the grid's edge, so the rule only bounds the LR "
                "there" if self.n_edge else "")
        return f"{self.label}: lr*(N) = {self.coefficient:.3g} N^{self.exponent:.3f} ({self.n_sizes} sizes{edge})"

    def to_json(self) -> dict:
        return {"n_sizes": self.n_sizes, "n_edge": self.n_edge, "coefficient": self.coefficient,
                "exponent": self.exponent, "rule": self.sentence()}


@dataclass(frozen=True)
class Tuning:
    cells: list[TunedCell]
    tuned_ids: list[str]                  # the runs the tuned answer fits (and every run outside tuned cells)
    untuned_ids: list[str]
    trials_per_cell: dict[str, int]       # label -> most trials planned in one of its cells
    lr_rules: dict[str, LrRule]

    @property
    def edge_cells(self) -> list[TunedCell]:
        return [c for c in self.cells if c.edges]

    def budget_rule(self) -> str:
        counts = sorted({c.n_trials - c.n_extra for c in self.cells})
        extra = {lb: sum(c.n_extra for c in self.cells if c.label == lb) for lb in self.trials_per_cell}
        extended = ("" if not any(extra.values()) else " Beyond the grid, `plan --extend` added trials where a best "
                    "value sat on its edge: " + ", ".join(f"{lb} {n}" for lb, n in extra.items()) + ".")
        if len(counts) != 1:
            per = ", ".join(f"{lb} {n}" for lb, n in self.trials_per_cell.items())
            return (f"Tuning budget: unequal grid trials per cell (most per cell: {per}): the comparison favours the "
                    "better-tuned architecture." + extended)
        lr_grids = {lb: tuple(sorted({f for c in self.cells if c.label == lb for f in c.grid.get("lr", [])}))
                    for lb in self.trials_per_cell}
        spent = (" An architecture with fewer knobs spends the difference on more LR values (LR factors: "
                 + "; ".join(f"{lb} {', '.join(f'{f:g}' for f in g)}" for lb, g in lr_grids.items()) + ")."
                 if len(set(lr_grids.values())) > 1 else "")
        return (f"Tuning budget: every architecture gets the same number of grid trials per cell ({counts[0]})."
                + spent + extended)

    def to_json(self) -> dict:
        return {"budget_rule": self.budget_rule(), "trials_per_cell": self.trials_per_cell,
                "cells": [c.to_json() for c in self.cells],
                "edge_cells": [f"{c.label} {c.name} seed {c.seed}: best {k} factor at the {side} edge"
                               for c in self.edge_cells for k, side in c.edges.items()],
                "lr_rules": {lb: r.to_json() for lb, r in self.lr_rules.items()}}


def _with_branches(runs: pd.DataFrame, ids: list[str]) -> list[str]:
    """The runs and the cooldown branches of those runs."""
    if "cooldown_of" not in runs:
        return ids
    return ids + runs[runs["cooldown_of"].isin(set(ids))]["run_id"].tolist()


def _factor_cols(g: pd.DataFrame) -> list[str]:
    return [f"tune_{k}" for k in TUNE_KNOBS if f"tune_{k}" in g and g[f"tune_{k}"].notna().any()]


def tuned_cells(runs: pd.DataFrame, params_col: str = "params_total") -> list[TunedCell]:
    """Every tuned cell of the runs table (see the module docstring); [] when nothing was tuned."""
    if "trial" not in runs or not runs["trial"].notna().any():
        return []
    trials = runs[runs["trial"].notna() & ~is_branch(runs)].copy()
    trials["val_loss"] = pd.to_numeric(trials["val_loss"], errors="coerce")
    out = []
    for (label, axis_value, size, seed), g in trials.groupby(["arch_label", "axis_value", "size", "seed"], sort=True):
        cols = _factor_cols(g)
        knobs = tuple(c[len("tune_"):] for c in cols)
        stage = g["tune_stage"].fillna("trial")
        tokens = pd.to_numeric(g["tune_tokens"], errors="coerce").fillna(1.0)
        at_one = (g[cols] == 1.0).all(axis=1) if cols else pd.Series(True, index=g.index)
        grid_rows = g[stage == "trial"]
        tried = grid_rows[grid_rows["status"].isin(TRIED)]
        grid = {k: sorted(float(v) for v in tried[c].dropna().unique()) for k, c in zip(knobs, cols)}
        done = grid_rows[(grid_rows["status"] == "done") & np.isfinite(grid_rows["val_loss"])]
        best = done.loc[done["val_loss"].idxmin()] if len(done) else None
        best_factors = {k: float(best[c]) for k, c in zip(knobs, cols)} if best is not None else None
        edges = {}
        if best_factors:
            for k in knobs:
                if len(grid[k]) >= 2 and best_factors[k] in (grid[k][0], grid[k][-1]):
                    edges[k] = "low" if best_factors[k] == grid[k][0] else "high"
        tuned = None
        if best is not None:
            if float(tokens.loc[best.name]) == 1.0:
                tuned = best["run_id"]
            else:
                # the winner retrained on full tokens; a winner at every factor 1 is the planned run itself
                finals = g[stage.isin(["final", "planned"]) & (tokens == 1.0) & (g["status"] == "done")]
                match = finals[(finals[cols] == pd.Series({c: best[c] for c in cols})).all(axis=1)] if cols else finals
                tuned = match["run_id"].iloc[0] if len(match) else None
        untuned_rows = g[at_one & (tokens == 1.0) & stage.isin(["trial", "planned"]) & (g["status"] == "done")]
        untuned = untuned_rows.iloc[0] if len(untuned_rows) else None
        out.append(TunedCell(
            str(label), str(axis_value), str(size), int(seed),
            float(pd.to_numeric(g[params_col], errors="coerce").median()), grid, int(len(grid_rows)),
            int((grid_rows.get("trial_source", pd.Series("grid", index=grid_rows.index)) == "extend").sum()),
            int(len(done)), best_factors, float(best["val_loss"]) if best is not None else None,
            float(best["lr"]) if best is not None else None, best["run_id"] if best is not None else None, tuned,
            untuned["run_id"] if untuned is not None else None,
            float(untuned["val_loss"]) if untuned is not None else None, edges))
    return out


def fit_lr_rule(label: str, cells: list[TunedCell]) -> LrRule:
    """A power law of the best LR against N over the label's sizes (seeds averaged in log)."""
    by_n: dict[float, list[float]] = {}
    edge_n: set[float] = set()
    for c in cells:
        if c.best_lr is not None and c.params > 0:
            by_n.setdefault(c.params, []).append(math.log(c.best_lr))
            if "lr" in c.edges:
                edge_n.add(c.params)
    if len(by_n) < 2:
        return LrRule(label, len(by_n), len(edge_n), None, None)
    n = np.log(np.array(sorted(by_n)))
    lr = np.array([np.mean(by_n[k]) for k in sorted(by_n)])
    slope, intercept = np.polyfit(n, lr, 1)
    return LrRule(label, len(by_n), len(edge_n), float(math.exp(intercept)), float(slope))


def find_tuning(runs: pd.DataFrame, params_col: str = "params_total") -> Tuning | None:
    """The tuning of a sweep's runs table, or None when it has no trials."""
    cells = tuned_cells(runs, params_col)
    if not cells:
        return None
    branch = is_branch(runs)
    others = runs[runs["trial"].isna() & ~branch]["run_id"].tolist()
    tuned = _with_branches(runs, others + [c.tuned_run_id for c in cells if c.tuned_run_id])
    untuned = _with_branches(runs, others + [c.untuned_run_id for c in cells if c.untuned_run_id])
    trials = runs[runs["trial"].notna() & ~branch & (runs["tune_stage"].fillna("trial") == "trial")]
    per_cell = trials.groupby(["arch_label", "axis_value", "size", "seed"]).size()
    trials_per_cell = {str(lb): int(per_cell.loc[lb].max()) for lb in per_cell.index.get_level_values(0).unique()}
    labels = sorted({c.label for c in cells})
    rules = {lb: fit_lr_rule(lb, [c for c in cells if c.label == lb]) for lb in labels}
    return Tuning(cells, tuned, untuned, trials_per_cell, rules)
