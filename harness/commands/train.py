"""`ebt-scaling train SPEC.yaml --out RUN_DIR`: train, resume, or report a finished run."""
from __future__ import annotations

import contextlib
import json
import os
import signal

from ebt_scaling.harness.contract.cli_flags import add_set_argument, parse_overrides


def add_arguments(parser) -> None:
    parser.add_argument("spec", help="run spec YAML")
    parser.add_argument("--out", required=True, help="run directory (resumed if it holds a checkpoint)")
    add_set_argument(parser, "run spec")
    # -q/--quiet (no progress bar, no per-step lines) and --track come from harness/cli.py.


def run(args) -> int:
    from ebt_scaling.harness.contract.paths import require_output_dir
    from ebt_scaling.harness.contract.run_dir import RunDir
    from ebt_scaling.harness.contract.spec import load_spec
    from ebt_scaling.harness.dispatch.lease import training_lease
    from ebt_scaling.harness.training.trainer import train_run

    stop = {"requested": False}

    def request_stop(signum, frame):  # finish the current step, checkpoint, exit cleanly
        stop["requested"] = True

    for sig in (signal.SIGTERM, signal.SIGUSR2):
        signal.signal(sig, request_stop)
    spec = load_spec(args.spec, parse_overrides(args.overrides))
    out = require_output_dir(args.out, "--out")
    # One process trains a run directory: a second `train` (or a submitted job) on it would
    # append every metrics row twice. Rank 0 holds the lease for a data-parallel launch; a
    # finished run is only reported, and its last job's record is kept.
    trains = int(os.environ.get("RANK", "0")) == 0 and RunDir(out).result() is None
    held = training_lease(out, "--out") if trains else contextlib.nullcontext({})
    with held as ending:
        result = train_run(spec, out, quiet=args.quiet, stop_requested=lambda: stop["requested"])
        ending["outcome"] = result["status"]
    print(json.dumps({k: result.get(k) for k in ("status", "run_id", "step", "val_loss", "val_ppl")}))
    return 0 if result["status"] in ("done", "preempted") else 1
