"""Bootstrap percentile intervals for scaling-law fits.

* The paired bootstrap of the analysis: matched units (a sweep point, every architecture
  and seed of it inside) drawn with replacement (draw_units), as a row of unit counts per
  resample (unit_counts). analysis/points.py draws once per analysis, and every label's
  fits are refitted on that one draw (laws/power.py in closed form: a row of counts is the
  weights of a least-squares fit; the other laws by refitting the repeated rows).
* bootstrap_approach3: plain bootstrap over rows for Chinchilla Approach 3.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .approach3 import Approach3Fit, default_grid, fit_log_inputs, log_inputs
from .fits import blas_threads

__all__ = [
    "BootstrapResult",
    "percentile_interval",
    "draw_units",
    "unit_counts",
    "bootstrap_approach3",
]


def percentile_interval(samples, ci: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the finite-or-infinite samples (nan ignored).

    With infinite samples (e.g. "no crossover below the budget" recorded as +inf) the
    quantiles are taken without interpolation, so an end can be inf.
    """
    x = np.asarray(samples, dtype=float).ravel()
    x = x[~np.isnan(x)]
    if x.size == 0:
        return (math.nan, math.nan)
    q = [(1 - ci) / 2, (1 + ci) / 2]
    method = "linear" if np.all(np.isfinite(x)) else "inverted_cdf"
    lo, hi = np.quantile(x, q, method=method)
    return (float(lo), float(hi))


@dataclass
class BootstrapResult:
    """Point estimates, bootstrap samples and percentile intervals of named quantities."""

    estimate: dict[str, float]
    samples: dict[str, np.ndarray]
    ci: float
    n_resamples: int
    seed: int | None
    n_failed: int = 0

    @property
    def intervals(self) -> dict[str, tuple[float, float]]:
        """{name: (lo, hi)} percentile intervals at level ci."""
        return {k: percentile_interval(v, self.ci) for k, v in self.samples.items()}

    def interval(self, name: str) -> tuple[float, float]:
        return percentile_interval(self.samples[name], self.ci)


def draw_units(rng: np.random.Generator, n_units: int, n_resamples: int) -> np.ndarray:
    """(n_resamples, n_units) unit indices drawn with replacement."""
    return rng.integers(0, n_units, size=(n_resamples, n_units))


def unit_counts(idx: np.ndarray, n_units: int) -> np.ndarray:
    """Per-resample counts of each unit: (R, n_units)."""
    R = idx.shape[0]
    flat = (idx + n_units * np.arange(R)[:, None]).ravel()
    return np.bincount(flat, minlength=R * n_units).reshape(R, n_units).astype(float)


def bootstrap_approach3(
    N, D, L,
    *,
    n_resamples: int = 1000,
    seed: int | None = 0,
    ci: float = 0.95,
    point: Approach3Fit | None = None,
    delta: float = 1e-3,
    objective: str = "huber",
    top_k: int = 0,
) -> BootstrapResult:
    """Plain bootstrap over rows for Chinchilla Approach 3.

    Each resample is refitted by L-BFGS-B from the full-data optimum `point` (fitted here
    with the full grid if not given); top_k > 0 also screens the 4,500-start grid and adds
    its top_k starts (slower, guards against resamples whose optimum moved basin).
    Quantities: E, A, B, alpha, beta and a = beta / (alpha + beta) (N_opt ∝ C^a).
    """
    lN, lD, lL = log_inputs(N, D, L)
    n = lL.size
    with blas_threads(1):
        if point is None:
            point = fit_log_inputs(lN, lD, lL, delta=delta, objective=objective, starts=None, top_k=256,
                                   analytic_gradient=True, polish=True)
        names = ["E", "A", "B", "alpha", "beta", "a"]
        estimate = {**point.params(), "a": point.a_exponent}
        samples = {k: np.full(n_resamples, np.nan) for k in names}
        rows = np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))
        if top_k > 0:
            starts = np.vstack([point.theta, default_grid()])
        else:
            starts = point.theta[None, :]
        n_failed = 0
        for r in range(n_resamples):
            i = rows[r]
            try:
                # No tight polish per resample: the screening tolerance (relative 1e-10 on the
                # objective) is far below the bootstrap spread.
                fit = fit_log_inputs(lN[i], lD[i], lL[i], delta=delta, objective=objective, starts=starts,
                                     top_k=(top_k + 1) if top_k > 0 else None, analytic_gradient=True, polish=False)
            except (RuntimeError, FloatingPointError, ValueError):
                n_failed += 1
                continue
            values = {**fit.params(), "a": fit.a_exponent}
            for k in names:
                samples[k][r] = values[k]
    return BootstrapResult(estimate, samples, ci, n_resamples, seed, n_failed)
