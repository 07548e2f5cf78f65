"""Debug: every run trains in this process, one after another, before submit returns.

A failing run is recorded (failed.json, the report) and the next one goes on; Ctrl-C
stops the run at hand with its checkpoints kept. The runs' job is this process.
"""
from __future__ import annotations

import os

from ebt_scaling.harness.contract.errors import describe_error
from ebt_scaling.harness.contract.run_state import JobView

from .backend import Submission
from .job import TrainingJob
from .liveness import hostname, probe_processes, proc_start
from .local import stop_processes
from .profiles import ClusterProfile


class DebugBackend:
    name = "debug"
    description = "in this process"
    job_kind = "in-process run(s)"
    default_profile = "local"
    in_process = True

    def check_profile(self, profile: ClusterProfile) -> None:
        """Every profile: in this process only cpus_per_task (torch threads) applies."""

    def submit(self, submission: Submission) -> None:
        pid = os.getpid()
        submission.record_job(f"debug-{pid}", submission.runs, job_pid=pid, job_pid_start=proc_start(pid),
                              job_host=hostname())
        report, echo = submission.report, submission.echo
        for member in submission.runs:
            run = member.run
            echo(f"[debug] training {run.run_id} ({run.spec.model.arch}) in {run.path}")
            try:
                TrainingJob([member.entry], self.name, threads=submission.profile.cpus_per_task)()
            except Exception as exc:  # recorded in failed.json by the job; go on with the next run
                report.failed[run.run_id] = describe_error(exc, run.path)
                echo(f"[debug] {run.run_id} failed: {report.failed[run.run_id]}")
            result = run.run.result()
            report.final_states[run.run_id] = (result or {}).get(
                "status", "failed" if run.run_id in report.failed else "preempted")

    def probe(self, leases: list[dict]) -> list[JobView]:
        return probe_processes(leases)

    def cancel(self, leases: list[dict], unfinished: list[dict]) -> list[str]:
        return stop_processes(leases, unfinished)


BACKEND = DebugBackend()
