"""Local: submitit LocalExecutor workers on this machine, one per GPU slot (or
``local_cpu_workers`` on the CPU); each worker trains its share of the runs in turn.

A local job is a process on this host that may hold several runs; stopping such processes
(:func:`stop_processes`) serves the debug backend too, whose job is the submitting process."""
from __future__ import annotations

import contextlib
import os
import shlex
import signal
import sys
from pathlib import Path

import submitit

from ebt_scaling.harness.contract.errors import DispatchError, require
from ebt_scaling.harness.contract.run_state import JobView

from .backend import Submission, submission_error
from .job import TrainingJob
from .liveness import hostname, pid_alive, probe_processes, proc_start
from .profiles import ClusterProfile


def local_gpus(profile: ClusterProfile) -> list[int]:
    if profile.gpus_per_node == 0:
        return []
    if profile.local_gpus is not None:
        return list(profile.local_gpus)
    try:
        import torch

        return list(range(torch.cuda.device_count()))
    except Exception:  # noqa: BLE001 - no usable CUDA: train on the CPU
        return []


@contextlib.contextmanager
def _stdio_to(path: Path):
    """Point this process's stdout/stderr file descriptors at `path` while local job
    controllers start, so they do not hold the caller's terminal or pipes open."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for f in (fd, *saved):
            os.close(f)


def stop_processes(leases: list[dict], unfinished: list[dict]) -> list[str]:
    """SIGINT (what submitit's LocalJob.cancel sends its controller) each process whose
    unfinished runs are all being cancelled; a process that holds other runs too stops the
    cancelled ones at their next step, when it sees their marks."""
    cancelling = {lease["token"] for lease in leases}
    held: dict[int, set[str]] = {}
    for lease in unfinished:
        held.setdefault(int(lease.get("job_pid") or 0), set()).add(lease["token"])
    signalled: set[int] = set()
    lines = []
    for lease in leases:
        pid, job_id = int(lease.get("job_pid") or 0), lease.get("job_id")
        if pid in signalled:
            lines.append(f"stopped local job {job_id}")
        elif pid and held.get(pid, set()) <= cancelling and pid_alive(pid, lease.get("job_pid_start")):
            try:
                os.kill(pid, signal.SIGINT)
                signalled.add(pid)
                lines.append(f"stopped local job {job_id}")
            except ProcessLookupError:
                lines.append("marked cancelled (job already gone)")
        else:
            lines.append(f"marked cancelled; job {job_id} stops it at its next step")
    return lines


class LocalBackend:
    name = "local"
    description = "one job per GPU (or the CPU)"
    job_kind = "local job(s)"
    in_process = False

    @property
    def default_profile(self) -> str:
        """One job per GPU; without a visible GPU, two single-threaded CPU workers (on a
        small machine that beats one multi-threaded job, which stalls on OpenMP)."""
        import torch

        return "local" if torch.cuda.is_available() else "cpu"

    def check_profile(self, profile: ClusterProfile) -> None:
        require(profile.nodes == 1 and all((c.nodes or 1) == 1 for c in profile.classes), "nodes",
                "local runs use one node; set nodes: 1 or submit with --cluster slurm")

    def submit(self, submission: Submission) -> None:
        profile = submission.profile
        gpus = local_gpus(profile)
        per_job = max(1, profile.gpus_per_node)
        slots = [tuple(gpus[i:i + per_job]) for i in range(0, len(gpus) - per_job + 1, per_job)] if gpus else \
            [()] * profile.local_cpu_workers
        if gpus and not slots:
            raise DispatchError(f"profile {profile.name}: gpus_per_node={per_job} but only {len(gpus)} GPUs "
                                "are visible")
        queues: list[list] = [[] for _ in slots]
        for i, member in enumerate(submission.runs):  # round robin
            queues[i % len(slots)].append(member)
        folder = submission.log_folder
        folder.mkdir(parents=True, exist_ok=True)
        for slot, queue in zip(slots, queues):
            if not queue:
                continue
            executor = submitit.LocalExecutor(folder=folder / "%j", max_num_timeout=profile.max_num_timeout,
                                              python=shlex.quote(sys.executable))
            executor.update_parameters(timeout_min=profile.timeout_min, gpus_per_node=len(slot),
                                       visible_gpus=slot, tasks_per_node=profile.tasks_per_node,
                                       signal_delay_s=profile.signal_delay_s, setup=list(profile.setup))
            job_fn = TrainingJob([m.entry for m in queue], self.name, threads=profile.cpus_per_task,
                                 preempt_grace_s=profile.preempt_grace_s)
            try:
                with _stdio_to(folder / "controllers.log"):
                    job = executor.submit(job_fn)
            except Exception as exc:
                raise DispatchError(f"local submission failed: {submission_error(exc)}") from None
            pid = int(job.job_id)  # a local job's id is its controller's pid
            submission.record_job(str(job.job_id), queue, folder=str(folder / "%j"), job_pid=pid,
                                  job_pid_start=proc_start(pid), job_host=hostname(), gpus=list(slot))

    def probe(self, leases: list[dict]) -> list[JobView]:
        return probe_processes(leases)

    def cancel(self, leases: list[dict], unfinished: list[dict]) -> list[str]:
        return stop_processes(leases, unfinished)


BACKEND = LocalBackend()
