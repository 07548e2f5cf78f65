"""Faults: SIGKILL at random points, 32 concurrent writers in one sweep directory, a corrupt
latest checkpoint, and a full or unwritable results directory.

Training children are forked from a forkserver that imported torch but never ran it, so
they start in milliseconds and never inherit a used OpenMP pool (forking a process that has
run torch's thread pool can hang the child). Every run trains on one thread, in the
reference and after each resume alike, so results must be bit-identical.
"""
from __future__ import annotations

import errno
import multiprocessing as mp
import operator
import os
import random
import signal
import time
import uuid
from pathlib import Path

import pytest
from conftest import comparable

from ebt_scaling.harness.cli.main import main
from ebt_scaling.harness.contract.run_dir import RunDir
from ebt_scaling.harness.contract.spec import spec_to_yaml
from ebt_scaling.harness.dispatch import run_files as leases
from ebt_scaling.harness.dispatch.job import TrainingJob
from ebt_scaling.harness.dispatch.liveness import hostname, is_dead, proc_start
from ebt_scaling.harness.dispatch.status import sweep_status

LOCAL_TEST_PROFILE = "name: test-local\ngpus_per_node: 0\ncpus_per_task: 1\ntimeout_min: 10\n" \
                     "signal_delay_s: 30\npreempt_grace_s: 10\n"


def make_run(sweep: Path, spec) -> Path:
    path = sweep / "runs" / spec.run_id
    path.mkdir(parents=True, exist_ok=True)
    (path / "spec.yaml").write_text(spec_to_yaml(spec))
    return path


def job(path: Path) -> TrainingJob:
    """What a debug submission runs for one run: lease, train_run, release; one thread."""
    return TrainingJob([(str(path), uuid.uuid4().hex)], "debug", threads=1)


@pytest.fixture(scope="module")
def forkserver():
    ctx = mp.get_context("forkserver")
    # torch._dynamo is what the first optimizer construction imports (~1-2 s): import it once
    ctx.set_forkserver_preload(["ebt_scaling.harness.training.trainer", "ebt_scaling.harness.dispatch.job", "torch._dynamo"])
    return ctx


def stray_files(root: Path) -> list[Path]:
    """Temporary files of interrupted atomic writes (the next job removes those it finds)."""
    return list(root.rglob("*.tmp"))


def latest_checkpoint_step(run: RunDir) -> int:
    names = run.checkpoints()
    return int(names[0].stem.split("_")[1]) if names else 0


def test_sigkill_at_random_points_then_resume_equals_an_uninterrupted_run(tiny_spec, tmp_path, forkserver):
    from ebt_scaling.harness.data.pipeline import prepare

    spec = tiny_spec("transformer", train={"tokens": 32 * 8 * 96}, checkpoint_every=3)
    prepare(spec)
    reference = make_run(tmp_path / "reference", spec)
    proc = forkserver.Process(target=job(reference))
    proc.start()
    proc.join()
    assert proc.exitcode == 0 and RunDir(reference).result()["status"] == "done"

    path = make_run(tmp_path / "sweep", spec)
    run = RunDir(path)
    rng = random.Random(20240611)
    kills, points = 0, []
    while kills < 12:
        assert run.result() is None, f"the run finished after only {kills} kills"
        proc = forkserver.Process(target=job(path))
        start, checkpoint = time.time(), latest_checkpoint_step(run)
        proc.start()
        if rng.random() < 0.25:  # a random time: start-up, checkpoint loading, a step, a save
            at, target, point = rng.uniform(0.0, 0.4), checkpoint + 5, "t"
        else:  # a random step past the last checkpoint, plus a random fraction of a step
            at, target = None, checkpoint + rng.randint(1, 4)
            point = f"s{target}"
        deadline = start + 60
        while proc.is_alive() and time.time() < deadline:
            if at is not None and time.time() - start >= at:
                break
            fresh = run.metrics_path.exists() and run.metrics_path.stat().st_mtime >= start  # rows of this child
            rows = run.metrics() if fresh else []
            if rows and rows[-1]["step"] >= target:  # (at most a few steps past the checkpoint)
                break
            time.sleep(0.005)
        if at is None:
            time.sleep(rng.uniform(0.0, 0.03))
        if proc.is_alive():
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
            points.append(point)
        proc.join()
    proc = forkserver.Process(target=job(path))
    proc.start()
    proc.join()
    assert proc.exitcode == 0
    assert kills >= 10 and len(set(points)) >= 5, points
    assert comparable(run.metrics()) == comparable(RunDir(reference).metrics())
    result, expected = run.result(), RunDir(reference).result()
    assert result["status"] == "done" and result["val_loss"] == expected["val_loss"]
    assert result["final"]["train_loss"] == expected["final"]["train_loss"]
    assert run.log_path.read_text().count("resuming from step_") >= 3
    assert leases.read_lease(path) is None  # every killed holder's lease was broken and the last released
    assert not stray_files(tmp_path / "sweep")


def test_32_concurrent_runs_write_into_one_sweep_directory(tiny_spec, tmp_path, forkserver):
    from ebt_scaling.harness.data.pipeline import prepare

    specs = [tiny_spec("transformer", seed=i, train={"tokens": 32 * 8 * 3}, checkpoint_every=2,
                       eval={"points": 2, "batches": 1})
             for i in range(32)]
    prepare(specs[0])
    sweep = tmp_path / "sweep"
    paths = [make_run(sweep, s) for s in specs]
    contested = make_run(tmp_path / "contested", specs[0])
    with forkserver.Pool(32) as pool:
        # 32 processes race for one run's lease: exactly one wins
        me = {"job_pid": os.getpid(), "job_pid_start": proc_start(os.getpid()), "job_host": hostname()}
        bids = [leases.new_lease("debug", job_id=f"bid-{i}", **me) for i in range(32)]  # live holders
        outcomes = pool.starmap(leases.take_lease, [(contested, b, is_dead) for b in bids])
        # 32 runs train at once into one sweep directory (leases, metrics, checkpoints, results, logs)
        results = pool.map(operator.call, [job(p) for p in paths])
    winners = [b for b, (taken, _) in zip(bids, outcomes) if taken]
    assert len(winners) == 1 and leases.read_lease(contested)["token"] == winners[0]["token"]
    assert all(holder["token"] == winners[0]["token"] for _, holder in outcomes)
    assert [r["status"] for r in results] == ["finished"] * 32
    rows = sweep_status(sweep)
    assert [r.state for r in rows] == ["done"] * 32
    for spec, path in zip(specs, paths):
        run = RunDir(path)
        assert run.result()["run_id"] == spec.run_id and run.result()["step"] == 3
        assert [r["step"] for r in run.metrics()] == [1, 2, 3]
        assert len(run.metrics_path.read_text().splitlines()) == 3  # no torn or interleaved lines
        assert leases.read_lease(path) is None and leases.last_job(path)["outcome"] == "done"
        assert run.checkpoints() and "done at step 3" in run.log_path.read_text()
    assert len({RunDir(p).result()["final"]["train_loss"] for p in paths}) > 1  # 32 distinct runs
    assert not list(sweep.rglob("*.tmp"))


def test_corrupt_latest_checkpoint_resumes_from_the_previous_one_through_local_jobs(tiny_spec, tmp_path, capsys):
    from ebt_scaling.harness.training.trainer import train_run

    spec = tiny_spec("transformer")
    reference = make_run(tmp_path / "reference", spec)
    job(reference)()
    path = make_run(tmp_path / "sweep", spec)
    steps = iter(range(1, 100))
    stop_after_12 = lambda: next(steps) >= 12  # noqa: E731
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert train_run(spec, path, quiet=True, stop_requested=stop_after_12)["status"] == "preempted"
    finally:
        torch.set_num_threads(threads)
    run = RunDir(path)
    assert [p.name for p in run.checkpoints()] == ["step_00000012.pt", "step_00000010.pt"]
    run.checkpoints()[0].write_bytes(b"\x80\x04 not a checkpoint")  # corrupt the newest
    profile = tmp_path / "p.yaml"
    profile.write_text(LOCAL_TEST_PROFILE)
    code = main(["submit", str(tmp_path / "sweep"), "--cluster", "local", "--profile", str(profile), "--wait",
                 "--poll", "0.5"])
    out = capsys.readouterr().out
    assert code == 0, out
    log = run.log_path.read_text()
    assert "checkpoint step_00000012.pt is unreadable" in log and "resuming from step_00000010.pt" in log
    assert comparable(run.metrics()) == comparable(RunDir(reference).metrics())
    assert run.result()["val_loss"] == RunDir(reference).result()["val_loss"]


def test_full_disk_fails_the_run_in_one_line_and_leaves_no_partial_files(tiny_spec, tmp_path, capsys, monkeypatch):
    spec = tiny_spec("transformer")
    path = make_run(tmp_path / "sweep", spec)
    sweep = str(tmp_path / "sweep")
    real_fsync, full = os.fsync, {"on": False}

    def fsync(fd):  # the disk fills up at the first checkpoint; from then on every write under the sweep fails
        target = os.readlink(f"/proc/self/fd/{fd}")
        if "/checkpoints/" in target:
            full["on"] = True
        if full["on"] and target.startswith(sweep):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    code = main(["submit", sweep, "--cluster", "debug"])
    monkeypatch.setattr(os, "fsync", real_fsync)
    out = capsys.readouterr().out
    assert code == 1
    failures = [line for line in out.splitlines() if line.startswith("failed:")]
    assert failures == [f"failed: {spec.run_id}: cannot write {path}: No space left on device"]
    assert "Traceback" not in out
    run = RunDir(path)
    assert run.result() is None and not run.checkpoints() and not list(Path(sweep).rglob("*.tmp"))
    assert leases.read_lease(path) is None  # the lease was given back
    # the disk has room again: a plain resubmission trains the run (nothing to clean up)
    assert main(["submit", sweep, "--cluster", "debug"]) == 0
    assert run.result()["status"] == "done"


def test_a_file_in_the_way_of_a_results_directory_is_a_one_line_error(tiny_spec, tmp_path, capsys):
    spec = tiny_spec("transformer")
    path = make_run(tmp_path / "sweep", spec)
    (path / "checkpoints").write_text("not a directory")
    code = main(["submit", str(tmp_path / "sweep"), "--cluster", "debug"])
    out = capsys.readouterr().out
    assert code == 1
    (line,) = [x for x in out.splitlines() if x.startswith("failed:")]
    assert line.startswith(f"failed: {spec.run_id}: cannot write {path / 'checkpoints'}")
    assert RunDir(path).result() is None and not list((tmp_path / "sweep").rglob("*.tmp"))
    (row,) = sweep_status(tmp_path / "sweep")
    assert row.state == "failed" and "cannot write" in row.detail
    # planning a sweep below a file: the submit front end answers in one line too
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    code = main(["submit", "tiny", "--cluster", "debug", "--out", str(blocker / "sweep")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and str(blocker) in err
