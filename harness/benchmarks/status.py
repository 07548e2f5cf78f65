"""`ebt-scaling bench-status`: how `status` scales with the runs of a sweep and the rows of their metrics.

It builds synthetic sweeps in the trainer's exact format -- spec.yaml by the RunSpec writer,
metrics.jsonl rows as the trainer logs them (every log_every steps, validation at the
spec's eval points, keys sorted), result.json and provenance as the trainer writes them --
then times what ``ebt-scaling status SWEEP_DIR --json`` runs (the same calls, in this
process, its imports done before) and reads this process's I/O counter (/proc/self/io
rchar) around it for the bytes read.

Most runs are done; one in a hundred each is running (its lease names this process, so its
job lives), preempted (a checkpoint, no result) or pending (only its spec). Runs of the same
architecture and state have identical metrics files, so they are hard links of one file:
a 10,000-run sweep of 10,000-row files would otherwise take 30 GB. Reading goes through the
page cache either way, as a `status` of a sweep that is being polled does.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from ebt_scaling.harness.contract.run_dir import atomic_write_json, atomic_write_text
from ebt_scaling.harness.contract.run_state import LEASE
from ebt_scaling.harness.contract.spec import RunSpec, spec_from_dict, spec_to_yaml
from ebt_scaling.harness.dispatch.liveness import hostname, proc_start
from ebt_scaling.harness.dispatch.snapshot import SUMMARY_CACHE
from ebt_scaling.harness.dispatch.status import status_json, sweep_status
from ebt_scaling.sweeps.throughput import Rates, resolve_throughput_file

ARCHS = {"T++": ("transformer", {}), "EBT": ("ebt", {})}
# What the models add to a row besides the cross-entropy (models/*.py, StepOutput.metrics).
MODEL_METRICS = {"transformer": {}, "ebt": {"ce_mean_steps": 5.61, "energy_gap": 0.137, "alpha": 0.5}}
# One run in UNFINISHED_EVERY is running, one preempted, one pending; the rest are done.
UNFINISHED_EVERY = 100


@dataclass(frozen=True)
class StatusTiming:
    runs: int
    rows: int
    first_seconds: float  # the first poll: no spec summaries cached, every spec.yaml parsed
    seconds: float  # median of the repeats after it (spec summaries cached)
    bytes_per_run: float  # median of the repeats

    def line(self) -> str:
        return (f"status --json, {self.runs:>6,} runs x {self.rows:>6,} metrics rows: {self.seconds:7.3f} s "
                f"({1e3 * self.seconds / self.runs:.3f} ms/run), {self.bytes_per_run:>9,.0f} bytes read/run; "
                f"first poll (every spec parsed) {self.first_seconds:.3f} s")


def run_spec(index: int, label: str, rows: int) -> RunSpec:
    """The spec of a run whose metrics.jsonl has about `rows` rows when it is done."""
    arch, options = ARCHS[label]
    log_every = 10
    return spec_from_dict({
        "model": {"arch": arch, "n_layers": 2, "d_model": 64, "n_heads": 2, "vocab_size": 1024, "context": 64,
                  "options": options},
        "train": {"tokens": rows * log_every * 8 * 64, "batch_size": 8, "lr": 1e-3},
        "eval": {"points": 6}, "device": "cpu", "seed": index, "log_every": log_every,
        "tags": {"sweep": "bench-status", "arch_label": label, "pair_id": f"p{index}", "size": "s64",
                 "seed": str(index)}})


def metrics_rows(spec: RunSpec, until_step: int) -> list[dict]:
    """The rows the trainer logs up to `until_step` (harness/training/trainer.py's loop)."""
    from ebt_scaling.harness.training.trainer import eval_steps
    from ebt_scaling.models.flops import training_step_flops

    step_flops = {c: training_step_flops(spec.model, spec.train.batch_size, spec.model.context, c)
                  for c in ("full", "paper")}
    evals = eval_steps(spec.total_steps, spec.eval.points)
    rows = []
    for step in range(1, until_step + 1):
        if step % spec.log_every and step not in evals:
            continue
        loss = 3.0 + 5.0 / math.sqrt(step)
        row = {"step": step, "tokens": step * spec.tokens_per_step,
               **{f"flops_{c}": step * f for c, f in step_flops.items()},
               "train_loss": loss, "lr": spec.train.lr * (0.1 + 0.9 * (1 - step / spec.total_steps)),
               "grad_norm": 0.5 + 1.0 / step, **MODEL_METRICS[spec.model.arch], "tokens_per_s": 51234.5 + step % 7}
        if step in evals:
            row.update(val_loss=loss + 0.05, val_ppl=math.exp(loss + 0.05))
        rows.append(row)
    return rows


def build_sweep(root: Path, runs: int, rows: int) -> Path:
    """ROOT/runs/<run_id>/... for `runs` runs with `rows`-row metrics files (see the module)."""
    from ebt_scaling.harness.training.provenance import (current_provenance, resumed_provenance,
                                                          write_session_provenance)
    from ebt_scaling.models.flops import param_counts

    provenance = resumed_provenance(None, current_provenance(None), lambda *_: None)
    shared: dict[tuple[str, str], Path] = {}  # (label, state) -> the metrics file the others link to
    for index in range(runs):
        label = list(ARCHS)[index % len(ARCHS)]
        spec = run_spec(index, label, rows)
        run = root / "runs" / spec.run_id
        atomic_write_text(run / "spec.yaml", spec_to_yaml(spec))
        state = {1: "running", 2: "preempted", 3: "pending"}.get(index % UNFINISHED_EVERY, "done")
        if state == "pending":
            continue
        if (label, state) not in shared:
            until = spec.total_steps if state == "done" else spec.total_steps // 2
            text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in metrics_rows(spec, until))
            (run / "metrics.jsonl").write_text(text)
            shared[label, state] = run / "metrics.jsonl"
        else:
            os.link(shared[label, state], run / "metrics.jsonl")
        if state == "done":
            last = json.loads(shared[label, state].read_text().splitlines()[-1])
            atomic_write_json(run / "result.json", {
                "status": "done", "run_id": spec.run_id, "arch": spec.model.arch, "step": spec.total_steps,
                "total_steps": spec.total_steps, "final": last, "val_loss": last["val_loss"],
                "val_ppl": last["val_ppl"], "params": param_counts(spec.model), "note": "", **provenance})
        elif state == "preempted":
            (run / "checkpoints").mkdir()
            (run / "checkpoints" / f"step_{spec.total_steps // 2:08d}.pt").write_bytes(b"checkpoint")
        else:
            write_session_provenance(run, provenance, 0)
            atomic_write_json(run / LEASE, {"token": f"bench{index}", "cluster": "local", "state": "running",
                                            "job_id": f"bench-{index}", "preemptions": 0})
    return root


def claim_running_leases(sweep_dir: Path) -> None:
    """Point every lease of the sweep at this process, so that its runs' job is alive."""
    pid = os.getpid()
    me = {"host": hostname(), "pid": pid, "pid_start": proc_start(pid), "job_host": hostname(), "job_pid": pid,
          "job_pid_start": proc_start(pid), "time": time.time(), "updated": time.time()}
    for path in (sweep_dir / "runs").glob(f"*/{LEASE}"):
        atomic_write_json(path, {**json.loads(path.read_text()), **me})


def bytes_read() -> int:
    """This process's bytes read so far, cache hits included (rchar of /proc/self/io)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise OSError("/proc/self/io has no rchar line")


def status_once(sweep_dir: Path) -> str:
    """What `ebt-scaling status SWEEP_DIR --json` prints, by the code it runs (harness/cli/status.py)."""
    return status_json(sweep_status(sweep_dir, rates=Rates(resolve_throughput_file(None))))


def time_status(sweep_dir: Path, runs: int, rows: int, repeats: int) -> StatusTiming:
    """Time and bytes read per run of `ebt-scaling status SWEEP_DIR --json`, in this process:
    a first poll with no spec summaries cached, then the median of `repeats` polls after it."""
    claim_running_leases(sweep_dir)
    (sweep_dir / SUMMARY_CACHE).unlink(missing_ok=True)
    start = time.perf_counter()
    status_once(sweep_dir)
    first = time.perf_counter() - start
    seconds, per_run = [], []
    for _ in range(repeats):
        before, start = bytes_read(), time.perf_counter()
        status_once(sweep_dir)
        seconds.append(time.perf_counter() - start)
        per_run.append((bytes_read() - before) / runs)
    return StatusTiming(runs, rows, first, statistics.median(seconds), statistics.median(per_run))


def bench_status(runs: list[int], rows: list[int], repeats: int, keep: Path | None, echo=print) -> list[StatusTiming]:
    """Time `status` on a synthetic sweep of each size in `runs` x each metrics length in
    `rows`, built under `keep` (kept and reused: KEEP/runs<N>x<ROWS>) or in a temporary directory."""
    import tempfile

    timings = []
    with contextlib.ExitStack() as stack:
        root = keep or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-status-")))
        for n_runs in runs:
            for n_rows in rows:
                sweep = root / f"runs{n_runs}x{n_rows}"
                if not (sweep / "runs").is_dir():
                    start = time.perf_counter()
                    build_sweep(sweep, n_runs, n_rows)
                    echo(f"built {sweep} ({n_runs:,} runs x {n_rows:,} rows) in {time.perf_counter() - start:.1f} s")
                timings.append(time_status(sweep, n_runs, n_rows, repeats))
                echo(timings[-1].line())
    return timings
