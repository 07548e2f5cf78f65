"""Seed-to-seed spread, beside the bootstrap intervals.

The paired bootstrap resamples sweep points (a drawn point brings every seed of it), so
its intervals measure how the fit moves between sweep points, not how a point's loss
moves between seeds. Where some points were run with several seeds (a preset's
``repeat``), the spread of their final losses is measured here and propagated to the
headline's per-axis FLOP slopes: every fitted point's log loss is redrawn with that
spread, both labels are refitted, and the advantage b_cand / b_ref - 1 of each redraw
gives the interval that seed noise alone would produce. The report then says whether the
bootstrap interval is at least as wide, i.e. whether it includes seed noise.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .bootstrap import percentile_interval
from .fits import scaling_rate_advantage
from .points import FitPoints

DRAWS = 2000


@dataclass(frozen=True)
class SeedSpread:
    """One label's spread of final log loss between seeds at the points run with several."""

    label: str
    n_points: int            # sweep points with >= 2 seeds
    n_runs: int
    sd_log_loss: float       # pooled standard deviation of log final loss (≈ relative spread)
    sd_loss: float           # pooled standard deviation of final loss, nats

    def to_json(self) -> dict:
        return {"n_points": self.n_points, "n_runs": self.n_runs, "sd_log_loss": self.sd_log_loss,
                "sd_loss": self.sd_loss}


@dataclass(frozen=True)
class SeedNoise:
    spreads: dict[str, SeedSpread]
    intervals: dict[str, list[float] | None]    # candidate -> seed-only interval of its FLOP slope advantage

    def to_json(self) -> dict:
        return {"spreads": {lb: s.to_json() for lb, s in self.spreads.items()},
                "seed_only_advantage_interval": self.intervals}


def seed_noise(points: FitPoints) -> SeedNoise | None:
    """The sweep's seed noise (None: no point was run with several seeds)."""
    spreads = seed_spreads(points)
    if not spreads or points.reference is None:
        return None
    return SeedNoise(spreads, {c: seed_only_interval(points, points.reference, c, spreads, points.config.seed)
                               for c in points.candidates})


def seed_spreads(points: FitPoints) -> dict[str, SeedSpread]:
    """Per label with repeated seeds: the pooled within-point spread (ddof 1)."""
    out = {}
    runs = points.runs
    for lb in points.labels:
        p = runs[runs["arch_label"] == lb]
        groups = [g for _, g in p.groupby("unit") if g["seed"].nunique() >= 2]
        if not groups:
            continue
        dof = sum(len(g) - 1 for g in groups)
        ss_log = sum(float(((np.log(g["val_loss"]) - np.log(g["val_loss"]).mean()) ** 2).sum()) for g in groups)
        ss = sum(float(((g["val_loss"] - g["val_loss"].mean()) ** 2).sum()) for g in groups)
        out[lb] = SeedSpread(lb, len(groups), int(sum(len(g) for g in groups)), math.sqrt(ss_log / dof),
                             math.sqrt(ss / dof))
    return out


def seed_only_interval(points: FitPoints, ref: str, cand: str, spreads: dict[str, SeedSpread],
                       seed: int) -> list[float] | None:
    """The interval of the FLOP slope advantage that seed noise alone gives (None: a label
    has no measured spread)."""
    if ref not in spreads or cand not in spreads:
        return None
    rng = np.random.default_rng(seed)
    slopes = {}
    for lb in (ref, cand):
        p = points.of(lb).runs
        lx = np.log(p[points.flops_col].to_numpy(float))
        ly = np.log(p["val_loss"].to_numpy(float))
        if np.ptp(lx) == 0:
            return None
        noisy = ly[None, :] + rng.normal(0.0, spreads[lb].sd_log_loss, size=(DRAWS, ly.size))
        dx = lx - lx.mean()
        slopes[lb] = (noisy - noisy.mean(axis=1, keepdims=True)) @ dx / (dx @ dx)   # least squares, every redraw
    return list(percentile_interval(scaling_rate_advantage(slopes[cand], slopes[ref]), points.config.ci))


def seed_sentence(spreads: dict[str, SeedSpread], seed_interval: list[float] | None,
                  bootstrap_interval: list[float] | None, cand: str) -> str:
    where = "; ".join(f"{lb} sd {s.sd_loss:.3g} nats ({s.sd_log_loss * 100:.2g}% of the loss) over {s.n_points} "
                      f"point(s) with repeated seeds" for lb, s in spreads.items())
    if seed_interval is None or bootstrap_interval is None:
        return f"Seed-to-seed spread: {where}."
    width_s = seed_interval[1] - seed_interval[0]
    width_b = bootstrap_interval[1] - bootstrap_interval[0]
    if not (math.isfinite(width_s) and math.isfinite(width_b)):
        return f"Seed-to-seed spread: {where}; no bootstrap interval to set it beside."
    verdict = ("is at least as wide, so it includes seed noise" if width_b >= width_s else
               "is narrower, so it does not include seed noise: read the answer with the wider of the two")
    return (f"Seed-to-seed spread: {where}. Seed noise alone moves {cand}'s FLOP slope advantage within "
            f"[{seed_interval[0] * 100:+.2g}%, {seed_interval[1] * 100:+.2g}%] (width {width_s * 100:.2g} points); the "
            f"bootstrap interval (width {width_b * 100:.2g} points) {verdict}.")
