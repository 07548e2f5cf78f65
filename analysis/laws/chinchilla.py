"""Chinchilla's L(N, D) = E + A/N^alpha + B/D^beta of each label's final losses, fitted by
Approach 3 (approach3.fit_approach3) in the job pool, with a bootstrap over the label's
runs refitted from the full-data optimum (bootstrap.bootstrap_approach3).

Its curve is the compute-optimal frontier L*(C) = min of L(N, D) over N D = C / 6. That
compute is 6 N D, not the sweep's FLOP convention (EBT spends several times 6 N per
token), so labels are not compared on it.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from ebt_scaling.harness.contract.formatting import fmt_estimate

from ..approach3 import Approach3Fit, constant_inputs, fit_approach3
from ..bootstrap import BootstrapResult, bootstrap_approach3
from ..fits import blas_threads
from .law import FitLaw, Fitting, Job, LabelPoints, Skipped

MIN_POINTS = 8
MIN_DISTINCT = 3
MIN_SPREAD = math.log(2.0)     # log D must vary by a factor >= 2 beyond what log N explains
FLOPS_PER_PARAM_TOKEN = 6.0    # the frontier's compute C = 6 N D
BOOTSTRAP = "rows of this label resampled (bootstrap.bootstrap_approach3)"


def _fit_and_bootstrap(N, D, L, n_boot: int, seed: int, ci: float) -> tuple[Approach3Fit, BootstrapResult | None]:
    with blas_threads(1), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        fit = fit_approach3(N, D, L)
        boot = bootstrap_approach3(N, D, L, n_resamples=n_boot, seed=seed, ci=ci, point=fit) if n_boot else None
    return fit, boot


@dataclass(frozen=True)
class Approach3Result:
    """A fitted L(N, D) with its bootstrap; as a Curve, its compute-optimal frontier
    L*(C) = E + K (C / 6)^(-gamma), gamma = alpha beta / (alpha + beta)."""

    fit: Approach3Fit
    boot: BootstrapResult | None

    samples = ()
    warnings = ()
    skips = ()

    @property
    def curve(self) -> "Approach3Result":
        return self

    @property
    def gamma(self) -> float:
        f = self.fit
        return f.alpha * f.beta / (f.alpha + f.beta)

    @property
    def log_K(self) -> float:
        """log of A N*^-alpha + B D*^-beta at C / 6 = 1 (N*, D*: the compute-optimal split)."""
        f = self.fit
        log_g = math.log(f.alpha * f.A / (f.beta * f.B)) / (f.alpha + f.beta)
        return float(np.logaddexp(math.log(f.A) - f.alpha * log_g, math.log(f.B) + f.beta * log_g))

    def log_predict(self, c) -> np.ndarray:
        lc = np.log(np.asarray(c, dtype=float) / FLOPS_PER_PARAM_TOKEN)
        return np.logaddexp(math.log(self.fit.E), self.log_K - self.gamma * lc)

    def predict(self, c) -> np.ndarray:
        return np.exp(self.log_predict(c))

    def inverse(self, loss) -> np.ndarray:
        """Compute at which the frontier reaches `loss`; inf where loss <= E (never reached)."""
        loss = np.asarray(loss, dtype=float)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            out = FLOPS_PER_PARAM_TOKEN * np.exp((self.log_K - np.log(loss - self.fit.E)) / self.gamma)
        return np.where(loss > self.fit.E, out, np.inf)

    def to_json(self) -> dict:
        f = self.fit
        out = {"status": "ok", **f.params(), "a": f.a_exponent, "n_points": f.n_points,
               "objective_value": f.loss_value, "converged": f.converged, "n_at_optimum": f.n_at_optimum,
               "bootstrap": BOOTSTRAP}
        if self.boot is not None:
            out["intervals"] = {k: list(v) for k, v in self.boot.intervals.items()}
            out["n_failed"] = self.boot.n_failed
        return out

    def cells(self) -> list[str]:
        entry = self.to_json()
        intervals = entry.get("intervals") or {}
        return [*(fmt_estimate(entry[k], intervals.get(k)) for k in ("E", "A", "B", "alpha", "beta", "a")),
                f"{self.fit.n_points} runs; {BOOTSTRAP}"]


class Approach3Law(FitLaw):
    name = "approach3"
    section = "approach3"
    title = "Approach 3: L(N, D) = E + A/N^α + B/D^β"
    headers = ("E", "A", "B", "α", "β", "a = β/(α+β) (N_opt ∝ C^a)", "note")
    compared = False

    def fit(self, points: LabelPoints) -> Fitting:
        rows = points.with_branches  # cooldown branches vary D at one N: what this law needs
        N = rows[points.axes["params"]].to_numpy(float)
        D = rows[points.axes["tokens"]].to_numpy(float)
        good = np.isfinite(N) & (N > 0) & np.isfinite(D) & (D > 0)
        N, D, L = N[good], D[good], rows["val_loss"].to_numpy(float)[good]
        reason = _unsupported(N, D, L)
        if reason:
            return Fitting.done(Skipped("Approach 3", reason))
        cfg = points.config
        job = Job(_fit_and_bootstrap, (N, D, L, cfg.bootstrap, cfg.seed, cfg.ci))
        return Fitting((job,), lambda outputs: Approach3Result(*outputs[0]))


def _unsupported(N: np.ndarray, D: np.ndarray, L: np.ndarray) -> str | None:
    """Why these runs cannot separate the five parameters (None: they can)."""
    nN, nD = np.unique(N).size, np.unique(D).size
    if len(L) < MIN_POINTS:
        return f"{len(L)} finished runs: Approach 3 (5 parameters) needs >= {MIN_POINTS}"
    if "L" in constant_inputs(N, D, L):
        return f"every final loss is {L[0]:.6g}: nothing for L(N, D) to fit"
    if nN < MIN_DISTINCT or nD < MIN_DISTINCT:
        return (f"{nN} distinct N and {nD} distinct D: needs >= {MIN_DISTINCT} of each (the sweep must vary "
                "both parameters and tokens)")
    lN, lD = np.log(N), np.log(D)
    slope = np.polyfit(lN, lD, 1)[0] if np.ptp(lN) > 0 else 0.0
    resid = lD - slope * lN
    if np.ptp(resid) < MIN_SPREAD:
        return (f"tokens follow parameters (log D = {slope:.2f} log N + c within a factor "
                f"{math.exp(np.ptp(resid)):.2f}): A/N^alpha and B/D^beta cannot be separated; "
                "needs D varied at fixed N by a factor >= 2")
    return None


APPROACH3 = Approach3Law()
