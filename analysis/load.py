"""Load a sweep directory into pandas, reading only what the runs wrote.

``runs``: one row per run directory (spec fields, tags, status, parameter counts, tokens,
FLOPs in each convention, final metrics). Failed, diverged and unfinished runs stay in
the table with their status, so the report can list them; fits select ``status == done``.

``curves``: one row per evaluation point of every run (the training curves).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ebt_scaling.harness.run_dir import RunDir
from ebt_scaling.harness.spec import load_spec
from ebt_scaling.models.config import ConfigError
from ebt_scaling.models.flops import CONVENTIONS, param_counts


@dataclass
class SweepData:
    runs: pd.DataFrame
    curves: pd.DataFrame

    @property
    def done(self) -> pd.DataFrame:
        return self.runs[self.runs["status"] == "done"]


def run_dirs(sweep_dir: str | Path) -> list[Path]:
    """Run directories of a sweep (sweep_dir/runs/*), or sweep_dir itself if it is one run."""
    root = Path(sweep_dir)
    if (root / "spec.yaml").exists():
        return [root]
    return sorted(p for p in (root / "runs").glob("*") if (p / "spec.yaml").exists())


def _run_row(path: Path) -> tuple[dict, list[dict]]:
    run = RunDir(path)
    spec = load_spec(run.spec_path)
    result = run.result() or {}
    metrics = run.metrics()
    last = metrics[-1] if metrics else {}
    counts = param_counts(spec.model)
    m = spec.model
    row = {
        "run_id": spec.run_id, "path": str(path), "status": run.status(),
        "arch": m.arch, "arch_label": spec.tags.get("arch_label", m.arch),
        "pair_id": spec.tags.get("pair_id", spec.run_id), "seed": spec.seed,
        "axis": spec.tags.get("axis"), "axis_value": spec.tags.get("axis_value"), "size": spec.tags.get("size"),
        "n_layers": m.n_layers, "d_model": m.d_model, "n_heads": m.n_heads, "vocab_size": m.vocab_size,
        "context": m.context, "ebt_variant": m.ebt.variant if m.arch == "ebt" else None,
        "ebt_steps": m.ebt.steps if m.arch == "ebt" else None,
        "batch_size": spec.train.batch_size, "lr": spec.train.lr,
        "params_total": counts["total"], "params_non_embedding": counts["non_embedding"],
        "tokens_planned": spec.total_steps * spec.tokens_per_step,
        "tokens": last.get("tokens", 0), "step": last.get("step", 0), "total_steps": spec.total_steps,
        **{f"flops_{c}": last.get(f"flops_{c}", 0.0) for c in CONVENTIONS},
        "train_loss": last.get("train_loss"),
        "val_loss": result.get("val_loss"), "val_ppl": result.get("val_ppl"),
        "note": result.get("note", ""),
    }
    row.update({f"eval_{k}": v for k, v in (result.get("evaluations") or {}).items() if not isinstance(v, (dict, list))})
    curve = [{"run_id": spec.run_id, "arch_label": row["arch_label"], "pair_id": row["pair_id"],
              "params_total": row["params_total"], "params_non_embedding": row["params_non_embedding"],
              **{k: r.get(k) for k in ("step", "tokens", "train_loss", "val_loss", "val_ppl")},
              **{f"flops_{c}": r.get(f"flops_{c}") for c in CONVENTIONS}}
             for r in metrics if "val_loss" in r]
    return row, curve


def load_sweep(sweep_dir: str | Path) -> SweepData:
    rows, curves = [], []
    for path in run_dirs(sweep_dir):
        try:
            row, curve = _run_row(path)
        except (ConfigError, OSError, KeyError) as exc:  # a broken run is listed, not dropped
            row, curve = {"run_id": path.name, "path": str(path), "status": "failed",
                          "note": f"unreadable run directory: {exc}"}, []
        rows.append(row)
        curves.extend(curve)
    if not rows:
        raise ConfigError(f"{sweep_dir}: no run directories found (expected {sweep_dir}/runs/<run_id>/spec.yaml); "
                          "run `ebt-scaling plan SWEEP --write DIR` or `ebt-scaling submit` first")
    return SweepData(pd.DataFrame(rows), pd.DataFrame(curves))
