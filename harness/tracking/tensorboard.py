"""TensorBoard sink: event files in RUN_DIR/tensorboard/ (`tensorboard --logdir SWEEP_DIR`).

Every metrics row becomes one scalar per numeric field, tagged with the field's name
(train_loss, val_loss, lr, tokens_per_s, ...) at the row's step, so the plots and
metrics.jsonl agree number for number.

Resume and cooldown branches: each session writes an event file of its own holding the whole
curve (open_sinks replays the rows up to the session's start step, then the session logs its
own), so a branch's curve starts at step 1 with its parent's rows, as in W&B. The writer opens
with ``purge_step=0``: a restart marker at step 0, from which TensorBoard's Python reader drops
every event of the earlier files; TensorBoard's data server drops a tag's later points when
its steps go back, which the replay's first point does. Either way no step appears twice.
"""
from __future__ import annotations

from typing import Any

from .sinks import TrackedRun, scalars

FOLDER = "tensorboard"


class TensorBoardSink:
    def __init__(self, run: TrackedRun):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run.directory / FOLDER), purge_step=0)

    def write(self, row: dict[str, Any]) -> None:
        for tag, value in scalars(row).items():
            self.writer.add_scalar(tag, value, global_step=int(row["step"]))
        self.writer.flush()  # a killed job keeps what it logged (rows come every log_every steps)

    def close(self, clean: bool) -> None:  # earlier event files stay: they are purged on reading
        self.writer.close()


def open_sink(run: TrackedRun) -> TensorBoardSink:
    return TensorBoardSink(run)
