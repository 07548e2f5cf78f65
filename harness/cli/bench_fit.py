"""`ebt-scaling bench-fit`: wall time of the scaling-law fits on synthetic data.

1. Chinchilla Approach 3 on --points synthetic runs (1% log-normal noise) with the full
   4,500-start grid, screened to the --top-k best starts (the default fit).
   --full also runs L-BFGS-B from every start (analytic gradient) and --naive runs the
   reference loop (every start, scipy finite-difference gradients); both check that
   they reach the same optimum as the screened fit.
2. The paired bootstrap of two architectures' per-axis power laws, as `ebt-scaling
   analyze` runs it: --runs compute-optimal runs per architecture (--seeds seeds per
   matched unit), one draw of --resamples resamples of the units (analysis/points.py),
   each label's power laws refitted on it (analysis/laws/power.py), and the comparison of
   the two: scaling rates, crossover and FLOP multiplier (analysis/comparison.py).
Each timing is the median of --repeats runs (--full / --naive: --slow-repeats, default 1).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import pandas as pd

from ebt_scaling.analysis.approach3 import fit_approach3, predict_loss
from ebt_scaling.analysis.comparison import Comparison, compare
from ebt_scaling.analysis.fits import blas_threads
from ebt_scaling.analysis.laws.power import POWER_LAW
from ebt_scaling.analysis.load import SweepData
from ebt_scaling.analysis.pipeline import AnalysisConfig, JobPool
from ebt_scaling.analysis.points import FitPoints, select_points
from ebt_scaling.analysis.result import Caveats
from ebt_scaling.harness.contract.errors import ConfigError

# Synthetic Approach 3 truth (roughly Chinchilla's).
TRUTH = {"E": 1.8, "A": 420.0, "B": 1500.0, "alpha": 0.34, "beta": 0.30}
# The two architectures of the power-law bootstrap: label -> registered architecture.
LABELS = {"tpp": "transformer", "ebt": "ebt"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--points", type=int, default=250, help="Approach 3 data points (default: 250)")
    parser.add_argument("--top-k", type=int, default=256, help="screened starts run by L-BFGS-B (default: 256)")
    parser.add_argument("--full", action="store_true", help="also run L-BFGS-B from all 4,500 starts")
    parser.add_argument("--naive", action="store_true",
                        help="also run the reference loop: all starts, finite-difference gradients (minutes)")
    parser.add_argument("--runs", type=int, default=500, help="power-law runs per architecture (default: 500)")
    parser.add_argument("--seeds", type=int, default=5, help="seeds per matched unit (default: 5)")
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (default: 1000)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats, median reported (default: 3)")
    parser.add_argument("--slow-repeats", type=int, default=1, help="repeats of --full / --naive (default: 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic data and bootstraps")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def synthetic_approach3(n_points: int, seed: int, noise: float = 0.01):
    """n_points runs: 10 model sizes x token ratios 2..200 (log-spaced), log-normal noise."""
    rng = np.random.default_rng(seed)
    n_sizes = 10
    per = -(-n_points // n_sizes)
    N = np.repeat(np.geomspace(2e7, 2e10, n_sizes), per)[:n_points]
    D = N * np.tile(np.geomspace(2.0, 200.0, per), n_sizes)[:n_points]
    theta = [np.log(TRUTH["A"]), np.log(TRUTH["B"]), np.log(TRUTH["E"]), TRUTH["alpha"], TRUTH["beta"]]
    return N, D, predict_loss(theta, N, D) * np.exp(rng.normal(0.0, noise, n_points))


def synthetic_pairs(runs: int, seeds: int, seed: int) -> pd.DataFrame:
    """Two architectures' finished runs, as analysis/load.py tables them, on the same matched
    units: compute levels with N = sqrt(C / 120), D = 20 N, `seeds` runs per unit."""
    rng = np.random.default_rng(seed)
    n_units = max(2, runs // seeds)
    compute = np.repeat(np.geomspace(1e16, 1e20, n_units), seeds)
    params = np.sqrt(compute / 120.0)
    unit = np.repeat([f"u{i}" for i in range(n_units)], seeds)
    seed_of = np.tile(np.arange(seeds), n_units)
    frames = []
    for (label, arch), (a, b) in zip(LABELS.items(), [(np.log(30.0), -0.050), (np.log(34.0), -0.056)]):
        loss = np.exp(a + b * np.log(compute) + rng.normal(0.0, 0.01, compute.size))
        frames.append(pd.DataFrame({
            "run_id": [f"{label}-{u}-s{s}" for u, s in zip(unit, seed_of)], "arch_label": label, "arch": arch,
            "status": "done", "unit": unit, "seed": seed_of, "flops_full": compute, "params_total": params,
            "tokens": 20.0 * params, "val_loss": loss}))
    return pd.concat(frames, ignore_index=True)


def paired_power_laws(frame: pd.DataFrame, resamples: int, seed: int) -> tuple[FitPoints, Comparison]:
    """What `analyze` runs for the power laws of two labels: the draw of units, both labels'
    power laws on it, and their comparison (one worker: the power law needs no job pool)."""
    config = AnalysisConfig(bootstrap=resamples, seed=seed, reference=next(iter(LABELS)), workers=1)
    caveats = Caveats()
    with JobPool(config.workers) as pool:
        points = select_points(SweepData(frame, curves=frame.iloc[:0]), config, caveats)
        power = {lb: pool.start(POWER_LAW.fit(points.of(lb))).result() for lb in points.labels}
        return points, compare(points, points.reference, points.candidates[0], {POWER_LAW: power}, {}, pool, caveats)


def _time(fn, repeats: int):
    times, result = [], None
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times, result


def run(args: argparse.Namespace) -> int:
    for flag, value, low in (("--points", args.points, 5), ("--runs", args.runs, 4), ("--seeds", args.seeds, 1),
                             ("--resamples", args.resamples, 1), ("--repeats", args.repeats, 1),
                             ("--top-k", args.top_k, 1)):
        if value < low:
            raise ConfigError(f"{flag} must be >= {low} (got {value})")

    out: dict = {"repeats": args.repeats}
    N, D, L = synthetic_approach3(args.points, args.seed)
    med, times, fit = _time(lambda: fit_approach3(N, D, L, top_k=args.top_k), args.repeats)
    out["approach3"] = {"points": args.points, "starts": fit.n_starts, "optimized": fit.n_optimized,
                        "median_s": med, "times_s": times, "params": fit.params(), "objective": fit.loss_value,
                        "at_optimum": fit.n_at_optimum}
    variants = []
    if args.full:
        variants.append(("approach3_all_starts", dict(top_k=None)))
    if args.naive:
        variants.append(("approach3_naive", dict(top_k=None, analytic_gradient=False, polish=False)))
    for name, kwargs in variants:
        med_v, times_v, fit_v = _time(lambda kw=kwargs: fit_approach3(N, D, L, **kw), args.slow_repeats)
        rel = {k: abs(fit_v.params()[k] / v - 1.0) for k, v in fit.params().items()}
        out[name] = {"median_s": med_v, "times_s": times_v, "params": fit_v.params(), "objective": fit_v.loss_value,
                     "at_optimum": fit_v.n_at_optimum, "optimized": fit_v.n_optimized,
                     "max_rel_diff_vs_screened": max(rel.values()),
                     "screened_objective_minus_this": fit.loss_value - fit_v.loss_value}

    frame = synthetic_pairs(args.runs, args.seeds, args.seed)
    with blas_threads(1):   # as analyze runs its fits
        med_b, times_b, (points, comparison) = _time(
            lambda: paired_power_laws(frame, args.resamples, args.seed), args.repeats)
    rates = comparison.rates["flops"].to_json()
    out["power_law_bootstrap"] = {"runs_per_arch": int(len(frame)) // 2, "units": points.n_units,
                                  "resamples": args.resamples, "median_s": med_b, "times_s": times_b,
                                  "slope_diff": rates["slope_diff"],
                                  "slope_diff_interval": rates["intervals"]["slope_diff"]}

    if args.json:
        print(json.dumps(out))
        return 0
    a3 = out["approach3"]
    print(f"Approach 3, {a3['points']} points, grid of {a3['starts']} starts, L-BFGS-B from the best {a3['optimized']}: "
          f"median {a3['median_s']:.2f} s of {args.repeats} ({', '.join(f'{t:.2f}' for t in a3['times_s'])})")
    for name, label in (("approach3_all_starts", "all starts, analytic gradient"),
                        ("approach3_naive", "naive loop: all starts, finite differences")):
        if name in out:
            v = out[name]
            print(f"Approach 3, {label}: median {v['median_s']:.2f} s of {len(v['times_s'])}; "
                  f"max relative parameter difference vs screened {v['max_rel_diff_vs_screened']:.2e}, "
                  f"objective screened - this = {v['screened_objective_minus_this']:.2e}")
    b = out["power_law_bootstrap"]
    print(f"paired power-law bootstrap, 2 x {b['runs_per_arch']} runs ({b['units']} matched units), "
          f"{b['resamples']} resamples, as analyze runs it (power laws vs FLOPs, N and D; rates, crossover, "
          f"FLOP multiplier): median {b['median_s']:.3f} s of {args.repeats}")
    return 0
