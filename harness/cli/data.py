"""`ebt-scaling data prepare [SPEC.yaml] [--vocab N] [--cache-dir DIR]`.

Downloads, tokenises and caches the data a run spec names (the embedded Shakespeare
default when no spec is given), so that runs starting later find it ready. A no-op
when it is already cached; safe to run from many processes at once.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import replace


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["prepare"], help="prepare: download / tokenise / cache")
    parser.add_argument("spec", nargs="?", help="run spec YAML (default: the built-in defaults, i.e. Shakespeare)")
    parser.add_argument("--vocab", type=int, help="vocabulary size (overrides model.vocab_size)")
    parser.add_argument("--cache-dir", help="cache directory (overrides data.cache_dir; default "
                        "$EBT_SCALING_DATA, else ~/.cache/ebt-scaling)")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")


def run(args) -> int:
    from ebt_scaling.harness.contract.spec import RunSpec, load_spec

    from ..data.common import cache_root
    from ..data.pipeline import prepare

    spec = load_spec(args.spec) if args.spec else RunSpec()
    if args.vocab is not None:
        spec = replace(spec, model=replace(spec.model, vocab_size=args.vocab))
    if args.cache_dir is not None:
        spec = replace(spec, data=replace(spec.data, cache_dir=args.cache_dir))
    log = (lambda _: None) if args.json else (lambda line: print(f"  {line}", flush=True))
    if not args.json:
        where = cache_root(spec.data.cache_dir) if spec.data.source != "hf" else "(streamed, not cached)"
        print(f"preparing {spec.data.source} data (vocab {spec.model.vocab_size}, val_fraction "
              f"{spec.data.val_fraction}) in {where}", flush=True)
    report = prepare(spec, log=log)
    if args.json:
        print(json.dumps(report.__dict__))
        return 0
    state = "built" if report.built else "already cached" if report.source != "hf" else "checked"
    print(f"{state}: {report.location}")
    if report.train_tokens is not None:
        print(f"  tokens: {report.train_tokens:,} train ({report.train_docs} documents), "
              f"{report.val_tokens:,} validation ({report.val_docs} documents); vocab {report.vocab_size}, "
              f"{report.details.get('dtype')}")
    else:
        print(f"  vocab {report.vocab_size}; first document: {report.details.get('first_document_tokens')} tokens; "
              f"{report.details.get('note')}")
    print(f"  time: {report.seconds:.1f}s")
    return 0
