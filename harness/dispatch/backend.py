"""What a cluster backend is, and the registry of them.

A backend is where runs train. Like submitit's own split between an Executor (submits
jobs) and an InfoWatcher (reports on them), it submits a sweep's runs, probes the jobs
their leases name, and cancels them. Submit, status, cancel and liveness ask
``BACKENDS.get(name)`` and never branch on the name. The built-ins (slurm, local, debug)
live in backends/ and are found through the ``ebt_scaling.backends`` entry point
(pyproject.toml); a test or a user's package can register another.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from ebt_scaling.harness.contract.registry import Registry
from ebt_scaling.harness.contract.run_state import JobView

if TYPE_CHECKING:
    from .profiles import ClusterProfile
    from .submission import Submission


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
