"""`ebt-scaling cancel SWEEP_DIR [RUN...]`: cancel runs (all unfinished ones by default).

Each run is marked cancelled in its directory (status reports it; `submit` leaves it
alone unless --retry-failed), then its SLURM job is scancelled, or its local job stopped.
"""
from __future__ import annotations

from ..cli import CliError


def add_arguments(parser) -> None:
    parser.add_argument("sweep_dir", help="sweep directory (with runs/)")
    parser.add_argument("runs", nargs="*", metavar="RUN", help="run ids or unique prefixes (default: all unfinished)")


def run(args) -> int:
    from ..dispatch.status import DispatchError, cancel_runs

    try:
        actions = cancel_runs(args.sweep_dir, args.runs or None)
    except DispatchError as exc:
        raise CliError(str(exc)) from None
    for run_id, action in actions:
        print(f"{run_id}: {action}")
    return 0
