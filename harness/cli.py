"""ebt-scaling: do Energy-Based Transformers scale better than Transformer++ per FLOP?

The `ebt-scaling` console entry point. Each subcommand lives in its own module under harness/commands/ exposing
``add_arguments(parser)`` and ``run(args) -> int``. Modules are imported only when
their command runs, so `ebt-scaling --help` answers without importing torch.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from ebt_scaling.harness.contract.errors import ConfigError, DispatchError

# name -> (module under ebt_scaling.harness.commands, one-line help)
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
    "selftest": ("selftest", "device acceptance in one table: train eager/compiled, exact resume, data parallel, bench"),
    "slurm-local": ("slurm_local", "start/stop/status a real single-node SLURM cluster on this machine (CI)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ebt-scaling", description=__doc__.splitlines()[0].removeprefix("ebt-scaling: "))
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, description=help_text)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    if not argv or argv[0] not in COMMANDS:
        args = parser.parse_args(argv)  # prints help / usage errors and exits
        parser.print_help()
        return 0
    module = importlib.import_module(f"ebt_scaling.harness.commands.{COMMANDS[argv[0]][0]}")
    command_parser = argparse.ArgumentParser(prog=f"ebt-scaling {argv[0]}", description=COMMANDS[argv[0]][1])
    try:
        module.add_arguments(command_parser)  # asks the registries (flags, --cluster choices)
        args = command_parser.parse_args(argv[1:])
        return int(module.run(args) or 0)
    except (ConfigError, DispatchError) as exc:  # every layer's user-facing errors: one line
        print(f"ebt-scaling {argv[0]}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
