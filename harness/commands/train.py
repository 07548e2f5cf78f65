"""`ebt-scaling train SPEC.yaml --out RUN_DIR`: train, resume, or report a finished run."""
from __future__ import annotations

import json
import signal

from ebt_scaling.harness.contract.cli_flags import add_set_argument, parse_overrides


def add_arguments(parser) -> None:
    parser.add_argument("spec", help="run spec YAML")
    parser.add_argument("--out", required=True, help="run directory (resumed if it holds a checkpoint)")
    add_set_argument(parser, "run spec")
    parser.add_argument("--quiet", action="store_true", help="no progress bar (batch jobs)")


def run(args) -> int:
    from ebt_scaling.harness.contract.spec import load_spec
    from ebt_scaling.harness.training.trainer import train_run

    stop = {"requested": False}

    def request_stop(signum, frame):  # finish the current step, checkpoint, exit cleanly
        stop["requested"] = True

    for sig in (signal.SIGTERM, signal.SIGUSR2):
        signal.signal(sig, request_stop)
    spec = load_spec(args.spec, parse_overrides(args.overrides))
    result = train_run(spec, args.out, quiet=args.quiet, stop_requested=lambda: stop["requested"])
    print(json.dumps({k: result.get(k) for k in ("status", "run_id", "step", "val_loss", "val_ppl")}))
    return 0 if result["status"] in ("done", "preempted") else 1
