"""Weights & Biases sink, offline: a run in RUN_DIR/wandb/offline-run-*/, uploaded later.

Clusters' compute nodes often have no internet, so the run is always offline
(``mode="offline"``, the same as WANDB_MODE=offline); upload from a login node with
``wandb sync RUN_DIR/wandb/offline-run-*``. The W&B project is the sweep's name, the run's
name its run id, its config the run spec.

Resume: each training session writes one offline-run folder; all of a run's folders share
one W&B run id, kept in RUN_DIR/wandb/ebt_scaling.json (random, made when the sink first
opens, so two copies of a sweep never write into one W&B run), and ``wandb sync`` joins
them. That file also holds the last step handed to W&B: a resumed run re-logs the rows
after its checkpoint, and those already sent are not sent again (exact resume makes them
equal), so no step appears twice.
"""
from __future__ import annotations

import uuid
from typing import Any

from ebt_scaling.harness.contract.run_dir import atomic_write_json, read_json

from .sinks import TrackedRun, scalars

FOLDER = "wandb"
STATE_FILE = "ebt_scaling.json"


class WandbOfflineSink:
    def __init__(self, run: TrackedRun):
        import wandb

        self.state_path = run.directory / FOLDER / STATE_FILE
        state = read_json(self.state_path)
        state = state if isinstance(state, dict) and isinstance(state.get("id"), str) else {}
        self.state = {"id": state.get("id") or f"{run.name}-{uuid.uuid4().hex[:8]}",
                      "last_step": int(state.get("last_step") or 0)}
        atomic_write_json(self.state_path, self.state)
        # console off: wandb would otherwise wrap sys.stdout/stderr (the job's log lines) to copy them.
        settings = wandb.Settings(silent=True, console="off", x_disable_stats=True, disable_git=True,
                                  save_code=False, x_save_requirements=False)
        self.run = wandb.init(mode="offline", dir=str(run.directory), project=run.project, name=run.name,
                              id=self.state["id"], resume="allow", config=run.config,
                              reinit="create_new", settings=settings)

    def write(self, row: dict[str, Any]) -> None:
        step = int(row["step"])
        if step <= self.state["last_step"]:
            return  # sent by an earlier session of this run
        self.run.log(scalars(row), step=step)
        self.state["last_step"] = step
        atomic_write_json(self.state_path, self.state)

    def close(self) -> None:
        self.run.finish()


def open_sink(run: TrackedRun) -> WandbOfflineSink:
    return WandbOfflineSink(run)
