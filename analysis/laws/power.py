"""The per-axis power law log L = a + b log X (fits.fit_power_law) of each label's final
losses, against every axis the sweep is fitted on: FLOPs, parameters N, tokens D and the
sweep's own axis. Its slopes are the EBT paper's scaling rates (compared in
analysis/comparison.py); its curve against FLOPs is compared like any law's.

The bootstrap needs no refitting: a resample's fit is the least squares of the points
weighted by their units' counts, in closed form for all resamples at once
(fits.weighted_loglog_fits; the same numbers as refitting the resample's repeated rows).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ebt_scaling.harness.contract.formatting import fmt_estimate

from ..bootstrap import percentile_interval
from ..fits import PowerLawFit, fit_power_law, power_law_crossover_compute, weighted_loglog_fits
from ..points import fitted_axis
from .law import FitLaw, Fitting, LabelPoints

# Skips of these axes are listed; tokens and the sweep's own axis are constant by design
# in most sweeps, where a line each would be noise.
LISTED_SKIPS = ("flops", "params")


@dataclass(frozen=True)
class AxisFit:
    """A label's power law against one axis, with its bootstrap: slopes and intercepts per
    resample (nan where fewer than 2 distinct values were drawn; None: no bootstrap)."""

    fit: PowerLawFit
    n_distinct: int
    x_range: tuple[float, float]
    ci: float
    slopes: np.ndarray | None = None
    intercepts: np.ndarray | None = None

    @property
    def warning(self) -> str | None:
        if self.n_distinct == 2:
            return "2 distinct values: the line passes through both groups (no residual check)"
        return None

    @cached_property
    def samples(self) -> list[PowerLawFit | None]:
        if self.slopes is None:
            return []
        return [PowerLawFit(b, a, math.nan, 0) if np.isfinite(b) else None
                for b, a in zip(self.slopes, self.intercepts)]

    def intervals(self) -> dict[str, list[float]]:
        return {"slope": list(percentile_interval(self.slopes, self.ci)),
                "intercept": list(percentile_interval(self.intercepts, self.ci)),
                "prefactor": list(percentile_interval(np.exp(self.intercepts), self.ci))}

    def to_json(self) -> dict:
        f = self.fit
        out = {"status": "ok", "slope": f.slope, "intercept": f.intercept, "prefactor": f.prefactor, "r2": f.r2,
               "n": f.n, "n_distinct": self.n_distinct, "x_range": list(self.x_range)}
        if self.warning:
            out["warning"] = self.warning
        if self.slopes is not None:
            out["intervals"] = self.intervals()
            out["n_failed"] = int(np.sum(~np.isfinite(self.slopes)))
        return out


@dataclass(frozen=True)
class AxisSkipped:
    """An axis with fewer than 2 distinct values among the label's runs."""

    reason: str
    n: int
    n_distinct: int

    def to_json(self) -> dict:
        return {"status": "skipped", "reason": self.reason, "n": self.n, "n_distinct": self.n_distinct}


@dataclass(frozen=True)
class PowerLaws:
    """One label's power laws, by axis."""

    label: str
    axes: dict[str, AxisFit | AxisSkipped]

    def fitted(self, axis: str) -> AxisFit | None:
        found = self.axes.get(axis)
        return found if isinstance(found, AxisFit) else None

    @property
    def curve(self) -> PowerLawFit | None:
        flops = self.fitted("flops")
        return flops.fit if flops else None

    @property
    def samples(self) -> list[PowerLawFit | None]:
        flops = self.fitted("flops")
        return flops.samples if flops else []

    @property
    def warnings(self) -> list[str]:
        return [f"{self.label}: power law vs {axis} from 2 distinct values only"
                for axis, e in self.axes.items() if isinstance(e, AxisFit) and e.warning]

    @property
    def skips(self) -> list[tuple[str, str]]:
        return [(f"power law vs {axis}", e.reason) for axis, e in self.axes.items()
                if isinstance(e, AxisSkipped) and axis in LISTED_SKIPS]

    def to_json(self) -> dict:
        return {axis: e.to_json() for axis, e in self.axes.items()}


class PowerLaw(FitLaw):
    name = "power_law"
    section = "power_laws"
    title = "Per-axis power laws log L = a + b log X"
    headers = ("axis X", "runs", "slope b", "prefactor exp(a)", "R² (log)", "note")
    compared = True
    plural = "power laws"

    def fit(self, points: LabelPoints) -> Fitting:
        axes: dict[str, AxisFit | AxisSkipped] = {}
        for axis in points.axes:
            x, y, codes = points.on_axis(axis)
            distinct = int(np.unique(x).size)
            if distinct < 2:
                axes[axis] = AxisSkipped(f"{distinct} distinct {fitted_axis(axis).unit} value(s) among {len(x)} finished "
                                         "run(s): a power law needs >= 2", int(len(x)), distinct)
                continue
            slopes = intercepts = None
            if len(points.counts):
                slopes, intercepts = weighted_loglog_fits(np.log(x), np.log(y), points.counts[:, codes])
            axes[axis] = AxisFit(fit_power_law(x, y), distinct, (float(x.min()), float(x.max())), points.config.ci,
                                 slopes, intercepts)
        return Fitting.done(PowerLaws(points.label, axes))

    def rows(self, label: str, result: PowerLaws) -> list[list]:
        rows = []
        for axis, e in result.axes.items():
            unit = fitted_axis(axis).unit
            if isinstance(e, AxisSkipped):
                rows.append([label, unit, e.n, "-", "-", "-", f"skipped: {e.reason}"])
                continue
            entry = e.to_json()
            note = e.warning or ""
            if entry.get("n_failed"):
                note = (note + "; " if note else "") + f"{entry['n_failed']} degenerate resamples ignored"
            intervals = entry.get("intervals") or {}
            rows.append([label, unit, e.fit.n, fmt_estimate(e.fit.slope, intervals.get("slope")),
                         fmt_estimate(e.fit.prefactor, intervals.get("prefactor")), f"{e.fit.r2:.4f}", note])
        return rows

    def crossover_samples(self, reference: PowerLaws, candidate: PowerLaws, *, c_min: float, budget: float,
                          labels: tuple[str, str]) -> np.ndarray:
        """In closed form for all resamples at once."""
        r, c = reference.fitted("flops"), candidate.fitted("flops")
        found = power_law_crossover_compute(r.intercepts, r.slopes, c.intercepts, c.slopes, c_min=c_min,
                                            budget=budget)
        return np.where(np.isfinite(r.slopes) & np.isfinite(c.slopes), found, np.nan)


POWER_LAW = PowerLaw()
