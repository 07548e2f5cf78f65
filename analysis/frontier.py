"""The comparison on the compute-optimal frontier: what an isoFLOP sweep's headline uses.

A per-axis power law of final loss against FLOPs through every run of an isoFLOP sweep
mixes off-optimal sizes into the slope. The frontier L*(C) -- the best loss reachable at
compute C -- is what "scales better per FLOP" means. Two estimates of it, per label:

* Approach 2: the power law through each budget's isoFLOP minimum (approach2.py), its
  bootstrap on the shared draw of matched units (paired between labels);
* Approach 3: the minimum over N of the fitted L(N, D) = E + A/N^alpha + B/D^beta under
  a fixed compute, restated in the sweep's FLOPs: Approach 3 states compute as 6 N D, and
  each label spends q N D (q: the median of its runs' FLOPs / (N D); about 6 for
  Transformer++, several times that for an EBT), so its frontier in the sweep's FLOPs is
  L*(C 6 / q). Its bootstrap resamples each label's runs on its own (unpaired).

Per candidate: Approach 2's frontier slopes and the advantage b_cand / b_ref - 1; for
each estimate, the FLOP multiplier (compute the candidate needs for the reference's loss)
and the crossover below the budget (comparison.py's machinery).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ebt_scaling.sweeps.sweep_spec import SWEEP_AXES

from .approach2 import Isoflop
from .approach3 import Approach3Fit
from .comparison import Efficiency, SlopeComparison, efficiency_of
from .fits import Curve
from .laws.chinchilla import APPROACH3, Approach3Result
from .laws.law import FitLaw, LawResult
from .points import FitPoints

if TYPE_CHECKING:
    from .result import Caveats

A3_PARAMS = ("E", "A", "B", "alpha", "beta")
ESTIMATORS = {"approach2": "Approach 2 (isoFLOP minima, a power law through L*(C))",
              "approach3": "Approach 3 (the minimum of the fitted L(N, D) at each compute)"}


class FrontierLaw(FitLaw):
    """A frontier estimate compared like a law: its crossover and FLOP multiplier use the
    laws' machinery (comparison.efficiency_of)."""

    compared = True
    headers = ()

    def __init__(self, name: str, plural: str):
        self.name = self.section = name
        self.title = ESTIMATORS[name]
        self.plural = plural


FRONTIER_LAWS = {"approach2": FrontierLaw("approach2", "Approach 2 frontiers"),
                 "approach3": FrontierLaw("approach3", "Approach 3 frontiers")}


@dataclass(frozen=True)
class FrontierCurve:
    """One label's frontier as a compared law's result: the curve and its resampled refits."""

    curve: Curve
    samples: tuple = ()


@dataclass(frozen=True)
class ScaledCompute:
    """A curve stated against 6 N D, read against the sweep's FLOPs q N D (factor = q / 6)."""

    inner: Curve
    factor: float

    def log_predict(self, c) -> np.ndarray:
        return self.inner.log_predict(np.asarray(c, dtype=float) / self.factor)

    def predict(self, c) -> np.ndarray:
        return np.exp(self.log_predict(c))

    def inverse(self, loss) -> np.ndarray:
        return self.inner.inverse(loss) * self.factor


@dataclass(frozen=True)
class Frontier:
    """A candidate against the reference on the frontier."""

    slopes: SlopeComparison | None                 # Approach 2's L*(C) slopes (None: a label lacks them)
    efficiency: dict[str, Efficiency]              # estimator -> multiplier and crossover (key: the estimator)
    flops_per_param_token: dict[str, float]        # label -> q
    skipped: dict[str, str]                        # estimator -> why the pair has no such frontier

    @property
    def estimators(self) -> list[str]:
        return list(self.efficiency)

    def to_json(self) -> dict:
        out = {"estimators": {k: ESTIMATORS[k] for k in self.efficiency},
               "flops_per_param_token": self.flops_per_param_token, "skipped": self.skipped}
        if self.slopes is not None:
            out["approach2_slopes"] = self.slopes.to_json()
        for name, eff in self.efficiency.items():
            out[name] = {"crossover": eff.crossover_json(), "multiplier": eff.multiplier_json()}
        return out


def is_frontier_sweep(points: FitPoints, axis: str | None) -> bool:
    """An isoFLOP sweep: its axis says so (several sizes per budget: SweepAxis.sizes_per_budget);
    when the axis is unknown, some budget tag holds >= 3 sizes (a compute-axis sweep has one
    size per budget)."""
    if axis is not None:
        return axis in SWEEP_AXES and SWEEP_AXES.get(axis).sizes_per_budget
    runs = points.runs
    if "budget" not in runs or not runs["budget"].notna().any():
        return False
    return bool(runs.groupby("budget")[points.n_col].nunique().max() >= 3)


def _approach2_curve(result) -> FrontierCurve | None:
    if not isinstance(result, Isoflop) or result.loss_fit is None:
        return None
    return FrontierCurve(result.loss_fit, tuple(result.frontier_samples))


def _has_frontier(params: dict[str, float]) -> bool:
    """A fit of L(N, D) whose frontier exists: E >= 0 and A, B, alpha, beta > 0, all finite
    (a fit with beta <= 0 has no compute-optimal split)."""
    return (all(math.isfinite(params[k]) for k in A3_PARAMS) and params["E"] >= 0
            and all(params[k] > 0 for k in ("A", "B", "alpha", "beta")))


def _approach3_curve(result: LawResult, q: float) -> tuple[FrontierCurve | None, str | None]:
    """The label's Approach 3 frontier in the sweep's FLOPs, or why there is none."""
    if not isinstance(result, Approach3Result):
        return None, "no Approach 3 fit"
    if not math.isfinite(q) or q <= 0:
        return None, "no FLOPs per parameter-token"
    if not _has_frontier(result.fit.params()):
        return None, "its L(N, D) fit has a non-positive exponent or coefficient (no frontier)"
    factor = q / 6.0
    samples = ()
    if result.boot is not None:
        s = result.boot.samples
        drawn = ({k: float(s[k][i]) for k in A3_PARAMS} for i in range(len(s["E"])))
        samples = tuple(ScaledCompute(Approach3Result(Approach3Fit(**p), None), factor) if _has_frontier(p) else None
                        for p in drawn)
    return FrontierCurve(ScaledCompute(result, factor), samples), None


def flops_per_param_token(points: FitPoints, label: str) -> tuple[float, float, float]:
    """q of a label: the median, min and max over its runs of FLOPs / (N D) in the sweep's
    convention (it varies with N: embeddings and attention do not scale with N D alike)."""
    p = points.of(label).runs
    q = p[points.flops_col] / (p[points.n_col] * p["tokens"])
    q = q[np.isfinite(q) & (q > 0)]
    return (float(q.median()), float(q.min()), float(q.max())) if len(q) else (math.nan, math.nan, math.nan)


def compare_frontiers(points: FitPoints, ref: str, cand: str, approach2: dict, laws: dict,
                      caveats: Caveats) -> Frontier:
    """The candidate against the reference on each frontier both labels have (``skipped``
    says why a frontier is missing)."""
    q = {lb: flops_per_param_token(points, lb) for lb in (ref, cand)}
    a3 = {lb: _approach3_curve(laws.get(APPROACH3, {}).get(lb), q[lb][0]) for lb in (ref, cand)}
    curves = {"approach2": {lb: _approach2_curve(approach2.get(lb)) for lb in (ref, cand)},
              "approach3": {lb: a3[lb][0] for lb in (ref, cand)}}
    missing = {"approach2": {lb: "no isoFLOP frontier (fewer than 2 budgets with an interior minimum)"
                             for lb in (ref, cand)},
               "approach3": {lb: a3[lb][1] for lb in (ref, cand)}}
    efficiency, skipped = {}, {}
    for name, by_label in curves.items():
        if by_label[ref] is None or by_label[cand] is None:
            lb = ref if by_label[ref] is None else cand
            skipped[name] = f"{lb}: {missing[name][lb]}"
            caveats.skip(f"frontier ({ESTIMATORS[name]})", cand, skipped[name])
            continue
        pair = points.runs[points.runs["arch_label"].isin([ref, cand])]
        found = efficiency_of(points, pair, ref, cand, {FRONTIER_LAWS[name]: by_label}, caveats)
        if isinstance(found, Efficiency):
            efficiency[name] = found
    spread = {lb: v for lb, v in q.items() if v[2] > 1.1 * v[1]}
    for lb, (_, lo, hi) in spread.items():
        caveats.warn(f"{lb}: FLOPs per parameter-token vary from {lo:.3g} to {hi:.3g} across its runs; Approach 3's "
                     "frontier is restated in the sweep's FLOPs with their median, which is approximate")
    slopes = None
    a2r, a2c = approach2.get(ref), approach2.get(cand)
    if curves["approach2"][ref] is not None and curves["approach2"][cand] is not None:
        samples = None
        if a2r.frontier_samples and a2c.frontier_samples:
            samples = (np.array([f.slope if f is not None else np.nan for f in a2r.frontier_samples]),
                       np.array([f.slope if f is not None else np.nan for f in a2c.frontier_samples]))
        slopes = SlopeComparison(a2r.loss_fit.slope, a2c.loss_fit.slope, points.config.ci, samples)
    return Frontier(slopes, efficiency, {lb: v[0] for lb, v in q.items()}, skipped)


