"""Scaling-law fits: per-axis power laws, the saturating law, and comparisons of two curves.

* Per-axis power law (what the EBT paper's "scaling rate" compares):
  log L = a + b log X by least squares -> PowerLawFit(slope=b, intercept=a, r2).
* Saturating law: L(C) = E + A C^(-alpha) with 0 <= E < min L, fitted in log space.
* Two fitted curves (reference = Transformer++, candidate = EBT): the FLOP multiplier the
  candidate needs to reach the reference's loss, and the compute where the curves cross.

Chinchilla Approach 3 lives in approach3.py and the bootstraps in bootstrap.py; every fit and
bootstrap runs under ``blas_threads`` (here). All logarithms are natural.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass
from typing import Iterator, Protocol, Sequence

import numpy as np
from scipy.optimize import brentq, least_squares
from threadpoolctl import threadpool_limits

__all__ = [
    "PowerLawFit",
    "fit_power_law",
    "weighted_loglog_fits",
    "scaling_rate_advantage",
    "SaturatingFit",
    "fit_saturating",
    "Crossover",
    "find_crossover",
    "power_law_crossover_compute",
    "flop_multiplier",
]

DEFAULT_C_MIN = 1e15     # smallest compute searched for a crossover (pass your sweep's minimum)
DEFAULT_BUDGET = 1e27    # largest compute searched


class Curve(Protocol):
    """A fitted loss-vs-compute curve (PowerLawFit and SaturatingFit are ones)."""

    def log_predict(self, x) -> np.ndarray: ...
    def predict(self, x) -> np.ndarray: ...
    def inverse(self, loss) -> np.ndarray: ...


def _positive(name: str, values) -> np.ndarray:
    arr = np.asarray(values, dtype=float).ravel()
    if arr.size == 0 or not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError(f"{name} must be a non-empty array of finite values > 0")
    return arr


# ---------------------------------------------------------------------------- BLAS threads

@contextlib.contextmanager
def blas_threads(n: int = 1) -> Iterator[None]:
    """Limit every BLAS library loaded in this process to n threads inside the block
    (threadpoolctl finds them, e.g. the OpenBLAS that numpy and scipy each bundle; restored after).

    scipy's L-BFGS-B calls BLAS on 5-element vectors; with OpenBLAS's thread pool on a busy
    machine each call costs ~1 ms instead of ~5 us (measured: 28x slower fits on 2 shared
    cores). Every fit and bootstrap here runs single-threaded BLAS.
    """
    with threadpool_limits(limits=n, user_api="blas"):
        yield


# ---------------------------------------------------------------------------- power law

@dataclass(frozen=True)
class PowerLawFit:
    """log L = intercept + slope * log X (L = exp(intercept) * X^slope)."""

    slope: float
    intercept: float
    r2: float
    n: int

    @property
    def prefactor(self) -> float:
        """exp(intercept): L = prefactor * X^slope."""
        return math.exp(self.intercept)

    def log_predict(self, x) -> np.ndarray:
        return self.intercept + self.slope * np.log(np.asarray(x, dtype=float))

    def predict(self, x) -> np.ndarray:
        return np.exp(self.log_predict(x))

    def inverse(self, loss) -> np.ndarray:
        """X at which the fitted curve reaches `loss` (nan if the slope is 0)."""
        log_l = np.log(np.asarray(loss, dtype=float))
        if self.slope == 0:
            return np.full(np.shape(log_l), np.nan)
        with np.errstate(over="ignore"):
            return np.exp((log_l - self.intercept) / self.slope)

    def to_dict(self) -> dict:
        return asdict(self)


def fit_power_law(x, loss) -> PowerLawFit:
    """Least-squares fit of log L = a + b log X; returns slope b, intercept a and R^2 (of log L)."""
    lx = np.log(_positive("x", x))
    ly = np.log(_positive("loss", loss))
    if lx.size != ly.size:
        raise ValueError(f"x and loss must have the same length (got {lx.size}, {ly.size})")
    if lx.size < 2 or np.ptp(lx) == 0:
        raise ValueError("a power law needs at least two distinct x values")
    xm, ym = lx.mean(), ly.mean()
    dx, dy = lx - xm, ly - ym
    slope = float(dx @ dy / (dx @ dx))
    intercept = float(ym - slope * xm)
    ss_tot = float(dy @ dy)
    resid = dy - slope * dx
    r2 = 1.0 - float(resid @ resid) / ss_tot if ss_tot > 0 else 1.0
    return PowerLawFit(slope=slope, intercept=intercept, r2=r2, n=int(lx.size))


def weighted_loglog_fits(log_x, log_y, weights) -> tuple[np.ndarray, np.ndarray]:
    """Closed-form weighted least squares of log_y on log_x for many weight vectors at once.

    weights: (R, n) non-negative (e.g. bootstrap counts: a row of counts is the same fit as
    the resample with rows repeated). Returns (slopes, intercepts), each of shape (R,);
    nan where a row has fewer than two distinct x values.
    """
    lx = np.asarray(log_x, dtype=float).ravel()
    ly = np.asarray(log_y, dtype=float).ravel()
    W = np.atleast_2d(np.asarray(weights, dtype=float))
    x0, y0 = lx.mean(), ly.mean()   # centre first: keeps the sums well conditioned
    u, v = lx - x0, ly - y0
    cols = np.column_stack([np.ones_like(u), u, v, u * u, u * v])
    s_w, s_u, s_v, s_uu, s_uv = (W @ cols).T
    with np.errstate(invalid="ignore", divide="ignore"):
        var = s_uu - s_u * s_u / s_w
        cov = s_uv - s_u * s_v / s_w
        slopes = np.where(var > 1e-12 * np.maximum(s_uu, 1e-300), cov / var, np.nan)
        intercepts = y0 + s_v / s_w - slopes * (x0 + s_u / s_w)
    return slopes, intercepts


def scaling_rate_advantage(slope_candidate, slope_reference):
    """b_EBT / b_T++ - 1 (the EBT paper's scaling-rate comparison).

    Both slopes are negative for falling losses; a steeper (more negative) candidate slope
    gives a ratio above 1, so the advantage is positive when the candidate (EBT) scales
    faster, 0 when equal, negative when slower. Meaningful only when both slopes are
    negative; nan/inf when the reference slope is 0. Works on arrays.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.asarray(slope_candidate, dtype=float) / np.asarray(slope_reference, dtype=float) - 1.0
    return float(out) if out.ndim == 0 else out


# ---------------------------------------------------------------------------- saturating law

@dataclass(frozen=True)
class SaturatingFit:
    """L(C) = E + A * C^(-alpha), E in [0, min L)."""

    E: float
    log_A: float
    alpha: float
    rmse_log: float      # root mean square of log residuals
    n: int
    e_at_zero: bool      # E hit its lower bound (the data show no curvature: a pure power law)

    @property
    def A(self) -> float:
        return math.exp(self.log_A)

    def log_predict(self, c) -> np.ndarray:
        lc = np.log(np.asarray(c, dtype=float))
        log_e = math.log(self.E) if self.E > 0 else -np.inf
        return np.logaddexp(log_e, self.log_A - self.alpha * lc)

    def predict(self, c) -> np.ndarray:
        return np.exp(self.log_predict(c))

    def inverse(self, loss) -> np.ndarray:
        """Compute at which the curve reaches `loss`; inf where loss <= E (never reached)."""
        loss = np.asarray(loss, dtype=float)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            excess = np.log(loss - self.E)
            out = np.exp((self.log_A - excess) / self.alpha)
        return np.where(loss > self.E, out, np.inf)

    def to_dict(self) -> dict:
        return {"E": self.E, "A": self.A, "log_A": self.log_A, "alpha": self.alpha,
                "rmse_log": self.rmse_log, "n": self.n, "e_at_zero": self.e_at_zero}


def fit_saturating(compute, loss, *, robust_loss: str = "linear") -> SaturatingFit:
    """Fit L(C) = E + A C^(-alpha) by least squares on log L, with 0 <= E < min L.

    Profile first: for E on a grid in [0, min L), log(L - E) is linear in log C (closed
    form), and the E whose implied curve best fits log L starts a bounded least_squares
    polish of (E, log A, alpha). robust_loss is passed to scipy's least_squares ("linear",
    "soft_l1", "huber", ...) to down-weight outliers.
    """
    c = _positive("compute", compute)
    L = _positive("loss", loss)
    if c.size != L.size:
        raise ValueError(f"compute and loss must have the same length (got {c.size}, {L.size})")
    if c.size < 3 or np.unique(c).size < 3:
        raise ValueError("the saturating law has 3 parameters: need at least 3 distinct compute values")
    x = np.log(c)
    x_ref = float(x.mean())
    u = x - x_ref
    y = np.log(L)
    l_min = float(L.min())
    e_hi = l_min * (1.0 - 1e-9)

    def predict_log(E, c0, alpha):
        log_e = math.log(E) if E > 0 else -np.inf
        return np.logaddexp(log_e, c0 - alpha * u)

    best = None
    for E in l_min * (1.0 - np.geomspace(1.0, 1e-6, 97)):
        z = np.log(L - E)
        du = u - u.mean()
        slope = float(du @ (z - z.mean()) / (du @ du))
        c0 = float(z.mean())
        sse = float(np.sum((predict_log(E, c0, -slope) - y) ** 2))
        if np.isfinite(sse) and (best is None or sse < best[0]):
            best = (sse, E, c0, -slope)
    _, E0, c00, alpha0 = best

    def resid(p):
        return predict_log(*p) - y

    def jac(p):
        E, c0, alpha = p
        pred = predict_log(E, c0, alpha)
        t = np.exp(c0 - alpha * u - pred)
        return np.column_stack([np.exp(-pred), t, -u * t])

    x0 = np.array([min(max(E0, 0.0), e_hi * (1 - 1e-12)), c00, alpha0])
    res = least_squares(resid, x0, jac=jac, bounds=([0.0, -np.inf, -np.inf], [e_hi, np.inf, np.inf]),
                        loss=robust_loss, x_scale="jac", xtol=1e-14, ftol=1e-14, gtol=1e-14, max_nfev=5000)
    E, c0, alpha = (float(v) for v in res.x)
    rmse = float(np.sqrt(np.mean(resid(res.x) ** 2)))
    return SaturatingFit(E=E, log_A=c0 + alpha * x_ref, alpha=alpha, rmse_log=rmse, n=int(c.size),
                         e_at_zero=bool(E <= 1e-6 * l_min))


# ---------------------------------------------------------------------------- comparisons

def flop_multiplier(reference: Curve, candidate: Curve, compute) -> np.ndarray:
    """C_candidate / C: the compute the candidate (EBT) needs to reach the loss the reference
    (Transformer++) reaches with compute C, divided by C.

    > 1: the candidate needs more FLOPs; < 1: fewer. inf where the candidate never reaches
    that loss (saturating candidate with E above it).
    """
    c = np.asarray(compute, dtype=float)
    return candidate.inverse(reference.predict(c)) / c


@dataclass(frozen=True)
class Crossover:
    """Where two fitted loss curves meet within [c_min, budget].

    status: "crossover" (compute set: the first crossing above c_min), "none_below_budget"
    (the curves do not meet in the range), or "parallel" (constant gap in log loss, never
    meet). better_below / better_above: label of the lower-loss curve at c_min and at the
    budget (None when the curves coincide). gap_trend at the budget: "narrowing",
    "widening" or "constant". meets_at: for two power laws, where the lines meet even
    outside the range (None if parallel).
    """

    status: str
    compute: float | None
    loss: float | None
    c_min: float
    budget: float
    better_below: str | None
    better_above: str | None
    crossings: tuple[float, ...]
    gap_trend: str
    meets_at: float | None
    message: str

    @property
    def compute_or_inf(self) -> float:
        """The crossing compute, or +inf when there is none in the range (a bootstrap-ready
        number: percentile_interval then reports an infinite upper end)."""
        return self.compute if self.compute is not None else math.inf

    def to_dict(self) -> dict:
        d = asdict(self)
        d["crossings"] = list(self.crossings)
        return d


def _better(gap: float, labels: Sequence[str], tol: float = 1e-12) -> str | None:
    """gap = log L_candidate - log L_reference; the lower-loss curve's label."""
    if abs(gap) <= tol:
        return None
    return labels[1] if gap < 0 else labels[0]


def power_law_crossover_compute(intercept_ref, slope_ref, intercept_cand, slope_cand, *,
                                c_min: float = DEFAULT_C_MIN, budget: float = DEFAULT_BUDGET) -> np.ndarray:
    """Vectorised: compute where two power laws meet if in (c_min, budget], else +inf (no
    crossing in the range; this includes parallel lines and lines that met below c_min)."""
    da = np.asarray(intercept_ref, dtype=float) - np.asarray(intercept_cand, dtype=float)
    db = np.asarray(slope_cand, dtype=float) - np.asarray(slope_ref, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        log_c = da / db
        inside = (log_c > math.log(c_min)) & (log_c <= math.log(budget)) & np.isfinite(log_c)
        return np.where(inside, np.exp(np.where(inside, log_c, 0.0)), np.inf)


def find_crossover(reference: Curve, candidate: Curve, *, c_min: float = DEFAULT_C_MIN,
                   budget: float = DEFAULT_BUDGET, labels: Sequence[str] = ("Transformer++", "EBT"),
                   n_grid: int = 2049) -> Crossover:
    """Compute where the candidate's fitted curve meets the reference's, in (c_min, budget].

    Two PowerLawFits are solved in closed form; other curves (e.g. SaturatingFit) by a
    log-spaced scan of the log-loss gap with brentq on each sign change. Pass the smallest
    compute of your sweep as c_min: crossings below it are extrapolation.
    """
    if not (0 < c_min < budget):
        raise ValueError(f"need 0 < c_min < budget (got {c_min:g}, {budget:g})")
    ref_name, cand_name = labels
    lo, hi = math.log(c_min), math.log(budget)

    def gap(log_c: float) -> float:
        c = math.exp(log_c)
        return float(candidate.log_predict(c) - reference.log_predict(c))

    meets_at = None
    if isinstance(reference, PowerLawFit) and isinstance(candidate, PowerLawFit):
        db = candidate.slope - reference.slope
        scale = max(abs(candidate.slope), abs(reference.slope), 1e-300)
        if abs(db) <= 1e-12 * scale:
            crossings: list[float] = []
            trend = "constant"
        else:
            log_star = (reference.intercept - candidate.intercept) / db
            meets_at = math.exp(log_star) if log_star < 700 else math.inf
            crossings = [meets_at] if lo < log_star <= hi else []
            g_hi = gap(hi)
            trend = "widening" if g_hi * db > 0 else "narrowing"
    else:
        grid = np.linspace(lo, hi, n_grid)
        g = candidate.log_predict(np.exp(grid)) - reference.log_predict(np.exp(grid))
        if np.ptp(g) <= 1e-12:
            crossings, trend = [], "constant"
        else:
            crossings = []
            s = np.sign(g)
            for i in np.nonzero(s[:-1] * s[1:] < 0)[0]:
                crossings.append(math.exp(brentq(gap, grid[i], grid[i + 1], xtol=1e-12, rtol=1e-14)))
            for i in np.nonzero(s == 0)[0]:
                if 0 < i < len(grid) - 1 and s[i - 1] * s[i + 1] < 0:
                    crossings.append(math.exp(grid[i]))
            crossings.sort()
            slope_end = g[-1] - g[-2]
            trend = "constant" if abs(slope_end) < 1e-15 else ("widening" if g[-1] * slope_end > 0 else "narrowing")

    g_lo, g_hi = gap(lo), gap(hi)
    below, above = _better(g_lo, labels), _better(g_hi, labels)
    rng = f"[{c_min:.3g}, {budget:.3g}] FLOPs"
    if trend == "constant" and not crossings:
        if below is None:
            msg = f"the curves coincide over {rng}"
        else:
            msg = (f"parallel: {below} is lower by a constant {abs(math.expm1(g_lo)) * 100:.3g}% over {rng}; "
                   "the curves never meet")
        return Crossover("parallel", None, None, c_min, budget, below, above, (), "constant", None, msg)
    if crossings:
        c_star = crossings[0]
        l_star = float(reference.predict(c_star))
        after = ref_name if below == cand_name else cand_name   # lower just above the first crossing
        msg = (f"{cand_name} and {ref_name} cross at {c_star:.3g} FLOPs (loss {l_star:.4g}); "
               f"{below} is lower below it, {after} above")
        if len(crossings) > 1:
            msg += f" ({len(crossings)} crossings in {rng}; {above} is lower at {budget:.3g})"
        return Crossover("crossover", c_star, l_star, c_min, budget, below, above, tuple(crossings), trend,
                         meets_at, msg)
    msg = f"no crossover in {rng}: {above} is lower throughout; the gap is {trend} at {budget:.3g}"
    if meets_at is not None:
        where = "beyond the budget" if meets_at > budget else "below c_min"
        msg += f" (the power laws meet at {meets_at:.3g} FLOPs, {where})"
    return Crossover("none_below_budget", None, None, c_min, budget, below, above, (), trend, meets_at, msg)
