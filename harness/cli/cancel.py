"""`ebt-scaling cancel SWEEP_DIR [RUN...]`: cancel runs (all unfinished ones by default).

Each run is marked cancelled in its directory (status reports it; `submit` leaves it
alone unless --retry-failed), then its job is stopped by its backend (scancel on SLURM,
SIGINT to a local worker whose runs are all cancelled).
"""
from __future__ import annotations


def add_arguments(parser) -> None:
    parser.add_argument("sweep_dir", help="sweep directory (with runs/)")
    parser.add_argument("runs", nargs="*", metavar="RUN", help="run ids or unique prefixes (default: all unfinished)")


def run(args) -> int:
    from ..dispatch.sweep_ops import cancel_runs

    for run_id, action in cancel_runs(args.sweep_dir, args.runs or None):  # DispatchError: one line, from the CLI
        print(f"{run_id}: {action}")
    return 0
