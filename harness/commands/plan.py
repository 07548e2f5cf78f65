"""`ebt-scaling plan SWEEP.yaml|PRESET [--json] [--write DIR]`: every run of a sweep.

Prints a table of every run (run id, pair id, architecture, shape, parameters, tokens,
FLOPs in each convention, batch, LR, GPU-hours at the sweep's assumed throughput) with
totals and warnings; ``--write DIR`` materialises DIR/runs/<run_id>/spec.yaml (the run
directories the trainer uses), DIR/sweep.yaml (the resolved sweep) and DIR/plan.json.
Any error is one line naming the file and the key, and nothing is written.
"""
from __future__ import annotations

import sys

from ebt_scaling.harness.cli import CliError


def add_arguments(parser) -> None:
    parser.add_argument("sweep", help="sweep YAML, or a preset name (tiny, paper_nlp, isoflop, data_scaling, "
                                      "paper_width, paper_depth, paper_batch)")
    parser.add_argument("--json", action="store_true", help="print the plan as one JSON object instead of a table")
    parser.add_argument("--write", metavar="DIR", help="write DIR/runs/<run_id>/spec.yaml, DIR/sweep.yaml and "
                                                       "DIR/plan.json")
    parser.add_argument("--mfu", type=float, help="override the sweep's assumed MFU (0-1] for GPU-hours")
    parser.add_argument("--peak-tflops", type=float, help="override the sweep's assumed peak TFLOP/s per GPU")


def run(args) -> int:
    from dataclasses import replace

    from ebt_scaling.harness.contract.errors import ConfigError
    from ebt_scaling.sweeps import load_sweep, make_plan
    from ebt_scaling.sweeps.plan_table import dumps_json, format_plan, write_plan

    try:
        sweep = load_sweep(args.sweep)
        if args.mfu is not None or args.peak_tflops is not None:
            try:
                tp = replace(sweep.throughput,
                             mfu=sweep.throughput.mfu if args.mfu is None else args.mfu,
                             peak_tflops=sweep.throughput.peak_tflops if args.peak_tflops is None else args.peak_tflops)
            except ConfigError as exc:
                raise ConfigError(f"--{str(exc).replace('_', '-')}") from None
            source = sweep.source
            sweep = replace(sweep, throughput=tp)
            object.__setattr__(sweep, "source", source)
        plan = make_plan(sweep)
        written = write_plan(plan, args.write) if args.write else None
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    print(dumps_json(plan) if args.json else format_plan(plan))
    if written is not None:
        print(f"wrote {args.write}: {written['written']} new or updated run specs, {written['kept']} unchanged; "
              "sweep.yaml, plan.json", file=sys.stderr)
    return 0
