"""The checkpointable training job: what a SLURM array task, a local worker or a debug
submission runs.

``TrainingJob(entries)()`` trains each (run directory, lease token) entry in turn with
``train_run``. A SLURM array task holds one entry; a local worker (one per GPU) holds the
runs assigned to its GPU and trains them one after another.

Preemption and time limits: submitit installs a USR2 handler that calls ``checkpoint()``
(which returns a DelayedSubmission of this job) and requeues. The job wraps that handler:
USR2 first asks the trainer to stop at the end of the current step (it then saves a
checkpoint), and the job hands over to submitit's handler, which pickles the job and
requeues it; the requeued job resumes exactly from that checkpoint. If the step does not
end within ``preempt_grace_s`` the requeue happens anyway, resuming from the last periodic
checkpoint (also exact, just later). SIGTERM (which SLURM sends before it kills a job on
scancel, ``scontrol requeue`` or preemption with a grace time, and which submitit ignores)
also stops the trainer at the next step with a checkpoint; the job then waits for the kill
or the USR2, and requeues itself if neither comes within the grace period.

Data parallel (tasks > 1): submitit's TorchDistributedEnvironment exports RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; rank 0 decides (lease, markers) and
tells the others, and stop requests are all-reduced so every rank stops at the same step.
"""
from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path

import submitit
from submitit.helpers import Checkpointable, DelayedSubmission

from ebt_scaling.harness.contract.errors import describe_error
from ebt_scaling.harness.contract.run_dir import RunDir
from ebt_scaling.harness.contract.run_state import FAILED, FINISHED, is_damaged, run_state
from ebt_scaling.harness.tracking.logs import ensure_logging

from . import run_files
from .liveness import hostname, is_dead, proc_start

log = logging.getLogger(__name__)


def under_submitit() -> bool:
    return "SUBMITIT_FOLDER" in os.environ or "SUBMITIT_EXECUTOR" in os.environ


def preempt_signal() -> signal.Signals:
    """The signal submitit checkpoints and requeues on (USR2 unless SUBMITIT_PREEMPT_SIGNAL
    names another), the one SLURM sends before a time limit (--signal)."""
    return getattr(signal, "SIG" + submitit.JobEnvironment.USR_SIG)


class TrainingJob(Checkpointable):
    """Train (or resume) runs; requeue itself on preemption / time limit."""

    def __init__(self, entries: list[tuple[str, str]], cluster: str, threads: int | None = None,
                 preempt_grace_s: float = 60.0):
        self.entries = [(str(path), str(token)) for path, token in entries]
        self.cluster = cluster
        self.threads = threads
        self.preempt_grace_s = float(preempt_grace_s)
        self._reset_runtime()

    # ---- pickling: the requeued copy starts with a clean runtime state ----------------
    def _reset_runtime(self) -> None:
        self._stop = False
        self._signum: int | None = None
        self._requeue_handler = None
        self._ctx = None

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._reset_runtime()

    def checkpoint(self, *args, **kwargs) -> DelayedSubmission:
        """Called by submitit on preemption / time limit: resubmit this job as it is (the
        trainer's checkpoints hold the progress)."""
        return DelayedSubmission(self, *args, **kwargs)

    # ---- signals ----------------------------------------------------------------------------
    def _install_signal_handlers(self) -> None:
        if not under_submitit():
            return
        sig = preempt_signal()
        handler = signal.getsignal(sig)
        if callable(handler):  # submitit's checkpoint-and-requeue
            self._requeue_handler = handler
            signal.signal(sig, self._on_preempt_signal)
            # submitit only logs SIGTERM; SLURM sends it before killing a job (scancel, scontrol
            # requeue, preemption with a grace time): checkpoint at the end of the step meanwhile.
            signal.signal(signal.SIGTERM, self._on_terminate)

    def _on_terminate(self, signum, frame) -> None:
        if not self._stop:
            log.warning("caught SIGTERM: checkpointing at the end of this step (the job is being "
                        "cancelled, requeued or preempted)")
        self._stop = True

    def _await_requeue_signal(self) -> None:
        """After a SIGTERM alone: wait for SLURM's kill (cancel, requeue) or its USR2
        (preemption); if neither comes within the grace period, requeue ourselves."""
        deadline = time.time() + self.preempt_grace_s
        while self._signum is None and time.time() < deadline:
            time.sleep(0.1)
        if self._signum is None:
            self._signum = preempt_signal()

    def _on_preempt_signal(self, signum, frame) -> None:
        if self._signum is not None:
            return
        self._stop, self._signum = True, signum  # (a SIGTERM may have set _stop already)
        log.warning("caught %s: stopping at the end of this step, then requeue (grace %.0f s)",
                    signal.Signals(signum).name, self.preempt_grace_s)
        if self.preempt_grace_s > 0:
            signal.signal(signal.SIGALRM, self._on_grace_expired)
            signal.alarm(max(1, int(self.preempt_grace_s)))
        else:
            self._requeue()

    def _on_grace_expired(self, signum, frame) -> None:
        log.warning("the step did not end within the grace period: requeue now (the run resumes "
                    "from its last periodic checkpoint)")
        self._requeue()

    def _requeue(self) -> None:
        """Hand over to submitit: checkpoint() is pickled and the job requeued; exits on rank 0."""
        signal.alarm(0)
        if self._requeue_handler is not None and self._signum is not None:
            self._requeue_handler(self._signum, None)

    # ---- distributed ---------------------------------------------------------------------
    def _environment(self) -> tuple[int, int, str]:
        """(rank, world size, job id) of this process."""
        if not under_submitit():
            return 0, 1, f"{self.cluster}-{os.getpid()}"
        env = submitit.JobEnvironment()
        return env.global_rank, env.num_tasks, str(env.job_id)

    def _setup_distributed(self, world: int) -> None:
        if world <= 1:
            return
        # Every task sees all of the node's GPUs; the trainer picks cuda:LOCAL_RANK.
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
        import torch

        from ebt_scaling.harness.training.distributed import DistributedContext

        self._ctx = DistributedContext.from_env("cuda" if torch.cuda.is_available() else "cpu")

    def _agree(self, obj):
        """Rank 0's value on every rank."""
        return obj if self._ctx is None else self._ctx.gather_objects(obj)[0]

    def _should_stop(self, run_dir: str) -> bool:
        stop = self._stop or run_files.is_cancelled(run_dir)
        if self._ctx is None:
            return stop
        import torch
        import torch.distributed as dist

        device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
        flag = torch.tensor([1.0 if stop else 0.0], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item() > 0)

    # ---- the job -----------------------------------------------------------------------------
    def __call__(self) -> dict:
        ensure_logging("stdout")  # a job's log lines (per-step progress) belong in its .out file
        self._install_signal_handlers()
        rank, world, job_id = self._environment()
        threads = self.threads or int(os.environ.get("SLURM_CPUS_PER_TASK", "0") or 0)
        previous_threads = None
        if threads:
            import torch

            previous_threads = torch.get_num_threads()
            torch.set_num_threads(threads)
        self._setup_distributed(world)
        outcomes: dict[str, str] = {}
        failures: list[str] = []
        interrupted = False
        try:
            for run_dir, token in self.entries:
                if self._stop:
                    interrupted = True
                    break
                outcome = self._run_one(run_dir, token, rank, job_id)
                outcomes[Path(run_dir).name] = outcome
                interrupted = outcome == "preempted"
                if outcome.startswith("failed"):
                    failures.append(f"{Path(run_dir).name}: {outcome}")
        finally:
            if self._requeue_handler is not None:
                signal.alarm(0)
            if previous_threads is not None and not under_submitit():
                import torch

                torch.set_num_threads(previous_threads)  # in-process (debug): leave the caller as it was
        if interrupted and self._requeue_handler is not None:
            # preempted, timed out, or terminated: requeue (submitit exits this process on rank 0)
            if self._signum is None:
                self._await_requeue_signal()
            self._requeue()
            return {"status": "preempted", "runs": outcomes}
        if self._ctx is not None:
            self._ctx.close()
        if failures:
            raise RuntimeError("; ".join(failures))
        return {"status": "finished", "runs": outcomes}

    def _decide(self, run: RunDir, token: str, job_id: str) -> str:
        """Rank 0: 'train', or why not ('done', 'cancelled', 'held by ...', a damaged run's detail)."""
        state, detail = run_state(run.path)  # from its files alone: this job holds its lease
        if state in FINISHED:
            run_files.release_lease(run.path, token)
            return state
        if is_damaged(run.path, state):  # training cannot mend its files; the job goes on with its other runs
            run_files.release_lease(run.path, token, "failed")
            return f"failed: {detail}"
        if run_files.is_cancelled(run.path):
            run_files.release_lease(run.path, token, "cancelled")
            return "cancelled"
        claim = {"state": "running", "job_id": job_id, "started_at": time.time(), "pid": os.getpid(),
                 "pid_start": proc_start(os.getpid()), "host": hostname()}
        if run_files.update_lease(run.path, token, **claim) is not None:
            return "train"
        # Our lease is gone: it was released, broken or taken over. Train only if no live job holds it.
        mine = run_files.new_lease(self.cluster, token=token, submitted_at=time.time(), **claim,
                                job_pid=os.getpid(), job_pid_start=proc_start(os.getpid()),
                                job_host=hostname())
        taken, holder = run_files.take_lease(run.path, mine, is_dead)
        if taken:
            return "train"
        return f"held by {holder.get('cluster')} job {holder.get('job_id')}" if holder else "held"

    def _run_one(self, run_dir: str, token: str, rank: int, job_id: str) -> str:
        from ebt_scaling.harness.contract.spec import load_spec
        from ebt_scaling.harness.training.trainer import train_run

        run = RunDir(run_dir)
        decision = self._agree(self._decide(run, token, job_id) if rank == 0 else None)
        if decision != "train":
            if rank == 0:
                log.info("%s: not training (%s)", run.path.name, decision)
            return decision
        hosts = self._ctx.hosts() if self._ctx is not None else [hostname()]  # every rank takes part
        if rank == 0:
            run_files.clear_markers(run.path, FAILED)
            run_files.remove_stale_temporaries(run.path)
            run.log(f"dispatch: {self.cluster} job {job_id} on {hostname()} (pid {os.getpid()})")
            if len(hosts) > 1:
                run.log("dispatch: " + ", ".join(f"rank {r} on {host}" for r, host in enumerate(hosts)))
        try:
            spec = load_spec(run.spec_path)
            result = train_run(spec, run.path, quiet=True, stop_requested=lambda: self._should_stop(run_dir))
        except KeyboardInterrupt:
            # A local cancel (SIGINT from the controller) or Ctrl-C in debug mode: the run keeps
            # its checkpoints and resumes on the next submission; no failure is recorded.
            if rank == 0:
                run_files.release_lease(run.path, token, "interrupted")
            raise
        except Exception as exc:
            if rank == 0:
                line = run_files.record_failure(run.path, exc, job_id=job_id, cluster=self.cluster)
                try:
                    run.log(f"dispatch: failed: {line}", logging.ERROR)  # logged before train.log is written
                except OSError:
                    pass
                run_files.release_lease(run.path, token, "failed")
            if len(self.entries) == 1:
                raise
            return f"failed: {describe_error(exc, run.path)}"
        if result["status"] == "preempted":
            if run_files.is_cancelled(run.path):
                if rank == 0:
                    run.log(f"dispatch: cancelled at step {result.get('step')} (checkpoint saved)")
                    run_files.release_lease(run.path, token, "cancelled")
                return "cancelled"
            if rank == 0:
                current = run_files.read_lease(run.path) or {}
                run_files.update_lease(run.path, token, state="preempted",
                                    preemptions=int(current.get("preemptions", 0)) + 1, preempted_at=time.time())
            return "preempted"
        if rank == 0:
            run_files.release_lease(run.path, token, result["status"])
        return result["status"]

