"""`ebt-scaling status SWEEP_DIR [--json] [--throughput FILE]`: one row per run (state, job,
tokens done of total, last validation loss, ETA from recent tokens/s) and totals, with the
GPU-hours left per architecture and the figure they assume (the `bench --save` throughput
file, else each architecture's documented default MFU; sweeps/throughput.py),
and the finished runs whose provenance (commit, dirty tree, torch) differs from the rest."""
from __future__ import annotations


def add_arguments(parser) -> None:
    from .plan import add_throughput_arguments

    parser.add_argument("sweep_dir", help="sweep directory (with runs/)")
    parser.add_argument("runs", nargs="*", metavar="RUN", help="only these runs (ids or unique prefixes)")
    parser.add_argument("--json", action="store_true", help="print one JSON object: {runs: [...], totals: {...}}")
    add_throughput_arguments(parser)


def run(args) -> int:
    from ebt_scaling.sweeps.throughput import Rates, resolve_throughput_file

    from ..dispatch.status import format_table, status_json, sweep_status, totals

    rates = Rates(resolve_throughput_file(args.throughput), device=args.throughput_device)
    rows = sweep_status(args.sweep_dir, args.runs or None, rates=rates)  # a DispatchError reaches the CLI as one line
    print(status_json(rows) if args.json else format_table(rows, totals(rows)))
    return 0
