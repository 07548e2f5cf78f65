"""Dispatch a sweep's runs to a cluster backend (SLURM, local GPUs/CPU, in-process), idempotently.

A sweep directory holds ``runs/<run_id>/spec.yaml`` (see ``ebt-scaling plan``); every run
directory is trained by :class:`~ebt_scaling.harness.dispatch.job.TrainingJob`, a
submitit ``Checkpointable`` that runs ``train_run`` and is requeued on preemption or time
limit, resuming exactly from the trainer's checkpoints.

Modules, grouped as submitit groups its code:
  backend    -- the Backend protocol (submit, probe, cancel), the BACKENDS registry, and what a
                backend receives from submit (Submission) and fills (SubmitReport)
  slurm      -- the SLURM backend: one job array per resource class; squeue / sacct states
  local      -- the local backend: submitit workers on this machine's GPUs or CPU; stopping them
  debug      -- the debug backend: every run in this process
  profiles   -- cluster profiles (YAML -> typed ClusterProfile; resource classes)
  job        -- the checkpointable training job (SLURM array task, local worker, debug)
  run_files  -- the files dispatch owns in a run directory: the lease (one live job per run,
                taken atomically, changed under the run lock), the failed / cancelled markers,
                and the stale temporaries of killed writers
  liveness   -- whether a lease's job lives: this host's processes, each backend's probe
  snapshot   -- a sweep's runs with their specs, read once per command (and shared by its polls)
  status     -- per-run state, progress and ETA from the tail of each metrics.jsonl; the table
  sweep_ops  -- the operations on a sweep: submit (skip finished, resume partial, retry failed
                on request), wait for runs to end, cancel them through their backends

Files this package writes into a run directory (besides the trainer's own):
  lease.json      the live job that owns the run (removed when the job ends)
  last_job.json   that lease as it was when its job ended, with the outcome
  .lease.lock     flock(2) target serialising lease changes
  failed.json     the last failure (error line, traceback tail, job id)
  cancelled.json  written by ``ebt-scaling cancel``

Submitit logs and pickles go to SWEEP_DIR/jobs/<cluster>/<job id>/ (the profile's
log_folder). The two-node local SLURM cluster used by CI is started by harness/slurm_local.sh
(``ebt-scaling slurm-local start``).
"""
