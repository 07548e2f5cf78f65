"""Chinchilla Approach 3: fit L(N, D) = E + A / N^alpha + B / D^beta.

Method (Hoffmann et al. 2022, refitted by Besiroglu et al. 2024): with a = log A,
b = log B, e = log E the model's log loss is

    LSE(a - alpha log N, b - beta log D, e)        (LSE = log-sum-exp)

and the parameters minimise a Huber loss (delta = 1e-3) between that and log L, by L-BFGS-B
from a grid of starts: alpha, beta in {0, 0.5, ..., 2}; e in {-1, -0.5, ..., 1}; a, b in
{0, 5, ..., 25} (4,500 starts). The global optimum is the best of those runs.

Speed: the objective and its analytic gradient are vectorised; the objective is first
evaluated at all grid starts at once (one array operation) and L-BFGS-B is run only from
the ``top_k`` best starts (default 256), then the best run is polished with tight
tolerances. ``top_k=None`` runs every start (what the reference code does); the
`ebt-scaling bench-fit --full` command checks that both reach the same optimum.

Two objectives:

* ``"huber"`` (default): sum of Huber(delta) of the log residuals, as in Hoffmann et al.
  and as Epoch's notebook writes it.
* ``"huber_nll"``: Epoch's published estimates (E = 1.817, A = 482.0, B = 2085.4,
  alpha = 0.3478, beta = 0.3659 on their Chinchilla data) come from the negative
  log-likelihood of a Huber distribution with a fitted scale sigma: sum Huber(r / sigma) +
  n log sigma. The fitted sigma (~5e-6 on Chinchilla) makes the effective threshold
  delta * sigma tiny, so this is close to a least-absolute-deviation fit. It is fitted
  from the ``"huber"`` optimum (scale and all five parameters jointly, L-BFGS-B).
  With plain ``"huber"`` the same data give E = 1.817, A = 477.8, B = 2143, alpha = 0.3473,
  beta = 0.3672: the Huber loss is nearly flat along the (B, beta) ridge.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from scipy.optimize import minimize

from .fits import blas_threads

__all__ = [
    "Approach3Fit",
    "default_grid",
    "fit_approach3",
    "approach3_objective",
    "predict_loss",
    "log_inputs",
    "fit_log_inputs",
]

Objective = Literal["huber", "huber_nll"]

# Grid of starts of the reference method (columns in PARAM_ORDER).
PARAM_ORDER = ("a", "b", "e", "alpha", "beta")
GRID_A = np.arange(0.0, 30.0, 5.0)      # log A: 0, 5, ..., 25
GRID_B = np.arange(0.0, 30.0, 5.0)      # log B: 0, 5, ..., 25
GRID_E = np.arange(-1.0, 1.5, 0.5)      # log E: -1, -0.5, ..., 1
GRID_ALPHA = np.arange(0.0, 2.5, 0.5)   # 0, 0.5, ..., 2
GRID_BETA = np.arange(0.0, 2.5, 0.5)

# L-BFGS-B options: screening runs, then a tight polish of the best one. The objective is
# scaled to O(1) (sum of Huber / delta ~ sum |r|), so ftol is a relative tolerance.
_SCREEN_OPTIONS = {"ftol": 1e-10, "gtol": 1e-8, "maxiter": 5000, "maxls": 40}
_POLISH_OPTIONS = {"ftol": 1e-15, "gtol": 1e-11, "maxiter": 20000, "maxls": 60}
# Runs whose final objective is within this relative distance of the best count as "at
# the optimum" (a diagnostic: how many starts found it).
_SAME_OPTIMUM_RTOL = 1e-7


def default_grid() -> np.ndarray:
    """The 4,500 starts of the reference method as rows (a, b, e, alpha, beta)."""
    a, b, e, alpha, beta = np.meshgrid(GRID_A, GRID_B, GRID_E, GRID_ALPHA, GRID_BETA, indexing="ij")
    return np.column_stack([a.ravel(), b.ravel(), e.ravel(), alpha.ravel(), beta.ravel()])


@dataclass(frozen=True)
class Approach3Fit:
    """A fitted L(N, D) = E + A / N^alpha + B / D^beta."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float
    objective: str = "huber"
    delta: float = 1e-3
    loss_value: float = math.nan     # minimised objective (huber: sum Huber / delta)
    scale: float | None = None       # fitted Huber scale sigma (objective "huber_nll")
    n_points: int = 0
    n_starts: int = 0                # grid starts screened
    n_optimized: int = 0             # L-BFGS-B runs
    n_at_optimum: int = 0            # of those, how many ended at the best objective
    converged: bool = True
    message: str = ""
    extra: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def theta(self) -> np.ndarray:
        """Parameters in optimiser space (log A, log B, log E, alpha, beta)."""
        return np.array([math.log(self.A), math.log(self.B), math.log(self.E), self.alpha, self.beta])

    @property
    def a_exponent(self) -> float:
        """Compute-optimal exponent a = beta / (alpha + beta): N_opt ∝ C^a (NaN when both are 0)."""
        total = self.alpha + self.beta
        return self.beta / total if total else math.nan

    def params(self) -> dict[str, float]:
        """{"E", "A", "B", "alpha", "beta"} as plain floats."""
        return {"E": self.E, "A": self.A, "B": self.B, "alpha": self.alpha, "beta": self.beta}

    def predict(self, N, D) -> np.ndarray:
        """Predicted loss at parameters N and tokens D (arrays broadcast)."""
        return predict_loss(self.theta, N, D)

    def compute_optimal(self, C, flops_per_param_token: float = 6.0) -> tuple[np.ndarray, np.ndarray]:
        """(N_opt, D_opt) minimising L under C = k N D (k = 6 by default)."""
        C = np.asarray(C, dtype=float)
        s = self.alpha + self.beta
        G = (self.alpha * self.A / (self.beta * self.B)) ** (1.0 / s)
        budget = C / flops_per_param_token
        return G * budget ** (self.beta / s), budget ** (self.alpha / s) / G


def predict_loss(theta, N, D) -> np.ndarray:
    """exp(LSE(a - alpha log N, b - beta log D, e)) for theta = (a, b, e, alpha, beta)."""
    a, b, e, alpha, beta = np.asarray(theta, dtype=float)
    lN = np.log(np.asarray(N, dtype=float))
    lD = np.log(np.asarray(D, dtype=float))
    return np.exp(np.logaddexp(np.logaddexp(a - alpha * lN, b - beta * lD), e))


# ---------------------------------------------------------------------------- objectives

def _lse_parts(theta, lN, lD):
    """Log-sum-exp prediction and the softmax weights of its three terms (for gradients)."""
    a, b, e, alpha, beta = theta
    x1 = a - alpha * lN
    x2 = b - beta * lD
    m = np.maximum(np.maximum(x1, x2), e)
    w1 = np.exp(x1 - m)
    w2 = np.exp(x2 - m)
    w3 = np.exp(e - m)
    s = w1 + w2 + w3
    return m + np.log(s), w1 / s, w2 / s, w3 / s


def _huber(r, delta):
    ar = np.abs(r)
    return np.where(ar <= delta, 0.5 * r * r, delta * (ar - 0.5 * delta))


def _grad_from_dr(dr, w1, w2, w3, lN, lD) -> np.ndarray:
    g1 = dr * w1
    g2 = dr * w2
    return np.array([g1.sum(), g2.sum(), (dr * w3).sum(), -(g1 @ lN), -(g2 @ lD)])


def approach3_objective(theta, lN, lD, lL, delta: float = 1e-3) -> tuple[float, np.ndarray]:
    """Sum of Huber(delta) of (prediction - log L), divided by delta, and its gradient.

    Dividing by delta keeps the value O(1) (about sum |r|) so that L-BFGS-B's relative
    tolerances mean the same thing on any data set; the minimiser is unchanged.
    """
    pred, w1, w2, w3 = _lse_parts(theta, lN, lD)
    r = pred - lL
    dr = np.clip(r, -delta, delta) / delta
    return float(_huber(r, delta).sum() / delta), _grad_from_dr(dr, w1, w2, w3, lN, lD)


def _huber_nll(theta6, lN, lD, lL, delta: float) -> tuple[float, np.ndarray]:
    """Mean negative log-likelihood of a Huber distribution with scale exp(t) (no constant)."""
    theta, t = theta6[:5], theta6[5]
    n = lL.size
    pred, w1, w2, w3 = _lse_parts(theta, lN, lD)
    sigma = math.exp(t)
    z = (pred - lL) / sigma
    hp = np.clip(z, -delta, delta)
    value = _huber(z, delta).sum() + n * t
    grad = np.empty(6)
    grad[:5] = _grad_from_dr(hp / sigma, w1, w2, w3, lN, lD)
    grad[5] = n - float(hp @ z)
    return float(value / n), grad / n


def _objective_batch(thetas: np.ndarray, lN, lD, lL, delta: float, chunk_elems: int = 2_000_000) -> np.ndarray:
    """approach3_objective at many starts (rows of thetas) at once, in memory-bounded chunks."""
    out = np.empty(len(thetas))
    step = max(1, chunk_elems // max(1, lL.size))
    for i in range(0, len(thetas), step):
        t = thetas[i:i + step]
        x1 = t[:, 0:1] - t[:, 3:4] * lN
        x2 = t[:, 1:2] - t[:, 4:5] * lD
        x3 = np.broadcast_to(t[:, 2:3], x1.shape)
        m = np.maximum(np.maximum(x1, x2), x3)
        pred = m + np.log(np.exp(x1 - m) + np.exp(x2 - m) + np.exp(x3 - m))
        out[i:i + step] = _huber(pred - lL, delta).sum(axis=1) / delta
    return out


# ---------------------------------------------------------------------------- fitting

def constant_inputs(N, D, L) -> list[str]:
    """Which of "N", "D", "L" hold one value in every point. Then no fit identifies the law:
    a constant L is fitted exactly by alpha = beta = 0 with any split into E, A and B; a
    constant N (D) makes E and A / N^alpha (B / D^beta) one number, so alpha (beta) is free."""
    return [name for name, v in (("N", N), ("D", D), ("L", L)) if np.ptp(np.asarray(v, dtype=float)) == 0]


def log_inputs(N, D, L):
    """The natural logs of N, D and L, checked: equal lengths, >= 5 points, finite and > 0,
    none constant (ValueError naming the problem otherwise)."""
    N, D, L = (np.asarray(v, dtype=float).ravel() for v in (N, D, L))
    if not (N.size == D.size == L.size):
        raise ValueError(f"N, D and L must have the same length (got {N.size}, {D.size}, {L.size})")
    if N.size < 5:
        raise ValueError(f"Approach 3 fits 5 parameters: need at least 5 points (got {N.size})")
    for name, v in (("N", N), ("D", D), ("L", L)):
        if not np.all(np.isfinite(v)) or np.any(v <= 0):
            raise ValueError(f"{name} must be finite and > 0")
    constant = constant_inputs(N, D, L)
    if constant:
        raise ValueError(f"{' and '.join(constant)}: one value in every point; Approach 3 needs N, D and L that vary")
    return np.log(N), np.log(D), np.log(L)


def fit_approach3(
    N,
    D,
    L,
    *,
    delta: float = 1e-3,
    objective: Objective = "huber",
    starts: np.ndarray | None = None,
    top_k: int | None = 256,
    analytic_gradient: bool = True,
    polish: bool = True,
) -> Approach3Fit:
    """Fit L(N, D) = E + A/N^alpha + B/D^beta (Chinchilla Approach 3).

    N: parameters, D: training tokens, L: losses (same length, all > 0).
    starts: rows (log A, log B, log E, alpha, beta); default the 4,500-start grid.
    top_k: run L-BFGS-B from the top_k starts with the lowest initial objective (all
    starts are evaluated, vectorised); None runs every start.
    analytic_gradient: False uses scipy's finite differences (the naive reference loop).
    polish: re-run the best result with tight tolerances.
    """
    if objective not in ("huber", "huber_nll"):
        raise ValueError(f"objective must be 'huber' or 'huber_nll', got {objective!r}")
    lN, lD, lL = log_inputs(N, D, L)
    with blas_threads(1):
        return fit_log_inputs(lN, lD, lL, delta=delta, objective=objective, starts=starts, top_k=top_k,
                         analytic_gradient=analytic_gradient, polish=polish)


def fit_log_inputs(lN, lD, lL, *, delta, objective, starts, top_k, analytic_gradient, polish) -> Approach3Fit:
    """fit_approach3 on validated log arrays (BLAS threads already limited by the caller)."""
    grid = default_grid() if starts is None else np.atleast_2d(np.asarray(starts, dtype=float))
    if grid.shape[1] != 5:
        raise ValueError("starts must have 5 columns (log A, log B, log E, alpha, beta)")

    fun = lambda th: approach3_objective(th, lN, lD, lL, delta)  # noqa: E731
    if not analytic_gradient:
        fun_plain = lambda th: approach3_objective(th, lN, lD, lL, delta)[0]  # noqa: E731

    if top_k is not None and top_k < len(grid):
        initial = _objective_batch(grid, lN, lD, lL, delta)
        initial = np.where(np.isfinite(initial), initial, np.inf)
        chosen = grid[np.argsort(initial, kind="stable")[:top_k]]
    else:
        chosen = grid

    finals = np.full(len(chosen), np.inf)
    best_x, best_f, best_res = None, np.inf, None
    for i, x0 in enumerate(chosen):
        if analytic_gradient:
            res = minimize(fun, x0, jac=True, method="L-BFGS-B", options=_SCREEN_OPTIONS)
        else:
            res = minimize(fun_plain, x0, method="L-BFGS-B")
        if np.isfinite(res.fun) and np.all(np.isfinite(res.x)):
            finals[i] = res.fun
            if res.fun < best_f:
                best_x, best_f, best_res = res.x, float(res.fun), res
    if best_x is None:
        raise RuntimeError("Approach 3: no start gave a finite objective")

    if polish:
        res = minimize(fun, best_x, jac=True, method="L-BFGS-B", options=_POLISH_OPTIONS)
        if np.isfinite(res.fun) and res.fun <= best_f:
            best_x, best_f, best_res = res.x, float(res.fun), res
    n_at = int(np.sum(finals <= best_f + _SAME_OPTIMUM_RTOL * max(1.0, abs(best_f))))
    converged = bool(best_res.success)
    message = str(best_res.message)
    scale = None
    extra = {"huber_theta": best_x.copy(), "huber_value": best_f}

    if objective == "huber_nll":
        # The likelihood's fitted scale makes the effective Huber threshold tiny (an L1 fit),
        # whose kinks stop L-BFGS-B early. Continuation: walk delta down from the Huber
        # optimum (each fit starting from the last), then fit the likelihood jointly.
        for k in range(1, 9):
            d_k = delta * 10.0 ** (-k / 2)
            fun_k = lambda th, d_k=d_k: approach3_objective(th, lN, lD, lL, d_k)  # noqa: E731
            res = minimize(fun_k, best_x, jac=True, method="L-BFGS-B", options=_POLISH_OPTIONS)
            if np.all(np.isfinite(res.x)):
                best_x = res.x
        pred = np.logaddexp(np.logaddexp(best_x[0] - best_x[3] * lN, best_x[1] - best_x[4] * lD), best_x[2])
        t0 = math.log(max(delta * float(np.mean(np.abs(pred - lL))), 1e-300))
        nll = lambda q: _huber_nll(q, lN, lD, lL, delta)  # noqa: E731
        res = minimize(nll, np.r_[best_x, t0], jac=True, method="L-BFGS-B", options=_POLISH_OPTIONS)
        if not np.all(np.isfinite(res.x)):
            raise RuntimeError("Approach 3 (huber_nll): the likelihood fit diverged")
        best_x, best_f, scale = res.x[:5], float(res.fun), float(math.exp(res.x[5]))
        converged, message = bool(res.success), str(res.message)

    a, b, e, alpha, beta = (float(v) for v in best_x)
    return Approach3Fit(
        E=math.exp(e), A=math.exp(a), B=math.exp(b), alpha=alpha, beta=beta,
        objective=objective, delta=delta, loss_value=best_f, scale=scale,
        n_points=int(lL.size), n_starts=int(len(grid)), n_optimized=int(len(chosen)),
        n_at_optimum=n_at, converged=converged, message=message, extra=extra,
    )
