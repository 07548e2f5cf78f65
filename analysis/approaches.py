"""Chinchilla Approaches 1 and 2 of each label, from its training curves and final losses
(Approach 3 is a fit law: laws/chinchilla.py).

* Approach 1: the lower envelope of the label's training curves (loss against FLOPs) on a
  log-spaced compute grid, a power law of the envelope, and one of the model size on it
  (N_opt ∝ C^a, with >= 3 sizes on the envelope).
* Approach 2: isoFLOP minima. With budget tags (an isoFLOP sweep) each budget's runs are
  its points; otherwise each run's loss at a budget is read off its training curve. N* is
  the minimum of the parabola through the lowest-loss size and its neighbours (in log N);
  budgets whose minimum is on the size grid's edge are dropped. N* ∝ C^a from >= 2
  budgets.

Both are bootstrapped on the shared draw of matched units: a resample keeps the runs of
its drawn units.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .bootstrap import percentile_interval
from .caveats import Caveats
from .fits import PowerLawFit, fit_power_law
from .laws.law import Skipped
from .points import FitPoints

A1_GRID = 48
A2_GRID = 8
CURVE_TOL = 0.05            # a budget up to 5% past a curve's last point reads the last point


# ---------------------------------------------------------------------------- Approach 1

@dataclass(frozen=True)
class Envelope:
    """Approach 1 of one label: the envelope on the compute grid, its power laws, and per
    resample the envelope's slope and N_opt exponent."""

    n_runs: int                         # runs with >= 2 eval points
    grid: np.ndarray
    log_env: np.ndarray                 # log loss of the envelope (inf where no curve reaches)
    on_envelope: list[str]              # the runs on it, sorted
    fit: PowerLawFit                    # loss of the envelope vs compute
    n_opt: PowerLawFit | None           # N on the envelope vs compute (None: < 3 sizes on it)
    n_distinct: int                     # sizes on the envelope
    ci: float
    slope_samples: np.ndarray | None = None
    n_opt_samples: np.ndarray | None = None

    def to_json(self) -> dict:
        f = self.fit
        out = {"status": "ok", "n_runs": self.n_runs,
               "grid": [float(self.grid[0]), float(self.grid[-1]), len(self.grid)],
               "slope": f.slope, "intercept": f.intercept, "prefactor": f.prefactor, "r2": f.r2,
               "runs_on_envelope": self.on_envelope}
        if self.n_opt is not None:
            out["n_opt_exponent"] = self.n_opt.slope
        else:
            out["n_opt_note"] = (f"{self.n_distinct} distinct model size(s) on the envelope: "
                                 "no N_opt(C) regression (needs >= 3)")
        if self.slope_samples is not None:
            out["intervals"] = {"slope": list(percentile_interval(self.slope_samples, self.ci))}
            if self.n_opt is not None:
                out["intervals"]["n_opt_exponent"] = list(percentile_interval(self.n_opt_samples, self.ci))
        return out


def envelopes(points: FitPoints, curves: pd.DataFrame, caveats: Caveats) -> dict[str, Envelope | Skipped]:
    arrays = curve_arrays(curves[curves["run_id"].isin(points.runs["run_id"])], points.flops_col)
    return {lb: _envelope(points, lb, arrays, caveats) for lb in points.labels}


def _envelope(points: FitPoints, lb: str, arrays: dict, caveats: Caveats) -> Envelope | Skipped:
    p = points.of(lb).runs
    runs = [r for r in p["run_id"] if r in arrays and len(arrays[r][0]) >= 2]
    if len(runs) < 2:
        skipped = Skipped("Approach 1 (envelope)",
                          f"{len(runs)} finished run(s) with >= 2 eval points: the envelope needs >= 2 runs")
        caveats.skip(skipped.what, lb, skipped.reason)
        return skipped
    lo = min(arrays[r][0][0] for r in runs)
    hi = max(arrays[r][0][-1] for r in runs)
    grid = np.geomspace(lo, hi, A1_GRID)
    L = np.array([log_interp(*arrays[r], grid) for r in runs])      # (runs, grid) log loss
    Linf = np.where(np.isnan(L), np.inf, L)
    env = Linf.min(axis=0)
    arg = Linf.argmin(axis=0)
    ok = np.isfinite(env)
    n_of = p.set_index("run_id")[points.n_col]
    run_n = np.array([float(n_of[r]) for r in runs])
    env_n = run_n[arg]
    if ok.sum() < 2:
        skipped = Skipped("Approach 1 (envelope)", "envelope has < 2 points")
        caveats.skip(skipped.what, lb, skipped.reason)
        return skipped
    fit = fit_power_law(grid[ok], np.exp(env[ok]))
    distinct_n = np.unique(env_n[ok])
    nfit = fit_power_law(grid[ok], env_n[ok]) if distinct_n.size >= 3 else None
    slopes = n_exp = None
    counts = points.counts
    if len(counts):   # a resample keeps the runs of its drawn units (duplicates do not change a minimum)
        unit_of = p.set_index("run_id")["unit_code"]
        keep = counts[:, np.array([unit_of[r] for r in runs])] > 0        # (R, runs)
        env_r = np.full((len(keep), len(grid)), np.inf)
        n_r = np.full((len(keep), len(grid)), np.nan)
        for k, w in enumerate(keep):
            if w.any():
                sub = Linf[w]
                env_r[k] = sub.min(axis=0)
                n_r[k] = run_n[w][sub.argmin(axis=0)]
        mask = np.isfinite(env_r)
        slopes = _masked_slopes(np.log(grid), np.where(mask, env_r, 0.0), mask)
        if nfit is not None:
            n_exp = _masked_slopes(np.log(grid), np.log(np.where(mask, n_r, 1.0)), mask)
    return Envelope(len(runs), grid, env, sorted({runs[i] for i in arg[ok]}), fit, nfit, int(distinct_n.size),
                    points.config.ci, slopes, n_exp)


# ---------------------------------------------------------------------------- Approach 2

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
    loss_fit: PowerLawFit | None = None  # loss at N* vs compute
    exponent_samples: np.ndarray | None = None
    ci: float = 0.95

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


def isoflops(points: FitPoints, curves: pd.DataFrame, caveats: Caveats) -> dict[str, Isoflop | Skipped]:
    return {lb: _isoflop(points, lb, curves, caveats) for lb in points.labels}


def _isoflop(points: FitPoints, lb: str, curves: pd.DataFrame, caveats: Caveats) -> Isoflop | Skipped:
    mode, groups = _budget_groups(points, lb, curves, caveats)
    if not groups:
        tagged = "budget" in points.runs and points.of(lb).runs["budget"].notna().any()
        skipped = Skipped("Approach 2 (isoFLOP)", "no compute budget with >= 3 distinct model sizes "
                          + ("in a budget-tagged group" if tagged else "covered by training curves"))
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
            for k in range(len(counts)):
                present = sw[k] > 0
                if present.sum() < 3:
                    continue
                fk = parabola_min(list(xs[present]), list(swl[k][present] / sw[k][present]))
                if fk is not None:
                    samples[k] = math.exp(fk[0])
        budgets.append(IsoflopBudget(comp, uniq.tolist(), mean_l.tolist(), None, float(math.exp(found[0])),
                                     float(found[1]), samples, ci))
    result = Isoflop(mode, budgets, ci=ci)
    interior = result.interior
    if len(interior) < 2:
        caveats.skip("Approach 2 exponent", lb, result.exponent_note)
        return result
    c = [b.compute for b in interior]
    fit = fit_power_law(c, [b.n_opt for b in interior])
    loss_fit = fit_power_law(c, [b.loss_opt for b in interior])
    exponents = None
    if len(counts):
        S = np.array([b.n_opt_samples for b in interior])   # (budgets, R)
        log_c = np.log(np.array(c))
        exponents = np.full(S.shape[1], np.nan)
        for k in range(S.shape[1]):
            m = np.isfinite(S[:, k])
            if m.sum() >= 2 and np.ptp(log_c[m]) > 0:
                exponents[k] = np.polyfit(log_c[m], np.log(S[m, k]), 1)[0]
    return Isoflop(mode, budgets, fit, loss_fit, exponents, ci)


def _budget_groups(points: FitPoints, lb: str, curves: pd.DataFrame,
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
    arrays = curve_arrays(curves[curves["run_id"].isin(p["run_id"])], flops_col)
    runs = p[p["run_id"].isin(list(arrays))]
    if runs[n_col].nunique() < 3:
        return "", groups
    mode = ("training curves: each run's loss at the budget by log-log interpolation between eval points (an "
            "intermediate point of a decaying LR schedule overstates the loss of a run trained to that budget)")
    cover = []   # budgets where >= 3 sizes have a curve point
    for _, r in runs.iterrows():
        f, _loss = arrays[r["run_id"]]
        cover.append((f[0], f[-1] * (1 + CURVE_TOL), r[n_col]))
    lo = min(c[0] for c in cover)
    hi = max(c[1] for c in cover)
    grid = np.geomspace(lo, hi / (1 + CURVE_TOL), 4 * A2_GRID)
    good = [c for c in grid if len({n for a, b_, n in cover if a <= c <= b_}) >= 3]
    if good:
        for c in np.geomspace(min(good), max(good), min(A2_GRID, len(good))):
            vals = np.array([log_interp(*arrays[r], np.array([c]))[0] for r in runs["run_id"]])
            keep = np.isfinite(vals)
            g = runs[keep]
            if g[n_col].nunique() >= 3:
                groups.append((float(c), g, vals[keep]))
    return mode, groups


# ---------------------------------------------------------------------------- curve helpers

def curve_arrays(curves: pd.DataFrame, flops_col: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """run_id -> (flops, val_loss) of its eval points, sorted, positive and finite only."""
    out = {}
    if curves.empty:
        return out
    c = curves[["run_id", flops_col, "val_loss"]].copy()
    c[flops_col] = pd.to_numeric(c[flops_col], errors="coerce")
    c["val_loss"] = pd.to_numeric(c["val_loss"], errors="coerce")
    c = c[(c[flops_col] > 0) & (c["val_loss"] > 0) & np.isfinite(c[flops_col]) & np.isfinite(c["val_loss"])]
    for run_id, g in c.groupby("run_id", sort=False):
        g = g.sort_values(flops_col).drop_duplicates(flops_col, keep="last")
        out[run_id] = (g[flops_col].to_numpy(float), g["val_loss"].to_numpy(float))
    return out


def log_interp(x_pts: np.ndarray, y_pts: np.ndarray, x: np.ndarray, tol: float = CURVE_TOL) -> np.ndarray:
    """log-log interpolation of y(x) at x inside [x_pts[0], x_pts[-1] (1 + tol)]; nan outside."""
    lx, ly = np.log(x_pts), np.log(y_pts)
    lq = np.log(np.asarray(x, dtype=float))
    out = np.interp(lq, lx, ly)
    inside = (lq >= lx[0] - 1e-12) & (lq <= lx[-1] + math.log1p(tol))
    return np.where(inside, out, np.nan)


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


def _masked_slopes(x: np.ndarray, Y: np.ndarray, M: np.ndarray) -> np.ndarray:
    """Least-squares slope of each row of Y against x over the row's mask (nan with < 2 points or no spread)."""
    m = M.astype(float)
    n = m.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        xm = (m @ x) / n
        ym = (m * Y).sum(axis=1) / n
        dx = x[None, :] - xm[:, None]
        sxx = (m * dx * dx).sum(axis=1)
        sxy = (m * dx * (Y - ym[:, None])).sum(axis=1)
        return np.where((n >= 2) & (sxx > 1e-12), sxy / sxx, np.nan)
