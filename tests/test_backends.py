"""A cluster backend is one registered object: a fake scheduler defined here (no project
file changed) is submitted to, reported on and cancelled through the same commands and
functions as the built-ins."""
from __future__ import annotations

import json

import pytest
from conftest import make_sweep

from ebt_scaling.harness.cli.main import main
from ebt_scaling.harness.contract.errors import ConfigError
from ebt_scaling.harness.contract.run_state import JobView
from ebt_scaling.harness.dispatch.backend import BACKENDS, Submission
from ebt_scaling.harness.dispatch.profiles import load_profile
from ebt_scaling.harness.dispatch.status import sweep_status
from ebt_scaling.harness.dispatch.sweep_ops import cancel_runs, submit_sweep

LIVE = {"PENDING", "RUNNING"}


class FakeScheduler:
    """A scheduler in a dict: job id -> state, changed by the test."""

    name = "fake"
    description = "a scheduler in a dict"
    job_kind = "fake job(s)"
    default_profile = "cpu"
    in_process = False

    def __init__(self) -> None:
        self.jobs: dict[str, str] = {}
        self.cancelled: list[str] = []

    def check_profile(self, profile) -> None:
        if profile.gpus_per_node:
            raise ConfigError("gpus_per_node: the fake scheduler has no GPUs; set gpus_per_node: 0")

    def submit(self, submission: Submission) -> None:
        for member in submission.runs:
            job_id = f"fake-{len(self.jobs)}"
            self.jobs[job_id] = "PENDING"
            submission.record_job(job_id, [member], queue="default")

    def probe(self, leases: list[dict]) -> list[JobView]:
        states = [self.jobs.get(lease["job_id"], "UNKNOWN") for lease in leases]
        return [JobView.of_lease(lease, state, alive=state in LIVE, running=state == "RUNNING")
                for lease, state in zip(leases, states)]

    def cancel(self, leases: list[dict], unfinished: list[dict]) -> list[str]:
        for lease in leases:
            self.jobs[lease["job_id"]] = "CANCELLED"
            self.cancelled.append(lease["job_id"])
        return [f"fake-cancel {lease['job_id']}" for lease in leases]


@pytest.fixture
def fake():
    scheduler = BACKENDS.register("fake", FakeScheduler())
    yield scheduler
    BACKENDS.unregister("fake")


def cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def states(sweep) -> dict[str, tuple[str, str | None]]:
    return {r.run_id: (r.state, r.job_id) for r in sweep_status(sweep)}


def test_a_registered_backend_is_submitted_to_reported_on_and_cancelled(fake, tiny_spec, tmp_path, capsys):
    runs = make_sweep(tmp_path / "sweep", [tiny_spec("transformer", seed=i) for i in range(3)])
    first, second, third = sorted(runs)
    code, out, err = cli(capsys, "submit", tmp_path / "sweep", "--cluster", "fake")  # a choice of the CLI now
    assert code == 0, err
    assert "submitted 3 run(s) as 3 fake job(s): fake-0, fake-1, fake-2" in out
    assert states(tmp_path / "sweep") == {first: ("pending", "fake-0"), second: ("pending", "fake-1"),
                                          third: ("pending", "fake-2")}

    fake.jobs["fake-0"] = "RUNNING"
    fake.jobs["fake-1"] = "FAILED"  # ended without a result
    code, out, _ = cli(capsys, "status", tmp_path / "sweep", "--json")
    rows = {r["run_id"]: r for r in json.loads(out)["runs"]}
    assert rows[first]["state"] == "running" and rows[first]["cluster"] == "fake"
    assert rows[second]["state"] == "failed" and rows[second]["detail"] == "job fake-1 ended FAILED without a result"
    assert rows[third]["state"] == "pending" and rows[third]["job_alive"]

    report = submit_sweep(tmp_path / "sweep", "fake", load_profile(None, "fake"))
    assert report.submitted == {} and report.skipped == {"held by a live job (running)": [first],
                                                         "failed (resubmit with --retry-failed)": [second],
                                                         "held by a live job (pending)": [third]}

    actions = dict(cancel_runs(tmp_path / "sweep", [first]))
    assert actions == {first: "fake-cancel fake-0"} and fake.cancelled == ["fake-0"]
    code, out, _ = cli(capsys, "cancel", tmp_path / "sweep")
    assert f"{second}: marked cancelled" in out and f"{third}: fake-cancel fake-2" in out
    assert f"{first}: already cancelled" in out and fake.cancelled == ["fake-0", "fake-2"]
    assert {state for state, _ in states(tmp_path / "sweep").values()} == {"cancelled"}

    report = submit_sweep(tmp_path / "sweep", "fake", load_profile(None, "fake"), retry_failed=True)
    assert sorted(report.submitted.values()) == ["fake-3", "fake-4", "fake-5"]


def test_the_backend_judges_its_profiles_and_unknown_backends_are_one_line_errors(fake, tmp_path, capsys):
    gpu_profile = tmp_path / "gpu.yaml"
    gpu_profile.write_text("gpus_per_node: 1\n")
    with pytest.raises(ConfigError, match="gpus_per_node: the fake scheduler has no GPUs"):
        load_profile(str(gpu_profile), "fake")
    assert load_profile(str(gpu_profile), "local").gpus_per_node == 1  # another backend's judgement
    with pytest.raises(ConfigError) as err:
        submit_sweep(tmp_path, "nope", load_profile(None, "fake"))
    message = str(err.value)
    assert "\n" not in message and message.startswith("--cluster: unknown backend 'nope'") and "fake" in message
    with pytest.raises(SystemExit):
        main(["submit", str(tmp_path), "--cluster", "nope"])
    assert "invalid choice: 'nope'" in capsys.readouterr().err
