"""Waiting for a sweep's runs to end (`submit --wait`, `ebt-scaling run`)."""
from __future__ import annotations

import time
from pathlib import Path

from tqdm import tqdm

from ebt_scaling.harness.contract.errors import DispatchError
from ebt_scaling.harness.contract.run_state import STATES

from .discovery import discover
from .sweep_status import RunStatus, sweep_status


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
