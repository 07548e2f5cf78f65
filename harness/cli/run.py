"""`ebt-scaling run [SWEEP]`: the main job -- plan, train every run, analyze, report.

With no argument it runs the `tiny` preset (real Shakespeare text, local BPE, four sizes of
each architecture) on this machine's CPU and writes runs/tiny/analysis/report.md. Running it
again skips finished runs and resumes interrupted ones, then re-analyzes.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from ebt_scaling.harness.contract.cli_flags import add_set_argument, flag_error, parse_overrides
from ebt_scaling.harness.contract.errors import ConfigError
from ebt_scaling.harness.contract.paths import require_output_dir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..dispatch.backend import BACKENDS

    parser.add_argument("sweep", nargs="?", default="tiny",
                        help="sweep file, preset or planned sweep directory (default: tiny, the CPU embedded default)")
    parser.add_argument("--out", help="sweep directory (default: runs/<sweep name>)")
    parser.add_argument("--cluster", choices=BACKENDS.names(), default="local",
                        help="where runs train (default: local: this machine's GPUs, else its CPU)")
    parser.add_argument("--profile", help="cluster profile (default: the backend's; local: one job per GPU, "
                                          "else two CPU workers)")
    add_set_argument(parser, "sweep file")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples of the analysis")


def run(args: argparse.Namespace) -> int:
    """ConfigError and DispatchError reach the CLI, which prints them as one line. The sweep
    file is read once, and so is every run's spec: the snapshot taken after planning serves
    the submission, its --wait and the analysis."""
    from ebt_scaling.analysis.pipeline import AnalysisConfig
    from ebt_scaling.sweeps.sweep_spec import load_sweep

    from ..dispatch.profiles import load_profile
    from ..dispatch.snapshot import SweepSnapshot
    from ..dispatch.sweep_ops import submit_sweep
    from .analyze import analyze_sweep
    from .submit import plan_into, resolve_sweep_dir

    start = time.time()
    try:  # checked before anything trains
        config = AnalysisConfig(bootstrap=args.bootstrap)
    except ConfigError as exc:
        raise flag_error(exc, ["bootstrap"]) from None
    overrides = parse_overrides(args.overrides)
    if (Path(args.sweep) / "runs").is_dir():   # a planned sweep directory (e.g. after `plan --extend`)
        print(f"[1/3] sweep directory {args.sweep}: planned already", flush=True)
        sweep_dir = resolve_sweep_dir(args.sweep, args.out or args.sweep, overrides)
    else:
        sweep = load_sweep(args.sweep, overrides)
        out = args.out or f"runs/{sweep.name}"
        print(f"[1/3] planning sweep {sweep.name!r} into {out}", flush=True)
        sweep_dir = plan_into(sweep, args.sweep, out)
    profile = load_profile(args.profile, args.cluster)
    snapshot = SweepSnapshot.read(sweep_dir)
    print(f"[2/3] training on {args.cluster} (profile {profile.name}); finished runs are skipped", flush=True)
    report = submit_sweep(snapshot, args.cluster, profile, wait=True, poll_s=2.0, progress=True,
                          echo=lambda m: print(m, flush=True))
    print(f"      {report.summary()}", flush=True)
    print("[3/3] analyzing", flush=True)
    status = analyze_sweep(sweep_dir, require_output_dir(sweep_dir / "analysis", "--out"), config, snapshot.specs)
    print(f"main job finished in {time.time() - start:.0f} s", flush=True)
    return status or (0 if report.ok else 1)
