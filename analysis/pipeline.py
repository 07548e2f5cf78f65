"""Run every fit of a sweep, per architecture label, with paired-bootstrap intervals.

Input: the runs of a sweep directory (load.load_runs) and what the analysis is asked for
(AnalysisConfig). In order:

1. the fit points, their matched units and one bootstrap draw of units that every fit
   shares (points.py): a drawn unit brings all of its runs -- every architecture, every
   seed -- so the fits of all labels, their differences, the crossovers and the
   multipliers are all computed on the same resampled sweeps;
2. every registered law for every label (laws/law.py: LAWS); their slow jobs start first;
3. Approaches 1 and 2 (approach1.py, approach2.py), here while the workers refit;
4. each candidate label against the reference (comparison.py).

The result is an Analysis (result.py), whose ``result`` is fits.json. The slow jobs run in
a process pool (fork), or here with one worker; each is deterministic in its inputs, so
the results do not depend on the number of workers.
"""
from __future__ import annotations

import multiprocessing
import os
import warnings
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Literal

from ebt_scaling.harness.contract.errors import require
from ebt_scaling.models.flops import CONVENTIONS

from .approach1 import envelopes
from .approach2 import isoflops
from .comparison import compare, flops_per_token_ratios
from .fits import blas_threads
from .frontier import compare_frontiers, is_frontier_sweep
from .laws.chinchilla import APPROACH3
from .laws.law import LAWS, Fitting, Job, LawResult
from .laws.power import POWER_LAW
from .laws.saturating import SATURATING
from .load import SweepData
from .points import select_points
from .result import Analysis, Caveats, TuningAnswer
from .seeds import seed_noise
from .tuning import find_tuning


PARAM_COUNTS = ("total", "non_embedding")


def _help(text: str) -> dict:
    return {"help": text}


@dataclass(frozen=True)
class AnalysisConfig:
    """What an analysis is asked for: the FLOP convention, the parameter count N, the
    bootstrap, the crossover range and the reference label. Built from a plain dict by the
    contract's ``from_dict`` (typed; unknown keys and wrong types are one-line errors naming
    the key); impossible values raise ConfigError("field: message") here. ``ebt-scaling
    analyze`` shows each field as its flag."""

    convention: str = field(default="full", metadata=_help(
        "FLOP convention of every compute axis (default: full = every matmul executed; paper = 6N / 20KN with N "
        "non-embedding)"))
    params: Literal["total", "non_embedding"] | None = field(default=None, metadata=_help(
        "parameter count used as N (default: sweep.yaml's param_count, else total)"))
    bootstrap: int = field(default=1000, metadata=_help(
        "paired-bootstrap resamples of matched units (default: 1000; 0: no intervals)"))
    seed: int = field(default=0, metadata=_help("bootstrap seed (default: 0)"))
    ci: float = field(default=0.95, metadata=_help("interval level (default: 0.95)"))
    budget: float = field(default=1e27, metadata=_help(
        "largest compute searched for a crossover and shown in the multiplier plot (default: 1e27)"))
    reference: str | None = field(default=None, metadata=_help(
        "reference architecture label (default: the first label of the baseline architecture, Transformer++)"))
    workers: int | None = field(default=None, metadata=_help(
        "processes for the slow refits (Approach 3, saturating-law bootstrap); default: one per CPU, at most 4; "
        "1: serial. The results do not depend on it"))

    def __post_init__(self) -> None:
        require(self.convention in CONVENTIONS, "convention",
                f"must be one of {', '.join(CONVENTIONS)} (got {self.convention!r})")
        # from_dict checks the Literal; a direct construction does not
        require(self.params is None or self.params in PARAM_COUNTS, "params",
                f"must be one of {', '.join(PARAM_COUNTS)} (got {self.params!r})")
        require(self.bootstrap >= 0, "bootstrap", f"must be >= 0 (got {self.bootstrap})")
        require(0 < self.ci < 1, "ci", f"must be in (0, 1) (got {self.ci})")
        require(self.budget > 0, "budget", f"must be > 0 (got {self.budget})")
        require(self.workers is None or self.workers >= 1, "workers", f"must be >= 1 (got {self.workers})")


# The built-in fit laws, in report order: the entry point ``ebt_scaling.fit_laws``
# (pyproject.toml) registers them in LAWS.
BUILTIN_LAWS = (POWER_LAW, SATURATING, APPROACH3)


@dataclass(frozen=True)
class Pending:
    """A law's fit whose jobs are in the pool."""

    fitting: Fitting
    futures: list[Future]

    def result(self) -> LawResult:
        return self.fitting.finish([f.result() for f in self.futures])


class JobPool:
    """The laws' slow jobs: a process pool (fork) of ``workers`` processes (None: one per
    CPU, at most 4), or with one worker each job run at once in this process."""

    def __init__(self, workers: int | None):
        n = workers if workers is not None else min(4, os.cpu_count() or 1)
        self._pool = None
        if n > 1:
            try:
                self._pool = ProcessPoolExecutor(max_workers=n, mp_context=multiprocessing.get_context("fork"))
            except (ValueError, OSError):   # no fork on this platform: serial
                self._pool = None

    def submit(self, job: Job) -> Future:
        if self._pool is not None:
            return self._pool.submit(job.fn, *job.args)
        done: Future = Future()
        done.set_result(job.fn(*job.args))
        return done

    def start(self, fitting: Fitting) -> Pending:
        return Pending(fitting, [self.submit(job) for job in fitting.jobs])

    def __enter__(self) -> "JobPool":
        return self

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


def analyze(data: SweepData, config: AnalysisConfig | None = None) -> Analysis:
    """Fit everything the sweep supports; see the module docstring. A tuned sweep
    (analysis/tuning.py) is answered twice: tuned (each cell's best trial; the Analysis
    returned) and untuned (the runs at the rules' values; its ``tuning.untuned``)."""
    config = config or AnalysisConfig()
    params_kind = config.params or ((data.meta or {}).get("param_count") or "total")
    tuning = find_tuning(data.runs, f"params_{params_kind}")
    with blas_threads(1), warnings.catch_warnings(), JobPool(config.workers) as pool:
        warnings.simplefilter("ignore", RuntimeWarning)
        if tuning is None:
            analysis = _analyze(data, config, pool)
        else:
            analysis = _analyze(data.subset(tuning.tuned_ids), config, pool)
            untuned_data = data.subset(tuning.untuned_ids)
            untuned = _analyze(untuned_data, config, pool) if len(untuned_data.done) else None
            if untuned is not None:
                untuned.result  # noqa: B018 -- under the fits' numpy error settings, as below
            analysis.tuning = TuningAnswer(tuning, data, untuned)
        analysis.result  # noqa: B018 -- fits.json is built here, under the fits' numpy error settings
        return analysis


def _analyze(data: SweepData, config: AnalysisConfig, pool: JobPool) -> Analysis:
    caveats = Caveats(warnings=[*data.damage_warnings, *data.flop_warnings])
    points = select_points(data, config, caveats)
    pending = {law: {lb: pool.start(law.fit(points.of(lb))) for lb in points.labels} for law in LAWS.entries()}
    approach1 = envelopes(points, caveats)
    approach2 = isoflops(points, caveats)
    laws: dict = {}
    for law, by_label in pending.items():
        laws[law] = {}
        for lb, started in by_label.items():
            laws[law][lb] = fitted = started.result()
            caveats.warnings.extend(fitted.warnings)
            for what, reason in fitted.skips:
                caveats.skip(what, lb, reason)
    comparisons = {cand: compare(points, points.reference, cand, laws, approach1, pool, caveats)
                   for cand in points.candidates}
    frontiers = {}
    if is_frontier_sweep(points, (data.meta or {}).get("axis")):
        frontiers = {cand: compare_frontiers(points, points.reference, cand, approach2, laws, caveats)
                     for cand in points.candidates}
    return Analysis(config, data, points, laws, approach1, approach2, comparisons,
                    flops_per_token_ratios(points), caveats, frontiers, seed_noise(points))
