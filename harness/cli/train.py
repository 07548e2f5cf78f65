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
    # -q/--quiet (no progress bar, no per-step lines) and --track come from harness/cli/main.py.


def run(args) -> int:
    from ebt_scaling.harness.contract.errors import ConfigError, DispatchError, file_error
    from ebt_scaling.harness.contract.paths import require_output_dir
    from ebt_scaling.harness.contract.run_dir import RunDir
    from ebt_scaling.harness.contract.spec import load_spec
    from ebt_scaling.harness.dispatch.run_files import training_lease
    from ebt_scaling.harness.training.distributed import DistributedContext
    from ebt_scaling.harness.training.trainer import resolve_device, train_run

    stop = {"requested": False}

    def request_stop(signum, frame):  # finish the current step, checkpoint, exit cleanly
        stop["requested"] = True

    for sig in (signal.SIGTERM, signal.SIGUSR2):
        signal.signal(sig, request_stop)
    spec = load_spec(args.spec, parse_overrides(args.overrides))
    out = require_output_dir(args.out, "--out")
    # One process trains a run directory: a second `train` (or a submitted job) on it would
    # append every metrics row twice. Rank 0 holds the lease for a data-parallel launch
    # (torchrun, srun), and tells the other ranks whether it got it: refused -- by a live
    # holder, a damaged result.json, or a file error on lease.json -- every rank ends with the
    # same line, none is left waiting for rank 0 in a collective (gloo's timeout: 30 minutes).
    # The process group is therefore made here, before the trainer (which reuses it). A
    # finished run is only reported, and its last job's record is kept.
    parallel = int(os.environ.get("WORLD_SIZE", "1")) > 1
    ctx = (DistributedContext.from_env(resolve_device(spec.device, int(os.environ.get("LOCAL_RANK", "0"))).type)
           if parallel else DistributedContext())
    with contextlib.ExitStack() as held:
        held.callback(ctx.close)  # last, once every rank is past its collectives
        ending, refused = {}, None
        if ctx.is_main:
            try:
                if RunDir(out).result() is None:
                    ending = held.enter_context(training_lease(out, "--out"))
            except (ConfigError, DispatchError) as exc:
                refused = str(exc)
            except OSError as exc:  # disk full, no permission: one line, as the CLI words a file error
                refused = file_error(exc)
        if (refused := ctx.gather_objects(refused)[0]) is not None:
            raise DispatchError(refused)
        result = train_run(spec, out, quiet=args.quiet, stop_requested=lambda: stop["requested"])
        ending["outcome"] = result["status"]
    print(json.dumps({k: result.get(k) for k in ("status", "run_id", "step", "val_loss", "val_ppl")}))
    return 0 if result["status"] in ("done", "preempted") else 1
