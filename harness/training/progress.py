"""What a training run shows while it trains, on the main process only.

* A tqdm bar -- on a terminal only (``disable=None``: off when stderr is not a TTY, so a
  job's log files hold no carriage-return frames).
* One line per metrics row (every ``log_every`` steps and at each evaluation): step of
  total, tokens, train loss, learning rate, tokens/s, ETA, and the validation loss when
  evaluated. It goes to train.log and, through the package logger, to the process's log
  stream (a job's stdout; see harness/tracking/logs.py). The ETA is the remaining steps at the
  mean step time of this session (evaluations included).
* The tracking sinks EBT_SCALING_TRACK asks for (harness/tracking/), fed the same rows.
"""
from __future__ import annotations

import logging
import time

from tqdm import tqdm

from ebt_scaling.harness.contract.formatting import duration, si
from ebt_scaling.harness.contract.run_dir import RunDir
from ebt_scaling.harness.contract.spec import RunSpec
from ebt_scaling.harness.contract.typed_config import to_dict
from ebt_scaling.harness.tracking.sinks import SinkSet, TrackedRun, open_sinks, requested_sinks

log = logging.getLogger(__name__)


def progress_line(row: dict, total: int, eta_s: float | None) -> str:
    """'step 40/478 | tokens 10.2k | loss 5.1234 | lr 3e-03 | 9.87k tok/s | ETA 1m02s | val_loss 5.2000'."""
    parts = [f"step {row['step']}/{total}", f"tokens {si(row['tokens'])}", f"loss {row['train_loss']:.4f}",
             f"lr {row['lr']:.3g}", f"{si(row['tokens_per_s'])} tok/s", f"ETA {duration(eta_s)}"]
    if "val_loss" in row:
        parts.append(f"val_loss {row['val_loss']:.4f}")
    return " | ".join(parts)


class TrainingProgress:
    def __init__(self, run: RunDir, spec: RunSpec, step: int, is_main: bool, quiet: bool):
        self.run, self.total, self.is_main = run, spec.total_steps, is_main
        self.start_step, self.start_time = step, time.perf_counter()
        self.bar = tqdm(total=self.total, initial=step, disable=True if quiet or not is_main else None,
                        unit="step", desc=f"{spec.model.arch} {spec.run_id}", dynamic_ncols=True)
        self.sinks = SinkSet({})
        names = requested_sinks() if is_main else ()
        log.debug("%s: steps %d-%d on rank %s, a metrics row every %d steps; tracking: %s", spec.run_id, step + 1,
                  self.total, "main" if is_main else "other", spec.log_every, ", ".join(names) or "off")
        if names:
            self.sinks = open_sinks(names, TrackedRun(directory=run.path, name=spec.run_id,
                                                      project=spec.tags.get("sweep", "ebt-scaling"),
                                                      config={"run_id": spec.run_id, **to_dict(spec)},
                                                      start_step=step))

    def update(self, steps: int = 1) -> None:
        self.bar.update(steps)

    def record(self, row: dict) -> None:
        """A metrics row was logged: the bar's figures, the progress line, the sinks."""
        self.bar.set_postfix(loss=f"{row['train_loss']:.3f}",
                             **({"val": f"{row['val_loss']:.3f}"} if "val_loss" in row else {}))
        if not self.is_main:
            return
        done = row["step"] - self.start_step
        eta_s = (self.total - row["step"]) * (time.perf_counter() - self.start_time) / done if done > 0 else None
        self.run.log(progress_line(row, self.total, eta_s))
        self.sinks.write(row)

    def close(self) -> None:
        self.bar.close()
        self.sinks.close()
