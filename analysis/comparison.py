"""A candidate label against the reference, on the (unit, seed) pairs both finished.

* Scaling rates: per axis, the power laws' slope difference, ratio and advantage
  b_cand / b_ref - 1 (the EBT paper's comparison); the same for Approach 1's envelopes.
* For every compared law (laws/law.py) whose curve both labels have: the compute
  where the two curves first meet in (c_min, budget] (fits.find_crossover), and the FLOP
  multiplier C_cand(L_ref(C)) / C on a compute grid from the smallest run to the budget
  (fits.flop_multiplier), quoted at the largest reference run and at every third decade.

Both labels are refitted on the shared pairs when some run has no partner (the per-label
tables keep every run), so the point estimates match the paired bootstrap. Intervals come
from the curves refitted on the same resamples of matched units; an infinite upper end of a
crossover interval means that in more than (1 - ci) / 2 of the resamples the curves do not
meet below the budget.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .approach1 import Envelope
from .bootstrap import percentile_interval
from .fits import Crossover, find_crossover, flop_multiplier, scaling_rate_advantage
from .laws.law import FitLaw, LawResult, Skipped
from .laws.power import POWER_LAW, PowerLaws
from .points import FitPoints

if TYPE_CHECKING:
    from .pipeline import JobPool
    from .result import Caveats

MULTIPLIER_GRID = 161


# ---------------------------------------------------------------------------- scaling rates

@dataclass(frozen=True)
class SlopeComparison:
    """Two slopes (power laws or envelopes) and, per resample, both slopes again."""

    reference: float
    candidate: float
    ci: float
    samples: tuple[np.ndarray, np.ndarray] | None = None   # (reference, candidate) slopes per resample

    def to_json(self) -> dict:
        b_r, b_c = self.reference, self.candidate
        out = {"status": "ok", "slope_reference": b_r, "slope_candidate": b_c, "slope_diff": b_c - b_r,
               "slope_ratio": b_c / b_r if b_r else math.nan, "advantage": scaling_rate_advantage(b_c, b_r)}
        if b_r >= 0 or b_c >= 0:
            out["warning"] = "a slope is >= 0 (loss not falling): the advantage is not meaningful"
        if self.samples is not None:
            s_r, s_c = self.samples
            out["intervals"] = {"slope_diff": list(percentile_interval(s_c - s_r, self.ci)),
                                "slope_ratio": list(percentile_interval(s_c / s_r, self.ci)),
                                "advantage": list(percentile_interval(scaling_rate_advantage(s_c, s_r), self.ci))}
        return out

    def envelope_json(self) -> dict:
        """Approach 1's entry: the advantage and slope difference only."""
        b_r, b_c = self.reference, self.candidate
        out = {"advantage": scaling_rate_advantage(b_c, b_r), "slope_diff": b_c - b_r}
        if self.samples is not None:
            s_r, s_c = self.samples
            out["intervals"] = {"advantage": list(percentile_interval(scaling_rate_advantage(s_c, s_r), self.ci)),
                                "slope_diff": list(percentile_interval(s_c - s_r, self.ci))}
        return out


def scaling_rates(ref: str, cand: str, power: dict[str, PowerLaws], ci: float) -> dict[str, SlopeComparison | Skipped]:
    out: dict[str, SlopeComparison | Skipped] = {}
    for axis in power[ref].axes:
        f_r, f_c = power[ref].fitted(axis), power[cand].fitted(axis)
        if f_r is None or f_c is None:
            out[axis] = Skipped(f"power law vs {axis}", f"no power law vs {axis} for {ref if f_r is None else cand}")
            continue
        samples = (f_r.slopes, f_c.slopes) if f_r.slopes is not None and f_c.slopes is not None else None
        out[axis] = SlopeComparison(f_r.fit.slope, f_c.fit.slope, ci, samples)
    return out


def envelope_rates(ref: Envelope, cand: Envelope, ci: float) -> SlopeComparison:
    samples = None
    if ref.slope_samples is not None and cand.slope_samples is not None:
        samples = (ref.slope_samples, cand.slope_samples)
    return SlopeComparison(ref.fit.slope, cand.fit.slope, ci, samples)


# ---------------------------------------------------------------------------- crossover and multiplier

@dataclass(frozen=True)
class LawCrossover:
    """Where two labels' curves of one law meet, and per resample where their refits do
    (+inf: not below the budget; nan: a refit failed; None: no bootstrap)."""

    found: Crossover
    samples: np.ndarray | None
    ci: float

    def to_json(self) -> dict:
        out = self.found.to_dict()
        if self.samples is not None:
            out["interval"] = list(percentile_interval(self.samples, self.ci))
            drawn = self.samples[~np.isnan(self.samples)]
            out["fraction_crossing"] = float(np.mean(np.isfinite(drawn))) if drawn.size else math.nan
        return out


@dataclass(frozen=True)
class LawMultiplier:
    """One law's FLOP multiplier: on the grid (with its percentile band), and at the quoted computes."""

    on_grid: np.ndarray
    band: np.ndarray | None             # (2, grid): lower and upper ends
    quoted: np.ndarray
    quoted_samples: np.ndarray | None   # (resamples with both refits, quoted)
    ci: float

    def quote_json(self, j: int) -> tuple[float, list[float] | None]:
        interval = None
        if self.quoted_samples is not None:
            interval = list(percentile_interval(self.quoted_samples[:, j], self.ci))
        return float(self.quoted[j]), interval


@dataclass(frozen=True)
class Efficiency:
    """Crossover and FLOP multiplier of every compared law both labels have a curve of."""

    c_min: float
    budget: float
    grid: np.ndarray
    quote: list[float]                   # computes quoted in the multiplier table
    largest_reference_run: float
    crossovers: dict[FitLaw, LawCrossover]
    multipliers: dict[FitLaw, LawMultiplier]

    def crossover_json(self) -> dict:
        return {"c_min": self.c_min, "budget": self.budget,
                **{law.name: c.to_json() for law, c in self.crossovers.items()}}

    def multiplier_json(self) -> list[dict]:
        rows = []
        for j, c in enumerate(self.quote):
            row = {"compute": c, "largest_reference_run": c == self.largest_reference_run}
            for law, m in self.multipliers.items():
                row[law.name], interval = m.quote_json(j)
                if interval is not None:
                    row[f"{law.name}_interval"] = interval
            rows.append(row)
        return rows


@dataclass(frozen=True)
class Comparison:
    reference: str
    candidate: str
    rates: dict[str, SlopeComparison | Skipped]    # axis -> the power laws' slopes
    n_shared: int                                   # (unit, seed) pairs both finished
    dropped: list[str]                              # runs without a partner
    efficiency: Efficiency | Skipped
    envelope: SlopeComparison | None                # Approach 1's envelopes

    def to_json(self) -> dict:
        out = {"reference": self.reference, "candidate": self.candidate,
               "axes": {axis: e.to_json() for axis, e in self.rates.items()},
               "pairs": {"n_shared": self.n_shared, "dropped": self.dropped}}
        if isinstance(self.efficiency, Skipped):
            out["crossover"] = self.efficiency.to_json()
        else:
            out["crossover"] = self.efficiency.crossover_json()
            out["multiplier"] = self.efficiency.multiplier_json()
        if self.envelope is not None:
            out["envelope"] = self.envelope.envelope_json()
        return out


def compare(points: FitPoints, ref: str, cand: str, laws: dict[FitLaw, dict[str, LawResult]],
            envelopes: dict[str, Envelope | Skipped], pool: JobPool, caveats: Caveats) -> Comparison:
    config = points.config
    shared, dropped, paired = _paired(points, ref, cand, laws, pool)
    n_shared = int(len(shared)) // 2
    if dropped:
        caveats.warn(f"{cand} vs {ref}: comparison on the {n_shared} (unit, seed) pair(s) both finished; dropped "
                     f"{len(dropped)} unmatched run(s): " + "; ".join(dropped))
    rates = scaling_rates(ref, cand, paired[POWER_LAW], config.ci)
    envelope = None
    if isinstance(envelopes.get(ref), Envelope) and isinstance(envelopes.get(cand), Envelope):
        envelope = envelope_rates(envelopes[ref], envelopes[cand], config.ci)
    efficiency = efficiency_of(points, shared, ref, cand, paired, caveats)
    return Comparison(ref, cand, rates, n_shared, dropped, efficiency, envelope)


def _paired(points: FitPoints, ref: str, cand: str, laws: dict[FitLaw, dict[str, LawResult]],
            pool: JobPool) -> tuple[pd.DataFrame, list[str], dict[FitLaw, dict[str, LawResult]]]:
    """The runs of the (unit, seed) pairs both labels finished, the runs dropped, and the
    compared laws of both labels fitted on those pairs (the per-label fits when none is dropped)."""
    p = points.runs[points.runs["arch_label"].isin([ref, cand])]
    key = p["unit"].astype(str) + "\x00" + p["seed"].astype(str)
    is_r = (p["arch_label"] == ref).to_numpy()
    shared = set(key[is_r]) & set(key[~is_r])
    keep = key.isin(shared).to_numpy()
    dropped = [f"{r.arch_label} {r.run_id} (unit {r.unit}, seed {r.seed}): no {cand if r.arch_label == ref else ref} "
               "partner" for r in p[~keep].itertuples()]
    labels = (ref, cand)
    compared = [law for law in laws if law.compared]
    if not dropped:
        return p, dropped, {law: {lb: laws[law][lb] for lb in labels} for law in compared}
    p = p[keep]
    pending = {(law, lb): pool.start(law.fit(points.of(lb, p)))
               for law in compared for lb in labels if not isinstance(laws[law][lb], Skipped)}
    return p, dropped, {law: {lb: pending[law, lb].result() if (law, lb) in pending else laws[law][lb]
                              for lb in labels} for law in compared}


def efficiency_of(points: FitPoints, shared: pd.DataFrame, ref: str, cand: str,
                paired: dict[FitLaw, dict[str, LawResult]], caveats: Caveats) -> Efficiency | Skipped:
    both = [law for law, fits in paired.items() if fits[ref].curve is not None and fits[cand].curve is not None]
    if not both:
        skipped = Skipped("crossover / FLOP multiplier", "no power law vs FLOPs for both labels")
        caveats.skip(skipped.what, cand, skipped.reason)
        return skipped
    config, flops_col = points.config, points.flops_col
    c_min = float(shared[flops_col].min())
    c_ref_max = float(shared.loc[shared["arch_label"] == ref, flops_col].max())
    budget = max(config.budget, c_min * 10)
    if budget != config.budget:
        caveats.warn(f"budget {config.budget:.3g} is below the data ({c_min:.3g} FLOPs): searched to {budget:.3g}")
    labels = (ref, cand)
    grid = np.geomspace(c_min, budget, MULTIPLIER_GRID)
    first = 3 * math.ceil(math.log10(c_min) / 3)
    quote = sorted({c_ref_max, *[10.0 ** k for k in range(first, int(math.floor(math.log10(budget))) + 1, 3)]})
    crossovers, multipliers = {}, {}
    for law in both:
        r, c = paired[law][ref], paired[law][cand]
        found = find_crossover(r.curve, c.curve, c_min=c_min, budget=budget, labels=labels)
        samples = None
        if len(r.samples) and len(c.samples):
            samples = law.crossover_samples(r, c, c_min=c_min, budget=budget, labels=labels)
        crossovers[law] = LawCrossover(found, samples, config.ci)
        multipliers[law] = _multiplier(r, c, grid, np.array(quote), config.ci)
    return Efficiency(c_min, budget, grid, quote, c_ref_max, crossovers, multipliers)


def _multiplier(ref: LawResult, cand: LawResult, grid: np.ndarray, quote: np.ndarray, ci: float) -> LawMultiplier:
    band = quoted_samples = None
    pairs = [(a, b) for a, b in zip(ref.samples, cand.samples) if a is not None and b is not None]
    if pairs:
        on_grid = np.array([flop_multiplier(a, b, grid) for a, b in pairs])
        band = np.array([percentile_interval(col, ci) for col in on_grid.T]).T
        quoted_samples = np.array([flop_multiplier(a, b, quote) for a, b in pairs])
    return LawMultiplier(flop_multiplier(ref.curve, cand.curve, grid), band,
                         flop_multiplier(ref.curve, cand.curve, quote), quoted_samples, ci)


def flops_per_token_ratios(points: FitPoints) -> dict[str, dict]:
    """Per candidate, over matched units: (candidate FLOPs per token) / (reference FLOPs per token)."""
    out: dict[str, dict] = {}
    runs, ref = points.runs, points.reference
    if ref is None or not len(runs):
        return out
    fpt = runs.assign(fpt=runs[points.flops_col] / runs["tokens"].where(runs["tokens"] > 0))
    by = fpt.groupby(["arch_label", "unit"])["fpt"].median()
    for c in points.candidates:
        try:
            ratio = (by.loc[c] / by.loc[ref]).dropna()
        except KeyError:
            continue
        if len(ratio):
            out[c] = {"median": float(ratio.median()), "min": float(ratio.min()), "max": float(ratio.max()),
                      "n_units": int(len(ratio))}
    return out
