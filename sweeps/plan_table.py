"""The plan as a table, totals, JSON, and materialised run directories."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ebt_scaling.harness.contract.errors import ConfigError
from ebt_scaling.harness.contract.formatting import si
from ebt_scaling.harness.contract.run_dir import atomic_write_text, json_text
from ebt_scaling.harness.contract.spec import load_spec, spec_to_yaml
from ebt_scaling.models.flops import CONVENTIONS

from .generate import Plan
from .sweep_spec import dump_sweep, sweep_to_yaml
from .throughput import describe, display_path


def short(label: str, width: int = 10) -> str:
    """An axis value for the table: numbers with 4 significant digits, names cut to width."""
    try:
        return f"{float(label):.4g}"[:width]
    except ValueError:
        return label[:width]


def header_lines(plan: Plan) -> list[str]:
    s = plan.sweep
    pairs = len({r.pair_id for r in plan.runs})
    pairing = ("same size and tokens" if s.pairing == "tokens"
               else f"same size and training FLOPs ({s.flops.convention} convention)")
    targets = [r for r in plan.runs if r.target_params]
    shape_line = []
    if targets:
        worst = max(targets, key=lambda r: abs(r.achieved_params / r.target_params - 1))
        sh = s.shape
        rule = (f"aspect d_model/n_layers ~ {sh.aspect:g} (within x{sh.aspect_slack:g}), head_dim {sh.head_dim}"
                if sh.rule == "aspect" else "nearest ladder size")
        shape_line = [f"shape rule: {rule}; {len(targets)} runs sized from parameter targets, worst miss "
                      f"{worst.achieved_params / worst.target_params - 1:+.1%} ({worst.size_name}; tolerance "
                      f"{sh.tolerance:.0%})"]
    return [
        f"sweep {s.name} ({s.source or 'in memory'}): axis {s.axis.name}, {len(plan.runs)} runs in {pairs} pairs, "
        f"seeds {list(s.seeds)}, architectures {', '.join(a.label for a in s.architectures)}",
        f"pairing: {s.pairing} ({pairing}); N = {s.param_count} parameters of {s.reference_label}; budgets and "
        f"shared FLOPs in the {s.flops.convention} convention",
        "GPU-hours = full-convention FLOPs / achieved FLOP/s of each architecture: "
        + throughput_source(plan),
    ] + [f"  {line}" for line in source_lines(plan)] + shape_line


def throughput_source(plan: Plan) -> str:
    """Where the rates come from, in words."""
    if plan.throughput_file is not None:
        return f"bench file {display_path(plan.throughput_file.path)}"
    return "no bench file (`ebt-scaling bench --save` writes one)"


def source_lines(plan: Plan) -> list[str]:
    """One line per architecture label: the figure its GPU-hours use and where it comes from."""
    return [describe(label, rates) for label, rates in plan.rates_by_label().items()]


COLUMNS = ("run_id", "pair_id", "arch", "size", "seed", "axis_value", "L", "d", "H", "params", "non-emb",
           "tokens", "FLOPs paper", "FLOPs full", "batch", "lr", "GPU-h")
_ROW = "{:<12}  {:<12}  {:<10} {:<10} {:>4} {:>10} {:>3} {:>5} {:>3} {:>7} {:>7} {:>7} {:>11} {:>11} {:>5} {:>9} {:>9}"


def table_lines(plan: Plan) -> list[str]:
    tuned = plan.sweep.tune is not None   # a tuned sweep: each row's trial (its factors) last
    lines = [_ROW.format(*COLUMNS) + ("  trial" if tuned else "")]
    fmt = _ROW.format
    for r in plan.runs:
        m = r.spec.model
        trial = f"  {r.spec.tags.get('trial', '')}" if tuned else ""
        lines.append(fmt(r.run_id, r.pair_id, r.arch_label[:10], r.size_name[:10], r.seed, short(r.axis_value),
                         m.n_layers, m.d_model, m.n_heads, si(r.params["total"]), si(r.params["non_embedding"]),
                         si(r.tokens), si(r.flops["paper"]), si(r.flops["full"]), r.batch, f"{r.lr:.3g}",
                         f"{r.gpu_hours:.3g}") + trial)
    return lines


def totals(plan: Plan) -> dict[str, Any]:
    by_arch: dict[str, dict[str, Any]] = {}
    for label, rates in plan.rates_by_label().items():
        by_arch[label] = {"runs": 0, "tokens": 0, "gpu_hours": 0.0, "flops": {c: 0.0 for c in CONVENTIONS},
                          "gpu_hours_source": describe(label, rates)}
    for r in plan.runs:
        t = by_arch[r.arch_label]
        t["runs"] += 1
        t["tokens"] += r.tokens
        t["gpu_hours"] += r.gpu_hours
        for c in CONVENTIONS:
            t["flops"][c] += r.flops[c]
    all_ = {"runs": len(plan.runs), "pairs": len({r.pair_id for r in plan.runs}),
            "tokens": sum(t["tokens"] for t in by_arch.values()),
            "gpu_hours": sum(t["gpu_hours"] for t in by_arch.values()),
            "flops": {c: sum(t["flops"][c] for t in by_arch.values()) for c in CONVENTIONS}}
    return {"all": all_, "by_arch": by_arch}


def totals_lines(plan: Plan) -> list[str]:
    t = totals(plan)
    lines = []
    for label, a in [*t["by_arch"].items(), ("total", t["all"])]:
        source = a.get("gpu_hours_source", "").removeprefix(f"{label}: ")
        lines.append(f"{label:<12} {a['runs']:>6} runs  tokens {si(a['tokens']):>7}  FLOPs paper "
                     f"{si(a['flops']['paper']):>7}  full {si(a['flops']['full']):>7}  GPU-hours {a['gpu_hours']:,.4g}"
                     + (f"  at {source}" if source else ""))
    return lines


def format_plan(plan: Plan) -> str:
    lines = header_lines(plan) + [""] + table_lines(plan) + ["", "totals:"] + totals_lines(plan)
    lines += [f"warning: {w}" for w in plan.warnings]
    return "\n".join(lines)


def plan_json(plan: Plan) -> dict[str, Any]:
    s = plan.sweep
    return {"sweep": dump_sweep(s), "source": s.source,
            "throughput": {"peak_tflops": s.throughput.peak_tflops, "mfu": s.throughput.mfu,
                           "device": s.throughput.device, "gpu_hours_convention": "full",
                           "file": str(plan.throughput_file.path) if plan.throughput_file else None,
                           "by_arch": {label: {"source": describe(label, rates), "rates": [r.to_json() for r in rates]}
                                       for label, rates in plan.rates_by_label().items()}},
            "runs": [r.row() for r in plan.runs], "totals": totals(plan), "warnings": list(plan.warnings)}


def write_plan(plan: Plan, out: str | Path) -> dict:
    """DIR/runs/<run_id>/spec.yaml for every run (kept when identical), DIR/sweep.yaml and
    DIR/plan.json. Every file's content is made and every existing spec checked before the
    first file is written, so a conflict (a spec of another run in a run's directory, an
    unreadable one) or a value that cannot be written leaves DIR untouched: ConfigError
    naming the file. Returns the counts written and kept, and the run directories of DIR
    that the plan no longer lists ("stale": an earlier version of the sweep, or ids from
    before a spec key was renamed), which are left as they are."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: exists and is not a directory; give a directory for --write")
    sweep_text = sweep_to_yaml(plan.sweep)
    plan_text = json_text(plan_json(plan))
    todo: list[tuple[Path, str]] = []
    kept = 0
    for run in plan.runs:
        path = out / "runs" / run.run_id / "spec.yaml"
        text = spec_to_yaml(run.spec)
        if path.exists():
            if path.read_text() == text:
                kept += 1
                continue
            existing = load_spec(path)  # ConfigError names the file
            if existing.run_id != run.run_id:
                raise ConfigError(f"{path}: holds run {existing.run_id}, not {run.run_id}; remove that directory or "
                                  "write the plan to a new --write DIR")
        todo.append((path, text))
    for path, text in todo:
        atomic_write_text(path, text)
    atomic_write_text(out / "sweep.yaml", sweep_text)
    atomic_write_text(out / "plan.json", plan_text)
    planned = {run.run_id for run in plan.runs}
    stale = sorted(p.parent.name for p in (out / "runs").glob("*/spec.yaml") if p.parent.name not in planned)
    return {"written": len(todo), "kept": kept, "stale": stale}


def dumps_json(plan: Plan) -> str:
    return json.dumps(plan_json(plan))
