"""Chinchilla Approach 1 of each label: the lower envelope of its training curves (loss
against FLOPs) on a log-spaced compute grid, a power law of the envelope, and one of the
model size on it (N_opt ∝ C^a, with >= 3 sizes on the envelope). Bootstrapped on the
shared draw of matched units: a resample keeps the runs of its drawn units.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .bootstrap import percentile_interval
from .caveats import Caveats
from .curves import curve_arrays, log_interp
from .fits import PowerLawFit, fit_power_law
from .laws.law import Skipped
from .points import FitPoints

A1_GRID = 48


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
