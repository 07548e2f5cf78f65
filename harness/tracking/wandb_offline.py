"""Weights & Biases sink, offline: a run in RUN_DIR/wandb/offline-run-*/, uploaded later.

Clusters' compute nodes often have no internet, so the run is always offline
(``mode="offline"``, the same as WANDB_MODE=offline); upload from a login node with
``wandb sync RUN_DIR/wandb/latest-run``. The W&B project is the sweep's name, the run's
name its run id, its config the run spec.

Resume needs no join of offline runs. wandb cannot resume a run offline: every
``wandb.init`` writes a new offline-run folder (wandb 0.31, even with the same id and
``resume="allow"``), and whether ``wandb sync`` then appends one folder to another on the
server has changed between wandb versions and cannot be tested without a server. So each
training session is a W&B run of its own (a fresh id) that first gets the metrics.jsonl
rows up to its start step replayed (open_sinks) -- what earlier sessions logged, as the
resume kept them, or a cooldown branch's copy of its parent's rows -- then logs its own. Its
folder holds the whole curve, equal to metrics.jsonl; the newest folder (wandb's
``latest-run`` link) is always the one to sync.

Earlier folders are never deleted. wandb writes through a service process, so a full disk
need not raise in ``log``: a session's folder can be cut short without its sink knowing.
A session that closes cleanly (every write taken, ``finish`` returned) moves the run's other
folders to ``wandb/superseded/``, out of ``wandb sync``'s way; delete them once the synced
run looks right. A session whose write failed, or that was killed, moves nothing.
"""
from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from .sinks import TrackedRun, scalars

FOLDER = "wandb"
SUPERSEDED = "superseded"  # under FOLDER


class WandbOfflineSink:
    def __init__(self, run: TrackedRun):
        import wandb

        # console off: wandb would otherwise wrap sys.stdout/stderr (the job's log lines) to copy them.
        settings = wandb.Settings(silent=True, console="off", x_disable_stats=True, disable_git=True,
                                  save_code=False, x_save_requirements=False)
        # A random id suffix: two sessions, or two copies of a sweep, never write into one W&B run.
        self.run = wandb.init(mode="offline", dir=str(run.directory), project=run.project, name=run.name,
                              id=f"{run.name}-{uuid.uuid4().hex[:8]}", config=run.config,
                              reinit="create_new", settings=settings)
        self.folders = run.directory / FOLDER

    def write(self, row: dict[str, Any]) -> None:
        self.run.log(scalars(row), step=int(row["step"]))

    def close(self, clean: bool) -> None:
        self.run.finish(exit_code=0 if clean else 1)  # not clean: the W&B run shows as failed
        if not clean:
            return
        own = Path(self.run.settings.sync_dir).name
        aside = self.folders / SUPERSEDED
        for earlier in sorted(self.folders.glob("offline-run-*")):
            if earlier.name != own:
                aside.mkdir(exist_ok=True)
                earlier.rename(aside / earlier.name)  # names hold a random id: never taken


def open_sink(run: TrackedRun) -> WandbOfflineSink:
    return WandbOfflineSink(run)
