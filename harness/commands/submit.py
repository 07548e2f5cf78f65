"""`ebt-scaling submit SWEEP --cluster slurm|local|debug`: train a sweep's runs.

SWEEP is a sweep directory (DIR/runs/<run_id>/spec.yaml, as `ebt-scaling plan SWEEP
--write DIR` makes it), or a sweep file / preset that is planned into --out first.
Submitting again is safe: finished runs are skipped, runs a live job holds are left
alone, partial runs resume from their checkpoints, failed and cancelled runs re-run only
with --retry-failed.
"""
from __future__ import annotations

from pathlib import Path

from ebt_scaling.harness.contract.errors import ConfigError

from ..cli import CliError


def add_arguments(parser) -> None:
    parser.add_argument("sweep", help="sweep directory (with runs/), or a sweep file / preset name to plan into "
                                      "--out first (as `ebt-scaling plan SWEEP --write DIR` does)")
    parser.add_argument("--cluster", required=True, choices=["slurm", "local", "debug"],
                        help="slurm: one job array per resource class; local: one job per GPU (or the CPU); "
                             "debug: in this process")
    parser.add_argument("--profile", help="cluster profile: a shipped name (local, slurm, slurm-local, "
                                          "example-cluster) or a YAML path (default: the cluster's)")
    parser.add_argument("--out", help="sweep directory to plan a sweep file / preset into (required for those)")
    parser.add_argument("--run", action="append", dest="runs", metavar="RUN_ID",
                        help="submit only this run (id or unique prefix); repeatable")
    parser.add_argument("--retry-failed", action="store_true", help="also re-run failed and cancelled runs")
    parser.add_argument("--wait", action="store_true", help="wait until every submitted run has ended")
    parser.add_argument("--poll", type=float, default=10.0, help="seconds between --wait status checks (default 10)")


def resolve_sweep_dir(sweep: str, out: str | None) -> Path:
    """The sweep directory SWEEP names, planning a sweep file / preset into --out if needed."""
    path = Path(sweep)
    if (path / "runs").is_dir():
        if out and Path(out).resolve() != path.resolve():
            raise CliError(f"--out: {sweep} is already a sweep directory; drop --out")
        return path
    if path.is_dir():
        raise CliError(f"{sweep}: not a sweep directory (no runs/ inside); plan one with "
                       "`ebt-scaling plan SWEEP --write DIR`")
    try:
        from ebt_scaling.sweeps import load_sweep, make_plan
        from ebt_scaling.sweeps.plan_table import write_plan
    except ImportError:
        raise CliError(f"{sweep}: not a sweep directory, and this install has no sweep planner "
                       "(ebt_scaling.sweeps)") from None
    if not out:
        raise CliError(f"--out DIR is required to plan {sweep} into a sweep directory (or give a sweep directory)")
    try:
        sweep_spec = load_sweep(sweep)
        target = Path(out)
        write_plan(make_plan(sweep_spec), target)  # keeps identical specs; refuses conflicting ones
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    return target


def run(args) -> int:
    from ..dispatch.profiles import load_profile
    from ..dispatch.status import DispatchError
    from ..dispatch.submit import submit_sweep

    try:
        profile = load_profile(args.profile, args.cluster)
        sweep_dir = resolve_sweep_dir(args.sweep, args.out)
        report = submit_sweep(sweep_dir, args.cluster, profile, retry_failed=args.retry_failed, only=args.runs,
                              wait=args.wait, poll_s=args.poll, echo=lambda m: print(m, flush=True))
    except (ConfigError, DispatchError) as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:
        from ..dispatch.lease import describe_error

        raise CliError(describe_error(exc)) from None
    print(f"{report.summary()} (profile {profile.name}; sweep {sweep_dir})")
    if report.failed:
        for run_id, line in report.failed.items():
            print(f"failed: {run_id}: {line}")
    if report.final_states:
        bad = {k: v for k, v in report.final_states.items() if v not in ("done", "diverged")}
        if bad:
            print("not finished: " + ", ".join(f"{k} ({v})" for k, v in sorted(bad.items())))
    return 0 if report.ok else 1
