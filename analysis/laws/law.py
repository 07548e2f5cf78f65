"""What a fit law is to the analysis: the points it is given, the jobs it hands the pool,
the result it returns, and what most laws share.

A law fits one label's points (final loss against the run axes). Its result goes to
fits.json (the law's section, one entry per label) and to a table of the report; when the
law is ``compared`` -- its curve is loss against the sweep's FLOPs -- the comparisons
(crossover, FLOP multiplier), the headline and the plots use its curve and the curve
refitted on each bootstrap resample. A law is one module holding one FitLaw object,
registered in LAWS (below) through the entry point ``ebt_scaling.fit_laws`` (the built-ins:
pipeline.py's BUILTIN_LAWS, in report order); nothing else names it.

Slow work runs in the job pool (analysis/pipeline.py): ``fit`` does the quick part at
once and returns the slow calls as jobs, with the function that finishes the result from
their outputs. A job is deterministic in its inputs, so results do not depend on the
number of workers.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping, Protocol, Sequence

import numpy as np
import pandas as pd

from ebt_scaling.harness.contract.formatting import fmt_interval

from ebt_scaling.harness.contract.registry import Registry

from ..fits import Curve, blas_threads, find_crossover

if TYPE_CHECKING:
    from ..pipeline import AnalysisConfig

REFIT_CHUNK = 250   # bootstrap refits per job: few enough jobs to start, enough to share the work


@dataclass(frozen=True)
class LabelPoints:
    """One label's fit points and the shared bootstrap draw.

    runs: the label's finished runs with a final loss (columns: each axis's column,
    ``val_loss``, ``unit_code``). axes: axis -> column of runs ("flops": the chosen
    convention's FLOPs, "params": N, "tokens": D, and the sweep's own axis). counts:
    (resamples, units) how often each matched unit is drawn in each resample (no rows: no
    bootstrap); every label is refitted on the same rows, so the fits of all labels and
    their differences come from the same resampled sweeps. branches: the label's finished
    cooldown branches of WSD runs (analysis/points.py), not in runs: only a law that wants
    several token counts at one size reads them (``with_branches``).
    """

    label: str
    runs: pd.DataFrame
    axes: Mapping[str, str]
    counts: np.ndarray
    config: AnalysisConfig
    branches: pd.DataFrame | None = None

    @property
    def with_branches(self) -> pd.DataFrame:
        if self.branches is None or not len(self.branches):
            return self.runs
        return pd.concat([self.runs, self.branches], ignore_index=True)

    @property
    def loss(self) -> np.ndarray:
        return self.runs["val_loss"].to_numpy(float)

    def on_axis(self, axis: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(x, loss, unit codes) of the runs with a finite x > 0 on the axis."""
        x = self.runs[self.axes[axis]].to_numpy(float)
        good = np.isfinite(x) & (x > 0)
        return x[good], self.loss[good], self.runs["unit_code"].to_numpy()[good]

    def weights(self, codes: np.ndarray) -> np.ndarray:
        """(resamples, runs): how often each run (by its unit code) is drawn in each resample."""
        if not len(self.counts):
            return np.zeros((0, len(codes)), np.int64)
        return self.counts[:, codes].astype(np.int64)


@dataclass(frozen=True)
class Job:
    """A slow call for the job pool: fn must be a module-level function (it is pickled)."""

    fn: Callable[..., Any]
    args: tuple = ()


@dataclass(frozen=True)
class Fitting:
    """A law's fit of one label in progress: the jobs to run, and how to finish the result
    from their outputs (in the order of the jobs)."""

    jobs: tuple[Job, ...]
    finish: Callable[[list], LawResult]

    @classmethod
    def done(cls, result: LawResult) -> Fitting:
        return cls((), lambda _outputs: result)


class LawResult(Protocol):
    """What a law's fit of one label gives the analysis."""

    @property
    def curve(self) -> Curve | None:
        """Its fitted loss against compute (a compared law's: against the sweep's FLOPs); None when none."""

    @property
    def samples(self) -> Sequence[Curve | None]:
        """The curve refitted on each bootstrap resample (None where a refit failed); empty without bootstrap."""

    @property
    def warnings(self) -> Sequence[str]:
        """Sentences for the analysis' warnings (only a label's own fit reports them, not a paired refit)."""

    @property
    def skips(self) -> Sequence[tuple[str, str]]:
        """(what, reason) of every part the points did not support."""

    def to_json(self) -> dict:
        """The label's entry in the law's section of fits.json."""

    def cells(self) -> list[str]:
        """Its row of the law's report table, after the label (used by FitLaw.rows)."""

    def legend(self) -> str:
        """Compared laws: the plots' legend of its curve, e.g. "L = 1.9 + 480·C^-0.2"."""


@dataclass(frozen=True)
class Skipped:
    """A fit the points do not support: ``what`` was skipped and why."""

    what: str
    reason: str

    curve = None
    samples = ()
    warnings = ()

    @property
    def skips(self) -> list[tuple[str, str]]:
        return [(self.what, self.reason)]

    def to_json(self) -> dict:
        return {"status": "skipped", "reason": self.reason}


class FitLaw:
    """A registered law: subclasses set the attributes and implement ``fit``; the methods
    here are what most laws share."""

    name: str                   # registry key; key of its crossover and multiplier entries
    section: str                # fits.json key of its per-label results
    title: str                  # heading of its table in the report
    headers: tuple[str, ...]    # the table's columns after "label"
    compared: bool              # its curve is loss vs the sweep's FLOPs: crossover and multiplier between labels
    plural: str                 # compared laws: its curves in sentences, column headers, legends ("power laws")

    def fit(self, points: LabelPoints) -> Fitting:
        raise NotImplementedError

    def rows(self, label: str, result: LawResult) -> list[list]:
        """The label's rows of the law's report table: a skipped fit gets dashes and the
        reason; a fitted one its result's ``cells()``."""
        if isinstance(result, Skipped):
            return [[label, *["-"] * (len(self.headers) - 1), f"skipped: {result.reason}"]]
        return [[label, *result.cells()]]

    def crossover_samples(self, reference: LawResult, candidate: LawResult, *, c_min: float, budget: float,
                          labels: tuple[str, str]) -> np.ndarray:
        """Per resample, the compute where the two labels' refitted curves first meet in
        (c_min, budget]: +inf when they do not, nan where either refit failed."""
        return np.array([find_crossover(r, c, c_min=c_min, budget=budget, labels=labels, n_grid=257).compute_or_inf
                         if r is not None and c is not None else math.nan
                         for r, c in zip(reference.samples, candidate.samples)])

    def crossover_sentence(self, entry: dict, budget: float, overtakes: str) -> str:
        """The headline's sentence on the crossover of two labels' curves (entry: its fits.json dict)."""
        frac = entry.get("fraction_crossing")
        frac_s = f"; a crossing below {budget:.3g} in {frac * 100:.0f}% of resamples" if frac is not None else ""
        if entry["status"] == "crossover":
            return (f"Crossover ({self.plural}): {overtakes} at {entry['compute']:.3g} FLOPs "
                    f"{fmt_interval(entry.get('interval'))} (loss {entry['loss']:.4g}{frac_s}).")
        return f"Crossover ({self.plural}): none below {budget:.3g} FLOPs: {entry['message']}{frac_s}."


# Every fit law of the analysis, in report order; fits.json, the comparisons, the headline,
# the report and the plots find them here.
LAWS: Registry[FitLaw] = Registry("fit law", "ebt_scaling.fit_laws")


def refit_jobs(fit: Callable[[np.ndarray, np.ndarray], Curve], x: np.ndarray, loss: np.ndarray,
               weights: np.ndarray) -> tuple[Job, ...]:
    """The bootstrap of a law fitted by ``fit(x, loss)``: one refit per resample (row i of
    weights repeats each point that often), REFIT_CHUNK resamples per job. ``fit`` must be
    a module-level function; the jobs' outputs joined are the samples (see ``joined``)."""
    return tuple(Job(_refit, (fit, x, loss, weights[i:i + REFIT_CHUNK])) for i in range(0, len(weights), REFIT_CHUNK))


def joined(outputs: list[list]) -> list:
    """The samples of ``refit_jobs`` in resample order."""
    return [s for chunk in outputs for s in chunk]


def _refit(fit: Callable, x: np.ndarray, loss: np.ndarray, weights: np.ndarray) -> list:
    out = []
    with blas_threads(1), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for w in weights:
            try:
                out.append(fit(np.repeat(x, w), np.repeat(loss, w)))
            except (ValueError, RuntimeError):   # a resample the law cannot fit (too few distinct points)
                out.append(None)
    return out

