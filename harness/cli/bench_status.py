"""`ebt-scaling bench-status [--runs 1000 10000] [--rows 100 10000] [--keep DIR]`: time `status`
on synthetic sweeps in the trainer's format, and the bytes it reads per run
(harness/benchmarks/status.py). Prints one line per sweep: the median time of --repeat
`status --json` calls and the bytes read per run, which must not grow with --rows, and the
time of the first call, which parses every spec.yaml (no spec summaries cached yet).
"""
from __future__ import annotations

from pathlib import Path

from ebt_scaling.harness.contract.errors import require


def add_arguments(parser) -> None:
    parser.add_argument("--runs", type=int, nargs="+", default=[1000, 10_000],
                        help="runs of each synthetic sweep (default: 1000 10000)")
    parser.add_argument("--rows", type=int, nargs="+", default=[100, 10_000],
                        help="metrics.jsonl rows of each run (default: 100 10000; the bytes read per run must not "
                             "grow with it)")
    parser.add_argument("--repeat", type=int, default=3, help="timings to take the median of, after the first (default: 3)")
    parser.add_argument("--keep", metavar="DIR", help="build the sweeps in DIR and keep them (reused when there); "
                                                      "default: a temporary directory, removed after")


def run(args) -> int:
    from ebt_scaling.harness.benchmarks.status import bench_status

    require(min(args.runs) >= 1, "--runs", f"must be >= 1, got {min(args.runs)}")
    require(min(args.rows) >= 1, "--rows", f"must be >= 1, got {min(args.rows)}")
    require(args.repeat >= 1, "--repeat", f"must be >= 1, got {args.repeat}")
    bench_status(args.runs, args.rows, args.repeat, Path(args.keep) if args.keep else None,
                 echo=lambda line: print(line, flush=True))
    return 0
