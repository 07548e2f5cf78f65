"""Optional tracking sinks: TensorBoard event files and Weights & Biases offline runs.

Off by default. metrics.jsonl stays the file the analysis reads; each sink receives the
same rows, on the main process only. Turning tracking on never changes a run's id: it is
operational, like the cluster a run trains on.

  sinks          -- the Sink protocol, the known sinks, EBT_SCALING_TRACK, open_sinks
  tensorboard    -- event files in RUN_DIR/tensorboard/ (extra: tensorboard)
  wandb_offline  -- an offline W&B run in RUN_DIR/wandb/, synced later (extra: wandb)
"""
from .sinks import TRACK_ENV, Sink, SinkSet, TrackedRun, check_installed, open_sinks, parse_track, requested_sinks

__all__ = ["TRACK_ENV", "Sink", "SinkSet", "TrackedRun", "check_installed", "open_sinks", "parse_track",
           "requested_sinks"]
