"""`ebt-scaling analyze SWEEP_DIR`: fit and report a sweep from its run directories alone.

Loads SWEEP_DIR/runs/*/ (analysis/load.py), fits every architecture label (every fit law of
analysis/laws/law.py's LAWS, Approaches 1 and 2, FLOP multiplier, crossover;
analysis/pipeline.py) with a paired bootstrap over matched units, and writes
OUT/fits.json, OUT/runs.csv, PNG plots, OUT/report.md and a self-contained OUT/report.html
(analysis/report.py), each atomically. The same files and seed give the same fits.json.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ebt_scaling.harness.contract.cli_flags import add_dataclass_flags, flag_error, given_flags
from ebt_scaling.harness.contract.errors import ConfigError
from ebt_scaling.harness.contract.paths import require_output_dir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ebt_scaling.analysis.pipeline import AnalysisConfig

    parser.add_argument("sweep_dir", help="sweep directory (SWEEP_DIR/runs/<run_id>/), or one run directory")
    parser.add_argument("--out", metavar="DIR", help="output directory (default: SWEEP_DIR/analysis)")
    parser.set_defaults(config_flags=add_dataclass_flags(parser, AnalysisConfig))


def run(args: argparse.Namespace) -> int:
    sweep_dir = Path(args.sweep_dir)
    if not sweep_dir.is_dir():
        raise ConfigError(f"{sweep_dir}: no such directory")
    out = require_output_dir(args.out or sweep_dir / "analysis", "--out")
    from ebt_scaling.analysis.pipeline import AnalysisConfig
    from ebt_scaling.harness.contract.typed_config import from_dict

    try:  # a ConfigError naming a field (e.g. a --reference the sweep lacks) names its flag
        config = from_dict(AnalysisConfig, given_flags(args, args.config_flags))
        return analyze_sweep(sweep_dir, out, config)
    except ConfigError as exc:
        raise flag_error(exc, args.config_flags) from None


def analyze_sweep(sweep_dir: Path, out: Path, config, specs: dict | None = None) -> int:
    """Fit the sweep's runs with `config` (an AnalysisConfig), write the report into `out` and
    print its summary; `specs`: the runs' specs by run id, as a caller (`run`) read them already."""
    from ebt_scaling.analysis.load import load_runs
    from ebt_scaling.analysis.pipeline import analyze
    from ebt_scaling.analysis.report import build_report

    an = analyze(load_runs(sweep_dir, specs), config)
    paths = build_report(an, out, sweep_dir)
    r = an.result
    print(f"analyzed {r['runs']['total']} runs ({r['runs']['fitted']} fitted; "
          + ", ".join(f"{k} {v}" for k, v in r["runs"]["by_status"].items())
          + f"), FLOP convention {config.convention}, {r['bootstrap']['n_resamples']} bootstrap resamples")
    for line in r.get("headline", []):
        print(f"  {line}")
    for w in r.get("warnings", []):
        print(f"warning: {w}", file=sys.stderr)
    print(f"report: {paths['report_md']} (self-contained: {paths['report_html']}; numbers: {paths['fits_json']})")
    return 0
