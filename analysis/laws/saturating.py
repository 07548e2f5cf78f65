"""The saturating law L(C) = E + A C^(-alpha) (fits.fit_saturating) of each label's final
losses against FLOPs, bootstrapped by refitting every resample in the job pool."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ebt_scaling.harness.contract.formatting import fmt_estimate, fmt_interval

from ..bootstrap import percentile_interval
from ..fits import SaturatingFit, fit_saturating
from .law import FitLaw, Fitting, LabelPoints, Skipped, joined, refit_jobs

MIN_DISTINCT = 4   # distinct compute values for 3 parameters


@dataclass(frozen=True)
class SaturatingResult:
    label: str
    fit: SaturatingFit
    n_distinct: int
    samples: tuple[SaturatingFit | None, ...]   # one refit per resample
    ci: float

    skips = ()

    @property
    def curve(self) -> SaturatingFit:
        return self.fit

    @property
    def weak(self) -> bool:
        return self.n_distinct == MIN_DISTINCT

    @property
    def warnings(self) -> list[str]:
        return [f"{self.label}: saturating law from {MIN_DISTINCT} compute values only"] if self.weak else []

    def to_json(self) -> dict:
        out = {"status": "ok", **self.fit.to_dict()}
        if self.weak:
            out["warning"] = f"{MIN_DISTINCT} distinct compute values for 3 parameters: weakly determined"
        if self.samples:
            def values(name: str) -> np.ndarray:
                return np.array([getattr(s, name) if s is not None else np.nan for s in self.samples])

            out["intervals"] = {k: list(percentile_interval(values(k), self.ci)) for k in ("E", "A", "alpha")}
            out["n_failed"] = int(sum(s is None for s in self.samples))
            out["e_at_zero_fraction"] = float(np.mean([s.e_at_zero for s in self.samples if s is not None]
                                                      or [np.nan]))
        return out

    def cells(self) -> list[str]:
        entry = self.to_json()
        intervals = entry.get("intervals") or {}
        note = entry.get("warning", "")
        if self.fit.e_at_zero:
            note = (note + "; " if note else "") + "E at its bound 0 (no curvature: a pure power law)"
        if entry.get("n_failed"):
            note = (note + "; " if note else "") + f"{entry['n_failed']} resamples failed"
        return [*(fmt_estimate(entry[k], intervals.get(k)) for k in ("E", "A", "alpha")),
                f"{self.fit.rmse_log:.3g}", note]

    def legend(self) -> str:
        return f"L = {self.fit.E:.3g} + {self.fit.A:.3g}·C^-{self.fit.alpha:.3f}"


class SaturatingLaw(FitLaw):
    name = "saturating"
    section = "saturating"
    title = "Saturating law L(C) = E + A·C^-α"
    headers = ("E (irreducible loss)", "A", "alpha", "rmse (log)", "note")
    compared = True
    plural = "saturating laws"

    def fit(self, points: LabelPoints) -> Fitting:
        c, y, codes = points.on_axis("flops")
        distinct = int(np.unique(c).size)
        if distinct < MIN_DISTINCT:
            return Fitting.done(Skipped("saturating law", f"{distinct} distinct compute value(s): E + A C^-alpha "
                                                          f"needs >= {MIN_DISTINCT}"))
        try:
            fit = fit_saturating(c, y)
        except (ValueError, RuntimeError) as exc:
            return Fitting.done(Skipped("saturating law", str(exc)))
        jobs = refit_jobs(fit_saturating, c, y, points.weights(codes))
        return Fitting(jobs, lambda outputs: SaturatingResult(points.label, fit, distinct, tuple(joined(outputs)),
                                                              points.config.ci))

    def crossover_sentence(self, entry: dict, budget: float, overtakes: str) -> str:
        frac = entry.get("fraction_crossing")
        frac_s = f"; a crossing in {frac * 100:.0f}% of resamples" if frac is not None else ""
        if entry["status"] == "crossover":
            return (f"Crossover ({self.plural} E + A C^-α): {overtakes} at {entry['compute']:.3g} FLOPs "
                    f"{fmt_interval(entry.get('interval'))}{frac_s}.")
        return f"Crossover ({self.plural} E + A C^-α): none below {budget:.3g} FLOPs ({entry['message']}{frac_s})."


SATURATING = SaturatingLaw()
