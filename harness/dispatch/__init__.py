"""Dispatch a sweep's runs to a cluster backend (SLURM, local GPUs/CPU, in-process), idempotently.

A sweep directory holds ``runs/<run_id>/spec.yaml`` (see ``ebt-scaling plan``); every run
directory is trained by :class:`~ebt_scaling.harness.dispatch.job.TrainingJob`, a
submitit ``Checkpointable`` that runs ``train_run`` and is requeued on preemption or time
limit, resuming exactly from the trainer's checkpoints.

Modules:
  backend      -- the Backend protocol (submit, probe, cancel) and the BACKENDS registry
  backends/    -- the built-ins: slurm (job arrays), local (submitit workers), debug (in-process)
  profiles     -- cluster profiles (YAML -> typed ClusterProfile; resource classes)
  discovery    -- finding a sweep's runs
  submit       -- submit a sweep (skip finished, resume partial, retry failed on request)
  submission   -- what a backend receives from submit, and the report it fills
  lease        -- one live job per run: lease.json taken atomically, the run lock
  liveness     -- whether a lease's job lives, asked of its backend
  markers      -- failed / cancelled markers and the one-line error a failure records
  temporaries  -- removing killed writers' temporary files from a run directory
  processes    -- this host's processes: identity and liveness
  job          -- the checkpointable training job (SLURM array task, local worker, debug)
  sweep_status -- per-run state, progress and ETA; the status table
  cancel       -- cancel runs through their backends
  wait         -- wait for runs to end

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
