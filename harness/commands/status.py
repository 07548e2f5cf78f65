"""`ebt-scaling status SWEEP_DIR [--json]`: one row per run (state, job, tokens done of
total, last validation loss, ETA from recent tokens/s) and totals."""
from __future__ import annotations

import json


def add_arguments(parser) -> None:
    parser.add_argument("sweep_dir", help="sweep directory (with runs/)")
    parser.add_argument("runs", nargs="*", metavar="RUN", help="only these runs (ids or unique prefixes)")
    parser.add_argument("--json", action="store_true", help="print one JSON object: {runs: [...], totals: {...}}")


def run(args) -> int:
    from ..dispatch.sweep_status import format_table, sweep_status, totals

    rows = sweep_status(args.sweep_dir, args.runs or None)  # a DispatchError reaches the CLI as one line
    total = totals(rows)
    if args.json:
        print(json.dumps({"runs": [r.to_json() for r in rows], "totals": total}))
    else:
        print(format_table(rows, total))
    return 0
