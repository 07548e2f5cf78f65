"""`ebt-scaling plan SWEEP.yaml|PRESET [--json] [--write DIR] [--set KEY=VALUE] [--throughput FILE]`: every run
of a sweep; `ebt-scaling plan --extend DIR`: add what the finished runs of a written sweep say is missing.

Prints a table of every run (run id, pair id, architecture, shape, parameters, tokens,
FLOPs in each convention, batch, LR, GPU-hours) with totals and warnings. GPU-hours are
full-convention FLOPs / each architecture's achieved FLOP/s: the sweep's throughput.mfu if
set, else measured by `ebt-scaling bench --save` (the throughput file, --throughput), else
its documented default MFU; the header and the totals say which
(sweeps/throughput.py). ``--write DIR`` materialises DIR/runs/<run_id>/spec.yaml
(the run directories the trainer uses), DIR/sweep.yaml (the resolved sweep) and
DIR/plan.json. ``--set throughput.mfu=0.5`` (repeatable) overrides any key of the sweep
file. Any error is one line naming the file and the key, and nothing is written.

``--extend DIR`` reads DIR's runs (analysis/load.py, analysis/tuning.py) and extends DIR/sweep.yaml where
sweeps/extend.py's rules ask for it (isoFLOP sizes beyond an edge minimum, a budget, tuning trials beyond an
edge, winners at full tokens), printing one line "added WHAT: WHY" each, then rewrites DIR as --write does.
"""
from __future__ import annotations

import sys

from ebt_scaling.harness.contract.cli_flags import add_set_argument, parse_overrides
from ebt_scaling.harness.contract.errors import require
from ebt_scaling.harness.contract.paths import require_output_dir


def add_arguments(parser) -> None:
    parser.add_argument("sweep", nargs="?", help="sweep YAML, or a preset name (tiny, paper_nlp, isoflop, "
                                                 "data_scaling, paper_width, paper_depth, paper_batch)")
    parser.add_argument("--json", action="store_true", help="print the plan as one JSON object instead of a table")
    parser.add_argument("--write", metavar="DIR", help="write DIR/runs/<run_id>/spec.yaml, DIR/sweep.yaml and "
                                                       "DIR/plan.json")
    parser.add_argument("--extend", metavar="SWEEP_DIR",
                        help="instead of planning SWEEP: add to SWEEP_DIR (written by --write) what its finished runs "
                             "say is missing (isoFLOP sizes beyond an edge minimum, a budget, tuning trials beyond an "
                             "edge, winners at full tokens), one line each, and rewrite it as --write does")
    add_throughput_arguments(parser)
    add_set_argument(parser, "sweep file")


def add_throughput_arguments(parser) -> None:
    """--throughput and --throughput-device, shared by `plan` and `status`."""
    from ebt_scaling.sweeps.throughput import ENV_VAR, default_throughput_path, display_path

    parser.add_argument("--throughput", metavar="FILE",
                        help=f"throughput file of `ebt-scaling bench --save` for GPU-hours (default: "
                             f"{display_path(default_throughput_path())} when it exists, set by ${ENV_VAR}; without "
                             "one, each architecture's documented default MFU)")
    parser.add_argument("--throughput-device", metavar="NAME",
                        help="use the throughput file's entries of the device whose name contains NAME, e.g. A100 "
                             "(default: the GPU measured most recently)")


def run(args) -> int:
    from ebt_scaling.sweeps.throughput import resolve_throughput_file
    from ebt_scaling.sweeps.generate import make_plan
    from ebt_scaling.sweeps.sweep_spec import load_sweep
    from ebt_scaling.sweeps.plan_table import dumps_json, format_plan, write_plan

    if args.extend is not None:
        return extend(args)
    require(args.sweep is not None, "sweep", "missing; give a sweep YAML or a preset name, or --extend SWEEP_DIR")
    sweep = load_sweep(args.sweep, parse_overrides(args.overrides))
    if args.write:
        require_output_dir(args.write, "--write")
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


def extend(args) -> int:
    """--extend: DIR/sweep.yaml extended where DIR's finished runs ask for it, DIR rewritten."""
    from ebt_scaling.analysis.load import load_runs
    from ebt_scaling.analysis.tuning import find_tuning
    from ebt_scaling.sweeps.throughput import resolve_throughput_file
    from ebt_scaling.sweeps.extend import Findings, extend_sweep
    from ebt_scaling.sweeps.plan_table import write_plan

    others = (args.sweep, "SWEEP"), (args.write, "--write"), (args.overrides, "--set"), (args.json, "--json")
    for given, name in others:
        require(not given, name, "does not go with --extend, which extends the sweep written in SWEEP_DIR; drop it")
    runs = load_runs(args.extend).runs
    tuning = find_tuning(runs)
    findings = Findings(runs, tuple(tuning.cells), frozenset(tuning.tuned_ids)) if tuning else Findings(runs)
    ext = extend_sweep(args.extend, findings, resolve_throughput_file(args.throughput), args.throughput_device)
    for line in ext.added + ext.not_added:
        print(line)
    if not ext.added:
        print(f"nothing to add: the finished runs of {args.extend} ask for no size, budget or trial that is not "
              "already planned")
        return 0
    written = write_plan(ext.plan, args.extend)
    print(f"wrote {args.extend}: {len(ext.new_run_ids)} new runs ({written['written']} run specs written, "
          f"{written['kept']} unchanged); sweep.yaml, plan.json; train them with `ebt-scaling run {args.extend}` "
          f"(or `ebt-scaling submit {args.extend}`)", file=sys.stderr)
    return 0
