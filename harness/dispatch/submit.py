"""Submit a sweep directory's runs: SLURM job arrays, local GPU/CPU workers, or in-process.

Idempotent: finished runs (done, diverged) are skipped, runs a live job holds are skipped,
partial runs are resumed, failed and cancelled ones re-run only with ``retry_failed``.
Every submitted run first gets a lease (see lease.py), so two submissions racing on one
sweep never start two jobs for one run.
"""
from __future__ import annotations

import contextlib
import os
import shlex
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from ebt_scaling.harness.contract.errors import ConfigError

from . import lease as leases
from .job import TrainingJob
from .profiles import ClusterProfile, Resources
from .status import DispatchError, SweepRun, derive_state, discover, wait_for


@dataclass
class SubmitReport:
    cluster: str
    submitted: dict[str, str] = field(default_factory=dict)  # run id -> job id
    skipped: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))  # reason -> run ids
    jobs: list[str] = field(default_factory=list)  # one per array / worker / debug run
    failed: dict[str, str] = field(default_factory=dict)  # debug: run id -> error line
    final_states: dict[str, str] = field(default_factory=dict)  # after --wait / debug

    def summary(self) -> str:
        kind = {"slurm": "SLURM job array(s)", "local": "local job(s)", "debug": "in-process run(s)"}[self.cluster]
        parts = [f"submitted {len(self.submitted)} run(s)" + (f" as {len(self.jobs)} {kind}: {', '.join(self.jobs)}"
                                                             if self.jobs else "")]
        for reason, ids in self.skipped.items():
            parts.append(f"skipped {len(ids)} {reason}")
        return "; ".join(parts)

    @property
    def ok(self) -> bool:
        bad = [s for s in self.final_states.values() if s not in ("done", "diverged")]
        return not self.failed and not bad


def plan_submission(runs: list[SweepRun], retry_failed: bool) -> tuple[list[SweepRun], dict[str, list[str]],
                                                                     dict[str, dict | None]]:
    """(runs to submit, skipped reason -> ids, run id -> the lease seen, or None)."""
    lease_list = [leases.read_lease(r.path) for r in runs]
    jobs = leases.probe(lease_list)
    todo, skipped, seen = [], defaultdict(list), {}
    for r, lease, job in zip(runs, lease_list, jobs):
        state, _ = derive_state(r.run.result(), lease, job, leases.failure(r.path), leases.cancelled(r.path),
                                bool(r.run.checkpoints()))
        if state in ("done", "diverged"):
            skipped[state].append(r.run_id)
        elif lease is not None and job is not None and job.alive:
            skipped[f"held by a live job ({state})"].append(r.run_id)
        elif state in ("failed", "cancelled") and not retry_failed:
            skipped[f"{state} (resubmit with --retry-failed)"].append(r.run_id)
        else:
            todo.append(r)
            seen[r.run_id] = lease
    return todo, skipped, seen


def _take_leases(todo: list[SweepRun], seen: dict[str, dict | None], cluster: str, profile: ClusterProfile,
                 skipped: dict[str, list[str]], retry_failed: bool) -> list[tuple[SweepRun, dict]]:
    taken = []
    for r in todo:
        old = seen.get(r.run_id)

        def dead(current: dict, old=old) -> bool:
            # The lease we found dead may have been replaced meanwhile: check a new one again.
            return (old is not None and current.get("token") == old.get("token")) or leases.is_dead(current)

        lease = leases.new_lease(cluster, profile=profile.name)
        ok, holder = leases.take_lease(r.path, lease, dead)
        if not ok:
            skipped["held by a live job (taken meanwhile)"].append(r.run_id)
            continue
        if retry_failed:
            leases.clear_markers(r.path, leases.FAILED, leases.CANCELLED)
        taken.append((r, lease))
    return taken


def _log_folder(sweep_dir: Path, profile: ClusterProfile, cluster: str) -> Path:
    folder = Path(profile.log_folder).expanduser()
    if not folder.is_absolute():
        folder = sweep_dir / folder
    return (folder / cluster).resolve()


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


def submit_sweep(sweep_dir: str | Path, cluster: str, profile: ClusterProfile, retry_failed: bool = False,
                 only: list[str] | None = None, wait: bool = False, poll_s: float = 5.0,
                 wait_timeout_s: float | None = None, echo=print, progress: bool = False) -> SubmitReport:
    sweep_dir = Path(sweep_dir).resolve()
    runs = discover(sweep_dir, only)
    if not runs:
        raise DispatchError(f"{sweep_dir}: the sweep has no runs (runs/*/spec.yaml)")
    report = SubmitReport(cluster)
    todo, skipped, seen = plan_submission(runs, retry_failed)
    report.skipped.update(skipped)
    try:
        classes = profile.for_runs({r.run_id: r.spec.tags for r in todo})
    except ConfigError as exc:
        raise DispatchError(f"profile {profile.name}: {exc}") from None
    taken = _take_leases(todo, seen, cluster, profile, report.skipped, retry_failed)
    if taken:
        try:
            if cluster == "slurm":
                _submit_slurm(sweep_dir, taken, classes, profile, report)
            elif cluster == "local":
                _submit_local(sweep_dir, taken, classes, profile, report)
            elif cluster == "debug":
                _run_debug(taken, profile, report, echo)
            else:
                raise DispatchError(f"--cluster: must be slurm, local or debug, got {cluster!r}")
        finally:
            # Anything not handed to a job gives its lease back; a run whose job the scheduler
            # accepted keeps it (report.submitted is filled as soon as sbatch / submit returns).
            for r, lease in taken:
                if r.run_id not in report.submitted:
                    leases.release_lease(r.path, lease["token"])
    if wait and report.submitted and cluster != "debug":
        rows = wait_for(sweep_dir, list(report.submitted), poll_s=poll_s, timeout_s=wait_timeout_s, echo=echo,
                        progress=progress)
        report.final_states = {r.run_id: r.state for r in rows}
    return report


# ---- SLURM ---------------------------------------------------------------------------------
def _slurm_parameters(res: Resources, profile: ClusterProfile, name: str) -> dict:
    params = {"name": name, "timeout_min": res.timeout_min, "nodes": res.nodes, "tasks_per_node": res.tasks_per_node,
              "cpus_per_task": res.cpus_per_task, "mem_gb": res.mem_gb,
              "slurm_array_parallelism": res.array_parallelism, "slurm_signal_delay_s": profile.signal_delay_s,
              "slurm_partition": res.partition, "slurm_account": res.account, "slurm_qos": res.qos,
              "slurm_constraint": res.constraint, "slurm_setup": list(res.setup) or None,
              "slurm_additional_parameters": dict(res.additional_parameters) or None}
    if res.gpus_per_node:
        params["gpus_per_node"] = res.gpus_per_node
    return {k: v for k, v in params.items() if v is not None}


def _submission_error(exc: Exception) -> str:
    text = str(exc).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    useful = [ln for ln in lines if "error" in ln.lower()] or lines
    return useful[-1] if useful else type(exc).__name__


def _submit_slurm(sweep_dir: Path, taken, classes: dict[str, Resources], profile: ClusterProfile,
                  report: SubmitReport) -> None:
    import submitit

    folder = _log_folder(sweep_dir, profile, "slurm")
    groups: dict[tuple, list] = defaultdict(list)
    for r, lease in taken:
        groups[classes[r.run_id].key()].append((r, lease))
    for members in groups.values():
        res = classes[members[0][0].run_id]
        executor = submitit.AutoExecutor(folder=folder / "%j", cluster="slurm",
                                         slurm_max_num_timeout=profile.max_num_timeout,
                                         slurm_python=shlex.quote(sys.executable))
        executor.update_parameters(**_slurm_parameters(res, profile, f"ebt-{sweep_dir.name}-{res.class_name}"))
        try:
            with executor.batch():
                jobs = [executor.submit(TrainingJob([(str(r.path), lease["token"])], "slurm",
                                                    threads=res.cpus_per_task,
                                                    preempt_grace_s=profile.preempt_grace_s))
                        for r, lease in members]
        except Exception as exc:  # sbatch refused (bad partition, account, limits, ...)
            raise DispatchError(f"sbatch failed for class {res.class_name!r}: {_submission_error(exc)}") from None
        # The jobs exist from here on: record them first, so that a failure below (writing a
        # lease) never makes submit_sweep release the lease of a run whose job was submitted.
        for (r, _), job in zip(members, jobs):
            report.submitted[r.run_id] = str(job.job_id)
        report.jobs.append(str(jobs[0].job_id).split("_")[0])
        now = time.time()
        for (r, lease), job in zip(members, jobs):
            leases.update_lease(r.path, lease["token"], state_from=("submitting",), job_id=str(job.job_id),
                                state="queued", submitted_at=now, folder=str(folder / "%j"),
                                resource_class=res.class_name)


# ---- local ---------------------------------------------------------------------------------
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


def _submit_local(sweep_dir: Path, taken, classes: dict[str, Resources], profile: ClusterProfile,
                  report: SubmitReport) -> None:
    import submitit

    gpus = local_gpus(profile)
    per_job = max(1, profile.gpus_per_node)
    slots = [tuple(gpus[i:i + per_job]) for i in range(0, len(gpus) - per_job + 1, per_job)] if gpus else \
        [()] * profile.local_cpu_workers
    if gpus and not slots:
        raise DispatchError(f"profile {profile.name}: gpus_per_node={per_job} but only {len(gpus)} GPUs are visible")
    queues: list[list] = [[] for _ in slots]
    for i, item in enumerate(taken):  # round robin
        queues[i % len(slots)].append(item)
    folder = _log_folder(sweep_dir, profile, "local")
    folder.mkdir(parents=True, exist_ok=True)
    host = leases.hostname()
    for slot, queue in zip(slots, queues):
        if not queue:
            continue
        executor = submitit.LocalExecutor(folder=folder / "%j", max_num_timeout=profile.max_num_timeout,
                                          python=shlex.quote(sys.executable))
        executor.update_parameters(timeout_min=profile.timeout_min, gpus_per_node=len(slot),
                                   visible_gpus=slot, tasks_per_node=profile.tasks_per_node,
                                   signal_delay_s=profile.signal_delay_s, setup=list(profile.setup))
        job_fn = TrainingJob([(str(r.path), lease["token"]) for r, lease in queue], "local",
                             threads=profile.cpus_per_task, preempt_grace_s=profile.preempt_grace_s)
        try:
            with _stdio_to(folder / "controllers.log"):
                job = executor.submit(job_fn)
        except Exception as exc:
            raise DispatchError(f"local submission failed: {_submission_error(exc)}") from None
        for r, _ in queue:  # the job exists: record it before anything else can fail (see _submit_slurm)
            report.submitted[r.run_id] = str(job.job_id)
        report.jobs.append(str(job.job_id))
        pid = int(job.job_id)
        now = time.time()
        for r, lease in queue:
            leases.update_lease(r.path, lease["token"], state_from=("submitting",), job_id=str(job.job_id),
                                state="queued", submitted_at=now, folder=str(folder / "%j"), job_pid=pid,
                                job_pid_start=leases.proc_start(pid), job_host=host, gpus=list(slot))


# ---- debug (in-process) ---------------------------------------------------------------------
def _run_debug(taken, profile: ClusterProfile, report: SubmitReport, echo) -> None:
    pid = os.getpid()
    job_id = f"debug-{pid}"
    for r, lease in taken:
        leases.update_lease(r.path, lease["token"], state_from=("submitting",), job_id=job_id, state="queued",
                            submitted_at=time.time(), job_pid=pid, job_pid_start=leases.proc_start(pid),
                            job_host=leases.hostname())
        report.submitted[r.run_id] = job_id
    report.jobs.append(job_id)
    for r, lease in taken:
        echo(f"[debug] training {r.run_id} ({r.spec.model.arch}) in {r.path}")
        try:
            TrainingJob([(str(r.path), lease["token"])], "debug", threads=profile.cpus_per_task)()
        except Exception as exc:  # recorded in failed.json by the job; go on with the next run
            report.failed[r.run_id] = leases.describe_error(exc, r.path)
            echo(f"[debug] {r.run_id} failed: {report.failed[r.run_id]}")
        result = r.run.result()
        report.final_states[r.run_id] = (result or {}).get("status", "failed" if r.run_id in report.failed
                                                           else "preempted")
