"""`ebt-scaling bench-plan [--runs 10000]`: time planning a large generated sweep.

The sweep is an isoFLOP study (2 architectures, 5 sizes per budget, 4 seeds, the paper's
vocabulary and context, aspect shape rule, 20 tokens/param optimum, OLMo LR/batch/beta2/
warmup rules) with as many log-spaced budgets as --runs needs. Timed: expand (shapes,
FLOPs, RunSpecs and their run ids) + the header, table and totals (built, not printed). Prints the
median of --repeat timings.
"""
from __future__ import annotations

import math
import statistics
import time

from ebt_scaling.harness.contract.errors import ConfigError

ARCHS = 2
POINTS = 5
SEEDS = 4


def add_arguments(parser) -> None:
    parser.add_argument("--runs", type=int, default=10_000, help="runs in the generated sweep (default: 10000)")
    parser.add_argument("--repeat", type=int, default=3, help="timings to take the median of (default: 3)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def generated_sweep(runs: int) -> dict:
    """A sweep file (as data) with about `runs` runs."""
    # at least 2: a log-spaced range from start to stop needs two points (fewer runs are cut off after)
    budgets = max(2, math.ceil(runs / (ARCHS * POINTS * SEEDS)))
    return {
        "name": "bench",
        "base": {"model": {"vocab_size": 50277, "context": 2048}, "precision": "bf16"},
        "seeds": list(range(SEEDS)),
        "architectures": [{"label": "T++", "arch": "transformer"}, {"label": "EBT-S1", "arch": "ebt"}],
        "pairing": "flops",
        "axis": {"name": "isoflop", "values": {"start": 1e17, "stop": 1e22, "num": budgets}, "points": POINTS,
                 "spread": 2.0},
        "shape": {"rule": "aspect", "aspect": 96, "head_dim": 64},
        "tokens": {"rule": "tokens_per_param", "tokens_per_param": 20},
        "hparams": {"lr": {"rule": "olmo"}, "batch": {"rule": "olmo", "round": "multiple_of_8"},
                    "warmup": {"rule": "olmo"}, "beta2": {"rule": "olmo"}},
    }


def run(args) -> int:
    import json

    from ebt_scaling.sweeps.generate import make_plan

    from ebt_scaling.sweeps.sweep_spec import sweep_from_dict
    from ebt_scaling.sweeps.plan_table import header_lines, table_lines, totals

    if args.runs < 1:
        raise ConfigError(f"--runs: must be >= 1, got {args.runs}")
    if args.repeat < 1:
        raise ConfigError(f"--repeat: must be >= 1, got {args.repeat}")
    data = generated_sweep(args.runs)
    times, n_runs = [], 0
    for _ in range(args.repeat):
        start = time.perf_counter()
        sweep = sweep_from_dict(data, "bench-plan")
        plan = make_plan(sweep)
        plan.runs = plan.runs[:args.runs]
        lines = header_lines(plan) + table_lines(plan)
        totals(plan)
        times.append(time.perf_counter() - start)
        n_runs = len(plan.runs)
        assert len(lines) > n_runs
    median = statistics.median(times)
    if args.json:
        print(json.dumps({"runs": n_runs, "median_s": median, "times_s": times}))
    else:
        print(f"planned {n_runs} runs (load + expand + table + totals): median {median:.3f} s of "
              f"{args.repeat} ({', '.join(f'{t:.3f}' for t in times)} s); {median / n_runs * 1e6:.1f} us/run")
    return 0
