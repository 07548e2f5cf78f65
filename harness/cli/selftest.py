"""`ebt-scaling selftest`: acceptance of one device in one command, one table.

Checks every registered architecture: a few bf16 training steps eager and compiled
(compiled loss of step 1 equal to eager's), an exact resume of a stopped run, one-process
data parallel (NCCL on CUDA, gloo on the CPU) against no process group, and `bench`
beside the reference code's H100 figures. One row per check (PASS / FAIL / SKIP, figures,
seconds); exit status 1 when any check fails. The logic lives in
harness/benchmarks/selftest.py; docs/performance.md ("GPU acceptance: selftest").
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from ebt_scaling.harness.contract.errors import ConfigError, require


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ebt_scaling.models.architectures import PAPER_SIZES

    parser.add_argument("--device", default="auto",
                        help="auto, cpu, cuda or cuda:N (default: auto: cuda if available, else cpu)")
    parser.add_argument("--quick", action="store_true",
                        help="the smallest shapes and fewest steps on any device, bench eager only (the test "
                             "suite's setting)")
    parser.add_argument("--precision", choices=["bf16", "fp32"], default="bf16",
                        help="bf16 autocast with fp32 weights, or fp32 (default: bf16)")
    parser.add_argument("--checks", nargs="+", default=None, metavar="GROUP",
                        help="check groups to run: train, resume, data-parallel, bench (default: all)")
    parser.add_argument("--bench-size", nargs="+", choices=list(PAPER_SIZES), default=None,
                        help="named sizes to bench at the anchors' batch 32 x 256 and V = 50,277 (default: xxs on "
                             "CUDA; a small stand-in shape on the CPU or with --quick)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: 1 on the CPU, whose stand-in shapes are tiny: more threads "
                             "only contend, above all next to compiled kernels; torch's default on CUDA)")
    parser.add_argument("--seed", type=int, default=0, help="seed of weights, batches and data (default: 0)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")


def run(args: argparse.Namespace) -> int:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("selftest runs in one process (its data-parallel check makes its own group of one); "
                          "run it without torchrun / srun tasks")
    require(args.threads is None or args.threads >= 1, "--threads", f"must be >= 1, got {args.threads}")

    import torch

    from ebt_scaling.harness.benchmarks import selftest
    from ebt_scaling.harness.training.trainer import resolve_device

    try:
        device = resolve_device(args.device)
    except (ConfigError, RuntimeError) as exc:
        raise ConfigError(f"--device: {str(exc).removeprefix('device: ')}") from None
    unknown = sorted(set(args.checks or ()) - set(selftest.GROUPS))
    require(not unknown, "--checks", f"unknown group(s) {', '.join(unknown)}; choose from {', '.join(selftest.GROUPS)}")
    threads = args.threads if args.threads is not None else (1 if device.type == "cpu" else None)
    if threads is not None:
        torch.set_num_threads(threads)
    settings = selftest.default_settings(device, quick=args.quick, precision=args.precision,
                                         groups=tuple(g for g in selftest.GROUPS if g in (args.checks or selftest.GROUPS)),
                                         bench_sizes=tuple(args.bench_size) if args.bench_size else None,
                                         seed=args.seed)

    def progress(row) -> None:  # the table comes at the end; stderr shows that something happens
        print(f"selftest: {row.check}: {row.status} ({row.seconds:.1f} s)", file=sys.stderr, flush=True)

    report = selftest.run_selftest(settings, on_row=progress)
    if args.json:
        print(json.dumps(report.as_dict(), default=str))
    else:
        print(selftest.format_report(report))
    return report.exit_code()
