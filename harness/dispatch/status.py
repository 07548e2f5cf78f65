"""What every run of a sweep is doing, from its run directory and its job's state; cancel.

States:
  pending    not started, or queued (a live job holds its lease but has not started it)
  running    its job is running it
  preempted  stopped part-way (preemption, time limit, node failure, a killed job) with
             checkpoints to resume from; queued again when a live job holds it, else
             resumed by `submit` (no --retry-failed needed)
  done / diverged   result.json
  failed     failed.json, or the job ended FAILED / OUT_OF_MEMORY / BOOT_FAIL / DEADLINE (or
             TIMEOUT / NODE_FAIL before its first checkpoint) without a result (re-run with
             `submit --retry-failed`)
  cancelled  cancelled.json from `ebt-scaling cancel` (or the job was scancelled)
"""
from __future__ import annotations

import math
import os
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm import tqdm

from ebt_scaling.harness.contract.errors import ConfigError, DispatchError

from ebt_scaling.harness.contract.run_dir import RunDir
from ebt_scaling.harness.contract.spec import RunSpec, load_spec
from . import lease as leases

STATES = ("pending", "running", "preempted", "done", "diverged", "failed", "cancelled")
FINAL = {"done", "diverged"}
SLURM_FAILED = {"FAILED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE"}
# Final job states that stop a run from outside; with a checkpoint the run is resumable.
SLURM_INTERRUPTED = {"PREEMPTED", "TIMEOUT", "NODE_FAIL"}
RECENT_ROWS = 5  # metrics rows averaged for tokens/s


@dataclass
class SweepRun:
    run_id: str
    path: Path
    spec: RunSpec

    @property
    def run(self) -> RunDir:
        return RunDir(self.path)


def discover(sweep_dir: str | Path, only: list[str] | None = None) -> list[SweepRun]:
    """The runs of a sweep directory (SWEEP_DIR/runs/<run_id>/spec.yaml), sorted by id;
    `only` selects runs by id or unique id prefix."""
    sweep_dir = Path(sweep_dir)
    runs_dir = sweep_dir / "runs"
    if not runs_dir.is_dir():
        raise DispatchError(f"{sweep_dir}: not a sweep directory (no runs/ inside); "
                            "create one with `ebt-scaling plan SWEEP --write DIR`")
    found = []
    for spec_path in sorted(runs_dir.glob("*/spec.yaml")):
        try:
            spec = load_spec(spec_path)
        except ConfigError as exc:
            raise DispatchError(str(exc)) from None
        found.append(SweepRun(spec_path.parent.name, spec_path.parent, spec))
    if only:
        chosen = []
        for key in only:
            hits = [r for r in found if r.run_id == key or r.run_id.startswith(key)]
            if len(hits) != 1:
                raise DispatchError(f"run {key!r}: " + ("no such run in " + str(sweep_dir) if not hits else
                                                        f"ambiguous prefix ({len(hits)} runs); give more digits"))
            chosen.append(hits[0])
        found = list({r.run_id: r for r in chosen}.values())
    return found


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
    path: str = ""
    lease: dict | None = field(default=None, repr=False)

    def to_json(self) -> dict:
        out = asdict(self)
        out.pop("lease")
        return out


def derive_state(result: dict | None, lease: dict | None, job: leases.JobState | None, failed: dict | None,
                 cancelled: dict | None, has_checkpoint: bool) -> tuple[str, str]:
    """(state, detail) of one run from what its directory and its job say."""
    if result is not None:
        status = result.get("status", "failed")
        return (status if status in FINAL else "failed"), str(result.get("note", "") or "")
    if cancelled is not None:
        return "cancelled", "cancelled" + (f" (job {cancelled['job_id']})" if cancelled.get("job_id") else "")
    if lease is not None and job is not None and job.alive:
        if job.state == leases.UNREACHABLE:
            return ("running" if lease.get("state") == "running" else "pending"), \
                f"SLURM query failed; assuming job {lease.get('job_id')} lives"
        if job.running and (lease.get("cluster") == "slurm" or lease.get("state") == "running"):
            return "running", ""
        if lease.get("state") in ("running", "preempted") or job.state in ("REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED"):
            # it had started and is queued again (preemption, time limit, scontrol requeue)
            return "preempted", f"requeued ({lease.get('preemptions', 0)} graceful preemptions)"
        return "pending", "queued" if job.state != "SUBMITTING" else "submitting"
    if failed is not None:
        return "failed", str(failed.get("error", ""))
    if lease is not None and job is not None:  # its job is gone without a result
        if job.state == "CANCELLED":
            return "cancelled", f"job {lease.get('job_id')} was cancelled"
        if job.state in SLURM_INTERRUPTED and has_checkpoint:
            return "preempted", f"job {lease.get('job_id')} ended {job.state} part-way; resumable"
        if job.state in SLURM_FAILED:
            return "failed", f"job {lease.get('job_id')} ended {job.state} without a result"
        if has_checkpoint:
            return "preempted", f"job {lease.get('job_id')} ended ({job.state}) part-way; resumable"
    if has_checkpoint:
        return "preempted", "stopped part-way; resumable"
    return "pending", ""


def _progress(run: RunDir, spec: RunSpec) -> dict:
    rows = run.metrics()
    out = {"step": 0, "tokens_done": 0, "val_loss": None, "tokens_per_s": None}
    if not rows:
        return out
    last = rows[-1]
    out["step"] = int(last.get("step", 0))
    out["tokens_done"] = int(last.get("tokens", out["step"] * spec.tokens_per_step))
    evals = [r["val_loss"] for r in rows if r.get("val_loss") is not None]
    out["val_loss"] = evals[-1] if evals else None
    rates = [r["tokens_per_s"] for r in rows[-RECENT_ROWS:] if r.get("tokens_per_s")]
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


def sweep_status(sweep_dir: str | Path, only: list[str] | None = None,
                 runs: list[SweepRun] | None = None) -> list[RunStatus]:
    runs = discover(sweep_dir, only) if runs is None else runs
    lease_list = [leases.read_lease(r.path) for r in runs]
    jobs = leases.probe(lease_list)
    rows = []
    for r, lease, job in zip(runs, lease_list, jobs):
        run = r.run
        result = run.result()
        state, detail = derive_state(result, lease, job, leases.failure(r.path), leases.cancelled(r.path),
                                     bool(run.checkpoints()))
        progress = _progress(run, r.spec)
        total_tokens = r.spec.total_steps * r.spec.tokens_per_step
        if result is not None and result.get("val_loss") is not None:
            progress["val_loss"] = result["val_loss"]
        eta = None
        if state == "running" and progress["tokens_per_s"]:
            eta = max(0.0, (total_tokens - progress["tokens_done"]) / progress["tokens_per_s"])
        owner = lease or leases.last_job(r.path) or {}
        rows.append(RunStatus(
            run_id=r.run_id, state=state, arch=r.spec.tags.get("arch_label", r.spec.model.arch),
            label=_label(r.spec.tags), detail=detail,
            job_id=owner.get("job_id"), cluster=owner.get("cluster"), job_state=job.state if job else None,
            job_alive=bool(job and job.alive),
            step=progress["step"], total_steps=r.spec.total_steps, tokens_done=progress["tokens_done"],
            tokens_total=total_tokens, val_loss=progress["val_loss"], tokens_per_s=progress["tokens_per_s"],
            eta_s=eta, path=str(r.path), lease=lease))
    return rows


def totals(rows: list[RunStatus]) -> dict:
    counts = {s: sum(1 for r in rows if r.state == s) for s in STATES}
    done_tokens = sum(r.tokens_total if r.state in FINAL else r.tokens_done for r in rows)
    all_tokens = sum(r.tokens_total for r in rows)
    rate = sum(r.tokens_per_s or 0 for r in rows if r.state == "running")
    remaining = all_tokens - done_tokens
    return {"runs": len(rows), **counts, "tokens_done": done_tokens, "tokens_total": all_tokens,
            "tokens_per_s": rate or None,
            "eta_s": remaining / rate if rate and counts["pending"] + counts["preempted"] == 0 else None}


def _si(n: float) -> str:
    for threshold, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= threshold:
            return f"{n / threshold:.3g}{suffix}"
    return f"{n:.0f}"


def _duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-"
    seconds = int(round(seconds))
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def format_table(rows: list[RunStatus], total: dict) -> str:
    header = f"{'run':<13}{'arch':<12}{'state':<10}{'job':<14}{'tokens':>17}{'val_loss':>10}{'eta':>9}  detail"
    lines = [header]
    for r in rows:
        tokens = f"{_si(r.tokens_total if r.state in FINAL else r.tokens_done)}/{_si(r.tokens_total)}"
        val = f"{r.val_loss:.4f}" if r.val_loss is not None else "-"
        detail = " ".join(x for x in (r.label, r.detail) if x)
        lines.append(f"{r.run_id:<13}{r.arch:<12}{r.state:<10}{(r.job_id or '-'):<14}{tokens:>17}{val:>10}"
                     f"{_duration(r.eta_s):>9}  {detail}".rstrip())
    counts = ", ".join(f"{total[s]} {s}" for s in STATES if total[s])
    pct = 100.0 * total["tokens_done"] / total["tokens_total"] if total["tokens_total"] else 0.0
    lines.append(f"total: {total['runs']} runs ({counts or 'none'}); tokens {_si(total['tokens_done'])}/"
                 f"{_si(total['tokens_total'])} ({pct:.1f}%)"
                 + (f"; {_si(total['tokens_per_s'])} tokens/s" if total["tokens_per_s"] else "")
                 + (f"; eta {_duration(total['eta_s'])}" if total["eta_s"] is not None else ""))
    return "\n".join(lines)


# ---- cancel ------------------------------------------------------------------------------
def cancel_runs(sweep_dir: str | Path, only: list[str] | None = None) -> list[tuple[str, str]]:
    """Cancel runs (all unfinished ones by default): mark each cancelled, then scancel its
    SLURM job, or stop its local job (the worker stops a run at its next step when the mark
    appears; a worker whose runs are all cancelled gets SIGINT, as submitit's LocalJob.cancel
    sends). Returns (run id, what was done)."""
    runs = discover(sweep_dir, only)
    rows = sweep_status(sweep_dir, runs=runs)
    targets = [r for r in rows if r.state not in FINAL | {"cancelled"}]
    actions: list[tuple[str, str]] = [(r.run_id, f"already {r.state}") for r in rows if r not in targets]
    target_ids = {r.run_id for r in targets}
    # Local workers hold several runs; kill one only when every unfinished run it holds goes.
    by_pid: dict[int, list[str]] = {}
    if any((r.lease or {}).get("cluster") in ("local", "debug") for r in targets):
        for r in (rows if not only else sweep_status(sweep_dir)):
            lease = r.lease or {}
            if lease.get("cluster") in ("local", "debug") and r.state not in FINAL | {"cancelled"}:
                by_pid.setdefault(int(lease.get("job_pid") or 0), []).append(r.run_id)
    for r in targets:
        lease = r.lease or {}
        live = r.job_alive
        leases.mark_cancelled(r.path, job_id=lease.get("job_id"), cluster=lease.get("cluster"), previous=r.state)
        if not live:
            actions.append((r.run_id, "marked cancelled"))
            continue
        if lease.get("cluster") == "slurm":
            from submitit.slurm.slurm import SlurmJob

            folder = lease.get("folder") or str(Path(sweep_dir) / "jobs" / "%j")
            SlurmJob(folder, str(lease["job_id"])).cancel(check=False)
            actions.append((r.run_id, f"scancel {lease['job_id']}"))
        else:
            pid = int(lease.get("job_pid") or 0)
            if pid and set(by_pid.get(pid, [])) <= target_ids and \
                    leases.pid_alive(pid, lease.get("job_pid_start")):
                try:
                    os.kill(pid, signal.SIGINT)  # what submitit's LocalJob.cancel sends its controller
                    actions.append((r.run_id, f"stopped local job {lease.get('job_id')}"))
                except ProcessLookupError:
                    actions.append((r.run_id, "marked cancelled (job already gone)"))
            else:
                actions.append((r.run_id, f"marked cancelled; job {lease.get('job_id')} stops it at its next step"))
    return actions


def wait_for(sweep_dir: str | Path, run_ids: list[str], poll_s: float = 5.0, timeout_s: float | None = None,
             echo=print, progress: bool = False) -> list[RunStatus]:
    """Poll until none of `run_ids` has a live job (or is waiting for one); the final rows.
    With `progress`, a bar of training tokens done over all of them."""
    start, last = time.time(), ""
    runs = discover(sweep_dir, run_ids) if run_ids else []
    bar = None
    while True:
        rows = sweep_status(sweep_dir, runs=runs)
        active = [r for r in rows if r.state in ("pending", "running", "preempted") and r.job_alive]
        summary = ", ".join(f"{n} {s}" for s in STATES if (n := sum(1 for r in rows if r.state == s)))
        if progress:
            if bar is None:
                bar = tqdm(total=sum(r.tokens_total for r in rows), unit="tok", unit_scale=True, dynamic_ncols=True)
            bar.update(sum(r.tokens_done for r in rows) - bar.n)
            bar.set_postfix_str(summary)
        elif summary != last:
            echo(f"[{time.time() - start:6.0f}s] {summary}")
            last = summary
        if not active:
            if bar is not None:
                bar.close()
            return rows
        if timeout_s is not None and time.time() - start > timeout_s:
            raise DispatchError(f"--wait: {len(active)} runs still active after {timeout_s:.0f} s")
        time.sleep(poll_s)
