"""Load a sweep directory into pandas, reading only what the runs wrote.

``runs``: one row per run directory (spec fields, tags, status, parameter counts, tokens,
FLOPs in each convention, final metrics). Failed, diverged, cancelled and unfinished runs
stay in the table with their status and a note, so the report can list them; fits select
``status == "done"``. Runs that plan.json lists but that have no directory are added with
status ``missing``.

``curves``: one row per evaluation point of every run (the training curves): step,
tokens, FLOPs in each convention, train loss and held-out val loss / ppl.

Statuses: done / diverged (result.json), failed (result.json with another status, an
unreadable run directory, or the dispatcher's failed.json), cancelled (cancelled.json),
partial (metrics or checkpoints but no result: unfinished), pending (nothing yet),
missing (in plan.json, no directory).

Damaged runs are failed and named in a warning (``damage_warnings``): a file that cannot
be read as what the trainer writes (contract/run_dir.py raises RunFileError naming it),
and a run whose result.json says done while its files disagree on how far it trained
(contract/run_state.py, "Damaged": e.g. a cut metrics.jsonl, whose last row would otherwise
stand in for the finished run's tokens and FLOPs). A sweep.yaml that cannot be read is a
warning too; the runs' own files hold all the fits need. YAML is read by
typed_config.parse_yaml, as everywhere.

The loss: ``val_loss`` is the final held-out loss, result.json's value, which the trainer
takes from the last evaluation (at the final step): the mean next-token negative
log-likelihood in nats over the validation batches (pad tokens excluded).

Parameter counts and FLOPs come from the analytic formulas in models/flops.py (no model
is built). FLOPs spent up to a metrics row are its step x the FLOPs of one step in each
convention (what the trainer records), so a convention a run did not record -- one added
after it finished -- is computed from its spec; a recorded value is kept and checked
against that, and a mismatch (relative 1e-6) is a warning (``flop_warnings``). FLOPs
actually spent are the last metrics row's; planned FLOPs are FLOPs per step x total steps.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ebt_scaling.harness.contract.errors import ConfigError
from ebt_scaling.harness.contract.formatting import as_number
from ebt_scaling.harness.contract.model_config import ModelConfig
from ebt_scaling.harness.contract.protocol import protocol_of
from ebt_scaling.harness.contract.run_dir import RunDir, read_json, read_text
from ebt_scaling.harness.contract.run_state import RunFiles, run_state
from ebt_scaling.harness.contract.spec import RunSpec, spec_from_dict
from ebt_scaling.harness.contract.typed_config import load_yaml, parse_yaml
from ebt_scaling.models.flops import CONVENTIONS, param_counts, training_step_flops

FLOP_TOLERANCE = 1e-6   # relative difference of recorded and recomputed FLOPs that is a warning


@dataclass
class SweepData:
    runs: pd.DataFrame
    curves: pd.DataFrame
    path: str = ""
    meta: dict = field(default_factory=dict)          # from sweep.yaml (name, param_count, convention, axis, pairing)
    evaluations: dict = field(default_factory=dict)   # run_id -> result.json["evaluations"]
    results: dict = field(default_factory=dict)       # run_id -> result.json (done/diverged runs)
    flop_mismatches: list[FlopMismatch] = field(default_factory=list)   # recorded FLOPs that disagree
    damaged: list[DamagedRun] = field(default_factory=list)   # runs left out for their files
    meta_problem: str | None = None   # why sweep.yaml could not be read (meta is then empty)

    @property
    def done(self) -> pd.DataFrame:
        return self.runs[self.runs["status"] == "done"]

    def subset(self, run_ids) -> SweepData:
        """The same sweep restricted to these runs (e.g. the tuned answer's)."""
        keep = set(run_ids)
        return dataclasses.replace(
            self, runs=self.runs[self.runs["run_id"].isin(keep)].reset_index(drop=True),
            curves=self.curves[self.curves["run_id"].isin(keep)].reset_index(drop=True),
            evaluations={k: v for k, v in self.evaluations.items() if k in keep},
            results={k: v for k, v in self.results.items() if k in keep},
            flop_mismatches=[m for m in self.flop_mismatches if m.run_id in keep])   # damaged: sweep-wide

    @property
    def damage_warnings(self) -> list[str]:
        """One sentence per run left out because of its files, and one for an unreadable sweep.yaml."""
        sweep = [f"{self.meta_problem}; the sweep's name, axis, pairing and parameter count are taken as unknown"
                 ] if self.meta_problem else []
        return sweep + [f"run {d.run_id} left out (status failed): {d.problem}" for d in self.damaged]

    @property
    def flop_warnings(self) -> list[str]:
        """One sentence per convention whose recorded FLOPs disagree with the spec's."""
        out = []
        for c in CONVENTIONS:
            found = [m for m in self.flop_mismatches if m.convention == c]
            if not found:
                continue
            ids = ", ".join(m.run_id for m in found[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "")
            out.append(f"flops_{c}: {len(found)} run(s) recorded FLOPs that differ from their spec's (step x {c} "
                       f"FLOPs per step, models/flops.py) by up to {max(m.max_rel for m in found):.3g} relative: "
                       f"{ids}; the recorded values are used")
        return out


@dataclass(frozen=True)
class DamagedRun:
    """A run whose files cannot be read, or disagree about a finished run's end."""

    run_id: str
    problem: str   # names the file (and its path)


@dataclass(frozen=True)
class FlopMismatch:
    """A run whose recorded FLOPs in a convention differ from its spec's in some metrics rows."""

    run_id: str
    convention: str
    rows: int
    max_rel: float


def run_dirs(sweep_dir: str | Path) -> list[Path]:
    """Run directories of a sweep (sweep_dir/runs/*), or sweep_dir itself if it is one run."""
    root = Path(sweep_dir)
    if (root / "spec.yaml").exists():
        return [root]
    return sorted(p for p in (root / "runs").glob("*") if (p / "spec.yaml").exists())


@functools.lru_cache(maxsize=None)
def _counts(model: ModelConfig) -> dict[str, int]:
    return param_counts(model)


@functools.lru_cache(maxsize=None)
def _step_flops(model: ModelConfig, batch: int) -> dict[str, float]:
    return {c: training_step_flops(model, batch, model.context, c) for c in CONVENTIONS}


def _with_spec_flops(row: dict, per_step: dict[str, float]) -> tuple[dict, dict[str, float]]:
    """The metrics row with each convention's cumulative FLOPs at its step (step x FLOPs per
    step, as the trainer records them) where it has none; and per recorded convention, the
    relative difference of the recorded value from that."""
    step = as_number(row.get("step"))
    if step is None:
        return row, {}
    out, differences = dict(row), {}
    for c, flops in per_step.items():
        computed = step * flops
        recorded = as_number(row.get(f"flops_{c}"))
        if recorded is None:
            out[f"flops_{c}"] = computed
        elif computed > 0:
            differences[c] = abs(recorded - computed) / computed
    return out, differences


def _mismatches(run_id: str, differences: list[dict[str, float]]) -> list[FlopMismatch]:
    out = []
    for c in CONVENTIONS:
        off = [d[c] for d in differences if d.get(c, 0.0) > FLOP_TOLERANCE]
        if off:
            out.append(FlopMismatch(run_id, c, len(off), max(off)))
    return out


def unit_key(tags: dict, fallback: str) -> str:
    """The matched unit of a run: the sweep point (axis value, size, budget) shared by every
    architecture and every seed of it; the pair id (or run id) for runs without those tags.
    A WSD run's cooldown branch (tag ``cooldown_of``) shares its parent's sweep point but is a
    unit of its own, one per fraction (paired across architectures under either pairing)."""
    if "axis_value" in tags or "size" in tags:
        parts = [tags.get("axis", ""), tags.get("axis_value", ""), tags.get("size", "")]
        if tags.get("budget"):
            parts.append(tags["budget"])
        if tags.get("cooldown_of"):
            parts.append(f"cooldown {tags.get('cooldown_fraction', '')}")
        return "|".join(str(p) for p in parts)
    return fallback


def _status(run: RunDir, files: RunFiles) -> tuple[str, str]:
    """The run's state from its directory alone (run_state), except that an unfinished run
    (run_state's pending or preempted) is partial once it logged a step, else pending."""
    state, note = run_state(run.path, files=files)
    if state not in ("pending", "preempted"):
        return state, note
    if files.metrics or run.checkpoints():
        step = int(files.metrics[-1].get("step", 0)) if files.metrics else 0
        return "partial", f"unfinished: step {step} of {files.total_steps}, no result.json"
    return "pending", "not started (no metrics, no result.json)"


def _run_row(path: Path,
             spec: RunSpec | None = None) -> tuple[dict, list[dict], dict | None, list[FlopMismatch], str | None]:
    """The run's table row, curve, result.json, FLOP mismatches, and why a done run's files
    disagree (None when they agree). Raises ConfigError (RunFileError) naming a damaged file.
    `spec`: the run's spec as the caller read it already (else spec.yaml is read here)."""
    run = RunDir(path)
    if spec is None:
        spec = spec_from_dict(parse_yaml(read_text(run.spec_path) or "", str(run.spec_path)), str(run.spec_path))
    result = run.result()
    raw_metrics = run.metrics()
    per_step = _step_flops(spec.model, spec.train.batch_size)
    checked = [_with_spec_flops(r, per_step) for r in raw_metrics]
    metrics = [r for r, _ in checked]
    last = metrics[-1] if metrics else _with_spec_flops((result or {}).get("final") or {}, per_step)[0]
    status, note = _status(run, RunFiles(result, raw_metrics, spec.total_steps))
    # run_state read nothing itself, so a done result.json it calls failed is contradicted by the files
    damage = note if status == "failed" and (result or {}).get("status") == "done" else None
    counts = _counts(spec.model)
    m, tags = spec.model, spec.tags
    pair_id = tags.get("pair_id", spec.run_id)
    evals = [r for r in metrics if r.get("val_loss") is not None]
    val_loss = as_number((result or {}).get("val_loss"))
    if val_loss is None and status == "done" and evals:
        val_loss = as_number(evals[-1]["val_loss"])
    val_ppl = as_number((result or {}).get("val_ppl"))
    if val_ppl is None and val_loss is not None:
        val_ppl = math.exp(min(val_loss, 700.0))
    row = {
        "run_id": path.name, "path": str(path), "status": status, "note": note,
        "arch": m.arch, "arch_label": tags.get("arch_label", m.arch),
        "sweep": tags.get("sweep"), "pair_id": pair_id, "unit": unit_key(tags, pair_id), "seed": spec.seed,
        "axis": tags.get("axis"), "axis_value": tags.get("axis_value"), "size": tags.get("size"),
        "budget": as_number(tags.get("budget")), "pairing": tags.get("pairing"), **tune_columns(tags),
        "n_layers": m.n_layers, "d_model": m.d_model, "n_heads": m.n_heads, "vocab_size": m.vocab_size,
        "model_init": m.init, "protocol": protocol_of(spec),  # protocol: harness/contract/protocol.py
        "context": m.context, **arch_columns(m),
        "batch_size": spec.train.batch_size, "lr": spec.train.lr, "schedule": spec.train.schedule,
        "cooldown_of": tags.get("cooldown_of"),   # a WSD run's cooldown branch: its parent's run id
        "params_total": counts["total"], "params_non_embedding": counts["non_embedding"],
        "tokens_planned": spec.total_steps * spec.tokens_per_step,
        "tokens": int(last.get("tokens", 0) or 0), "step": int(last.get("step", 0) or 0),
        "total_steps": spec.total_steps,
        **{f"flops_{c}": float(last.get(f"flops_{c}", 0.0) or 0.0) for c in CONVENTIONS},
        **{f"flops_planned_{c}": per_step[c] * spec.total_steps for c in CONVENTIONS},
        "train_loss": as_number(last.get("train_loss")),
        "val_loss": val_loss, "val_ppl": val_ppl, "n_evals": len(evals),
    }
    evaluations = (result or {}).get("evaluations") or None
    if evaluations:
        row.update({f"eval_{k}": v for k, v in evaluations.items() if not isinstance(v, (dict, list))})
    curve = [{"run_id": spec.run_id, "arch_label": row["arch_label"], "unit": row["unit"], "seed": spec.seed,
              "status": status, "params_total": row["params_total"],
              "params_non_embedding": row["params_non_embedding"],
              **{k: r.get(k) for k in ("step", "tokens", "train_loss", "val_loss", "val_ppl")},
              **{f"flops_{c}": r.get(f"flops_{c}") for c in CONVENTIONS}}
             for r in evals]
    return row, curve, result, _mismatches(spec.run_id, [d for _, d in checked]), damage


def tune_columns(tags: dict) -> dict:
    """A tuning trial's columns (sweeps/tuning.py): ``trial``, ``tune_stage``, the token
    fraction and one ``tune_<knob>`` factor per knob of its grid; empty for other runs."""
    if "trial" not in tags:
        return {}
    out = {"trial": tags["trial"], "tune_stage": tags.get("tune_stage", "trial"),
           "tune_tokens": as_number(tags.get("tune_tokens")) or 1.0, "trial_source": tags.get("trial_source", "grid")}
    out.update({k: as_number(v) for k, v in tags.items()
                if k.startswith("tune_") and k not in ("tune_stage", "tune_tokens")})
    return out


def arch_columns(model: ModelConfig) -> dict:
    """The run table's columns of the architecture's own options ("option.<field>"; the
    columns of other architectures' options are empty for this run)."""
    return {f"option.{key}": value for key, value in dataclasses.asdict(model.options).items()}


def read_meta(sweep_dir: str | Path) -> dict:
    """What sweep.yaml says that the analysis uses (empty when there is none). ConfigError
    naming the file when it cannot be read as a YAML mapping."""
    path = Path(sweep_dir) / "sweep.yaml"
    if not path.exists():  # a single run directory, or runs written without the sweep's file
        return {}
    raw = load_yaml(path) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a YAML mapping, got {type(raw).__name__}")
    flops = raw.get("flops") or {}
    axis = raw.get("axis") or {}
    return {"name": raw.get("name"), "param_count": raw.get("param_count"),
            "convention": flops.get("convention") if isinstance(flops, dict) else None,
            "reference": flops.get("reference") if isinstance(flops, dict) else None,
            "axis": axis.get("name") if isinstance(axis, dict) else None, "pairing": raw.get("pairing"),
            "seeds": raw.get("seeds"), "description": raw.get("description")}


def _missing_from_plan(sweep_dir: Path, seen: set[str]) -> list[dict]:
    plan = read_json(sweep_dir / "plan.json")
    if not isinstance(plan, dict):
        return []
    rows = []
    for r in plan.get("runs") or []:
        if not isinstance(r, dict) or r.get("run_id") in seen or not r.get("run_id"):
            continue
        tags = r.get("tags") or {}
        rows.append({"run_id": r["run_id"], "path": str(sweep_dir / "runs" / r["run_id"]), "status": "missing",
                     "note": "listed in plan.json but has no run directory (spec.yaml)",
                     "arch": r.get("arch"), "arch_label": r.get("arch_label"), "pair_id": r.get("pair_id"),
                     "unit": unit_key(tags, r.get("pair_id") or r["run_id"]), "seed": r.get("seed"),
                     "axis": tags.get("axis"), "axis_value": r.get("axis_value"), "size": r.get("size"),
                     "budget": as_number(tags.get("budget")), "cooldown_of": tags.get("cooldown_of"),
                     "schedule": None, "model_init": None, "protocol": None,  # not in plan.json (the spec's)
                     **tune_columns(tags), "params_total": r.get("params_total"), "params_non_embedding": r.get("params_non_embedding"),
                     "tokens_planned": r.get("tokens"), "tokens": 0, "step": 0, "total_steps": r.get("steps")})
    return rows


def load_runs(sweep_dir: str | Path, specs: dict[str, RunSpec] | None = None) -> SweepData:
    """Every run of the sweep directory (and plan.json's runs without one), with its curves.
    `specs`: the runs' specs by run id as a command read them already (the sweep snapshot of
    harness/dispatch/snapshot.py), so that no spec.yaml is parsed twice in one command."""
    root = Path(sweep_dir)
    rows, curves, evaluations, results, mismatches, damaged = [], [], {}, {}, [], []
    for path in run_dirs(root):
        try:
            row, curve, result, off, damage = _run_row(path, (specs or {}).get(path.name))
        except (ConfigError, OSError, KeyError, TypeError, ValueError) as exc:  # listed, not dropped
            row, curve, result, off = {"run_id": path.name, "path": str(path), "status": "failed",
                                       "note": f"unreadable run directory: {exc}"}, [], None, []
            damage = str(exc)
        if damage:
            damaged.append(DamagedRun(path.name, damage))
        rows.append(row)
        curves.extend(curve)
        mismatches.extend(off)
        if result is not None:
            results[row["run_id"]] = result
            if result.get("evaluations"):
                evaluations[row["run_id"]] = result["evaluations"]
    if not rows:
        raise ConfigError(f"{sweep_dir}: no run directories found (expected {sweep_dir}/runs/<run_id>/spec.yaml); "
                          "run `ebt-scaling plan SWEEP --write DIR` or `ebt-scaling submit` first")
    rows.extend(_missing_from_plan(root, {r["run_id"] for r in rows}))
    try:
        meta, meta_problem = read_meta(root), None
    except ConfigError as exc:  # the runs' own files still say everything the fits need
        meta, meta_problem = {}, str(exc)
    runs = pd.DataFrame(rows)
    for col in ("arch", "arch_label", "unit", "seed", "val_loss", "params_total", "tokens", "budget", "trial",
                *(f"flops_{c}" for c in CONVENTIONS)):
        if col not in runs.columns:
            runs[col] = None
    runs["arch_label"] = runs["arch_label"].fillna(runs["arch"]).fillna("unknown")
    runs["unit"] = runs["unit"].fillna(runs["run_id"])
    curve_cols = ["run_id", "arch_label", "unit", "seed", "status", "params_total", "params_non_embedding", "step",
                  "tokens", "train_loss", "val_loss", "val_ppl", *(f"flops_{c}" for c in CONVENTIONS)]
    return SweepData(runs, pd.DataFrame(curves, columns=curve_cols), str(root), meta, evaluations, results,
                     mismatches, damaged, meta_problem)

