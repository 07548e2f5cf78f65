"""`ebt-scaling analyze SWEEP_DIR`: fit and report a sweep from its run directories alone.

Loads SWEEP_DIR/runs/*/ (analysis/load.py), fits every architecture label (every fit law of
analysis/laws/registry.py, Approaches 1 and 2, FLOP multiplier, crossover;
analysis/pipeline.py) with a paired bootstrap over matched units, and writes
OUT/fits.json, OUT/runs.csv, PNG plots, OUT/report.md and a self-contained OUT/report.html
(analysis/report.py), each atomically. The same files and seed give the same fits.json.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ebt_scaling.harness.contract.errors import ConfigError

# AnalysisConfig field -> its flag (argparse stores each flag under its field's name)
FLAGS = {"convention": "--convention", "params": "--params", "n_boot": "--bootstrap", "seed": "--seed",
         "ci": "--ci", "budget": "--budget", "reference": "--reference", "workers": "--workers"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sweep_dir", help="sweep directory (SWEEP_DIR/runs/<run_id>/), or one run directory")
    parser.add_argument("--convention", dest="convention", default="full",
                        help="FLOP convention of every compute axis (default: full = every matmul executed; "
                             "paper = 6N / 20KN with N non-embedding)")
    parser.add_argument("--bootstrap", dest="n_boot", type=int, default=1000, metavar="N",
                        help="paired-bootstrap resamples of matched units (default: 1000; 0: no intervals)")
    parser.add_argument("--seed", dest="seed", type=int, default=0, help="bootstrap seed (default: 0)")
    parser.add_argument("--out", metavar="DIR", help="output directory (default: SWEEP_DIR/analysis)")
    parser.add_argument("--budget", dest="budget", type=float, default=1e27, metavar="FLOPS",
                        help="largest compute searched for a crossover and shown in the multiplier plot "
                             "(default: 1e27)")
    parser.add_argument("--ci", dest="ci", type=float, default=0.95, help="interval level (default: 0.95)")
    parser.add_argument("--reference", dest="reference", metavar="LABEL",
                        help="reference architecture label (default: the Transformer++ label)")
    parser.add_argument("--workers", dest="workers", type=int, metavar="N",
                        help="processes for the slow refits (Approach 3, saturating-law bootstrap); default: one per "
                             "CPU, at most 4; 1: serial. The results do not depend on it")
    parser.add_argument("--params", dest="params", metavar="{total,non_embedding}",
                        help="parameter count used as N (default: sweep.yaml's param_count, else total)")


def run(args: argparse.Namespace) -> int:
    sweep_dir = Path(args.sweep_dir)
    if not sweep_dir.is_dir():
        raise ConfigError(f"{sweep_dir}: no such directory")
    from ebt_scaling.analysis.config import AnalysisConfig
    from ebt_scaling.analysis.load import load_runs
    from ebt_scaling.analysis.pipeline import analyze
    from ebt_scaling.analysis.report import build_report
    from ebt_scaling.harness.contract.typed_config import from_dict

    try:
        config = from_dict(AnalysisConfig, {field: getattr(args, field) for field in FLAGS})
        an = analyze(load_runs(sweep_dir), config)
    except ValueError as exc:   # ConfigError names a field (shown as its flag) or the sweep
        raise ConfigError(_flag_named(str(exc))) from None
    out = Path(args.out) if args.out else sweep_dir / "analysis"
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


def _flag_named(message: str) -> str:
    field, sep, rest = message.partition(":")
    return FLAGS[field] + sep + rest if field in FLAGS else message
