"""`ebt-scaling submit SWEEP --cluster BACKEND`: train a sweep's runs (slurm, local, debug,
or any backend registered through the ``ebt_scaling.backends`` entry point).

SWEEP is a sweep directory (DIR/runs/<run_id>/spec.yaml, as `ebt-scaling plan SWEEP
--write DIR` makes it), or a sweep file / preset that is planned into --out first.
Submitting again is safe: finished runs are skipped, runs a live job holds are left
alone, partial runs resume from their checkpoints, failed and cancelled runs re-run only
with --retry-failed.
"""
from __future__ import annotations

import sys
from pathlib import Path

from ebt_scaling.harness.contract.cli_flags import add_set_argument, parse_overrides
from ebt_scaling.harness.contract.errors import ConfigError, DispatchError, describe_error
from ebt_scaling.harness.contract.paths import require_output_dir

from ..dispatch.backend import BACKENDS
from ..dispatch.profiles import builtin_profiles


def add_arguments(parser) -> None:
    parser.add_argument("sweep", help="sweep directory (with runs/), or a sweep file / preset name to plan into "
                                      "--out first (as `ebt-scaling plan SWEEP --write DIR` does)")
    parser.add_argument("--cluster", required=True, choices=BACKENDS.names(),
                        help="; ".join(f"{b.name}: {b.description}" for b in BACKENDS.entries()))
    parser.add_argument("--profile", help=f"cluster profile: a shipped name ({', '.join(sorted(builtin_profiles()))}) "
                                          "or a YAML path (default: the cluster's)")
    parser.add_argument("--out", help="sweep directory to plan a sweep file / preset into (required for those)")
    add_set_argument(parser, "sweep file (when SWEEP is a file or preset)")
    parser.add_argument("--run", action="append", dest="runs", metavar="RUN_ID",
                        help="submit only this run (id or unique prefix); repeatable")
    parser.add_argument("--retry-failed", action="store_true", help="also re-run failed and cancelled runs")
    parser.add_argument("--wait", action="store_true", help="wait until every submitted run has ended")
    parser.add_argument("--poll", type=float, default=10.0, help="seconds between --wait status checks (default 10)")


def resolve_sweep_dir(sweep: str, out: str | None, overrides: dict | None = None) -> Path:
    """The sweep directory SWEEP names, planning a sweep file / preset into --out if needed
    (with ``--set`` overrides applied to the sweep file)."""
    path = Path(sweep)
    if (path / "runs").is_dir():
        if out and Path(out).resolve() != path.resolve():
            raise ConfigError(f"--out: {sweep} is already a sweep directory; drop --out")
        if overrides:
            raise ConfigError(f"--set: {sweep} is already planned; --set applies to a sweep file or preset")
        return path
    if path.is_dir():
        raise DispatchError(f"{sweep}: not a sweep directory (no runs/ inside); plan one with "
                            "`ebt-scaling plan SWEEP --write DIR`")
    if not out:
        raise ConfigError(f"--out: required to plan {sweep} into a sweep directory (or give a sweep directory)")
    from ebt_scaling.sweeps.sweep_spec import load_sweep

    return plan_into(load_sweep(sweep, overrides), sweep, out)


def plan_into(sweep_spec, sweep: str, out: str | Path) -> Path:
    """Plan `sweep_spec` (a SweepSpec, read from the file or preset `sweep`) into the sweep
    directory `out`; the directory."""
    from ebt_scaling.sweeps.generate import make_plan
    from ebt_scaling.sweeps.plan_table import write_plan

    target = require_output_dir(out, "--out")
    written = write_plan(make_plan(sweep_spec), target)  # keeps identical specs; refuses conflicts
    if written["stale"]:
        print(f"warning: {len(written['stale'])} run directories of {target} are not in the plan of {sweep} (e.g. "
              f"{written['stale'][0]}); they are trained and analysed too: move them out of {target}/runs if they "
              "belong to an earlier plan", file=sys.stderr)
    return target


def run(args) -> int:
    """ConfigError and DispatchError reach the CLI, which prints them as one line."""
    from ..dispatch.profiles import load_profile
    from ..dispatch.sweep_ops import submit_sweep

    try:
        profile = load_profile(args.profile, args.cluster)
        sweep_dir = resolve_sweep_dir(args.sweep, args.out, parse_overrides(args.overrides))
        report = submit_sweep(sweep_dir, args.cluster, profile, retry_failed=args.retry_failed, only=args.runs,
                              wait=args.wait, poll_s=args.poll, echo=lambda m: print(m, flush=True))
    except OSError as exc:
        raise DispatchError(describe_error(exc)) from None
    print(f"{report.summary()} (profile {profile.name}; sweep {sweep_dir})")
    if report.failed:
        for run_id, line in report.failed.items():
            print(f"failed: {run_id}: {line}")
    if report.final_states:
        bad = {k: v for k, v in report.final_states.items() if v not in ("done", "diverged")}
        if bad:
            print("not finished: " + ", ".join(f"{k} ({v})" for k, v in sorted(bad.items())))
    return 0 if report.ok else 1
