"""SLURM: one job array per resource class, through submitit's AutoExecutor.

Each array task trains one run and requeues itself on preemption or time limit (see
job.py). Job states come from squeue (slurmctld's live view, recently ended jobs
included, one call for all leases), then from sacct for the jobs squeue no longer lists;
when a query itself fails (error exit, timeout) its jobs count as alive (UNREACHABLE).
"""
from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterable

import submitit

from ebt_scaling.harness.contract.errors import DispatchError
from ebt_scaling.harness.contract.run_state import JobView

from .backend import Submission, submission_error
from .job import TrainingJob
from .profiles import ClusterProfile, Resources

# SLURM states of a job that still exists and may still run (sacct / squeue spellings).
# PREEMPTED is final (a requeued job shows REQUEUED / PENDING instead), so it is not live.
SLURM_LIVE = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "COMPLETING",
              "SUSPENDED", "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED", "READY",
              "RESV_DEL_HOLD", "POWER_UP_NODE", "UNKNOWN"}
SLURM_RUNNING = {"RUNNING", "COMPLETING", "CONFIGURING", "SIGNALING", "STAGE_OUT", "RESIZING"}
# slurm_states' word for a job whose state could not be queried (squeue / sacct failed).
UNREACHABLE = "UNREACHABLE"
# A job sacct and squeue do not know (yet) is taken as live for this long after submission.
UNKNOWN_GRACE_S = 120.0
QUERY_TIMEOUT_S = 60
# sacct's spelling of pending array tasks: 123_[1-3,7%2] (%2: the array's parallelism)
_ARRAY_RANGE = re.compile(r"^(\d+)_\[(\d+(?:-\d+)?(?:,\d+(?:-\d+)?)*)(?:%\d+)?\]$")


def executor_parameters(res: Resources, profile: ClusterProfile, name: str) -> dict:
    """submitit AutoExecutor parameters of one resource class."""
    params = {"name": name, "timeout_min": res.timeout_min, "nodes": res.nodes, "tasks_per_node": res.tasks_per_node,
              "cpus_per_task": res.cpus_per_task, "mem_gb": res.mem_gb,
              "slurm_array_parallelism": res.array_parallelism, "slurm_signal_delay_s": profile.signal_delay_s,
              "slurm_partition": res.partition, "slurm_account": res.account, "slurm_qos": res.qos,
              "slurm_constraint": res.constraint, "slurm_setup": list(res.setup) or None,
              "slurm_additional_parameters": dict(res.additional_parameters) or None}
    if res.gpus_per_node:
        params["gpus_per_node"] = res.gpus_per_node
    return {k: v for k, v in params.items() if v is not None}


def _normalise(state: str) -> str:
    return (state or "UNKNOWN").split()[0].rstrip("+").upper()  # "CANCELLED by 0" -> CANCELLED


def _job_ids(field: str) -> list[str]:
    """sacct's JobID field as job ids: 123, 123_4, or a pending range 123_[1-3,7] expanded."""
    match = _ARRAY_RANGE.match(field)
    if match is None:
        return [field]
    main, ranges = match.groups()
    ids = []
    for part in ranges.split(","):
        first, _, last = part.partition("-")
        ids.extend(f"{main}_{i}" for i in range(int(first), int(last or first) + 1))
    return ids


def _squeue_states(ids: list[str]) -> tuple[dict[str, str], bool]:
    """(states squeue knows, whether the query failed)."""
    try:
        proc = subprocess.run(["squeue", "-h", "-r", "-t", "all", "-o", "%i %T", "-j", ",".join(ids)],
                              capture_output=True, text=True, timeout=QUERY_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError):
        return {}, True
    # "Invalid job id specified": slurmctld has forgotten every one of them (sacct knows them)
    failed = proc.returncode != 0 and "invalid job id" not in (proc.stderr or "").lower()
    states = {}
    for line in (proc.stdout or "").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] in ids:
            states[parts[0]] = _normalise(parts[1])
    return states, failed


def _sacct_states(ids: list[str]) -> dict[str, str] | None:
    """States sacct knows (asked per array, as one call); None when the query failed."""
    arrays = sorted({j.split("_")[0] for j in ids})
    try:
        proc = subprocess.run(["sacct", "--noheader", "--parsable2", "--allocations", "--format=JobID,State",
                               f"--jobs={','.join(arrays)}"], capture_output=True, text=True, timeout=QUERY_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError):
        return None
    if proc.returncode != 0:
        return None
    wanted, states = set(ids), {}
    for line in (proc.stdout or "").splitlines():
        fields = line.split("|")
        if len(fields) < 2 or "." in fields[0]:  # job steps (123_4.batch) are not the job
            continue
        for job_id in _job_ids(fields[0].strip()):
            if job_id in wanted:
                states[job_id] = _normalise(fields[1])  # the last record is the newest
    return states


def slurm_states(job_ids: Iterable[str]) -> dict[str, str]:
    """SLURM state of each job id (array tasks as 123_4): squeue first, then sacct for the
    jobs squeue no longer lists; UNKNOWN if neither knows the job, UNREACHABLE for the jobs
    whose query failed (an error exit or a timeout of squeue or sacct)."""
    ids = sorted({str(j) for j in job_ids if j})
    if not ids:
        return {}
    states: dict[str, str] = {}
    squeue_failed = False
    if shutil.which("squeue"):
        states, squeue_failed = _squeue_states(ids)
    missing = [j for j in ids if j not in states]
    if missing and shutil.which("sacct"):
        found = _sacct_states(missing)
        if found is None:
            return {j: states.get(j, UNREACHABLE) for j in ids}
        states.update(found)
    elif missing and squeue_failed:
        return {j: states.get(j, UNREACHABLE) for j in ids}
    return {j: states.get(j, "UNKNOWN") for j in ids}


def _view(lease: dict, state: str) -> JobView:
    if state == UNREACHABLE:  # the scheduler could not be asked: never break a lease on that
        return JobView.of_lease(lease, UNREACHABLE, alive=True, unreachable=True)
    if state == "UNKNOWN":
        recent = time.time() - float(lease.get("submitted_at") or lease.get("time", 0)) < UNKNOWN_GRACE_S
        return JobView.of_lease(lease, "UNKNOWN" if recent else "GONE", alive=recent)
    return JobView.of_lease(lease, state, alive=state in SLURM_LIVE, running=state in SLURM_RUNNING)


class SlurmBackend:
    name = "slurm"
    description = "one job array per resource class"
    job_kind = "SLURM job array(s)"
    default_profile = "slurm"
    in_process = False

    def check_profile(self, profile: ClusterProfile) -> None:
        """Every profile: sbatch itself judges partitions, accounts and limits."""

    def submit(self, submission: Submission) -> None:
        profile, folder = submission.profile, submission.log_folder
        groups: dict[tuple, list] = defaultdict(list)
        for member in submission.runs:
            groups[submission.resources[member.run_id].key()].append(member)
        for members in groups.values():
            res = submission.resources[members[0].run_id]
            executor = submitit.AutoExecutor(folder=folder / "%j", cluster="slurm",
                                             slurm_max_num_timeout=profile.max_num_timeout,
                                             slurm_python=shlex.quote(sys.executable))
            executor.update_parameters(**executor_parameters(res, profile,
                                                             f"ebt-{submission.sweep_dir.name}-{res.class_name}"))
            try:
                with executor.batch():
                    jobs = [executor.submit(TrainingJob([m.entry], self.name, threads=res.cpus_per_task,
                                                        preempt_grace_s=profile.preempt_grace_s))
                            for m in members]
            except Exception as exc:  # sbatch refused (bad partition, account, limits, ...)
                raise DispatchError(f"sbatch failed for class {res.class_name!r}: {submission_error(exc)}") from None
            task_ids = [str(job.job_id) for job in jobs]
            submission.record_job(task_ids[0].split("_")[0], members, task_ids, folder=str(folder / "%j"),
                                  resource_class=res.class_name)

    def probe(self, leases: list[dict]) -> list[JobView]:
        states = slurm_states(lease["job_id"] for lease in leases)
        return [_view(lease, states.get(str(lease["job_id"]), "UNKNOWN")) for lease in leases]

    def cancel(self, leases: list[dict], unfinished: list[dict]) -> list[str]:
        ids = [str(lease["job_id"]) for lease in leases]
        try:  # a job that ended meanwhile makes scancel complain, harmlessly
            subprocess.run(["scancel", *ids], capture_output=True, timeout=QUERY_TIMEOUT_S)
        except (OSError, subprocess.SubprocessError) as exc:
            return [f"marked cancelled; scancel failed ({exc}), so job {job_id} stops it at its next step"
                    for job_id in ids]
        return [f"scancel {job_id}" for job_id in ids]


BACKEND = SlurmBackend()
