"""Where a run's progress goes besides metrics.jsonl: the package's log lines and the optional
tracking sinks (TensorBoard event files, Weights & Biases offline runs).

The sinks are off by default. metrics.jsonl stays the file the analysis reads; each sink receives the
same rows, on the main process only. Turning tracking on never changes a run's id: it is
operational, like the cluster a run trains on.

  logs           -- the one handler on the ``ebt_scaling`` logger (CLI: stderr; a job: stdout)
  sinks          -- the Sink protocol, the known sinks, EBT_SCALING_TRACK, open_sinks
  tensorboard    -- event files in RUN_DIR/tensorboard/ (extra: tensorboard)
  wandb_offline  -- an offline W&B run in RUN_DIR/wandb/, synced later (extra: wandb)
"""
