"""Chinchilla Approach 1 of each label: the compute-optimal frontier of its cooled-down
points, a power law of that frontier, and one of the model size on it (N_opt ∝ C^a, with
>= 3 sizes on it).

Only a point where a run's learning-rate schedule has decayed measures what a run trained
to that compute reaches: an intermediate point of a cosine run sits above it, and warmup
points (an EBT starts near 300 nats) would steer the fit. So the points are the finished
runs' final points (final loss at final FLOPs), cooldown branches included: a WSD run's
branches (points.py keeps them apart from the per-axis fits) are finished runs with fewer
tokens, so they add cooled-down points at several token counts. A run with a constant
schedule never decays, not even at its end, so it is left out (with a warning). Seeds of
one sweep point (same unit, same FLOPs) are averaged first, so that the frontier does not
pick the luckiest seed.

The frontier is a running minimum over compute: sorted by FLOPs (ties by loss), a point is
on it when its loss is below that of every point before it, so it never rises. Bootstrapped
on the shared draw of matched units (a branch is drawn with its parent's unit): a resample
repeats each unit as often as it is drawn, so it takes the running minimum of its drawn
units' points (copies of a point do not move a minimum) and weighs each frontier point by
its unit's draw count in the fits, as the per-axis power law's bootstrap does.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ebt_scaling.sweeps.cooldown import is_branch

from .bootstrap import percentile_interval
from .fits import PowerLawFit, fit_power_law, weighted_loglog_fits
from .laws.law import Skipped
from .points import FitPoints

if TYPE_CHECKING:
    from .result import Caveats

WHAT = "Approach 1 (frontier)"


@dataclass(frozen=True)
class Envelope:
    """Approach 1 of one label: its cooled-down points (ascending compute), which of them
    are on the running-minimum frontier, the frontier's power laws, and per resample the
    frontier's slope and N_opt exponent."""

    n_runs: int                         # finished runs entered (final points, branches included)
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
    runs = {lb: points.of(lb).with_branches for lb in points.labels}
    _schedule_caveats(runs, caveats)
    return {lb: _envelope(points, lb, r, caveats) for lb, r in runs.items()}


def _schedules(runs: pd.DataFrame) -> pd.Series:
    return runs["schedule"].fillna("cosine")


def _schedule_caveats(runs: dict[str, pd.DataFrame], caveats: Caveats) -> None:
    """Say which runs each schedule lets in, and how many points they give."""
    per_label = {lb: _schedules(r) for lb, r in runs.items() if len(r)}
    constant = {lb: int((s == "constant").sum()) for lb, s in per_label.items()}
    if any(constant.values()):
        counts = ", ".join(f"{lb} {n}" for lb, n in constant.items() if n)
        caveats.warn(f"Approach 1: {sum(constant.values())} run(s) with a constant learning-rate schedule left out "
                     f"({counts}): a constant rate never decays, so no point of such a run is cooled down; train them "
                     "with a cosine or WSD schedule to enter them")
    single = pd.concat([pd.Series(dtype=object), *(s[~s.isin(("wsd", "constant"))] for s in per_label.values())])
    if len(single):
        kinds = " / ".join(sorted(single.unique()))
        caveats.warn(f"Approach 1: {len(single)} run(s) with a {kinds} learning-rate schedule enter with their "
                     "final point only (a cosine schedule has decayed only there): one point per run. A WSD "
                     "schedule with cooldown branches (sweep key `cooldown: {fractions: [...]}`) gives several "
                     "cooled-down token counts per run")
    wsd = {lb: runs[lb][s == "wsd"] for lb, s in per_label.items() if (s == "wsd").any()}
    if wsd:
        branch = {lb: is_branch(w) for lb, w in wsd.items()}
        counts = "; ".join(f"{lb}: {int(b.sum())} branch point(s) of {int((~b).sum())} WSD run(s)"
                           for lb, b in branch.items())
        hint = ("" if any(b.any() for b in branch.values())
                else " (add sweep key `cooldown: {fractions: [...]}` for more token counts)")
        caveats.warn(f"Approach 1: WSD cooldown branches entered beside the runs' final points: {counts}{hint}")


def _envelope(points: FitPoints, lb: str, runs: pd.DataFrame, caveats: Caveats) -> Envelope | Skipped:
    decays = _schedules(runs) != "constant"
    p = runs[decays]
    left_out = f" ({int((~decays).sum())} constant-schedule run(s) left out)" if not decays.all() else ""
    c_col, n_col = points.flops_col, points.n_col
    groups = _sweep_points(p, c_col, n_col)
    front = _running_min(np.log(groups["loss"].to_numpy(float))[None, :], np.ones((1, len(groups)), bool))[0]
    if front.sum() < 2:
        skipped = Skipped(WHAT, f"{len(p)} finished run(s) with a decaying schedule{left_out}, {int(front.sum())} "
                          "point(s) on the running minimum of loss over compute: the frontier's power law needs >= 2")
        caveats.skip(skipped.what, lb, skipped.reason)
        return skipped
    C, L, N = (groups[k].to_numpy(float) for k in ("flops", "loss", "size"))
    fit = fit_power_law(C[front], L[front])
    distinct = np.unique(N[front]).size
    nfit = fit_power_law(C[front], N[front]) if distinct >= 3 else None
    slopes = n_exp = None
    if len(points.counts):
        # A resample repeats each drawn unit: its frontier is the running minimum of the drawn
        # points (copies do not move it), and each frontier point weighs its draw count.
        drawn = points.counts[:, groups["unit_code"].to_numpy(np.int64)]           # (R, points)
        on = _running_min(np.broadcast_to(np.log(L), drawn.shape), drawn > 0)
        weights = np.where(on, drawn, 0.0)
        slopes = weighted_loglog_fits(np.log(C), np.log(L), weights)[0]
        if nfit is not None:
            onehot = N[:, None] == np.unique(N)[None, :]
            n_on = ((on.astype(float) @ onehot) > 0).sum(axis=1)
            n_exp = np.where(n_on >= 3, weighted_loglog_fits(np.log(C), np.log(N), weights)[0], np.nan)
    on_runs = sorted(r for ids in groups["run_ids"][front] for r in ids)
    n_branches = int(is_branch(p).sum())
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
