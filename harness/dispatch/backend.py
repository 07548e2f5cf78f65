"""What a cluster backend is, the registry of them, and what a backend receives from `submit`.

A backend is where runs train. Like submitit's own split between an Executor (submits
jobs) and an InfoWatcher (reports on them), it submits a sweep's runs, probes the jobs
their leases name, and cancels them. Submit, status, cancel and liveness ask
``BACKENDS.get(name)`` and never branch on the name. The built-ins (slurm.py, local.py,
debug.py) are found through the ``ebt_scaling.backends`` entry point (pyproject.toml); a
test or a user's package can register another.

`submit` (sweep_ops.py) takes a lease for every run it submits, then hands the backend a
:class:`Submission`: those runs with their leases and resources. The backend starts jobs
and records each one with :meth:`Submission.record_job` the moment it exists.
"""
from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from ebt_scaling.harness.contract.registry import Registry
from ebt_scaling.harness.contract.run_state import JobView

from . import run_files

if TYPE_CHECKING:  # profiles.py asks BACKENDS for a backend's default profile
    from .profiles import ClusterProfile, Resources
    from .snapshot import SweepRun


class Backend(Protocol):
    name: str  # the --cluster value; every lease it takes records it
    description: str  # one line for --cluster's help
    job_kind: str  # what submit's summary calls its jobs, e.g. "SLURM job array(s)"
    default_profile: str  # the shipped profile used without --profile
    in_process: bool  # its runs end before submit returns: nothing to --wait for

    def check_profile(self, profile: ClusterProfile) -> None:
        """Raise ConfigError("field: why; the fix") if this backend cannot run the profile."""

    def submit(self, submission: Submission) -> None:
        """Start jobs for ``submission.runs``, calling ``submission.record_job`` as soon as
        each job exists (a run whose job exists keeps its lease whatever fails next)."""

    def probe(self, leases: list[dict]) -> list[JobView]:
        """The job each lease names (every one has a job id), in one query where possible.
        A job that cannot be asked about counts as alive: a scheduler hiccup must never
        make a live job's lease look dead."""

    def cancel(self, leases: list[dict], unfinished: list[dict]) -> list[str]:
        """Stop the live jobs of `leases`, whose runs are marked cancelled already (a job
        that sees the mark stops its run at the next step); `unfinished`: the leases of every
        unfinished run of the sweep on this backend, for jobs that hold several runs. One
        line per lease saying what was done."""


BACKENDS: Registry[Backend] = Registry("backend", "ebt_scaling.backends")


@dataclass
class SubmitReport:
    cluster: str
    job_kind: str  # the backend's word for its jobs, e.g. "SLURM job array(s)"
    submitted: dict[str, str] = field(default_factory=dict)  # run id -> job id
    skipped: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))  # reason -> run ids
    jobs: list[str] = field(default_factory=list)  # one per array / worker / debug run
    failed: dict[str, str] = field(default_factory=dict)  # in-process runs: run id -> error line
    final_states: dict[str, str] = field(default_factory=dict)  # after --wait, or of in-process runs

    def summary(self) -> str:
        parts = [f"submitted {len(self.submitted)} run(s)" + (f" as {len(self.jobs)} {self.job_kind}: "
                                                             f"{', '.join(self.jobs)}" if self.jobs else "")]
        for reason, ids in self.skipped.items():
            parts.append(f"skipped {len(ids)} {reason}")
        return "; ".join(parts)

    @property
    def ok(self) -> bool:
        bad = [s for s in self.final_states.values() if s not in ("done", "diverged")]
        return not self.failed and not bad


@dataclass(frozen=True)
class LeasedRun:
    """A run to submit, with the lease taken for it."""

    run: SweepRun
    lease: dict

    @property
    def run_id(self) -> str:
        return self.run.run_id

    @property
    def entry(self) -> tuple[str, str]:
        """What TrainingJob trains: (run directory, lease token)."""
        return str(self.run.path), self.lease["token"]


@dataclass
class Submission:
    """One submit call's runs for a backend, each already leased to it."""

    backend: str
    sweep_dir: Path
    profile: ClusterProfile
    runs: list[LeasedRun]
    resources: dict[str, Resources]  # run id -> the resources of its class
    report: SubmitReport
    echo: Callable[[str], None]  # progress lines (in-process backends)

    @property
    def log_folder(self) -> Path:
        """Where submitit writes logs and pickles: the profile's log_folder (relative to the
        sweep directory unless absolute) / the backend's name."""
        folder = Path(self.profile.log_folder).expanduser()
        if not folder.is_absolute():
            folder = self.sweep_dir / folder
        return (folder / self.backend).resolve()

    def record_job(self, job_id: str, members: list[LeasedRun], task_ids: list[str] | None = None,
                   **lease_fields) -> None:
        """Note the job `job_id` that trains `members` (`task_ids`: each member's own job id,
        as array tasks have): in the report, then in each lease (queued, with `lease_fields`)."""
        ids = task_ids or [job_id] * len(members)
        # The report first: a failure below (writing a lease on a full disk) must never make
        # submit_sweep release the lease of a run whose job exists.
        for member, task in zip(members, ids):
            self.report.submitted[member.run_id] = task
        self.report.jobs.append(job_id)
        now = time.time()
        for member, task in zip(members, ids):
            run_files.update_lease(member.run.path, member.lease["token"], state_from=("submitting",),
                                   job_id=task, state="queued", submitted_at=now, **lease_fields)


def submission_error(exc: Exception) -> str:
    """The line of a submission failure worth showing (sbatch's error, not submitit's dump)."""
    text = str(exc).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    useful = [ln for ln in lines if "error" in ln.lower()] or lines
    return useful[-1] if useful else type(exc).__name__
