"""Bootstrap percentile intervals for scaling-law fits.

* paired_bootstrap: generic. Resamples matched units (e.g. a (size, tokens) pair trained
  with both architectures, all its seeds inside) with replacement, jointly for both
  architectures, refits a user function on each resample and reports percentile intervals
  for everything it returns (and for derived quantities).
* paired_power_law_bootstrap: the same resampling for per-axis power laws of two
  architectures, vectorised: a resample is a row of unit counts, and all resamples' slopes
  come from one closed-form weighted least-squares matrix product.
* bootstrap_approach3: plain bootstrap over rows for Chinchilla Approach 3.

All three draw unit indices the same way (numpy Generator(seed).integers(0, n_units,
(n_resamples, n_units))), so the generic and the vectorised paired bootstrap give
identical resamples for the same seed and unit order.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from .approach3 import Approach3Fit, _as_logs, _fit_logs, blas_threads, default_grid
from .fits import (
    DEFAULT_BUDGET,
    DEFAULT_C_MIN,
    power_law_crossover_compute,
    scaling_rate_advantage,
    weighted_loglog_fits,
)

__all__ = [
    "BootstrapResult",
    "percentile_interval",
    "draw_units",
    "unit_counts",
    "paired_bootstrap",
    "paired_power_law_bootstrap",
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
    extra: dict = field(default_factory=dict)

    @property
    def intervals(self) -> dict[str, tuple[float, float]]:
        """{name: (lo, hi)} percentile intervals at level ci."""
        return {k: percentile_interval(v, self.ci) for k, v in self.samples.items()}

    def interval(self, name: str) -> tuple[float, float]:
        return percentile_interval(self.samples[name], self.ci)

    def to_dict(self) -> dict:
        """JSON-ready summary (no raw samples)."""
        return {
            "estimate": {k: float(v) for k, v in self.estimate.items()},
            "intervals": {k: [lo, hi] for k, (lo, hi) in self.intervals.items()},
            "ci": self.ci,
            "n_resamples": self.n_resamples,
            "n_failed": self.n_failed,
            "seed": self.seed,
            **({"extra": self.extra} if self.extra else {}),
        }


def draw_units(rng: np.random.Generator, n_units: int, n_resamples: int) -> np.ndarray:
    """(n_resamples, n_units) unit indices drawn with replacement."""
    return rng.integers(0, n_units, size=(n_resamples, n_units))


def unit_counts(idx: np.ndarray, n_units: int) -> np.ndarray:
    """Per-resample counts of each unit: (R, n_units)."""
    R = idx.shape[0]
    flat = (idx + n_units * np.arange(R)[:, None]).ravel()
    return np.bincount(flat, minlength=R * n_units).reshape(R, n_units).astype(float)


def _with_derived(values: Mapping[str, float], derived) -> dict[str, float]:
    out = {k: float(v) for k, v in values.items()}
    if derived is not None:
        out.update({k: float(v) for k, v in derived(out).items()})
    return out


def paired_bootstrap(
    data: pd.DataFrame,
    units: str | Sequence[str],
    fit: Callable[[pd.DataFrame], Mapping[str, float]],
    *,
    n_resamples: int = 1000,
    seed: int | None = 0,
    ci: float = 0.95,
    derived: Callable[[Mapping[str, float]], Mapping[str, float]] | None = None,
) -> BootstrapResult:
    """Paired (cluster) bootstrap over matched units.

    data: one row per run (both architectures, all seeds). units: the column(s) naming the
    matched unit; all rows of a drawn unit enter the resample together (so both
    architectures and every seed of a pair move jointly), a unit drawn twice appears twice.
    fit(frame) -> {name: value} is refitted on every resample; derived(values) -> {name:
    value} adds quantities computed from them (e.g. slope difference and ratio).
    A resample whose fit raises or returns non-finite values counts in n_failed (its
    samples are nan and ignored by the intervals).
    """
    cols = [units] if isinstance(units, str) else list(units)
    missing = [c for c in cols if c not in data.columns]
    if missing:
        raise KeyError(f"unit column(s) {missing} not in data (columns: {list(data.columns)})")
    keys = data[cols[0]] if len(cols) == 1 else pd.MultiIndex.from_frame(data[cols])
    codes, uniques = pd.factorize(keys)
    n_units = len(uniques)
    if n_units < 2:
        raise ValueError("a paired bootstrap needs at least 2 units")
    unit_rows = [np.nonzero(codes == u)[0] for u in range(n_units)]

    estimate = _with_derived(fit(data), derived)
    names = list(estimate)
    samples = {k: np.full(n_resamples, np.nan) for k in names}
    idx = draw_units(np.random.default_rng(seed), n_units, n_resamples)
    n_failed = 0
    for r in range(n_resamples):
        rows = np.concatenate([unit_rows[u] for u in idx[r]])
        try:
            values = _with_derived(fit(data.iloc[rows].reset_index(drop=True)), derived)
        except Exception:  # a degenerate resample (e.g. one size only) must not end the run
            n_failed += 1
            continue
        if not all(np.isfinite(values.get(k, np.nan)) for k in names):
            n_failed += 1
        for k in names:
            samples[k][r] = values.get(k, np.nan)
    return BootstrapResult(estimate, samples, ci, n_resamples, seed, n_failed)


def paired_power_law_bootstrap(
    x_ref, loss_ref, units_ref,
    x_cand, loss_cand, units_cand,
    *,
    labels: Sequence[str] = ("tpp", "ebt"),
    n_resamples: int = 1000,
    seed: int | None = 0,
    ci: float = 0.95,
    c_min: float = DEFAULT_C_MIN,
    budget: float = DEFAULT_BUDGET,
) -> BootstrapResult:
    """Vectorised paired bootstrap of per-axis power laws log L = a + b log X of two
    architectures (reference, e.g. Transformer++, and candidate, e.g. EBT).

    units_*: the matched-unit id of each run (same ids across the two architectures; seeds
    of a unit share its id). Units are resampled jointly; each resample's fits are
    weighted least squares with the unit counts as weights (identical to refitting on the
    resample with repeated rows).

    Quantities: slope_<r>, intercept_<r>, slope_<c>, intercept_<c>, slope_diff (b_c - b_r),
    slope_ratio (b_c / b_r), advantage (ratio - 1, see fits.scaling_rate_advantage) and
    crossover (compute where the two lines meet if in (c_min, budget], else +inf; the
    fraction of resamples with a crossing is extra["crossover_fraction"]).
    """
    r_name, c_name = labels
    lx_r, ly_r = np.log(np.asarray(x_ref, dtype=float)), np.log(np.asarray(loss_ref, dtype=float))
    lx_c, ly_c = np.log(np.asarray(x_cand, dtype=float)), np.log(np.asarray(loss_cand, dtype=float))
    for name, arr in (("x_ref/loss_ref", np.r_[lx_r, ly_r]), ("x_cand/loss_cand", np.r_[lx_c, ly_c])):
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} must be finite and > 0")
    u_r, u_c = np.asarray(units_ref, dtype=object), np.asarray(units_cand, dtype=object)
    if not (lx_r.size == ly_r.size == u_r.size and lx_c.size == ly_c.size == u_c.size):
        raise ValueError("x, loss and units must have the same length for each architecture")
    codes, uniques = pd.factorize(pd.Series(np.concatenate([u_r, u_c]), dtype=object))
    n_units = len(uniques)
    code_r, code_c = codes[: u_r.size], codes[u_r.size:]

    def quantities(w_r, w_c) -> dict[str, np.ndarray]:
        b_r, a_r = weighted_loglog_fits(lx_r, ly_r, w_r)
        b_c, a_c = weighted_loglog_fits(lx_c, ly_c, w_c)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = b_c / b_r
        return {
            f"slope_{r_name}": b_r, f"intercept_{r_name}": a_r,
            f"slope_{c_name}": b_c, f"intercept_{c_name}": a_c,
            "slope_diff": b_c - b_r, "slope_ratio": ratio,
            "advantage": scaling_rate_advantage(b_c, b_r),
            "crossover": power_law_crossover_compute(a_r, b_r, a_c, b_c, c_min=c_min, budget=budget),
        }

    point = quantities(np.ones((1, lx_r.size)), np.ones((1, lx_c.size)))
    estimate = {k: float(np.asarray(v).ravel()[0]) for k, v in point.items()}
    counts = unit_counts(draw_units(np.random.default_rng(seed), n_units, n_resamples), n_units)
    samples = quantities(counts[:, code_r], counts[:, code_c])
    samples = {k: np.asarray(v, dtype=float).ravel() for k, v in samples.items()}
    bad = ~np.isfinite(samples[f"slope_{r_name}"]) | ~np.isfinite(samples[f"slope_{c_name}"])
    extra = {"crossover_fraction": float(np.mean(np.isfinite(samples["crossover"]))),
             "c_min": c_min, "budget": budget, "n_units": n_units}
    return BootstrapResult(estimate, samples, ci, n_resamples, seed, int(bad.sum()), extra)


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
    lN, lD, lL = _as_logs(N, D, L)
    n = lL.size
    with blas_threads(1):
        if point is None:
            point = _fit_logs(lN, lD, lL, delta=delta, objective=objective, starts=None, top_k=256,
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
                fit = _fit_logs(lN[i], lD[i], lL[i], delta=delta, objective=objective, starts=starts,
                                top_k=(top_k + 1) if top_k > 0 else None, analytic_gradient=True, polish=False)
            except (RuntimeError, FloatingPointError, ValueError):
                n_failed += 1
                continue
            values = {**fit.params(), "a": fit.a_exponent}
            for k in names:
                samples[k][r] = values[k]
    return BootstrapResult(estimate, samples, ci, n_resamples, seed, n_failed)
