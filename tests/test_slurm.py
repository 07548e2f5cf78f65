"""Integration tests on a real SLURM cluster (`ebt-scaling slurm-local start`, as .ci/run does).

A tiny paired sweep runs as one job array; preempted tasks (SIGTERM then USR2 from
scancel, as SLURM preempts, and `scontrol requeue`) are requeued and end with the metrics of an
uninterrupted run; a cancelled run is reported; a resubmission skips finished runs.
Data-parallel runs across the cluster's two nodes: test_multinode.py.

Without a reachable cluster these tests skip; with EBT_SCALING_REQUIRE_SLURM=1 they fail.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from conftest import comparable
from conftest import make_sweep as write_sweep

from ebt_scaling.harness.cli.main import main
from ebt_scaling.harness.contract.run_dir import RunDir
from ebt_scaling.harness.contract.spec import spec_to_yaml
from ebt_scaling.harness.dispatch import run_files as leases
from ebt_scaling.harness.dispatch.slurm import slurm_states
from ebt_scaling.harness.dispatch.job import TrainingJob, preempt_signal
from ebt_scaling.harness.dispatch.status import sweep_status
from ebt_scaling.harness.dispatch.sweep_ops import wait_for

pytestmark = pytest.mark.slurm
PROFILE = "slurm-local"  # the shipped profile of the cluster slurm_local.sh starts


def slurm_problem() -> str | None:
    """Why SLURM is not usable here, or None."""
    missing = [t for t in ("sbatch", "squeue", "sacct", "scontrol", "scancel", "sinfo") if not shutil.which(t)]
    if missing:
        return f"{', '.join(missing)} not on PATH"

    def run(*cmd: str) -> subprocess.CompletedProcess:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=20)

    try:
        ping = run("scontrol", "ping")
        if "UP" not in ping.stdout:
            first = ((ping.stdout + ping.stderr).strip().splitlines() or ["no answer"])[0]
            return f"slurmctld does not answer (scontrol ping: {first[:160]})"
        nodes = run("sinfo", "-h", "-o", "%T").stdout.split()
        if not any(s.rstrip("*") in ("idle", "mixed", "allocated", "completing") for s in nodes):
            return f"no usable node (sinfo states: {', '.join(nodes) or 'none'})"
        acct = run("sacct", "-n", "-X", "-o", "JobID", "-S", "now")
        if acct.returncode != 0:
            first = (acct.stderr.strip().splitlines() or [""])[0]
            return f"sacct fails (accounting is needed to see killed jobs end): {first[:160]}"
    except (OSError, subprocess.SubprocessError) as exc:
        return f"SLURM commands fail: {exc}"
    return None


def skip_unless_usable(problem: str | None) -> None:
    """Skip on a problem, or fail under EBT_SCALING_REQUIRE_SLURM=1 (CI)."""
    if problem:
        if os.environ.get("EBT_SCALING_REQUIRE_SLURM") == "1":
            pytest.fail(f"EBT_SCALING_REQUIRE_SLURM=1 but SLURM is not usable: {problem}")
        pytest.skip(f"no usable SLURM cluster ({problem}); start one with `ebt-scaling slurm-local start`")


@pytest.fixture(scope="module")
def slurm():
    skip_unless_usable(slurm_problem())


def make_sweep(root: Path, specs) -> dict[str, Path]:
    from ebt_scaling.harness.data.pipeline import prepare

    prepare(specs[0])  # the data cache is ready before the jobs start
    return write_sweep(root, specs)


def submit(sweep: Path, *extra: str) -> tuple[int, str]:
    import io
    from contextlib import redirect_stdout

    buffer = io.StringIO()
    with redirect_stdout(buffer):
        code = main(["submit", str(sweep), "--cluster", "slurm", "--profile", PROFILE, *extra])
    return code, buffer.getvalue()


def wait_until(predicate, timeout: float, what: str, interval: float = 0.2):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if value := predicate():
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def test_paired_sweep_runs_as_one_job_array_and_resubmission_skips_it(slurm, tiny_spec, tmp_path):
    steps = {"train": {"tokens": 32 * 8 * 10}}
    specs = [tiny_spec(arch, seed=seed, tags={"pair_id": f"p{seed}"}, **steps)
             for seed in (0, 1) for arch in ("transformer", "ebt")]
    runs = make_sweep(tmp_path / "sweep", specs)
    code, out = submit(tmp_path / "sweep", "--wait", "--poll", "1")
    assert code == 0, out
    assert "submitted 4 run(s) as 1 SLURM job array(s)" in out
    rows = sweep_status(tmp_path / "sweep")
    assert [r.state for r in rows] == ["done"] * 4
    job_ids = {leases.last_job(path)["job_id"] for path in runs.values()}
    assert len({j.split("_")[0] for j in job_ids}) == 1 and len(job_ids) == 4  # four tasks of one array
    assert all(leases.read_lease(path) is None for path in runs.values())
    for spec in specs:  # both members of a pair saw the same data and budget
        assert RunDir(runs[spec.run_id]).result()["step"] == spec.total_steps == 10
    code, out = submit(tmp_path / "sweep")
    assert code == 0 and "submitted 0 run(s); skipped 4 done" in out


def test_preempted_tasks_are_requeued_and_resume_exactly(slurm, tiny_spec, tmp_path):
    spec = tiny_spec("transformer", train={"tokens": 32 * 8 * 1500}, checkpoint_every=20, log_every=5,
                     eval={"points": 4})
    graceful = make_sweep(tmp_path / "usr2", [spec])[spec.run_id]  # USR2: stop at a step boundary, requeue
    killed = make_sweep(tmp_path / "requeue", [spec])[spec.run_id]  # scontrol requeue: killed, restarted
    assert submit(tmp_path / "usr2")[0] == 0 and submit(tmp_path / "requeue")[0] == 0

    def both_training():  # both at once: one job can start seconds after the other on a busy machine
        return all((rows := RunDir(p).metrics()) and rows[-1]["step"] >= 25 for p in (graceful, killed))

    wait_until(both_training, 90, "training to start")
    lease_a, lease_b = leases.read_lease(graceful), leases.read_lease(killed)
    assert lease_a and lease_b, "a run finished before it could be preempted: lengthen it"
    for signal_name in ("SIGTERM", preempt_signal().name):  # what SLURM sends a job it preempts
        subprocess.run(["scancel", "--signal", signal_name, lease_a["job_id"]], check=True, timeout=30)
    subprocess.run(["scontrol", "requeue", lease_b["job_id"]], check=True, timeout=30)
    wait_until(lambda: sweep_status(tmp_path / "usr2")[0].state == "preempted", 30, "the USR2 task to be requeued")

    # while both wait to start again (~11 s with this cluster's cred_expire), the reference run
    reference = tmp_path / "reference" / spec.run_id
    reference.mkdir(parents=True)
    (reference / "spec.yaml").write_text(spec_to_yaml(spec))
    TrainingJob([(str(reference), uuid.uuid4().hex)], "debug", threads=1)()

    for sweep in ("usr2", "requeue"):
        (row,) = wait_for(tmp_path / sweep, [spec.run_id], poll_s=1, timeout_s=150, echo=lambda m: None)
        assert row.state == "done", (sweep, row)
    log_a, log_b = RunDir(graceful).log_path.read_text(), RunDir(killed).log_path.read_text()
    assert "on request (preemption); checkpoint saved" in log_a and log_a.count("dispatch: slurm job") == 2
    assert log_b.count("dispatch: slurm job") == 2 and "resuming from step_" in log_b
    assert leases.last_job(graceful)["preemptions"] == 1
    expected = comparable(RunDir(reference).metrics())
    for path in (graceful, killed):
        assert comparable(RunDir(path).metrics()) == expected
        assert RunDir(path).result()["val_loss"] == RunDir(reference).result()["val_loss"]
    for job_id in (lease_a["job_id"], lease_b["job_id"]):
        show = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True).stdout
        assert "Restarts=1" in show, show


def test_cancelled_run_is_reported_and_left_alone_by_resubmission(slurm, tiny_spec, tmp_path, capsys):
    long_spec = tiny_spec("transformer", train={"tokens": 32 * 8 * 20000}, checkpoint_every=100, log_every=5)
    (path,) = make_sweep(tmp_path / "sweep", [long_spec]).values()
    assert submit(tmp_path / "sweep")[0] == 0
    wait_until(lambda: RunDir(path).metrics(), 90, "training to start")
    assert sweep_status(tmp_path / "sweep")[0].state == "running"
    job_id = leases.read_lease(path)["job_id"]
    capsys.readouterr()
    assert main(["cancel", str(tmp_path / "sweep")]) == 0
    assert f"scancel {job_id}" in capsys.readouterr().out
    (row,) = sweep_status(tmp_path / "sweep")
    assert row.state == "cancelled" and row.job_id == job_id
    wait_until(lambda: slurm_states([job_id])[job_id] == "CANCELLED", 30, "sacct to report CANCELLED")
    code, out = submit(tmp_path / "sweep")
    assert code == 0 and "skipped 1 cancelled (resubmit with --retry-failed)" in out
    assert main(["status", str(tmp_path / "sweep")]) == 0
    assert "cancelled" in capsys.readouterr().out
