"""`ebt-scaling plan SWEEP.yaml|PRESET [--json] [--write DIR] [--set KEY=VALUE] [--throughput FILE]`: every run
of a sweep.

Prints a table of every run (run id, pair id, architecture, shape, parameters, tokens,
FLOPs in each convention, batch, LR, GPU-hours) with totals and warnings. GPU-hours are
full-convention FLOPs / each architecture's achieved FLOP/s: the sweep's throughput.mfu if
set, else measured by `ebt-scaling bench --save` (the throughput file, --throughput), else
its documented default MFU; the header and the totals say which
(harness/contract/throughput.py). ``--write DIR`` materialises DIR/runs/<run_id>/spec.yaml
(the run directories the trainer uses), DIR/sweep.yaml (the resolved sweep) and
DIR/plan.json. ``--set throughput.mfu=0.5`` (repeatable) overrides any key of the sweep
file. Any error is one line naming the file and the key, and nothing is written.
"""
from __future__ import annotations

import sys

from ebt_scaling.harness.contract.cli_flags import add_set_argument, parse_overrides


def add_arguments(parser) -> None:
    parser.add_argument("sweep", help="sweep YAML, or a preset name (tiny, paper_nlp, isoflop, data_scaling, "
                                      "paper_width, paper_depth, paper_batch)")
    parser.add_argument("--json", action="store_true", help="print the plan as one JSON object instead of a table")
    parser.add_argument("--write", metavar="DIR", help="write DIR/runs/<run_id>/spec.yaml, DIR/sweep.yaml and "
                                                       "DIR/plan.json")
    add_throughput_arguments(parser)
    add_set_argument(parser, "sweep file")


def add_throughput_arguments(parser) -> None:
    """--throughput and --throughput-device, shared by `plan` and `status`."""
    from ebt_scaling.harness.contract.throughput import ENV_VAR, default_throughput_path, display_path

    parser.add_argument("--throughput", metavar="FILE",
                        help=f"throughput file of `ebt-scaling bench --save` for GPU-hours (default: "
                             f"{display_path(default_throughput_path())} when it exists, set by ${ENV_VAR}; without "
                             "one, each architecture's documented default MFU)")
    parser.add_argument("--throughput-device", metavar="NAME",
                        help="use the throughput file's entries of the device whose name contains NAME, e.g. A100 "
                             "(default: the GPU measured most recently)")


def run(args) -> int:
    from ebt_scaling.harness.contract.throughput import resolve_throughput_file
    from ebt_scaling.sweeps import load_sweep, make_plan
    from ebt_scaling.sweeps.plan_table import dumps_json, format_plan, write_plan

    sweep = load_sweep(args.sweep, parse_overrides(args.overrides))
    plan = make_plan(sweep, resolve_throughput_file(args.throughput), args.throughput_device)
    written = write_plan(plan, args.write) if args.write else None
    print(dumps_json(plan) if args.json else format_plan(plan))
    if written is not None:
        print(f"wrote {args.write}: {written['written']} new or updated run specs, {written['kept']} unchanged; "
              "sweep.yaml, plan.json", file=sys.stderr)
        if written["stale"]:
            print(f"warning: {len(written['stale'])} run directories of {args.write} are not in this plan (e.g. "
                  f"{written['stale'][0]}): submit trains them too and analyze reads them; move them out of "
                  f"{args.write}/runs if they belong to an earlier plan", file=sys.stderr)
    return 0
