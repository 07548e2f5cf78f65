"""TensorBoard sink: event files in RUN_DIR/tensorboard/ (`tensorboard --logdir SWEEP_DIR`).

Every metrics row becomes one scalar per numeric field, tagged with the field's name
(train_loss, val_loss, lr, tokens_per_s, ...) at the row's step, so the plots and
metrics.jsonl agree number for number.

Resume: a resumed run re-logs the rows after its checkpoint. The writer opens with
``purge_step`` = checkpoint step + 1, which records a restart marker; TensorBoard then drops
the earlier session's events from that step on, so no step appears twice.
"""
from __future__ import annotations

from typing import Any

from .sinks import TrackedRun, scalars

FOLDER = "tensorboard"


class TensorBoardSink:
    def __init__(self, run: TrackedRun):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run.directory / FOLDER), purge_step=run.start_step + 1)

    def write(self, row: dict[str, Any]) -> None:
        for tag, value in scalars(row).items():
            self.writer.add_scalar(tag, value, global_step=int(row["step"]))
        self.writer.flush()  # a killed job keeps what it logged (rows come every log_every steps)

    def close(self) -> None:
        self.writer.close()


def open_sink(run: TrackedRun) -> TensorBoardSink:
    return TensorBoardSink(run)
