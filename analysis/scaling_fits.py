"""Run every scaling-law fit of a sweep, per architecture label, with paired-bootstrap intervals.

Input: a SweepData (analysis/load.py). The points fitted are the runs with status
``done`` and a finite final held-out loss (``val_loss``: mean next-token NLL in nats);
every other run is listed in ``result["runs"]["excluded"]`` with its status and note.

What is fitted (numerical library: fits.py, approach3.py, bootstrap.py):

* per label and axis (FLOPs in the chosen convention, parameters N, tokens D, and the
  sweep's own axis when it is width / depth / batch): log L = a + b log X
  (fits.fit_power_law); per candidate label (every label but the reference,
  Transformer++) the scaling-rate advantage b_cand / b_ref - 1 and the slope difference;
* per label: the saturating law L(C) = E + A C^(-alpha) (fits.fit_saturating; needs
  >= 4 distinct compute values);
* per candidate: the FLOP multiplier C_cand(L_ref(C)) / C on a compute grid and the
  crossover compute where the fitted curves meet (fits.flop_multiplier, find_crossover),
  from the power laws and from the saturating laws;
* Approach 1 (lower envelope of the training curves, power law of the envelope),
  Approach 2 (isoFLOP minima) and Approach 3 (L(N, D) = E + A/N^alpha + B/D^beta) when the
  sweep has the runs for them; otherwise the reason is recorded in ``skipped``.

Uncertainty: one paired bootstrap over *matched units* (a unit = a sweep point: axis
value, size and budget, shared by every architecture and every seed of it). Each
resample draws units with replacement (bootstrap.draw_units); a drawn unit brings all of
its runs -- every architecture, every seed -- so the fits of all labels, their
differences, the crossover and the multiplier are all computed on the same resampled
sweeps. Power laws are refitted in closed form for all resamples at once
(fits.weighted_loglog_fits with unit counts as weights; for two labels the numbers equal
bootstrap.paired_power_law_bootstrap's). Approach 3 uses bootstrap.bootstrap_approach3
(rows of that label, refitted from the full-data optimum). Intervals are percentile
intervals (bootstrap.percentile_interval); an infinite upper end of a crossover interval
means that in more than (1 - ci) / 2 of the resamples the curves do not meet below the
budget.
"""
from __future__ import annotations

import math
import warnings as _warnings
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from .approach3 import blas_threads, fit_approach3
from .bootstrap import _unit_counts, bootstrap_approach3, draw_units, percentile_interval
from .fits import (
    PowerLawFit,
    SaturatingFit,
    find_crossover,
    fit_power_law,
    fit_saturating,
    flop_multiplier,
    power_law_crossover_compute,
    scaling_rate_advantage,
    weighted_loglog_fits,
)
from .load import SweepData

LOSS_DEFINITION = ("final held-out validation loss: mean next-token negative log-likelihood in nats per token "
                   "over the validation batches, pad tokens excluded, at the run's last step (result.json val_loss)")
AXIS_COLUMNS = {"width": "d_model", "depth": "n_layers", "batch": "batch_size"}
AXIS_UNITS = {"flops": "FLOPs", "params": "parameters", "tokens": "tokens", "width": "d_model", "depth": "layers",
              "batch": "sequences per step"}
# The paper's names of our axes (notes/ebt.md: scaling-rate advantages of EBT, arXiv v1).
PAPER_ADVANTAGE = {"flops": ("FLOPs", 2.92, 8.97), "params": ("parameters", 2.91, 8.97),
                   "tokens": ("data", 35.98, None),
                   "width": ("embedding dim", 0.02, None), "depth": ("depth", 5.29, None),
                   "batch": ("batch size", 28.46, None)}
MIN_SATURATING = 4          # distinct compute values for E + A C^-alpha (3 parameters)
A3_MIN_POINTS = 8
A3_MIN_DISTINCT = 3
A3_MIN_SPREAD = math.log(2.0)  # log D must vary by a factor >= 2 beyond what log N explains
A1_GRID = 48
A2_GRID = 8
CURVE_TOL = 0.05            # a budget up to 5% past a curve's last point reads the last point
SAT_CHUNK = 250             # saturating-law bootstrap refits per job


# ---------------------------------------------------------------------------- worker jobs
# The slow, independent pieces (Approach 3 fit + bootstrap per label; saturating-law
# bootstrap refits) run in worker processes. Each job is deterministic in its inputs, so
# the results do not depend on the number of workers.

def _saturating_task(c: np.ndarray, y: np.ndarray, weights: np.ndarray) -> list:
    out = []
    with blas_threads(1), _warnings.catch_warnings():
        _warnings.simplefilter("ignore", RuntimeWarning)
        for w in weights:
            try:
                out.append(fit_saturating(np.repeat(c, w), np.repeat(y, w)))
            except (ValueError, RuntimeError):
                out.append(None)
    return out


def _approach3_task(N, D, L, n_boot: int, seed: int, ci: float):
    with blas_threads(1), _warnings.catch_warnings():
        _warnings.simplefilter("ignore", RuntimeWarning)
        fit = fit_approach3(N, D, L)
        boot = bootstrap_approach3(N, D, L, n_resamples=n_boot, seed=seed, ci=ci, point=fit) if n_boot else None
    return fit, boot


class _Done:
    """A serial stand-in for a Future: runs the call when its result is asked for."""

    def __init__(self, fn, args):
        self.fn, self.args, self._value, self._ran = fn, args, None, False

    def result(self):
        if not self._ran:
            self._value, self._ran = self.fn(*self.args), True
        return self._value


class _Jobs:
    """A process pool (fork) for the slow refits, or serial execution with workers=1."""

    def __init__(self, workers: int | None):
        import os

        n = workers if workers is not None else min(4, os.cpu_count() or 1)
        self.pool = None
        if n > 1:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            try:
                self.pool = ProcessPoolExecutor(max_workers=n, mp_context=multiprocessing.get_context("fork"))
            except (ValueError, OSError):
                self.pool = None

    def submit(self, fn, *args):
        return self.pool.submit(fn, *args) if self.pool is not None else _Done(fn, args)

    def __enter__(self) -> "_Jobs":
        return self

    def __exit__(self, *exc) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


@dataclass
class AnalysisConfig:
    convention: str = "full"         # FLOP convention: full | paper
    params: str | None = None        # N: total | non_embedding (None: sweep.yaml's param_count, else total)
    n_boot: int = 1000
    seed: int = 0
    ci: float = 0.95
    budget: float = 1e27             # largest compute searched for a crossover
    reference: str | None = None     # reference label (None: the Transformer++ label)
    workers: int | None = None       # processes for the slow refits (None: one per CPU, at most 4; 1: serial)

    def __post_init__(self) -> None:
        if self.convention not in ("full", "paper"):
            raise ValueError(f"convention must be 'full' or 'paper', got {self.convention!r}")
        if self.params not in (None, "total", "non_embedding"):
            raise ValueError(f"params must be 'total' or 'non_embedding', got {self.params!r}")
        if self.n_boot < 0:
            raise ValueError(f"n_boot must be >= 0, got {self.n_boot}")
        if not 0 < self.ci < 1:
            raise ValueError(f"ci must be in (0, 1), got {self.ci}")
        if not self.budget > 0:
            raise ValueError(f"budget must be > 0, got {self.budget}")
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")


@dataclass
class Analysis:
    """Everything analyze() found: ``result`` is JSON-ready (fits.json); the rest holds what
    the plots need (fitted objects, bootstrap samples, curves)."""

    config: AnalysisConfig
    result: dict
    data: SweepData
    points: pd.DataFrame                                   # fit points (done runs with a final loss)
    x_cols: dict = field(default_factory=dict)             # axis -> column of points
    power: dict = field(default_factory=dict)              # label -> axis -> PowerLawFit
    power_samples: dict = field(default_factory=dict)      # label -> axis -> (slopes, intercepts)
    saturating: dict = field(default_factory=dict)         # label -> SaturatingFit
    saturating_samples: dict = field(default_factory=dict)  # label -> list[SaturatingFit | None]
    envelopes: dict = field(default_factory=dict)          # label -> dict(grid, log_env, fit)
    isoflop: dict = field(default_factory=dict)            # label -> dict(budgets: [...], fit)
    multipliers: dict = field(default_factory=dict)        # cand -> dict(grid, power, power_band, sat, sat_band)

    @property
    def reference(self) -> str | None:
        return self.result.get("reference")

    @property
    def candidates(self) -> list[str]:
        return list(self.result.get("candidates", []))


# ---------------------------------------------------------------------------- helpers

def _interval(samples, ci: float) -> list[float]:
    lo, hi = percentile_interval(samples, ci)
    return [lo, hi]


def _finite_frac(samples) -> float:
    x = np.asarray(samples, dtype=float)
    return float(np.mean(np.isfinite(x))) if x.size else math.nan


def _choose_reference(labels: dict[str, str], config: AnalysisConfig, meta: dict, warn: list[str]) -> str | None:
    if config.reference is not None:
        if config.reference not in labels:
            raise ValueError(f"reference label {config.reference!r} not in the sweep (labels: {sorted(labels)})")
        return config.reference
    if meta.get("reference") in labels:
        return meta["reference"]
    tpp = [lb for lb, arch in labels.items() if arch == "transformer"]
    if len(tpp) > 1:
        warn.append(f"several Transformer++ labels {tpp}: {tpp[0]} is the reference (choose with --reference)")
    return tpp[0] if tpp else None


def _ordered_labels(points: pd.DataFrame, reference: str | None) -> list[str]:
    labels = sorted(points["arch_label"].unique(), key=str)
    if reference in labels:
        labels.remove(reference)
        labels.insert(0, reference)
    return labels


def _log_interp(x_pts: np.ndarray, y_pts: np.ndarray, x: np.ndarray, tol: float = CURVE_TOL) -> np.ndarray:
    """log-log interpolation of y(x) at x inside [x_pts[0], x_pts[-1] (1 + tol)]; nan outside."""
    lx, ly = np.log(x_pts), np.log(y_pts)
    lq = np.log(np.asarray(x, dtype=float))
    out = np.interp(lq, lx, ly)
    inside = (lq >= lx[0] - 1e-12) & (lq <= lx[-1] + math.log1p(tol))
    return np.where(inside, out, np.nan)


def _curve_arrays(curves: pd.DataFrame, flops_col: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """run_id -> (flops, val_loss) of its eval points, sorted, positive and finite only."""
    out = {}
    if curves.empty:
        return out
    c = curves[["run_id", flops_col, "val_loss"]].copy()
    c[flops_col] = pd.to_numeric(c[flops_col], errors="coerce")
    c["val_loss"] = pd.to_numeric(c["val_loss"], errors="coerce")
    c = c[(c[flops_col] > 0) & (c["val_loss"] > 0) & np.isfinite(c[flops_col]) & np.isfinite(c["val_loss"])]
    for run_id, g in c.groupby("run_id", sort=False):
        g = g.sort_values(flops_col).drop_duplicates(flops_col, keep="last")
        out[run_id] = (g[flops_col].to_numpy(float), g["val_loss"].to_numpy(float))
    return out


def _parabola_min(x: list[float], y: list[float]) -> tuple[float, float, int] | None:
    """Minimum of y over x (sorted, >= 3 points) by the parabola through the discrete minimum and its
    neighbours: (x*, y*, index of the discrete minimum), or None when the minimum is on an edge."""
    i = int(np.argmin(y))
    if i == 0 or i == len(y) - 1:
        return None
    x0, x1, x2 = x[i - 1], x[i], x[i + 1]
    y0, y1, y2 = y[i - 1], y[i], y[i + 1]
    d01, d12, d02 = x0 - x1, x1 - x2, x0 - x2
    a = (y0 / (d01 * d02)) - (y1 / (d01 * d12)) + (y2 / (d02 * d12))
    if not a > 0:
        return x1, y1, i
    b = -(y0 * (x1 + x2) / (d01 * d02)) + (y1 * (x0 + x2) / (d01 * d12)) - (y2 * (x0 + x1) / (d02 * d12))
    xs = min(max(-b / (2 * a), x0), x2)
    ys = (y0 * (xs - x1) * (xs - x2) / (d01 * d02) - y1 * (xs - x0) * (xs - x2) / (d01 * d12)
          + y2 * (xs - x0) * (xs - x1) / (d02 * d12))
    return xs, ys, i


# ---------------------------------------------------------------------------- main entry

def analyze(data: SweepData, config: AnalysisConfig | None = None) -> Analysis:
    """Fit everything the sweep supports; see the module docstring."""
    config = config or AnalysisConfig()
    with blas_threads(1), _warnings.catch_warnings(), _Jobs(config.workers) as jobs:
        _warnings.simplefilter("ignore", RuntimeWarning)
        return _Analyzer(data, config, jobs).run()


class _Analyzer:
    def __init__(self, data: SweepData, config: AnalysisConfig, jobs: "_Jobs"):
        self.data, self.config, self.jobs = data, config, jobs
        self.warnings: list[str] = []
        self.skipped: list[dict] = []
        meta = data.meta or {}
        self.params_kind = config.params or (meta.get("param_count") if meta.get("param_count") in
                                             ("total", "non_embedding") else "total")
        self.flops_col = f"flops_{config.convention}"
        self.n_col = f"params_{self.params_kind}"

    def skip(self, what: str, label: str | None, reason: str) -> None:
        self.skipped.append({"what": what, "label": label, "reason": reason})

    # ------------------------------------------------------------------ points
    def _points(self) -> tuple[pd.DataFrame, list[dict]]:
        runs = self.data.runs
        excluded = []
        for _, r in runs[runs["status"] != "done"].iterrows():
            excluded.append({"run_id": r["run_id"], "arch_label": r.get("arch_label"), "status": r["status"],
                             "note": r.get("note") or "", "step": _int(r.get("step")),
                             "total_steps": _int(r.get("total_steps"))})
        done = runs[runs["status"] == "done"].copy()
        for col in ("val_loss", self.flops_col, self.n_col, "tokens"):
            done[col] = pd.to_numeric(done[col], errors="coerce")
        ok = (done["val_loss"] > 0) & np.isfinite(done["val_loss"]) & (done[self.flops_col] > 0)
        for _, r in done[~ok].iterrows():
            excluded.append({"run_id": r["run_id"], "arch_label": r.get("arch_label"), "status": "done",
                             "note": "done but no finite final val_loss or FLOPs recorded: not fitted",
                             "step": _int(r.get("step")), "total_steps": _int(r.get("total_steps"))})
        return done[ok].reset_index(drop=True), excluded

    # ------------------------------------------------------------------ run
    def run(self) -> Analysis:
        cfg = self.config
        points, excluded = self._points()
        runs = self.data.runs
        labels_arch = {lb: str(g["arch"].dropna().iloc[0]) if g["arch"].notna().any() else "?"
                       for lb, g in runs.groupby("arch_label")}
        reference = _choose_reference(labels_arch, cfg, self.data.meta or {}, self.warnings)
        labels = _ordered_labels(points, reference) if len(points) else []
        if reference is not None and reference not in labels:
            self.warnings.append(f"reference {reference} has no finished run with a final loss: no comparisons")
        candidates = [lb for lb in labels if lb != reference] if reference in labels else []
        if reference is None:
            self.skip("comparisons", None, "no Transformer++ label in the sweep (choose one with --reference)")

        axes = {"flops": self.flops_col, "params": self.n_col, "tokens": "tokens"}
        axis_name = (self.data.meta or {}).get("axis") or (runs["axis"].dropna().iloc[0]
                                                           if "axis" in runs and runs["axis"].notna().any() else None)
        if axis_name in AXIS_COLUMNS:
            axes[axis_name] = AXIS_COLUMNS[axis_name]
        for col in axes.values():
            if col in points:
                points[col] = pd.to_numeric(points[col], errors="coerce")

        # Units: reference rows first, so two labels give paired_power_law_bootstrap's exact resamples.
        if len(points):
            order = pd.concat([points[points["arch_label"] == lb] for lb in labels])
            points = order.reset_index(drop=True)
            codes, uniques = pd.factorize(points["unit"].astype(str))
            points["unit_code"] = codes
            n_units = len(uniques)
        else:
            n_units = 0
        R = cfg.n_boot
        if R and n_units >= 2:
            counts = _unit_counts(draw_units(np.random.default_rng(cfg.seed), n_units, R), n_units)
        else:
            counts = np.zeros((0, max(n_units, 1)))
            if R and len(points):
                self.warnings.append(f"{n_units} matched unit(s): no bootstrap (needs >= 2); intervals are nan")
        self.counts = counts
        self.points = points
        self._a3, self._sat = {}, {}
        for lb in labels:            # the slow fits start first, in worker processes
            self._approach3_submit(lb)
        for lb in labels:
            self._saturating_submit(lb)

        an = Analysis(config=cfg, result={}, data=self.data, points=points, x_cols=axes)
        res: dict = {
            "config": {**{k: v for k, v in asdict(cfg).items() if k != "workers"},  # results do not depend on it
                       "params": self.params_kind, "flops_column": self.flops_col, "params_column": self.n_col},
            "loss": LOSS_DEFINITION,
            "flop_convention": cfg.convention,
            "sweep": {k: v for k, v in (self.data.meta or {}).items() if k != "description"},
            "reference": reference if reference in labels else None,
            "candidates": candidates,
            "labels": {},
            "runs": {"total": int(len(runs)),
                     "by_status": {str(k): int(v) for k, v in runs["status"].value_counts().sort_index().items()},
                     "fitted": int(len(points)), "excluded": excluded},
            "bootstrap": {"n_resamples": R if len(counts) else 0, "seed": cfg.seed, "ci": cfg.ci,
                          "n_units": int(n_units),
                          "unit": "sweep point (axis value, size, budget): all architectures and seeds of it "
                                  "are resampled together"},
        }
        for lb in labels:
            p = points[points["arch_label"] == lb]
            res["labels"][lb] = {"arch": labels_arch.get(lb), "n_points": int(len(p)),
                                 "n_units": int(p["unit"].nunique()), "n_seeds": int(p["seed"].nunique()),
                                 "flops_range": [float(p[self.flops_col].min()), float(p[self.flops_col].max())]}
        for lb in labels_arch:
            if lb not in labels:
                self.skip("all fits", lb, "no finished run with a final loss")

        res["power_laws"] = {lb: self._power_laws(an, lb, axes) for lb in labels}
        # Approaches 1 and 2 run here while the workers refit; then the refits are collected.
        self._envelope_comparisons = {}
        res["approach1"] = self._approach1(an, labels, reference, candidates)
        res["approach2"] = {lb: self._approach2(an, lb) for lb in labels}
        res["saturating"] = {lb: self._saturating(an, lb) for lb in labels}
        res["comparisons"] = {c: self._compare(an, reference, c, axes) for c in candidates}
        for c, comp in self._envelope_comparisons.items():
            if c in res["comparisons"]:
                res["comparisons"][c]["envelope"] = comp
        res["flops_per_token_ratio"] = self._flop_ratios(points, reference, candidates)
        res["approach3"] = {lb: self._approach3(lb) for lb in labels}
        res["warnings"] = self.warnings
        res["skipped"] = self.skipped
        res["headline"] = headline_sentences(res, cfg)
        an.result = res
        return an

    # ------------------------------------------------------------------ power laws
    def points_of(self, lb: str) -> pd.DataFrame:
        return self.points[self.points["arch_label"] == lb]

    def _power_laws(self, an: Analysis, lb: str, axes: dict) -> dict:
        p = self.points_of(lb)
        out = {}
        an.power.setdefault(lb, {})
        an.power_samples.setdefault(lb, {})
        for axis, col in axes.items():
            x = p[col].to_numpy(float)
            y = p["val_loss"].to_numpy(float)
            good = np.isfinite(x) & (x > 0)
            x, y, codes = x[good], y[good], p["unit_code"].to_numpy()[good]
            distinct = int(np.unique(x).size)
            if distinct < 2:
                reason = (f"{distinct} distinct {AXIS_UNITS[axis]} value(s) among {len(x)} finished run(s): "
                          "a power law needs >= 2")
                out[axis] = {"status": "skipped", "reason": reason, "n": int(len(x)), "n_distinct": distinct}
                if axis in ("flops", "params"):
                    self.skip(f"power law vs {axis}", lb, reason)
                continue
            fit = fit_power_law(x, y)
            entry = {"status": "ok", "slope": fit.slope, "intercept": fit.intercept, "prefactor": fit.prefactor,
                     "r2": fit.r2, "n": fit.n, "n_distinct": distinct, "x_range": [float(x.min()), float(x.max())]}
            if distinct == 2:
                entry["warning"] = "2 distinct values: the line passes through both groups (no residual check)"
                self.warnings.append(f"{lb}: power law vs {axis} from 2 distinct values only")
            if len(self.counts):
                slopes, inter = weighted_loglog_fits(np.log(x), np.log(y), self.counts[:, codes])
                an.power_samples[lb][axis] = (slopes, inter)
                entry["intervals"] = {"slope": _interval(slopes, self.config.ci),
                                      "intercept": _interval(inter, self.config.ci),
                                      "prefactor": _interval(np.exp(inter), self.config.ci)}
                entry["n_failed"] = int(np.sum(~np.isfinite(slopes)))
            an.power[lb][axis] = fit
            out[axis] = entry
        return out

    # ------------------------------------------------------------------ saturating
    def _saturating_submit(self, lb: str) -> None:
        """Point fit now; bootstrap refits handed to the job pool in chunks."""
        p = self.points_of(lb)
        c = p[self.flops_col].to_numpy(float)
        y = p["val_loss"].to_numpy(float)
        codes = p["unit_code"].to_numpy()
        distinct = int(np.unique(c).size)
        if distinct < MIN_SATURATING:
            reason = f"{distinct} distinct compute value(s): E + A C^-alpha needs >= {MIN_SATURATING}"
            self._sat[lb] = (reason, None, [])
            return
        try:
            fit = fit_saturating(c, y)
        except (ValueError, RuntimeError) as exc:
            self._sat[lb] = (str(exc), None, [])
            return
        weights = self.counts[:, codes].astype(np.int64) if len(self.counts) else np.zeros((0, len(c)), np.int64)
        futures = [self.jobs.submit(_saturating_task, c, y, weights[i:i + SAT_CHUNK])
                   for i in range(0, len(weights), SAT_CHUNK)]
        self._sat[lb] = (None, fit, futures)

    def _saturating(self, an: Analysis, lb: str) -> dict:
        reason, fit, futures = self._sat[lb]
        if fit is None:
            self.skip("saturating law", lb, reason)
            return {"status": "skipped", "reason": reason}
        an.saturating[lb] = fit
        entry = {"status": "ok", **fit.to_dict()}
        if fit.n and np.unique(self.points_of(lb)[self.flops_col]).size == MIN_SATURATING:
            entry["warning"] = f"{MIN_SATURATING} distinct compute values for 3 parameters: weakly determined"
            self.warnings.append(f"{lb}: saturating law from {MIN_SATURATING} compute values only")
        samples: list[SaturatingFit | None] = [s for f in futures for s in f.result()]
        an.saturating_samples[lb] = samples
        if samples:
            ci = self.config.ci
            get = lambda k: np.array([getattr(s, k) if s is not None else np.nan for s in samples])  # noqa: E731
            entry["intervals"] = {"E": _interval(get("E"), ci), "A": _interval(get("A"), ci),
                                  "alpha": _interval(get("alpha"), ci)}
            entry["n_failed"] = int(sum(s is None for s in samples))
            entry["e_at_zero_fraction"] = float(np.mean([s.e_at_zero for s in samples if s is not None] or [np.nan]))
        return entry

    # ------------------------------------------------------------------ comparisons
    def _paired(self, an: Analysis, ref: str, cand: str, axes: dict) -> tuple[pd.DataFrame, dict, dict, dict, dict,
                                                                               list[str]]:
        """Fits of ref and cand on the (unit, seed) pairs both finished: (points, power, power_samples,
        saturating, saturating_samples, dropped runs). The per-label fits when nothing is dropped."""
        p = self.points[self.points["arch_label"].isin([ref, cand])]
        key = p["unit"].astype(str) + "\x00" + p["seed"].astype(str)
        is_r = (p["arch_label"] == ref).to_numpy()
        shared = set(key[is_r]) & set(key[~is_r])
        keep = key.isin(shared).to_numpy()
        dropped = [f"{r.arch_label} {r.run_id} (unit {r.unit}, seed {r.seed}): no {cand if r.arch_label == ref else ref} "
                   f"partner" for r in p[~keep].itertuples()]
        labels = (ref, cand)
        if not dropped:
            return (p, {lb: an.power[lb] for lb in labels}, {lb: an.power_samples[lb] for lb in labels},
                    {lb: an.saturating.get(lb) for lb in labels},
                    {lb: an.saturating_samples.get(lb) for lb in labels}, [])
        p = p[keep]
        power: dict = {lb: {} for lb in labels}
        samples: dict = {lb: {} for lb in labels}
        sat: dict = {}
        sat_samples: dict = {}
        for lb in labels:
            q = p[p["arch_label"] == lb]
            codes = q["unit_code"].to_numpy()
            for axis, col in axes.items():
                x, y = q[col].to_numpy(float), q["val_loss"].to_numpy(float)
                good = np.isfinite(x) & (x > 0)
                if np.unique(x[good]).size < 2:
                    continue
                power[lb][axis] = fit_power_law(x[good], y[good])
                if len(self.counts):
                    samples[lb][axis] = weighted_loglog_fits(np.log(x[good]), np.log(y[good]),
                                                             self.counts[:, codes[good]])
            c, y = q[self.flops_col].to_numpy(float), q["val_loss"].to_numpy(float)
            sat[lb], sat_samples[lb] = None, None
            if np.unique(c).size >= MIN_SATURATING and an.saturating.get(lb) is not None:
                try:
                    sat[lb] = fit_saturating(c, y)
                except (ValueError, RuntimeError):
                    continue
                w = self.counts[:, codes].astype(np.int64) if len(self.counts) else np.zeros((0, len(c)), np.int64)
                futures = [self.jobs.submit(_saturating_task, c, y, w[i:i + SAT_CHUNK])
                           for i in range(0, len(w), SAT_CHUNK)]
                sat_samples[lb] = [s for f in futures for s in f.result()]
        return p, power, samples, sat, sat_samples, dropped

    def _compare(self, an: Analysis, ref: str, cand: str, axes: dict) -> dict:
        cfg = self.config
        out: dict = {"reference": ref, "candidate": cand, "axes": {}}
        # Paired comparison: both labels fitted on the (unit, seed) pairs both finished, so the point
        # estimates match the paired bootstrap; per-label tables keep every run.
        pts, power, power_samples, saturating, saturating_samples, dropped = self._paired(an, ref, cand, axes)
        out["pairs"] = {"n_shared": int(len(pts)) // 2, "dropped": dropped}
        if dropped:
            self.warnings.append(f"{cand} vs {ref}: comparison on the {len(pts) // 2} (unit, seed) pair(s) both "
                                 f"finished; dropped {len(dropped)} unmatched run(s): " + "; ".join(dropped))
        for axis in axes:
            f_r, f_c = power[ref].get(axis), power[cand].get(axis)
            if f_r is None or f_c is None:
                out["axes"][axis] = {"status": "skipped",
                                     "reason": f"no power law vs {axis} for {ref if f_r is None else cand}"}
                continue
            entry = {"status": "ok", "slope_reference": f_r.slope, "slope_candidate": f_c.slope,
                     "slope_diff": f_c.slope - f_r.slope,
                     "slope_ratio": f_c.slope / f_r.slope if f_r.slope else math.nan,
                     "advantage": scaling_rate_advantage(f_c.slope, f_r.slope)}
            if f_r.slope >= 0 or f_c.slope >= 0:
                entry["warning"] = "a slope is >= 0 (loss not falling): the advantage is not meaningful"
            s_r, s_c = power_samples[ref].get(axis), power_samples[cand].get(axis)
            if s_r is not None and s_c is not None:
                b_r, b_c = s_r[0], s_c[0]
                entry["intervals"] = {"slope_diff": _interval(b_c - b_r, cfg.ci),
                                      "slope_ratio": _interval(b_c / b_r, cfg.ci),
                                      "advantage": _interval(scaling_rate_advantage(b_c, b_r), cfg.ci)}
            out["axes"][axis] = entry
        f_r, f_c = power[ref].get("flops"), power[cand].get("flops")
        if f_r is None or f_c is None:
            out["crossover"] = {"status": "skipped", "reason": "no power law vs FLOPs for both labels"}
            self.skip("crossover / FLOP multiplier", cand, out["crossover"]["reason"])
            return out
        c_min = float(pts[self.flops_col].min())
        c_ref_max = float(pts.loc[pts["arch_label"] == ref, self.flops_col].max())
        budget = max(cfg.budget, c_min * 10)
        if budget != cfg.budget:
            self.warnings.append(f"budget {cfg.budget:.3g} is below the data ({c_min:.3g} FLOPs): "
                                 f"searched to {budget:.3g}")
        labels = (ref, cand)
        cross: dict = {"c_min": c_min, "budget": budget}
        pc = find_crossover(f_r, f_c, c_min=c_min, budget=budget, labels=labels)
        cross["power_law"] = pc.to_dict()
        s_r, s_c = power_samples[ref].get("flops"), power_samples[cand].get("flops")
        if s_r is not None and s_c is not None:
            samples = power_law_crossover_compute(s_r[1], s_r[0], s_c[1], s_c[0], c_min=c_min, budget=budget)
            ok = np.isfinite(s_r[0]) & np.isfinite(s_c[0])
            cross["power_law"]["interval"] = _interval(samples[ok], cfg.ci)
            cross["power_law"]["fraction_crossing"] = _finite_frac(samples[ok])
        sat_r, sat_c = saturating.get(ref), saturating.get(cand)
        if sat_r is not None and sat_c is not None:
            sc = find_crossover(sat_r, sat_c, c_min=c_min, budget=budget, labels=labels)
            cross["saturating"] = sc.to_dict()
            sr, scs = saturating_samples.get(ref) or [], saturating_samples.get(cand) or []
            vals = [find_crossover(a, b, c_min=c_min, budget=budget, labels=labels, n_grid=257).compute_or_inf
                    if a is not None and b is not None else np.nan for a, b in zip(sr, scs)]
            if vals:
                cross["saturating"]["interval"] = _interval(vals, cfg.ci)
                cross["saturating"]["fraction_crossing"] = _finite_frac(np.array(vals)[~np.isnan(vals)])
        out["crossover"] = cross

        # FLOP multiplier on a grid from the smallest run to the budget, plus quoted points.
        grid = np.geomspace(c_min, budget, 161)
        first = 3 * math.ceil(math.log10(c_min) / 3)
        quote = sorted({c_ref_max, *[10.0 ** k for k in range(first, int(math.floor(math.log10(budget))) + 1, 3)]})
        mult = {"grid": grid, "quote": quote, "power": flop_multiplier(f_r, f_c, grid)}
        rows = []
        point_q = flop_multiplier(f_r, f_c, np.array(quote))
        band_q = None
        if s_r is not None and s_c is not None:
            ok = np.isfinite(s_r[0]) & np.isfinite(s_c[0])
            samp_grid = self._power_multiplier_samples(s_r, s_c, grid, ok)
            mult["power_band"] = np.array([percentile_interval(col, cfg.ci) for col in samp_grid.T]).T
            band_q = self._power_multiplier_samples(s_r, s_c, np.array(quote), ok)
        sat_q = sat_band_q = None
        if sat_r is not None and sat_c is not None:
            mult["sat"] = flop_multiplier(sat_r, sat_c, grid)
            sat_q = flop_multiplier(sat_r, sat_c, np.array(quote))
            sr, scs = saturating_samples.get(ref) or [], saturating_samples.get(cand) or []
            pairs = [(a, b) for a, b in zip(sr, scs) if a is not None and b is not None]
            if pairs:
                sg = np.array([flop_multiplier(a, b, grid) for a, b in pairs])
                mult["sat_band"] = np.array([percentile_interval(col, cfg.ci) for col in sg.T]).T
                sat_band_q = np.array([flop_multiplier(a, b, np.array(quote)) for a, b in pairs])
        for j, c in enumerate(quote):
            row = {"compute": c, "largest_reference_run": c == c_ref_max, "power_law": float(point_q[j])}
            if band_q is not None:
                row["power_law_interval"] = _interval(band_q[:, j], cfg.ci)
            if sat_q is not None:
                row["saturating"] = float(sat_q[j])
                if sat_band_q is not None:
                    row["saturating_interval"] = _interval(sat_band_q[:, j], cfg.ci)
            rows.append(row)
        out["multiplier"] = rows
        an.multipliers[cand] = mult
        return out

    @staticmethod
    def _power_multiplier_samples(s_r, s_c, grid, ok) -> np.ndarray:
        """(R_ok, len(grid)) FLOP multipliers of every resample's pair of power laws."""
        rows = []
        for br, ar, bc, ac in zip(s_r[0][ok], s_r[1][ok], s_c[0][ok], s_c[1][ok]):
            rows.append(flop_multiplier(PowerLawFit(br, ar, math.nan, 0), PowerLawFit(bc, ac, math.nan, 0), grid))
        return np.array(rows).reshape(len(rows), len(grid))

    def _flop_ratios(self, points: pd.DataFrame, ref: str | None, cands: list[str]) -> dict:
        """Median over matched units of (candidate FLOPs per token) / (reference FLOPs per token)."""
        out = {}
        if ref is None or not len(points):
            return out
        fpt = points.assign(fpt=points[self.flops_col] / points["tokens"].where(points["tokens"] > 0))
        by = fpt.groupby(["arch_label", "unit"])["fpt"].median()
        for c in cands:
            try:
                ratio = (by.loc[c] / by.loc[ref]).dropna()
            except KeyError:
                continue
            if len(ratio):
                out[c] = {"median": float(ratio.median()), "min": float(ratio.min()), "max": float(ratio.max()),
                          "n_units": int(len(ratio))}
        return out

    # ------------------------------------------------------------------ Approach 1
    def _approach1(self, an: Analysis, labels: list[str], ref: str | None, cands: list[str]) -> dict:
        arrays = _curve_arrays(self.data.curves[self.data.curves["run_id"].isin(an.points["run_id"])],
                               self.flops_col)
        out = {}
        for lb in labels:
            p = self.points_of(lb)
            runs = [r for r in p["run_id"] if r in arrays and len(arrays[r][0]) >= 2]
            if len(runs) < 2:
                reason = f"{len(runs)} finished run(s) with >= 2 eval points: the envelope needs >= 2 runs"
                out[lb] = {"status": "skipped", "reason": reason}
                self.skip("Approach 1 (envelope)", lb, reason)
                continue
            lo = min(arrays[r][0][0] for r in runs)
            hi = max(arrays[r][0][-1] for r in runs)
            grid = np.geomspace(lo, hi, A1_GRID)
            L = np.array([_log_interp(*arrays[r], grid) for r in runs])      # (runs, grid) log loss
            Linf = np.where(np.isnan(L), np.inf, L)
            env = Linf.min(axis=0)
            arg = Linf.argmin(axis=0)
            ok = np.isfinite(env)
            n_of = p.set_index("run_id")[self.n_col]
            run_n = np.array([float(n_of[r]) for r in runs])
            env_n = run_n[arg]
            if ok.sum() < 2:
                out[lb] = {"status": "skipped", "reason": "envelope has < 2 points"}
                continue
            fit = fit_power_law(grid[ok], np.exp(env[ok]))
            entry = {"status": "ok", "n_runs": len(runs), "grid": [float(lo), float(hi), A1_GRID],
                     "slope": fit.slope, "intercept": fit.intercept, "prefactor": fit.prefactor, "r2": fit.r2,
                     "runs_on_envelope": sorted({runs[i] for i in arg[ok]})}
            distinct_n = np.unique(env_n[ok])
            nfit = None
            if distinct_n.size >= 3:
                nfit = fit_power_law(grid[ok], env_n[ok])
                entry["n_opt_exponent"] = nfit.slope
            else:
                entry["n_opt_note"] = (f"{distinct_n.size} distinct model size(s) on the envelope: "
                                       "no N_opt(C) regression (needs >= 3)")
            # bootstrap: a resample keeps the runs of its drawn units (duplicates do not change a minimum)
            if len(self.counts):
                unit_of = p.set_index("run_id")["unit_code"]
                codes = np.array([unit_of[r] for r in runs])
                keep = self.counts[:, codes] > 0                      # (R, runs)
                env_r = np.full((len(keep), len(grid)), np.inf)
                n_r = np.full((len(keep), len(grid)), np.nan)
                for k, w in enumerate(keep):
                    if w.any():
                        sub = Linf[w]
                        env_r[k] = sub.min(axis=0)
                        n_r[k] = run_n[w][sub.argmin(axis=0)]
                mask = np.isfinite(env_r)
                slopes = _masked_slopes(np.log(grid), np.where(mask, env_r, 0.0), mask)
                n_exp = _masked_slopes(np.log(grid), np.log(np.where(mask, n_r, 1.0)), mask) \
                    if nfit is not None else np.full(len(keep), np.nan)
                entry["intervals"] = {"slope": _interval(slopes, self.config.ci)}
                if nfit is not None:
                    entry["intervals"]["n_opt_exponent"] = _interval(n_exp, self.config.ci)
                an.envelopes.setdefault(lb, {})["slope_samples"] = slopes
            an.envelopes.setdefault(lb, {}).update({"grid": grid, "log_env": env, "env_n": env_n, "fit": fit})
            out[lb] = entry
        if ref in an.envelopes:
            for c in cands:
                if c not in an.envelopes:
                    continue
                fr, fc = an.envelopes[ref]["fit"], an.envelopes[c]["fit"]
                comp = {"advantage": scaling_rate_advantage(fc.slope, fr.slope), "slope_diff": fc.slope - fr.slope}
                sr, sc = an.envelopes[ref].get("slope_samples"), an.envelopes[c].get("slope_samples")
                if sr is not None and sc is not None:
                    comp["intervals"] = {"advantage": _interval(scaling_rate_advantage(sc, sr), self.config.ci),
                                         "slope_diff": _interval(sc - sr, self.config.ci)}
                self._envelope_comparisons[c] = comp
        return out

    # ------------------------------------------------------------------ Approach 2
    def _approach2(self, an: Analysis, lb: str) -> dict:
        p = self.points_of(lb)
        tagged = p[p["budget"].notna()] if "budget" in p else p.iloc[:0]
        groups: list[tuple[float, pd.DataFrame, np.ndarray]] = []   # (budget compute, runs, log loss at budget)
        mode = None
        if len(tagged):
            mode = "isoflop runs (budget tags): each run's final loss; compute = geometric mean of the group's FLOPs"
            for b, g in tagged.groupby("budget"):
                if g[self.n_col].nunique() >= 3:
                    comp = float(np.exp(np.log(g[self.flops_col]).mean()))
                    spread = float(g[self.flops_col].max() / g[self.flops_col].min())
                    if spread > 1.25:
                        self.warnings.append(f"{lb}: isoFLOP group {b:.3g} spans a factor {spread:.2f} in "
                                             f"{self.config.convention}-convention FLOPs (budgets were set in "
                                             "another convention or pairing)")
                    groups.append((comp, g, np.log(g["val_loss"].to_numpy(float))))
        else:
            arrays = _curve_arrays(self.data.curves[self.data.curves["run_id"].isin(p["run_id"])], self.flops_col)
            runs = p[p["run_id"].isin(list(arrays))]
            if runs[self.n_col].nunique() >= 3:
                mode = ("training curves: each run's loss at the budget by log-log interpolation between eval "
                        "points (an intermediate point of a decaying LR schedule overstates the loss of a run "
                        "trained to that budget)")
                # budgets where >= 3 sizes have a curve point
                cover = []
                for _, r in runs.iterrows():
                    f, _l = arrays[r["run_id"]]
                    cover.append((f[0], f[-1] * (1 + CURVE_TOL), r[self.n_col]))
                lo = min(c[0] for c in cover)
                hi = max(c[1] for c in cover)
                grid = np.geomspace(lo, hi / (1 + CURVE_TOL), 4 * A2_GRID)
                good = [c for c in grid if len({n for a, b_, n in cover if a <= c <= b_}) >= 3]
                if good:
                    for c in np.geomspace(min(good), max(good), min(A2_GRID, len(good))):
                        vals = np.array([_log_interp(*arrays[r], np.array([c]))[0] for r in runs["run_id"]])
                        keep = np.isfinite(vals)
                        g = runs[keep]
                        if g[self.n_col].nunique() >= 3:
                            groups.append((float(c), g, vals[keep]))
        if not groups:
            reason = ("no compute budget with >= 3 distinct model sizes "
                      + ("in a budget-tagged group" if len(tagged) else "covered by training curves"))
            self.skip("Approach 2 (isoFLOP)", lb, reason)
            return {"status": "skipped", "reason": reason}
        ci = self.config.ci
        budgets, n_star, l_star, dropped = [], [], [], []
        an_iso = {"mode": mode, "budgets": []}
        boot_n = []  # per budget: array (R,) of N* samples
        for comp, g, logl in groups:
            n_vals = g[self.n_col].to_numpy(float)
            uniq = np.unique(n_vals)
            onehot = (n_vals[:, None] == uniq[None, :]).astype(float)
            mean_l = (np.exp(logl) @ onehot) / onehot.sum(axis=0)   # mean loss per size
            xs = np.log(uniq)
            found = _parabola_min(list(xs), list(mean_l))
            rec = {"compute": comp, "sizes": uniq.tolist(), "loss": mean_l.tolist()}
            if found is None:
                edge = "smallest" if int(np.argmin(mean_l)) == 0 else "largest"
                rec["dropped"] = f"minimum at the {edge} size (grid edge)"
                dropped.append(comp)
                an_iso["budgets"].append(rec)
                continue
            rec.update({"n_opt": float(math.exp(found[0])), "loss_opt": float(found[1])})
            budgets.append(comp)
            n_star.append(math.exp(found[0]))
            l_star.append(found[1])
            if len(self.counts):
                w_all = self.counts[:, g["unit_code"].to_numpy()]
                sw = w_all @ onehot
                swl = (w_all * np.exp(logl)) @ onehot
                samples = np.full(len(self.counts), np.nan)
                for k in range(len(self.counts)):
                    present = sw[k] > 0
                    if present.sum() < 3:
                        continue
                    fk = _parabola_min(list(xs[present]), list(swl[k][present] / sw[k][present]))
                    if fk is not None:
                        samples[k] = math.exp(fk[0])
                rec["n_opt_interval"] = _interval(samples, ci)
                rec["n_opt_edge_fraction"] = float(np.mean(np.isnan(samples)))
                k_drop = int(np.sum(np.isnan(samples)))
                # resamples without an interior minimum are dropped: the interval is conditional (narrower)
                rec["n_opt_interval_note"] = (f"conditional on an interior minimum; {k_drop} of {len(samples)} "
                                              "resamples dropped (minimum on the grid edge or < 3 sizes drawn)")
                boot_n.append(samples)
            an_iso["budgets"].append(rec)
        entry = {"status": "ok", "mode": mode, "budgets": an_iso["budgets"],
                 "dropped_edge_budgets": dropped}
        if len(budgets) >= 2:
            fit = fit_power_law(budgets, n_star)
            entry.update({"exponent": fit.slope, "intercept": fit.intercept, "r2": fit.r2, "n_budgets": len(budgets)})
            lfit = fit_power_law(budgets, l_star)
            entry["loss_opt_slope"] = lfit.slope
            if boot_n:
                S = np.array(boot_n)   # (budgets, R)
                lb_ = np.log(np.array(budgets))
                ex = np.full(S.shape[1], np.nan)
                for k in range(S.shape[1]):
                    m = np.isfinite(S[:, k])
                    if m.sum() >= 2 and np.ptp(lb_[m]) > 0:
                        ex[k] = np.polyfit(lb_[m], np.log(S[m, k]), 1)[0]
                entry["intervals"] = {"exponent": _interval(ex, ci)}
                entry["n_failed"] = int(np.sum(np.isnan(ex)))
                entry["interval_note"] = ("conditional on interior minima: per resample, the exponent is fitted "
                                          "to the budgets whose minimum is interior; "
                                          f"{entry['n_failed']} of {len(ex)} resamples dropped (< 2 such budgets)")
            an_iso["fit"] = fit
            if len(budgets) == 2:
                entry["warning"] = "2 budgets with interior minima: the exponent passes through both"
        else:
            entry["exponent_note"] = (f"{len(budgets)} budget(s) with an interior minimum: "
                                      "no N*(C) regression (needs >= 2)")
            self.skip("Approach 2 exponent", lb, entry["exponent_note"])
        an.isoflop[lb] = an_iso
        return entry

    # ------------------------------------------------------------------ Approach 3
    def _approach3_submit(self, lb: str) -> None:
        p = self.points_of(lb)
        N = p[self.n_col].to_numpy(float)
        D = p["tokens"].to_numpy(float)
        L = p["val_loss"].to_numpy(float)
        good = np.isfinite(N) & (N > 0) & np.isfinite(D) & (D > 0)
        N, D, L = N[good], D[good], L[good]
        reason = None
        nN, nD = np.unique(N).size, np.unique(D).size
        if len(L) < A3_MIN_POINTS:
            reason = f"{len(L)} finished runs: Approach 3 (5 parameters) needs >= {A3_MIN_POINTS}"
        elif nN < A3_MIN_DISTINCT or nD < A3_MIN_DISTINCT:
            reason = (f"{nN} distinct N and {nD} distinct D: needs >= {A3_MIN_DISTINCT} of each (the sweep must vary "
                      "both parameters and tokens)")
        else:
            lN, lD = np.log(N), np.log(D)
            slope = np.polyfit(lN, lD, 1)[0] if np.ptp(lN) > 0 else 0.0
            resid = lD - slope * lN
            if np.ptp(resid) < A3_MIN_SPREAD:
                reason = (f"tokens follow parameters (log D = {slope:.2f} log N + c within a factor "
                          f"{math.exp(np.ptp(resid)):.2f}): A/N^alpha and B/D^beta cannot be separated; "
                          "needs D varied at fixed N by a factor >= 2")
        if reason:
            self._a3[lb] = (reason, None)
            return
        cfg = self.config
        self._a3[lb] = (None, self.jobs.submit(_approach3_task, N, D, L, cfg.n_boot, cfg.seed, cfg.ci))

    def _approach3(self, lb: str) -> dict:
        reason, future = self._a3[lb]
        if reason:
            self.skip("Approach 3", lb, reason)
            return {"status": "skipped", "reason": reason}
        fit, boot = future.result()
        entry = {"status": "ok", **fit.params(), "a": fit.a_exponent, "n_points": fit.n_points,
                 "objective_value": fit.loss_value, "converged": fit.converged, "n_at_optimum": fit.n_at_optimum,
                 "bootstrap": "rows of this label resampled (bootstrap.bootstrap_approach3)"}
        if boot is not None:
            entry["intervals"] = {k: list(v) for k, v in boot.intervals.items()}
            entry["n_failed"] = boot.n_failed
        return entry


def _masked_slopes(x: np.ndarray, Y: np.ndarray, M: np.ndarray) -> np.ndarray:
    """Least-squares slope of each row of Y against x over the row's mask (nan with < 2 points or no spread)."""
    m = M.astype(float)
    n = m.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        xm = (m @ x) / n
        ym = (m * Y).sum(axis=1) / n
        dx = x[None, :] - xm[:, None]
        sxx = (m * dx * dx).sum(axis=1)
        sxy = (m * dx * (Y - ym[:, None])).sum(axis=1)
        return np.where((n >= 2) & (sxx > 1e-12), sxy / sxx, np.nan)


def _int(v) -> int | None:
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


# ---------------------------------------------------------------------------- sentences

def fmt_num(v, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if isinstance(v, float) and math.isinf(v):
        return "∞" if v > 0 else "-∞"
    return f"{v:.{digits}g}"


def fmt_interval(iv, digits: int = 3, pct: bool = False) -> str:
    if not iv:
        return ""
    lo, hi = iv
    def f(v) -> str:
        if not pct or v is None or math.isnan(v) or math.isinf(v):
            return fmt_num(v, digits)
        return f"{v * 100:+.{max(digits - 1, 1)}g}%"
    return f"[{f(lo)}, {f(hi)}]"


def _pct(v) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{v * 100:+.3g}%"


def _overtakes(cross: dict, ref: str, cand: str) -> str:
    """Who overtakes whom at the first crossing (the lower curve below it is the one overtaken)."""
    below = cross.get("better_below")
    if below == ref:
        return f"{cand} overtakes {ref}"
    if below == cand:
        return f"{ref} overtakes {cand} ({cand} is lower below the crossing)"
    return f"{cand} and {ref} cross"


def headline_sentences(res: dict, config: AnalysisConfig) -> list[str]:
    """The answer in sentences: per candidate, the FLOP slopes, the advantage, the multiplier, the crossover."""
    out = []
    ref = res.get("reference")
    ci_pct = f"{config.ci * 100:g}%"
    if not res.get("comparisons"):
        reasons = [s["reason"] for s in res.get("skipped", []) if s["what"] in ("comparisons", "power law vs flops")]
        out.append("No comparison of architectures could be made" + (f": {reasons[0]}" if reasons else
                                                                      " (no finished runs of two architectures)") + ".")
        return out
    for cand, comp in res["comparisons"].items():
        ax = comp["axes"].get("flops", {})
        if ax.get("status") != "ok":
            out.append(f"{cand} vs {ref}: no FLOP power law ({ax.get('reason', 'skipped')}).")
            continue
        pl_r = res["power_laws"][ref]["flops"]
        pl_c = res["power_laws"][cand]["flops"]
        iv = ax.get("intervals", {})
        paper = PAPER_ADVANTAGE["flops"]
        out.append(
            f"{cand}'s FLOP slope is {pl_c['slope']:.4g} {fmt_interval(pl_c.get('intervals', {}).get('slope'), 4)} vs "
            f"{ref}'s {pl_r['slope']:.4g} {fmt_interval(pl_r.get('intervals', {}).get('slope'), 4)}: scaling-rate "
            f"advantage {_pct(ax['advantage'])} {fmt_interval(iv.get('advantage'), 3, pct=True)} "
            f"({ci_pct} paired-bootstrap intervals; the paper reports +{paper[1]}% (v1), "
            f"+{paper[2]}% (later revision)).")
        mult = comp.get("multiplier") or []
        parts = []
        for row in mult:
            if row["largest_reference_run"] or row is mult[-1] or abs(math.log10(row["compute"]) - 15) < 1e-9:
                what = " (the largest " + ref + " run)" if row["largest_reference_run"] else ""
                parts.append(f"at {row['compute']:.3g} FLOPs{what} {cand} needs {fmt_num(row['power_law'])}× "
                             f"{fmt_interval(row.get('power_law_interval'))} the compute of {ref} for the same loss")
        if parts:
            out.append("Power-law fits: " + "; ".join(parts) + " (>1: EBT needs more; paper: ≈10× at its scales).")
        cross = comp.get("crossover", {})
        pc = cross.get("power_law")
        if pc:
            frac = pc.get("fraction_crossing")
            frac_s = (f"; a crossing below {cross['budget']:.3g} in {frac * 100:.0f}% of resamples"
                      if frac is not None else "")
            if pc["status"] == "crossover":
                out.append(f"Crossover (power laws): {_overtakes(pc, ref, cand)} at {pc['compute']:.3g} FLOPs "
                           f"{fmt_interval(pc.get('interval'))} (loss {pc['loss']:.4g}{frac_s}).")
            else:
                out.append(f"Crossover (power laws): none below {cross['budget']:.3g} FLOPs: {pc['message']}{frac_s}.")
        sc = cross.get("saturating")
        if sc:
            frac = sc.get("fraction_crossing")
            frac_s = f"; a crossing in {frac * 100:.0f}% of resamples" if frac is not None else ""
            if sc["status"] == "crossover":
                out.append(f"Crossover (saturating laws E + A C^-α): {_overtakes(sc, ref, cand)} at "
                           f"{sc['compute']:.3g} FLOPs {fmt_interval(sc.get('interval'))}{frac_s}.")
            else:
                out.append(f"Crossover (saturating laws E + A C^-α): none below {cross['budget']:.3g} FLOPs "
                           f"({sc['message']}{frac_s}).")
    a2 = [f"{lb} N* ∝ C^{e['exponent']:.3f} {fmt_interval((e.get('intervals') or {}).get('exponent'))}"
          for lb, e in res.get("approach2", {}).items() if e.get("status") == "ok" and "exponent" in e]
    if a2:
        out.append("Compute-optimal model size (Approach 2, isoFLOP minima): " + "; ".join(a2) + ".")
    excluded = res.get("runs", {}).get("excluded") or []
    if excluded:
        ids = ", ".join(f"{e['run_id']} ({e['status']})" for e in excluded[:8])
        more = f" and {len(excluded) - 8} more" if len(excluded) > 8 else ""
        out.append(f"Not fitted: {len(excluded)} run(s): {ids}{more}; see the runs section.")
    return out
