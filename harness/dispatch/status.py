"""What every run of a sweep is doing: one row per run (state, job, tokens done of total,
last validation loss, ETA from recent tokens/s, GPU-hours left), totals, and the table
`status` prints; `submit --wait` and `cancel` ask the same. GPU-hours left = full-convention
FLOPs of a run's remaining steps / its architecture's rate (sweeps/throughput.py: the bench
file, else the documented default MFU of 989 TFLOP/s); runs that finished need none.

States are contract/run_state.py's, from the run directory and the job its lease names.
A damaged run is failed, its detail naming the file: a spec.yaml, result.json or
metrics.jsonl that cannot be read as what the trainer writes, or a done run whose files
disagree about how far it trained (contract/run_state.py, "Damaged").

What is read: the snapshot's specs (snapshot.py; parsed once per command, not per poll),
each run's lease, result.json, and only the tail of metrics.jsonl (RunDir.metrics_tail):
the last RECENT_ROWS rows, and for a run without a result's val_loss the last validation
row. So the bytes read per run do not grow with the length of metrics.jsonl, and a damaged
line is named only where it lies in that tail (every line of a short file is checked).
Runs carry their provenance (training/provenance.py): result.json's once finished, else
that of their latest training session (provenance.json), so a run still training under
other code shows too; the totals name the runs whose code (package version, commit, dirty
tree and its changes, torch) differs from the rest of the sweep.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path

from ebt_scaling.harness.contract.formatting import duration, si
from ebt_scaling.harness.contract.run_dir import MetricsTail, RunFileError
from ebt_scaling.harness.contract.run_state import FINISHED, STATES, JobView, RunFiles, run_state
from ebt_scaling.harness.training.provenance import provenance_differences, session_provenance
from ebt_scaling.sweeps.throughput import Rate, Rates, describe

from . import run_files
from .liveness import probe
from .snapshot import SpecSummary, SweepRun, SweepSnapshot

RECENT_ROWS = 5  # metrics rows averaged for tokens/s


@dataclass
class RunStatus:
    run_id: str
    state: str
    arch: str = ""
    label: str = ""
    detail: str = ""
    job_id: str | None = None
    cluster: str | None = None
    job_state: str | None = None
    job_alive: bool = False
    step: int = 0
    total_steps: int = 0
    tokens_done: int = 0
    tokens_total: int = 0
    val_loss: float | None = None
    tokens_per_s: float | None = None
    eta_s: float | None = None
    gpu_hours_left: float = 0.0  # full-convention FLOPs of the steps left / `rate`
    path: str = ""
    provenance: dict | None = None  # the code and machine that finished the run, or that trains it now
    provenance_history: list = field(default_factory=list)  # earlier ones, when it was resumed under other code
    lease: dict | None = field(default=None, repr=False)
    rate: Rate | None = field(default=None, repr=False)

    def to_json(self) -> dict:
        out = {name: getattr(self, name) for name in _JSON_FIELDS}
        out["gpu_hours_source"] = self.rate.source if self.rate else None
        return out


_JSON_FIELDS = tuple(f.name for f in fields(RunStatus) if f.name not in ("lease", "rate"))  # fields() once, not per run


def _progress(tail: MetricsTail, spec: SpecSummary) -> dict:
    out = {"step": 0, "tokens_done": 0, "val_loss": None, "tokens_per_s": None}
    if not tail.rows:
        return out
    last = tail.rows[-1]
    out["step"] = int(last.get("step", 0))
    out["tokens_done"] = int(last.get("tokens", out["step"] * spec.tokens_per_step))
    out["val_loss"] = tail.keyed["val_loss"] if tail.keyed else None
    rates = [r["tokens_per_s"] for r in tail.rows[-RECENT_ROWS:] if r.get("tokens_per_s")]
    out["tokens_per_s"] = sum(rates) / len(rates) if rates else None
    return out


def _label(tags: dict[str, str]) -> str:
    """pair / size / seed from the sweep generator's tags (labels only)."""
    parts = []
    if "pair_id" in tags or "pair" in tags:
        parts.append(f"pair={tags.get('pair_id', tags.get('pair'))}")
    if "size" in tags:
        parts.append(f"size={tags['size']}")
    if tags.get("axis_value") and tags.get("axis_value") != tags.get("size"):
        parts.append(f"{tags.get('axis', 'axis')}={tags['axis_value']}")
    if "seed" in tags:
        parts.append(f"seed={tags['seed']}")
    return " ".join(parts)


def _gpu_hours_left(spec: SpecSummary, state: str, step: int, rate: Rate) -> float:
    if state in FINISHED:
        return 0.0
    return rate.hours(spec.step_flops_full * max(0, spec.total_steps - step))


def _provenance(result, run_dir: Path) -> dict:
    """The provenance fields of result.json, else (a run not finished, or finished before
    provenance was recorded) of provenance.json, where they are what the trainer writes."""
    source = result if isinstance(result, dict) and "provenance" in result else session_provenance(run_dir)
    if not isinstance(source, dict):
        return {}
    record, history = source.get("provenance"), source.get("provenance_history")
    return {"provenance": record if isinstance(record, dict) else None,
            "provenance_history": [h for h in history if isinstance(h, dict)] if isinstance(history, list) else []}


def sweep_status(sweep: str | Path | SweepSnapshot, only: list[str] | None = None,
                 rates: Rates | None = None) -> list[RunStatus]:
    """One row per run of the sweep (a directory, or the snapshot a command took of it); `only`
    selects runs by id or prefix; `rates` turns the FLOPs left into GPU-hours (default: the
    architectures' documented MFUs, no bench file)."""
    snapshot = SweepSnapshot.of(sweep).select(only)
    rates = rates or Rates(None)
    lease_list = [run_files.read_lease(r.path) for r in snapshot.runs]
    jobs = probe(lease_list)
    rows = [_run_status(r, lease, job, rates) for r, lease, job in zip(snapshot.runs, lease_list, jobs)]
    rows.extend(RunStatus(run_id=u.run_id, state="failed", detail=u.error, path=str(u.path))
                for u in snapshot.unreadable)
    return rows


def _run_status(r: SweepRun, lease: dict | None, job: JobView | None, rates: Rates) -> RunStatus:
    run, spec = r.run, r.summary
    try:  # read once, here; run_state judges what was read
        result = run.result()
        val_loss_found = result is not None and result.get("val_loss") is not None
        tail = run.metrics_tail(RECENT_ROWS, keyed=None if val_loss_found else "val_loss")
    except RunFileError as exc:
        (state, detail), tail, result = ("failed", str(exc)), MetricsTail([], None), None
    else:
        state, detail = run_state(r.path, job, RunFiles(result, tail.rows, spec.total_steps))
    progress = _progress(tail, spec)
    total_tokens = spec.total_steps * spec.tokens_per_step
    if result is not None and result.get("val_loss") is not None:
        progress["val_loss"] = result["val_loss"]
    eta = None
    if state == "running" and progress["tokens_per_s"]:
        eta = max(0.0, (total_tokens - progress["tokens_done"]) / progress["tokens_per_s"])
    owner = lease or run_files.last_job(r.path) or {}
    rate = rates.rate(spec.arch, spec.n_layers, spec.d_model, spec.precision)
    return RunStatus(
        run_id=r.run_id, state=state, arch=spec.tags.get("arch_label", spec.arch), label=_label(spec.tags),
        detail=detail, job_id=owner.get("job_id"), cluster=owner.get("cluster"),
        job_state=job.state if job else None, job_alive=bool(job and job.alive),
        step=progress["step"], total_steps=spec.total_steps, tokens_done=progress["tokens_done"],
        tokens_total=total_tokens, val_loss=progress["val_loss"], tokens_per_s=progress["tokens_per_s"],
        eta_s=eta, gpu_hours_left=_gpu_hours_left(spec, state, progress["step"], rate), path=str(r.path),
        **_provenance(result, r.path), lease=lease, rate=rate)


def totals(rows: list[RunStatus]) -> dict:
    counts = {s: sum(1 for r in rows if r.state == s) for s in STATES}
    done_tokens = sum(r.tokens_total if r.state in FINISHED else r.tokens_done for r in rows)
    all_tokens = sum(r.tokens_total for r in rows)
    rate = sum(r.tokens_per_s or 0 for r in rows if r.state == "running")
    remaining = all_tokens - done_tokens
    by_arch: dict[str, dict] = {}
    for r in rows:
        if r.rate is None:  # a run whose spec could not be read: nothing to price
            continue
        a = by_arch.setdefault(r.arch, {"gpu_hours_left": 0.0, "rates": []})
        a["gpu_hours_left"] += r.gpu_hours_left
        if r.rate is not None and r.rate not in a["rates"]:
            a["rates"].append(r.rate)
    return {"runs": len(rows), **counts, "tokens_done": done_tokens, "tokens_total": all_tokens,
            "tokens_per_s": rate or None,
            "eta_s": remaining / rate if rate and counts["pending"] + counts["preempted"] == 0 else None,
            "gpu_hours_left": sum(a["gpu_hours_left"] for a in by_arch.values()),
            "provenance_differs": provenance_differences((r.run_id, r.provenance, r.provenance_history) for r in rows),
            "gpu_hours_left_by_arch": {label: {"gpu_hours_left": a["gpu_hours_left"],
                                               "source": describe(label, a["rates"])}
                                       for label, a in by_arch.items()}}


def status_json(rows: list[RunStatus]) -> str:
    """`status --json`: one JSON object, {runs: [...], totals: {...}}."""
    return json.dumps({"runs": [r.to_json() for r in rows], "totals": totals(rows)})


def format_table(rows: list[RunStatus], total: dict) -> str:
    header = f"{'run':<13}{'arch':<12}{'state':<10}{'job':<14}{'tokens':>17}{'val_loss':>10}{'eta':>9}  detail"
    lines = [header]
    for r in rows:
        tokens = f"{si(r.tokens_total if r.state in FINISHED else r.tokens_done)}/{si(r.tokens_total)}"
        val = f"{r.val_loss:.4f}" if r.val_loss is not None else "-"
        detail = " ".join(x for x in (r.label, r.detail) if x)
        lines.append(f"{r.run_id:<13}{r.arch:<12}{r.state:<10}{(r.job_id or '-'):<14}{tokens:>17}{val:>10}"
                     f"{duration(r.eta_s):>9}  {detail}".rstrip())
    counts = ", ".join(f"{total[s]} {s}" for s in STATES if total[s])
    pct = 100.0 * total["tokens_done"] / total["tokens_total"] if total["tokens_total"] else 0.0
    lines.append(f"total: {total['runs']} runs ({counts or 'none'}); tokens {si(total['tokens_done'])}/"
                 f"{si(total['tokens_total'])} ({pct:.1f}%)"
                 + (f"; {si(total['tokens_per_s'])} tokens/s" if total["tokens_per_s"] else "")
                 + (f"; eta {duration(total['eta_s'])}" if total["eta_s"] is not None else ""))
    for label, a in total["gpu_hours_left_by_arch"].items():
        lines.append(f"GPU-hours left {label}: {a['gpu_hours_left']:,.4g} at {a['source'].removeprefix(label + ': ')}")
    lines.extend(total["provenance_differs"])
    return "\n".join(lines)
