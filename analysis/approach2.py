"""Chinchilla Approach 2 of each label: isoFLOP minima. Each budget's runs (budget tags: an
isoFLOP sweep) are its points, with their final, cooled-down loss; a sweep without budgets
has no Approach 2 (a training curve's intermediate points are not cooled down, and its first
ones are warmup). N* is the minimum of the parabola through the lowest-loss size and its
neighbours (in log N); budgets whose minimum is on the size grid's edge are dropped.
N* ∝ C^a from >= 2 budgets. Bootstrapped on the shared draw of matched units: a resample
keeps the runs of its drawn units. (Approach 1: approach1.py; Approach 3 is a fit law:
laws/chinchilla.py.)
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .bootstrap import percentile_interval
from .fits import PowerLawFit, fit_power_law
from .laws.law import Skipped
from .points import FitPoints

if TYPE_CHECKING:
    from .result import Caveats


@dataclass(frozen=True)
class IsoflopBudget:
    """One budget of Approach 2: the mean loss of each size, and the minimum (None: on an edge)."""

    compute: float
    sizes: list[float]
    loss: list[float]
    dropped: str | None = None           # why the budget has no interior minimum
    n_opt: float | None = None
    loss_opt: float | None = None
    n_opt_samples: np.ndarray | None = None   # per resample (nan: edge minimum or < 3 sizes drawn)
    loss_opt_samples: np.ndarray | None = None  # the minimum's loss per resample (nan as n_opt_samples)
    ci: float = 0.95

    @property
    def n_opt_interval(self) -> list[float] | None:
        return None if self.n_opt_samples is None else list(percentile_interval(self.n_opt_samples, self.ci))

    @property
    def n_opt_interval_note(self) -> str | None:
        if self.n_opt_samples is None:
            return None
        k_drop = int(np.sum(np.isnan(self.n_opt_samples)))
        # resamples without an interior minimum are dropped: the interval is conditional (narrower)
        return (f"conditional on an interior minimum; {k_drop} of {len(self.n_opt_samples)} resamples dropped "
                "(minimum on the grid edge or < 3 sizes drawn)")

    def to_json(self) -> dict:
        out = {"compute": self.compute, "sizes": self.sizes, "loss": self.loss}
        if self.dropped is not None:
            out["dropped"] = self.dropped
            return out
        out.update({"n_opt": self.n_opt, "loss_opt": self.loss_opt})
        if self.n_opt_samples is not None:
            out["n_opt_interval"] = self.n_opt_interval
            out["n_opt_edge_fraction"] = float(np.mean(np.isnan(self.n_opt_samples)))
            out["n_opt_interval_note"] = self.n_opt_interval_note
        return out


@dataclass(frozen=True)
class Isoflop:
    """Approach 2 of one label: its budgets, and N*(C) from those with an interior minimum."""

    mode: str
    budgets: list[IsoflopBudget]
    fit: PowerLawFit | None = None       # N* vs compute (None: < 2 interior minima)
    loss_fit: PowerLawFit | None = None  # loss at N* vs compute: the frontier L*(C)
    exponent_samples: np.ndarray | None = None
    ci: float = 0.95
    frontier_samples: tuple = ()         # per resample, L*(C) refitted (None: < 2 interior minima drawn)

    @property
    def interior(self) -> list[IsoflopBudget]:
        return [b for b in self.budgets if b.dropped is None]

    @property
    def exponent_note(self) -> str:
        return f"{len(self.interior)} budget(s) with an interior minimum: no N*(C) regression (needs >= 2)"

    def to_json(self) -> dict:
        out = {"status": "ok", "mode": self.mode, "budgets": [b.to_json() for b in self.budgets],
               "dropped_edge_budgets": [b.compute for b in self.budgets if b.dropped is not None]}
        if self.fit is None:
            out["exponent_note"] = self.exponent_note
            return out
        out.update({"exponent": self.fit.slope, "intercept": self.fit.intercept, "r2": self.fit.r2,
                    "n_budgets": len(self.interior), "loss_opt_slope": self.loss_fit.slope})
        if self.exponent_samples is not None:
            n_failed = int(np.sum(np.isnan(self.exponent_samples)))
            out["intervals"] = {"exponent": list(percentile_interval(self.exponent_samples, self.ci))}
            out["n_failed"] = n_failed
            out["interval_note"] = ("conditional on interior minima: per resample, the exponent is fitted to the "
                                    f"budgets whose minimum is interior; {n_failed} of {len(self.exponent_samples)} "
                                    "resamples dropped (< 2 such budgets)")
        if len(self.interior) == 2:
            out["warning"] = "2 budgets with interior minima: the exponent passes through both"
        return out


def isoflops(points: FitPoints, caveats: Caveats) -> dict[str, Isoflop | Skipped]:
    return {lb: _isoflop(points, lb, caveats) for lb in points.labels}


def _isoflop(points: FitPoints, lb: str, caveats: Caveats) -> Isoflop | Skipped:
    mode, groups = _budget_groups(points, lb, caveats)
    if not groups:
        tagged = "budget" in points.runs and points.of(lb).runs["budget"].notna().any()
        skipped = Skipped("Approach 2 (isoFLOP)", "no compute budget with >= 3 distinct model sizes "
                          + ("in a budget-tagged group" if tagged else "(it needs an isoFLOP sweep: runs trained to a "
                             "budget; points along a training curve are not cooled down)"))
        caveats.skip(skipped.what, lb, skipped.reason)
        return skipped
    ci, counts = points.config.ci, points.counts
    budgets = []
    for comp, g, logl in groups:
        n_vals = g[points.n_col].to_numpy(float)
        uniq = np.unique(n_vals)
        onehot = (n_vals[:, None] == uniq[None, :]).astype(float)
        mean_l = (np.exp(logl) @ onehot) / onehot.sum(axis=0)   # mean loss per size
        xs = np.log(uniq)
        found = parabola_min(list(xs), list(mean_l))
        if found is None:
            edge = "smallest" if int(np.argmin(mean_l)) == 0 else "largest"
            budgets.append(IsoflopBudget(comp, uniq.tolist(), mean_l.tolist(),
                                         f"minimum at the {edge} size (grid edge)"))
            continue
        samples = None
        if len(counts):
            w_all = counts[:, g["unit_code"].to_numpy()]
            sw = w_all @ onehot
            swl = (w_all * np.exp(logl)) @ onehot
            samples = np.full(len(counts), np.nan)
            loss_samples = np.full(len(counts), np.nan)
            for k in range(len(counts)):
                present = sw[k] > 0
                if present.sum() < 3:
                    continue
                fk = parabola_min(list(xs[present]), list(swl[k][present] / sw[k][present]))
                if fk is not None:
                    samples[k], loss_samples[k] = math.exp(fk[0]), fk[1]
        budgets.append(IsoflopBudget(comp, uniq.tolist(), mean_l.tolist(), None, float(math.exp(found[0])),
                                     float(found[1]), samples, loss_samples if samples is not None else None, ci))
    result = Isoflop(mode, budgets, ci=ci)
    interior = result.interior
    if len(interior) < 2:
        caveats.skip("Approach 2 exponent", lb, result.exponent_note)
        return result
    c = [b.compute for b in interior]
    fit = fit_power_law(c, [b.n_opt for b in interior])
    loss_fit = fit_power_law(c, [b.loss_opt for b in interior])
    exponents, frontiers = None, []
    if len(counts):
        S = np.array([b.n_opt_samples for b in interior])   # (budgets, R)
        SL = np.array([b.loss_opt_samples for b in interior])
        log_c = np.log(np.array(c))
        exponents = np.full(S.shape[1], np.nan)
        for k in range(S.shape[1]):
            m = np.isfinite(S[:, k]) & np.isfinite(SL[:, k]) & (SL[:, k] > 0)
            if m.sum() >= 2 and np.ptp(log_c[m]) > 0:
                exponents[k] = np.polyfit(log_c[m], np.log(S[m, k]), 1)[0]
                frontiers.append(fit_power_law(np.exp(log_c[m]), SL[m, k]))
            else:
                frontiers.append(None)
    return Isoflop(mode, budgets, fit, loss_fit, exponents, ci, tuple(frontiers))


def _budget_groups(points: FitPoints, lb: str,
                   caveats: Caveats) -> tuple[str, list[tuple[float, pd.DataFrame, np.ndarray]]]:
    """How the budgets were read, and per budget (compute, runs with >= 3 sizes, their log loss at it)."""
    p = points.of(lb).runs
    flops_col, n_col = points.flops_col, points.n_col
    tagged = p[p["budget"].notna()] if "budget" in p else p.iloc[:0]
    groups: list[tuple[float, pd.DataFrame, np.ndarray]] = []
    if len(tagged):
        mode = "isoflop runs (budget tags): each run's final loss; compute = geometric mean of the group's FLOPs"
        for b, g in tagged.groupby("budget"):
            if g[n_col].nunique() >= 3:
                comp = float(np.exp(np.log(g[flops_col]).mean()))
                spread = float(g[flops_col].max() / g[flops_col].min())
                if spread > 1.25:
                    caveats.warn(f"{lb}: isoFLOP group {b:.3g} spans a factor {spread:.2f} in "
                                 f"{points.config.convention}-convention FLOPs (budgets were set in another "
                                 "convention or pairing)")
                groups.append((comp, g, np.log(g["val_loss"].to_numpy(float))))
        return mode, groups
    return "", groups   # no budget tags: no isoFLOP groups (see the module docstring)



def parabola_min(x: list[float], y: list[float]) -> tuple[float, float, int] | None:
    """Minimum of y over x (sorted, >= 3 points) by the parabola through the discrete minimum and its
    neighbours: (x*, y*, index of the discrete minimum), or None when the minimum is on an edge."""
    i = int(np.argmin(y))
    if i == 0 or i == len(y) - 1:
        return None
    x0, x1, x2 = x[i - 1], x[i], x[i + 1]
    y0, y1, y2 = y[i - 1], y[i], y[i + 1]
    d01, d12, d02 = x0 - x1, x1 - x2, x0 - x2
    a = (y0 / (d01 * d02)) - (y1 / (d01 * d12)) + (y2 / (d02 * d12))
    if not a > 0:
        return x1, y1, i
    b = -(y0 * (x1 + x2) / (d01 * d02)) + (y1 * (x0 + x2) / (d01 * d12)) - (y2 * (x0 + x1) / (d02 * d12))
    xs = min(max(-b / (2 * a), x0), x2)
    ys = (y0 * (xs - x1) * (xs - x2) / (d01 * d02) - y1 * (xs - x0) * (xs - x2) / (d01 * d12)
          + y2 * (xs - x0) * (xs - x1) / (d02 * d12))
    return xs, ys, i


