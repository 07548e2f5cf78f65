"""ebt-scaling: do Energy-Based Transformers scale better than Transformer++ per FLOP?

The `ebt-scaling` console entry point. Each subcommand lives in its own module under harness/cli/ exposing
``add_arguments(parser)`` and ``run(args) -> int``. Modules are imported only when
their command runs, so `ebt-scaling --help` and `--version` answer without importing torch.

What every command shares lives here: ``-v`` / ``-q`` (before or after the command; the
package logger's level, see harness/tracking/logs.py), ``--track`` on the commands that train (see
harness/tracking/sinks.py), and the one-line errors: ConfigError and DispatchError, and as
a safety net the file errors a command did not check itself (exit status 2). A closed
pipe (`plan tiny --json | head -1`) ends the command quietly with status 141, as SIGPIPE
would.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from ebt_scaling.harness.contract.errors import FILE_ERRNOS, ConfigError, DispatchError, file_error
from ebt_scaling.harness.tracking.logs import configure_logging, level_for

# name -> (module under ebt_scaling.harness.cli, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("run", "the main job: plan a sweep (default: the tiny CPU preset), train it, analyze, report"),
    "plan": ("plan", "expand a sweep (file or preset) into paired run specs: table, totals, GPU-hours, --write DIR"),
    "submit": ("submit", "submit a sweep's runs to SLURM (job arrays), local GPUs/CPU, or in-process (idempotent)"),
    "status": ("status", "per-run state, job, tokens done, last val loss and ETA of a sweep directory"),
    "cancel": ("cancel", "cancel a sweep's runs (all unfinished, or the ones named)"),
    "train": ("train", "train one run from a run spec into a run directory (resumes if interrupted)"),
    "data": ("data", "prepare the data a run spec names (download, tokenizer, token cache)"),
    "eval": ("eval", "evaluate finished runs: held-out/downstream perplexity, EBT thinking; merged into result.json"),
    "analyze": ("analyze", "fit and report a sweep directory: power laws, crossover, Approaches 1-3, bootstrap; "
                           "report.md/.html, fits.json"),
    "fit": ("fit", "fit L(N, D) = E + A/N^alpha + B/D^beta (Chinchilla Approach 3) to any CSV"),
    "flops": ("flops", "parameter counts and FLOPs per token of both models, analytic and measured"),
    "bench": ("bench", "time training steps of both models on this device (ms, tokens/s, memory, MFU)"),
    "bench-fit": ("bench_fit", "time the scaling-law fits (Approach 3 on 250 points; bootstrap of 500 runs)"),
    "bench-plan": ("bench_plan", "time planning a generated sweep of --runs runs (expand + tabulate, median of 3)"),
    "bench-status": ("bench_status", "time `status` on synthetic sweeps of 1,000 and 10,000 runs; bytes read per run"),
    "selftest": ("selftest", "device acceptance in one table: train eager/compiled, exact resume, data parallel, bench"),
    "slurm-local": ("slurm_local", "start/stop/status a real two-node SLURM cluster on this machine (CI)"),
}


TRAINING_COMMANDS = ("run", "submit", "train")  # they take --track

PIPE_CLOSED_STATUS = 128 + 13  # what a shell reports for a process that SIGPIPE ended
INTERRUPTED_STATUS = 128 + 2  # ... and SIGINT


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ebt-scaling")
    except PackageNotFoundError:
        return "unknown (not installed)"


def add_output_flags(parser: argparse.ArgumentParser) -> None:
    flags = parser.add_argument_group("log output").add_mutually_exclusive_group()
    flags.add_argument("-v", "--verbose", action="count", default=0, help="debug lines too")
    flags.add_argument("-q", "--quiet", action="store_true",
                       help="warnings and errors only: no per-step lines, no progress bar")


def add_track_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--track", metavar="SINKS",
                        help="tracking besides metrics.jsonl: tensorboard, wandb (offline) or both, comma-separated; "
                             "none: off. Sets EBT_SCALING_TRACK for the runs this command trains (default: that "
                             "variable; unset: off). Never part of a run id")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ebt-scaling", description=__doc__.splitlines()[0].removeprefix("ebt-scaling: "))
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    add_output_flags(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, description=help_text)
    return parser


@contextmanager
def tracking_requested(track: str | None) -> Iterator[None]:
    """Check the sinks asked for (--track, else EBT_SCALING_TRACK) before anything is
    submitted, and set the variable for this command: the processes it starts inherit it."""
    from ebt_scaling.harness.tracking.sinks import TRACK_ENV, check_installed, parse_track

    key = "--track" if track is not None else TRACK_ENV
    names = parse_track(track if track is not None else os.environ.get(TRACK_ENV, ""), key)
    check_installed(names, key)
    previous = os.environ.get(TRACK_ENV)
    os.environ[TRACK_ENV] = ",".join(names) or "none"
    try:
        yield
    finally:  # in-process callers (tests) get their environment back
        if previous is None:
            os.environ.pop(TRACK_ENV, None)
        else:
            os.environ[TRACK_ENV] = previous


def run_command(argv: list[str]) -> int:
    parser = build_parser()
    at = next((i for i, arg in enumerate(argv) if arg in COMMANDS), None)
    if at is None:
        parser.parse_args(argv)  # prints help / version / usage errors and exits
        parser.print_help()
        return 0
    before = parser.parse_args(argv[:at])  # the flags given before the command (-v, -q)
    name = argv[at]
    module = importlib.import_module(f"ebt_scaling.harness.cli.{COMMANDS[name][0]}")
    command_parser = argparse.ArgumentParser(prog=f"ebt-scaling {name}", description=COMMANDS[name][1])
    add_output_flags(command_parser)
    if name in TRAINING_COMMANDS:
        add_track_flag(command_parser)
    try:
        module.add_arguments(command_parser)  # asks the registries (flags, --cluster choices)
        args = command_parser.parse_args(argv[at + 1:])
        args.verbose, args.quiet = before.verbose + args.verbose, before.quiet or args.quiet
        if args.verbose and args.quiet:
            command_parser.error("argument -q/--quiet: not allowed with argument -v/--verbose")
        configure_logging(level_for(args.verbose, args.quiet), "stderr")
        if name not in TRAINING_COMMANDS:
            return int(module.run(args) or 0)
        with tracking_requested(args.track):
            return int(module.run(args) or 0)
    except (ConfigError, DispatchError) as exc:  # every layer's user-facing errors: one line
        print(f"ebt-scaling {name}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno not in FILE_ERRNOS:
            raise
        print(f"ebt-scaling {name}: error: {file_error(exc)}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    try:
        try:
            return run_command(sys.argv[1:] if argv is None else list(argv))
        finally:
            sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit flush
    except KeyboardInterrupt:
        # Ctrl-C, or `cancel` stopping a plain `train` (SIGINT): the layers below released what
        # they held on the way out (a lease ends "interrupted"); a traceback would only hide that.
        print("ebt-scaling: interrupted", file=sys.stderr)
        return INTERRUPTED_STATUS
    except BrokenPipeError:
        # The reader went away (`status | head`): stop quietly, and point stdout at devnull so
        # the exit flush of what is still buffered cannot fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return PIPE_CLOSED_STATUS

