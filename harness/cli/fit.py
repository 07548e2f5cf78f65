"""`ebt-scaling fit`: Chinchilla Approach 3, L(N, D) = E + A/N^alpha + B/D^beta, on any CSV.

Columns are named by flags; tokens come from --tokens-col, or from --flops-col as
D = C / (6 N). The fit minimises a Huber loss (delta 1e-3) of log residuals by L-BFGS-B
from the 4,500-start grid of Hoffmann et al. (see analysis/approach3.py).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys

from ebt_scaling.harness.contract.errors import ConfigError
from ebt_scaling.harness.contract.formatting import jsonable


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("csv", help="CSV file with one row per training run")
    parser.add_argument("--params-col", required=True, metavar="P", help="column with parameter counts N")
    parser.add_argument("--loss-col", required=True, metavar="L", help="column with final losses")
    parser.add_argument("--tokens-col", metavar="T", help="column with training tokens D")
    parser.add_argument("--flops-col", metavar="C",
                        help="column with training FLOPs; used for D = C / (6 N) when --tokens-col is absent")
    parser.add_argument("--flop-factor", type=float, default=6.0, metavar="K",
                        help="FLOPs per parameter per token in D = C / (K N) (default: 6)")
    parser.add_argument("--drop-highest-loss", type=int, default=0, metavar="K",
                        help="drop the K runs with the highest loss before fitting (Epoch dropped 5 on Chinchilla)")
    parser.add_argument("--bootstrap", type=int, default=0, metavar="N",
                        help="N bootstrap resamples of the rows for percentile intervals (default: 0, none)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap's numpy Generator (default: 0)")
    parser.add_argument("--ci", type=float, default=0.95, help="interval level (default: 0.95)")
    parser.add_argument("--objective", choices=["huber", "huber-nll"], default="huber",
                        help="huber: Huber loss of log residuals (Hoffmann et al.; default). huber-nll: Huber "
                             "likelihood with a fitted scale, as in Epoch's refit (reproduces their published "
                             "numbers)")
    parser.add_argument("--delta", type=float, default=1e-3, help="Huber delta (default: 1e-3)")
    parser.add_argument("--top-k", type=int, default=256, metavar="K",
                        help="run L-BFGS-B from the K grid starts with the lowest objective (default: 256); "
                             "0 runs all 4,500")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _column(frame, flag: str, name: str, path: str):
    if name not in frame.columns:
        available = ", ".join(repr(c) for c in frame.columns)
        raise ConfigError(f"{flag}: no column {name!r} in {path}; available: {available}")
    return frame[name]


def _positive_numbers(series, flag: str):
    import pandas as pd

    values = pd.to_numeric(series, errors="coerce").astype(float)
    not_numeric = series.notna() & values.isna()
    not_positive = values.notna() & ~((values > 0) & (values < float("inf")))
    bad = not_numeric | not_positive
    if bad.any():
        first = int(bad.to_numpy().nonzero()[0][0])
        raise ConfigError(f"{flag} {series.name!r}: {int(bad.sum())} value(s) are not positive finite numbers "
                       f"(first at data row {first + 1}: {series.iloc[first]!r}); fix or remove those rows")
    return values


def _require_varying(table, args, tokens_from: str) -> None:
    """A constant loss has nothing to fit, and a constant N or D cannot identify its exponent
    (analysis/approach3.constant_inputs): one-line errors naming the columns."""
    from ebt_scaling.analysis.approach3 import constant_inputs

    constant = constant_inputs(table["N"], table["D"], table["L"]) if len(table) else []
    if "L" in constant:
        raise ConfigError(f"--loss-col {args.loss_col!r}: every row has the loss {table['L'].iloc[0]:g}; "
                          "Approach 3 fits how the loss changes with N and D, so the losses must differ")
    named = {"N": f"--params-col {args.params_col!r}", "D": f"--tokens-col {args.tokens_col!r}"
             if args.tokens_col is not None else f"--flops-col {args.flops_col!r} (tokens {tokens_from})"}
    if constant:
        values = ", ".join(f"{name} = {table[name].iloc[0]:g}" for name in constant)
        raise ConfigError(f"{' and '.join(named[name] for name in constant)}: one value in every row ({values}); "
                          "N and D must each vary to identify the exponents alpha and beta (several model "
                          "sizes, each trained on several token counts)")


def load_points(args) -> tuple:
    """(N, D, L, info) from the CSV and flags; raises ConfigError on user errors."""
    import numpy as np
    import pandas as pd

    path = args.csv
    if not os.path.isfile(path):
        raise ConfigError(f"CSV not found: {path}")
    try:
        frame = pd.read_csv(path)
    except Exception as exc:  # pandas raises several types for unreadable files
        raise ConfigError(f"cannot read {path} as CSV: {exc}") from None
    if args.tokens_col is None and args.flops_col is None:
        raise ConfigError("give --tokens-col T, or --flops-col C to use tokens D = C / (6 N)")
    n_col = _positive_numbers(_column(frame, "--params-col", args.params_col, path), "--params-col")
    l_col = _positive_numbers(_column(frame, "--loss-col", args.loss_col, path), "--loss-col")
    if args.tokens_col is not None:
        d_col = _positive_numbers(_column(frame, "--tokens-col", args.tokens_col, path), "--tokens-col")
        tokens_from = args.tokens_col
    else:
        c_col = _positive_numbers(_column(frame, "--flops-col", args.flops_col, path), "--flops-col")
        if not args.flop_factor > 0:
            raise ConfigError(f"--flop-factor must be > 0 (got {args.flop_factor})")
        d_col = c_col / (args.flop_factor * n_col)
        tokens_from = f"{args.flops_col} / ({args.flop_factor:g} * {args.params_col})"
    table = pd.DataFrame({"N": n_col, "D": d_col, "L": l_col})
    missing = int(table.isna().any(axis=1).sum())
    table = table.dropna()
    _require_varying(table, args, tokens_from)
    if args.drop_highest_loss < 0:
        raise ConfigError(f"--drop-highest-loss must be >= 0 (got {args.drop_highest_loss})")
    if args.drop_highest_loss:
        if args.drop_highest_loss > len(table) - 5:
            raise ConfigError(f"--drop-highest-loss {args.drop_highest_loss} leaves fewer than 5 of {len(table)} rows")
        table = table.sort_values("L", kind="stable").iloc[: len(table) - args.drop_highest_loss]
    if len(table) < 5:
        raise ConfigError(f"Approach 3 fits 5 parameters: need at least 5 complete rows, {path} has {len(table)}")
    info = {"rows_used": int(len(table)), "rows_missing": missing, "dropped_highest_loss": args.drop_highest_loss,
            "tokens": tokens_from}
    return (np.asarray(table["N"], float), np.asarray(table["D"], float), np.asarray(table["L"], float), info)


def run(args: argparse.Namespace) -> int:
    from ebt_scaling.analysis.approach3 import fit_approach3
    from ebt_scaling.analysis.bootstrap import bootstrap_approach3

    if args.bootstrap < 0:
        raise ConfigError(f"--bootstrap must be >= 0 (got {args.bootstrap})")
    if not 0 < args.ci < 1:
        raise ConfigError(f"--ci must be in (0, 1) (got {args.ci})")
    if not args.delta > 0:
        raise ConfigError(f"--delta must be > 0 (got {args.delta})")
    if args.top_k < 0:
        raise ConfigError(f"--top-k must be >= 0 (got {args.top_k})")
    N, D, L, info = load_points(args)
    objective = args.objective.replace("-", "_")
    fit = fit_approach3(N, D, L, delta=args.delta, objective=objective, top_k=args.top_k or None)
    boot = None
    if args.bootstrap:
        boot = bootstrap_approach3(N, D, L, n_resamples=args.bootstrap, seed=args.seed, ci=args.ci, point=fit,
                                   delta=args.delta, objective=objective)

    out = {**fit.params(), "a": fit.a_exponent,
           "objective": objective, "delta": args.delta, "objective_value": fit.loss_value,
           "scale": fit.scale, "n_points": fit.n_points, "starts": fit.n_starts, "optimized": fit.n_optimized,
           "at_optimum": fit.n_at_optimum, "converged": fit.converged, **info}
    if boot is not None:
        out["intervals"] = {k: list(v) for k, v in boot.intervals.items()}
        out["bootstrap"] = {"n_resamples": boot.n_resamples, "n_failed": boot.n_failed, "seed": boot.seed,
                            "ci": boot.ci}
    failed = not all(math.isfinite(v) for v in (fit.loss_value, *fit.params().values(), fit.a_exponent))
    if not fit.converged and not failed:
        print(f"warning: L-BFGS-B stopped without converging ({fit.message}); the estimates may be off",
              file=sys.stderr)
    if args.json:
        print(json.dumps(jsonable(out, infinity_as_string=False), allow_nan=False))
        if failed:
            print(f"error: the Approach 3 fit of {args.csv} failed (non-finite objective or parameters)",
                  file=sys.stderr)
            return 1
        return 0

    print(f"Approach 3 fit of {fit.n_points} runs from {args.csv} (tokens: {info['tokens']}; "
          f"dropped {info['dropped_highest_loss']} highest-loss, {info['rows_missing']} incomplete)")
    print(f"objective {objective} (delta {args.delta:g}) = {fit.loss_value:.6g}; L-BFGS-B from {fit.n_optimized} of "
          f"{fit.n_starts} starts, {fit.n_at_optimum} reached the optimum")
    ci_head = f"  {boot.ci * 100:g}% interval" if boot is not None else ""
    print(f"  {'param':<6} {'estimate':>12}{ci_head}")
    for key in ("E", "A", "B", "alpha", "beta", "a"):
        line = f"  {key:<6} {out[key]:>12.6g}"
        if boot is not None:
            lo, hi = out["intervals"][key]
            line += f"  [{lo:.6g}, {hi:.6g}]"
        print(line)
    print("  (a = beta / (alpha + beta): N_opt ∝ C^a)")
    if boot is not None and boot.n_failed:
        print(f"warning: {boot.n_failed} of {boot.n_resamples} resamples failed to fit", file=sys.stderr)
    if failed:
        print(f"error: the Approach 3 fit of {args.csv} failed (non-finite objective or parameters)",
              file=sys.stderr)
        return 1
    return 0

