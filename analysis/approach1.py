"""Chinchilla Approach 1 of each label: the compute-optimal frontier of its cooled-down
points, a power law of that frontier, and one of the model size on it (N_opt ∝ C^a, with
>= 3 sizes on it).

Only a point where a run's learning-rate schedule has decayed measures what a run trained
to that compute reaches: an intermediate point of a cosine run sits above it, and warmup
points (an EBT starts near 300 nats) would steer the fit. So the points are the finished
runs' final points (final loss at final FLOPs), cooldown branches included: a WSD run's
branches (points.py keeps them apart from the per-axis fits) are finished runs with fewer
tokens, so they add cooled-down points at several token counts. Seeds of one sweep point
(same unit, same FLOPs) are averaged first, so that the frontier does not pick the
luckiest seed.

The frontier is a running minimum over compute: sorted by FLOPs (ties by loss), a point is
on it when its loss is below that of every point before it, so it never rises. Bootstrapped
on the shared draw of matched units: a resample keeps the points of its drawn units and
takes the running minimum again (a branch is drawn with its parent's unit).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .bootstrap import percentile_interval
from .caveats import Caveats
from .fits import PowerLawFit, fit_power_law
from .laws.law import Skipped
from .points import FitPoints

WHAT = "Approach 1 (frontier)"


@dataclass(frozen=True)
class Envelope:
    """Approach 1 of one label: its cooled-down points (ascending compute), which of them
    are on the running-minimum frontier, the frontier's power laws, and per resample the
    frontier's slope and N_opt exponent."""

    n_runs: int                         # finished runs (final points, branches included)
    n_branches: int                     # of them, cooldown branches of WSD runs
    flops: np.ndarray                   # per point (seeds of a sweep point averaged), ascending
    loss: np.ndarray                    # its loss (geometric mean over seeds)
    size: np.ndarray                    # its N
    frontier: np.ndarray                # bool: on the running minimum
    on_envelope: list[str]              # the runs of the frontier's points, sorted
    fit: PowerLawFit                    # loss on the frontier vs compute
    n_opt: PowerLawFit | None           # N on the frontier vs compute (None: < 3 sizes on it)
    n_distinct: int                     # sizes on the frontier
    ci: float
    slope_samples: np.ndarray | None = None
    n_opt_samples: np.ndarray | None = None

    def to_json(self) -> dict:
        f = self.fit
        on = self.frontier
        out = {"status": "ok", "n_runs": self.n_runs, "n_cooldown_branches": self.n_branches,
               "n_points": len(self.flops), "n_frontier": int(on.sum()),
               "frontier": [{"flops": float(c), "loss": float(v), "params": float(n)}
                            for c, v, n in zip(self.flops[on], self.loss[on], self.size[on])],
               "slope": f.slope, "intercept": f.intercept, "prefactor": f.prefactor, "r2": f.r2,
               "runs_on_envelope": self.on_envelope}
        if self.n_opt is not None:
            out["n_opt_exponent"] = self.n_opt.slope
        else:
            out["n_opt_note"] = (f"{self.n_distinct} distinct model size(s) on the frontier: "
                                 "no N_opt(C) regression (needs >= 3)")
        if self.slope_samples is not None:
            out["intervals"] = {"slope": list(percentile_interval(self.slope_samples, self.ci))}
            if self.n_opt is not None:
                out["intervals"]["n_opt_exponent"] = list(percentile_interval(self.n_opt_samples, self.ci))
        return out


def envelopes(points: FitPoints, caveats: Caveats) -> dict[str, Envelope | Skipped]:
    _schedule_caveats(points, caveats)
    return {lb: _envelope(points, lb, caveats) for lb in points.labels}


def _schedule_caveats(points: FitPoints, caveats: Caveats) -> None:
    """Say how many cooled-down points each schedule contributes."""
    runs = points.with_branches
    if runs.empty:
        return
    schedule = runs["schedule"].fillna("cosine")
    single = runs[schedule != "wsd"]
    if len(single):
        kinds = " / ".join(sorted(schedule[schedule != "wsd"].unique()))
        caveats.warn(f"Approach 1: {len(single)} run(s) with a {kinds} learning-rate schedule enter with their "
                     "final point only (a cosine schedule has decayed only there; a constant one never does): one "
                     "point per run. A WSD schedule with cooldown branches (sweep key `cooldown: {fractions: "
                     "[...]}`) gives several cooled-down token counts per run")
    wsd = runs[schedule == "wsd"]
    if len(wsd):
        branch = wsd["cooldown_of"].notna()
        per_label = "; ".join(f"{lb}: {int(g['cooldown_of'].notna().sum())} branch point(s) of "
                              f"{int(g['cooldown_of'].isna().sum())} WSD run(s)" for lb, g in wsd.groupby("arch_label"))
        hint = "" if branch.any() else " (add sweep key `cooldown: {fractions: [...]}` for more token counts)"
        caveats.warn(f"Approach 1: WSD cooldown branches entered beside the runs' final points: {per_label}{hint}")


def _envelope(points: FitPoints, lb: str, caveats: Caveats) -> Envelope | Skipped:
    p = points.of(lb).with_branches
    c_col, n_col = points.flops_col, points.n_col
    groups = _sweep_points(p, c_col, n_col)
    front = _running_min(np.log(groups["loss"].to_numpy())[None, :], np.ones((1, len(groups)), bool))[0]
    if front.sum() < 2:
        skipped = Skipped(WHAT, f"{len(p)} finished run(s), {int(front.sum())} point(s) on the running minimum "
                          "of loss over compute: the frontier's power law needs >= 2")
        caveats.skip(skipped.what, lb, skipped.reason)
        return skipped
    C, L, N = (groups[k].to_numpy(float) for k in ("flops", "loss", "size"))
    fit = fit_power_law(C[front], L[front])
    sizes = np.unique(N)
    distinct = np.unique(N[front]).size
    nfit = fit_power_law(C[front], N[front]) if distinct >= 3 else None
    slopes = n_exp = None
    counts = points.counts
    if len(counts):   # a resample keeps the points of its drawn units (duplicates do not change a minimum)
        keep = counts[:, groups["unit_code"].to_numpy()] > 0                         # (R, points)
        on = _running_min(np.broadcast_to(np.log(L), keep.shape), keep)
        slopes = _masked_slopes(np.log(C), np.broadcast_to(np.log(L), on.shape), on)
        if nfit is not None:
            onehot = N[:, None] == sizes[None, :]
            n_on = ((on.astype(float) @ onehot) > 0).sum(axis=1)
            n_exp = np.where(n_on >= 3, _masked_slopes(np.log(C), np.broadcast_to(np.log(N), on.shape), on), np.nan)
    on_runs = sorted(r for ids in groups["run_ids"][front] for r in ids)
    n_branches = int(p["cooldown_of"].notna().sum())
    return Envelope(len(p), n_branches, C, L, N, front, on_runs, fit, nfit, distinct, points.config.ci, slopes, n_exp)


def _sweep_points(p: pd.DataFrame, c_col: str, n_col: str) -> pd.DataFrame:
    """One row per (unit, FLOPs): the seeds of a sweep point, with their geometric-mean loss,
    sorted by compute and then loss."""
    g = p.assign(log_loss=np.log(p["val_loss"].to_numpy(float))).groupby(["unit_code", c_col], sort=False)
    out = g.agg(log_loss=("log_loss", "mean"), size=(n_col, "first"), run_ids=("run_id", list)).reset_index()
    out = out.rename(columns={c_col: "flops"}).assign(loss=lambda d: np.exp(d["log_loss"]))
    return out.sort_values(["flops", "loss"], kind="stable").reset_index(drop=True)


def _running_min(log_loss: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Per row, the present points (columns in ascending compute) whose loss is below every
    present point before them."""
    masked = np.where(present, log_loss, np.inf)
    best_before = np.concatenate([np.full((len(masked), 1), np.inf),
                                  np.minimum.accumulate(masked, axis=1)[:, :-1]], axis=1)
    return present & (masked < best_before)


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
