"""`ebt-scaling bench-fit`: wall time of the scaling-law fits on synthetic data.

1. Chinchilla Approach 3 on --points synthetic runs (1% log-normal noise) with the full
   4,500-start grid, screened to the --top-k best starts (the default fit).
   --full also runs L-BFGS-B from every start (analytic gradient) and --naive runs the
   reference loop (every start, scipy finite-difference gradients); both check that
   they reach the same optimum as the screened fit.
2. A paired bootstrap of per-axis power laws of two architectures: --runs runs per
   architecture (--seeds seeds per matched unit), --resamples resamples, vectorised.
   The generic DataFrame paired_bootstrap on the same data is timed beside it.
Each timing is the median of --repeats runs (--full / --naive: --slow-repeats, default 1).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

# Synthetic Approach 3 truth (roughly Chinchilla's).
TRUTH = {"E": 1.8, "A": 420.0, "B": 1500.0, "alpha": 0.34, "beta": 0.30}


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
    import numpy as np

    from ebt_scaling.analysis.approach3 import predict_loss

    rng = np.random.default_rng(seed)
    n_sizes = 10
    per = -(-n_points // n_sizes)
    N = np.repeat(np.geomspace(2e7, 2e10, n_sizes), per)[:n_points]
    D = N * np.tile(np.geomspace(2.0, 200.0, per), n_sizes)[:n_points]
    theta = [np.log(TRUTH["A"]), np.log(TRUTH["B"]), np.log(TRUTH["E"]), TRUTH["alpha"], TRUTH["beta"]]
    return N, D, predict_loss(theta, N, D) * np.exp(rng.normal(0.0, noise, n_points))


def synthetic_pairs(runs: int, seeds: int, seed: int):
    """Two architectures' runs on the same matched units (compute levels), `seeds` per unit."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    n_units = max(2, runs // seeds)
    compute = np.repeat(np.geomspace(1e16, 1e20, n_units), seeds)
    unit = np.repeat(np.arange(n_units), seeds)
    frames = []
    for arch, (a, b) in {"tpp": (np.log(30.0), -0.050), "ebt": (np.log(34.0), -0.056)}.items():
        loss = np.exp(a + b * np.log(compute) + rng.normal(0.0, 0.01, compute.size))
        frames.append(pd.DataFrame({"arch": arch, "unit": unit, "compute": compute, "loss": loss}))
    return pd.concat(frames, ignore_index=True)


def _time(fn, repeats: int):
    times, result = [], None
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times, result


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from ebt_scaling.analysis.approach3 import fit_approach3
    from ebt_scaling.analysis.bootstrap import paired_bootstrap, paired_power_law_bootstrap
    from ebt_scaling.analysis.fits import fit_power_law
    from ebt_scaling.harness.contract.errors import ConfigError

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
    ref, cand = frame[frame.arch == "tpp"], frame[frame.arch == "ebt"]
    med_b, times_b, boot = _time(lambda: paired_power_law_bootstrap(
        ref.compute, ref.loss, ref.unit, cand.compute, cand.loss, cand.unit,
        n_resamples=args.resamples, seed=args.seed), args.repeats)
    out["power_law_bootstrap"] = {"runs_per_arch": int(len(ref)), "units": int(frame.unit.nunique()),
                                  "resamples": args.resamples, "median_s": med_b, "times_s": times_b,
                                  "slope_diff": boot.estimate["slope_diff"],
                                  "slope_diff_interval": list(boot.interval("slope_diff"))}

    def slopes(df):
        t, e = df[df.arch == "tpp"], df[df.arch == "ebt"]
        return {"slope_tpp": fit_power_law(t.compute, t.loss).slope, "slope_ebt": fit_power_law(e.compute, e.loss).slope}

    med_g, times_g, gen = _time(lambda: paired_bootstrap(
        frame, "unit", slopes, n_resamples=args.resamples, seed=args.seed,
        derived=lambda v: {"slope_diff": v["slope_ebt"] - v["slope_tpp"]}), args.repeats)
    same = bool(np.allclose(gen.samples["slope_diff"], boot.samples["slope_diff"], rtol=1e-9, atol=1e-12))
    out["generic_paired_bootstrap"] = {"median_s": med_g, "times_s": times_g, "same_samples_as_vectorised": same}

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
          f"{b['resamples']} resamples, vectorised: median {b['median_s']:.3f} s of {args.repeats}")
    g = out["generic_paired_bootstrap"]
    print(f"  same with the generic DataFrame paired_bootstrap: median {g['median_s']:.2f} s "
          f"(identical samples: {g['same_samples_as_vectorised']})")
    return 0
