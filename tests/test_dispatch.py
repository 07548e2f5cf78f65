"""Dispatch: cluster profiles, leases, run states, the checkpointable job, and submitting a
sweep in-process (debug) and to local workers, idempotently; status and cancel."""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import make_sweep

from ebt_scaling.harness.cli.main import main
from ebt_scaling.harness.contract import locks
from ebt_scaling.harness.contract.errors import ConfigError
from ebt_scaling.harness.contract.run_dir import RunDir, atomic_write_json
from ebt_scaling.harness.contract.run_state import LEASE, run_state
from ebt_scaling.harness.dispatch import run_files as leases
from ebt_scaling.harness.dispatch import slurm as slurm_backend
from ebt_scaling.harness.dispatch.job import TrainingJob
from ebt_scaling.harness.dispatch.liveness import hostname, is_dead, pid_alive, probe, proc_start
from ebt_scaling.harness.dispatch.local import LocalBackend
from ebt_scaling.harness.dispatch.profiles import builtin_profiles, load_profile, profile_from_dict
from ebt_scaling.harness.dispatch.run_files import failure, remove_stale_temporaries
from ebt_scaling.harness.dispatch.slurm import executor_parameters
from ebt_scaling.harness.dispatch.status import sweep_status, totals

LOCAL_TEST_PROFILE = """
name: test-local
gpus_per_node: 0
cpus_per_task: 1
timeout_min: 10
local_cpu_workers: 2
signal_delay_s: 30
preempt_grace_s: 10
"""


def cli(*argv: str, capsys=None) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    if capsys is None:
        return code, "", ""
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ---- profiles ---------------------------------------------------------------------------------
def test_shipped_profiles_load():
    names = set(builtin_profiles())
    assert {"local", "slurm", "slurm-local", "example-cluster"} <= names
    for name in names:
        profile = load_profile(name)
        assert profile.name == name and profile.timeout_min >= 1
    example = load_profile("example-cluster")
    placement = (example.partition, example.account, example.qos, example.constraint)
    assert placement == ("gpu", "my-project", "normal", "h100")
    assert example.resources("node").world_size == 8 and example.resources("multinode").world_size == 32


@pytest.mark.parametrize("data, key", [
    ({"partitoin": "gpu"}, "partitoin: unknown key"),
    ({"gpus_per_node": 2, "tasks_per_node": 4}, "tasks_per_node"),
    ({"timeout_min": 0}, "timeout_min"),
    ({"preempt_grace_s": 100, "signal_delay_s": 60}, "preempt_grace_s"),
    ({"classes": [{"name": "big", "match": {"size": 3}}]}, "classes[0].match.size"),
    ({"classes": [{"name": "big", "gpus_per_node": 1, "tasks_per_node": 2}]}, "classes[big].tasks_per_node"),
    ({"mem_gb": "lots"}, "mem_gb: expected a number"),
])
def test_profile_errors_are_one_line_and_name_the_key(data, key):
    with pytest.raises(ConfigError) as err:
        profile_from_dict(data, "p.yaml")
    message = str(err.value)
    assert "\n" not in message and message.startswith("p.yaml: ") and key in message


def test_profile_lookup_by_path_and_unknown_name(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("partition: a100\ngpus_per_node: 4\ntasks_per_node: 4\n")
    profile = load_profile(str(path))
    assert profile.name == "mine" and profile.resources().world_size == 4
    with pytest.raises(ConfigError, match="neither a file nor a shipped profile"):
        load_profile("no-such-profile")
    with pytest.raises(ConfigError, match="nodes"):
        path.write_text("nodes: 2\n")
        load_profile(str(path), cluster="local")


def test_resource_classes_select_runs_by_tags_and_map_to_sbatch():
    profile = load_profile("example-cluster")
    assert profile.class_for({"size": "xl"}) == "node"
    assert profile.class_for({"size": "s"}) == "default"
    assert profile.class_for({"resource_class": "multinode"}) == "multinode"
    with pytest.raises(ConfigError, match="names no class"):
        profile.class_for({"resource_class": "nope"})
    big = executor_parameters(profile.resources("node"), profile, "x")
    assert big["gpus_per_node"] == 8 and big["tasks_per_node"] == 8 and big["slurm_partition"] == "gpu"
    assert big["slurm_account"] == "my-project" and big["slurm_qos"] == "normal" and big["slurm_constraint"] == "h100"
    assert big["slurm_array_parallelism"] == 4 and big["timeout_min"] == 2880
    assert big["slurm_setup"][0].startswith("module load") and big["slurm_additional_parameters"] == {"requeue": True}
    cpu = executor_parameters(load_profile("slurm-local").resources(), load_profile("slurm-local"), "x")
    assert "gpus_per_node" not in cpu and cpu["cpus_per_task"] == 1  # no --gpus-per-node=0 on GPU-less clusters
    # submitit accepts every key
    import submitit

    executor = submitit.AutoExecutor(folder="/tmp/unused-%j", cluster="slurm")
    executor.update_parameters(**big)


# ---- leases, liveness, run states -------------------------------------------------------------
def test_lease_is_exclusive_and_only_a_dead_holder_loses_it(tmp_path):
    me = os.getpid()
    first = leases.new_lease("debug", job_id="debug-1", job_pid=me, job_pid_start=proc_start(me),
                             job_host=hostname())
    assert leases.take_lease(tmp_path, first, is_dead) == (True, first)
    second = leases.new_lease("debug")
    taken, holder = leases.take_lease(tmp_path, second, is_dead)
    assert not taken and holder["token"] == first["token"]  # this process is alive
    # a wrong token can neither update nor release it
    assert leases.update_lease(tmp_path, second["token"], state="running") is None
    assert not leases.release_lease(tmp_path, second["token"])
    assert leases.update_lease(tmp_path, first["token"], state="running")["state"] == "running"
    # the holder dies: its lease is broken by the next taker
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    leases.update_lease(tmp_path, first["token"], job_pid=dead.pid, job_pid_start=None)
    assert is_dead(leases.read_lease(tmp_path))
    assert leases.take_lease(tmp_path, second, is_dead)[0]
    assert leases.release_lease(tmp_path, second["token"], "done") and leases.read_lease(tmp_path) is None
    assert leases.last_job(tmp_path)["outcome"] == "done"
    # a garbled lease file names no job: it counts as dead
    (tmp_path / LEASE).write_text("{not json")
    assert leases.take_lease(tmp_path, leases.new_lease("debug"), is_dead)[0]


def test_leases_work_unlocked_with_one_warning_where_flock_is_refused(tmp_path, monkeypatch):
    import errno
    import fcntl

    def refused(fd, operation):  # an NFS mount without lockd
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", refused)
    locks._warn_once.cache_clear()  # once per process: start from a process that has not warned
    (tmp_path / "b").mkdir()
    with pytest.warns(RuntimeWarning, match="flock") as caught:
        mine = leases.new_lease("debug", job_id="debug-1", job_pid=os.getpid(),
                                job_pid_start=proc_start(os.getpid()), job_host=hostname())
        assert leases.take_lease(tmp_path, mine, is_dead) == (True, mine)
        assert not leases.take_lease(tmp_path, leases.new_lease("debug"), is_dead)[0]  # still exclusive
        assert leases.update_lease(tmp_path, mine["token"], state="running")["state"] == "running"
        assert leases.release_lease(tmp_path, mine["token"], "done")
        assert leases.take_lease(tmp_path / "b", leases.new_lease("debug"), is_dead)[0]
    assert len([w for w in caught if "flock" in str(w.message)]) == 1
    assert leases.read_lease(tmp_path) is None and leases.last_job(tmp_path)["outcome"] == "done"


def slurm_job(monkeypatch, state: str, lease_state: str = "queued", age_s: float = 600.0):
    """What probing a SLURM lease whose job is in `state` gives."""
    monkeypatch.setattr(slurm_backend, "slurm_states", lambda ids: {i: state for i in ids})
    lease = dict(leases.new_lease("slurm"), job_id="5_0", state=lease_state, submitted_at=time.time() - age_s)
    return probe([lease])[0]


def test_slurm_lease_liveness_follows_the_job_state(monkeypatch):
    states = {"11_0": "RUNNING", "11_1": "PENDING", "11_2": "COMPLETED", "11_3": "CANCELLED", "11_4": "UNKNOWN"}
    monkeypatch.setattr(slurm_backend, "slurm_states", lambda ids: {i: states[i] for i in ids})
    now = time.time()
    made = [dict(leases.new_lease("slurm"), job_id=j, submitted_at=now - 600) for j in states]
    made.append(dict(leases.new_lease("slurm"), job_id="11_4", submitted_at=now))  # just submitted
    probed = probe(made)
    assert [p.alive for p in probed] == [True, True, False, False, False, True]
    assert probed[0].running and not probed[1].running


def make_run_dir(root: Path, result=None, failed=None, cancelled=None, checkpoint=False) -> Path:
    path = root / f"run{len(list(root.iterdir()))}"
    path.mkdir()
    for name, content in (("result.json", result), ("failed.json", failed), ("cancelled.json", cancelled)):
        if content is not None:
            atomic_write_json(path / name, content)
    if checkpoint:
        (path / "checkpoints").mkdir()
        (path / "checkpoints" / "step_00000003.pt").write_bytes(b"")
    return path


def test_run_state_covers_every_state(tmp_path, monkeypatch):
    def state(job=None, **files):
        return run_state(make_run_dir(tmp_path, **files), job)

    assert state(result={"status": "done"}, checkpoint=True)[0] == "done"
    assert state(result={"status": "diverged"}, checkpoint=True)[0] == "diverged"
    assert state(result={"status": "weird"}) == ("failed", "result.json says status 'weird'")
    assert state(slurm_job(monkeypatch, "RUNNING"))[0] == "running"
    assert state(slurm_job(monkeypatch, "PENDING")) == ("pending", "queued")
    assert state(slurm_job(monkeypatch, "PENDING", lease_state="running"), checkpoint=True)[0] == "preempted"
    assert state(slurm_job(monkeypatch, "REQUEUED"))[0] == "preempted"
    assert state(failed={"error": "boom"}, checkpoint=True) == ("failed", "boom")
    assert state(slurm_job(monkeypatch, "OUT_OF_MEMORY"), checkpoint=True)[0] == "failed"
    assert state(slurm_job(monkeypatch, "CANCELLED"), checkpoint=True)[0] == "cancelled"
    assert state(cancelled={"job_id": "5_0"}, checkpoint=True) == ("cancelled", "cancelled (job 5_0)")
    assert state(slurm_job(monkeypatch, "UNKNOWN"), checkpoint=True)[0] == "preempted"  # gone, resumable
    assert state(checkpoint=True)[0] == "preempted"
    assert state() == ("pending", "")
    unreadable = make_run_dir(tmp_path)
    (unreadable / "failed.json").write_text("{torn")
    assert run_state(unreadable) == ("failed", "unreadable failed.json")
    assert run_state(unreadable)[0] == "failed"  # the run directory alone tells the same story


# ---- the job ------------------------------------------------------------------------------
def test_training_job_pickles_without_runtime_state_and_checkpoint_resubmits_itself():
    import cloudpickle

    job = TrainingJob([("/x/runs/a", "tok")], "slurm", threads=2, preempt_grace_s=5)
    job._stop, job._signum = True, 12
    delayed = job.checkpoint()
    assert delayed.function is job
    clone = pickle.loads(cloudpickle.dumps(delayed)).function
    assert isinstance(clone, TrainingJob) and clone.entries == [("/x/runs/a", "tok")]
    assert clone._stop is False and clone._signum is None and clone.threads == 2


# ---- submit / status / cancel -------------------------------------------------------------------
def test_debug_submit_trains_a_pair_then_skips_it(tiny_spec, tmp_path, capsys):
    steps = {"train": {"tokens": 32 * 8 * 8}}
    runs = make_sweep(tmp_path / "sweep", [tiny_spec("transformer", **steps), tiny_spec("ebt", **steps)])
    profile = tmp_path / "p.yaml"
    profile.write_text(LOCAL_TEST_PROFILE)
    code, out, _ = cli("submit", tmp_path / "sweep", "--cluster", "debug", "--profile", profile, capsys=capsys)
    assert code == 0 and "submitted 2 run(s)" in out
    code, out, _ = cli("status", tmp_path / "sweep", "--json", capsys=capsys)
    report = json.loads(out)
    assert {r["state"] for r in report["runs"]} == {"done"} and report["totals"]["done"] == 2
    assert all(r["tokens_done"] == r["tokens_total"] == 32 * 8 * 8 for r in report["runs"])
    assert all(r["val_loss"] is not None and r["job_id"].startswith("debug-") for r in report["runs"])
    for path in runs.values():
        assert leases.read_lease(path) is None and leases.last_job(path)["outcome"] == "done"
    code, out, _ = cli("submit", tmp_path / "sweep", "--cluster", "debug", "--profile", profile, capsys=capsys)
    assert code == 0 and "submitted 0 run(s); skipped 2 done" in out
    code, out, _ = cli("status", tmp_path / "sweep", capsys=capsys)
    assert "total: 2 runs (2 done)" in out


def test_failed_run_is_reported_and_rerun_only_with_retry_failed(tiny_spec, tmp_path, capsys):
    bad = tiny_spec("transformer", model={"vocab_size": 64})  # smaller than the tokenizer: fails at start
    (run_path,) = make_sweep(tmp_path / "sweep", [bad]).values()
    code, _, _ = cli("submit", tmp_path / "sweep", "--cluster", "debug", capsys=capsys)
    assert code == 1
    failed = failure(run_path)
    assert "vocab_size" in failed["error"] and "\n" not in failed["error"] and leases.read_lease(run_path) is None
    (row,) = sweep_status(tmp_path / "sweep")
    assert row.state == "failed" and "vocab_size" in row.detail
    code, out, _ = cli("submit", tmp_path / "sweep", "--cluster", "debug", capsys=capsys)
    assert code == 0 and "skipped 1 failed (resubmit with --retry-failed)" in out
    first_failure = failed["time"]
    code, out, _ = cli("submit", tmp_path / "sweep", "--cluster", "debug", "--retry-failed", capsys=capsys)
    assert code == 1 and "submitted 1 run(s)" in out and failure(run_path)["time"] > first_failure


def test_status_shows_progress_and_eta_of_a_running_run(tiny_spec, tmp_path, capsys):
    spec = tiny_spec("transformer")
    (path,) = make_sweep(tmp_path / "sweep", [spec]).values()
    run = RunDir(path)
    per_step = spec.tokens_per_step
    for step in range(1, 7):
        row = {"step": step, "tokens": step * per_step, "train_loss": 5.0, "tokens_per_s": 256.0}
        if step == 4:
            row["val_loss"] = 4.5
        run.append_metrics(row)
    pid = os.getpid()
    lease = leases.new_lease("local", job_id=str(pid), state="running", job_pid=pid,
                             job_pid_start=proc_start(pid), job_host=hostname())
    assert leases.take_lease(path, lease, is_dead)[0]
    (row,) = sweep_status(tmp_path / "sweep")
    assert row.state == "running" and row.job_id == str(pid) and row.val_loss == 4.5
    assert row.tokens_done == 6 * per_step and row.tokens_total == spec.total_steps * per_step
    assert row.eta_s == pytest.approx((spec.total_steps - 6) * per_step / 256.0)
    total = totals([row])
    assert total["running"] == 1 and total["eta_s"] == pytest.approx(row.eta_s)
    code, out, _ = cli("status", tmp_path / "sweep", capsys=capsys)
    assert "running" in out and "4.5000" in out and "total: 1 runs (1 running)" in out
    assert cli("status", tmp_path / "nowhere", capsys=capsys)[0] == 2


def test_local_submit_resumes_a_partial_run_and_waits(tiny_spec, tmp_path, capsys):
    from ebt_scaling.harness.training.trainer import train_run

    spec, other = tiny_spec("transformer"), tiny_spec("transformer", seed=1)
    runs = make_sweep(tmp_path / "sweep", [spec, other])
    stopped = train_run(spec, runs[spec.run_id], quiet=True, stop_requested=lambda: True)  # one step, checkpoint
    assert stopped["status"] == "preempted"
    assert sweep_status(tmp_path / "sweep", [spec.run_id])[0].state == "preempted"
    profile = tmp_path / "p.yaml"
    profile.write_text(LOCAL_TEST_PROFILE)
    code, out, _ = cli("submit", tmp_path / "sweep", "--cluster", "local", "--profile", profile, "--wait",
                       "--poll", "0.5", capsys=capsys)
    assert code == 0, out
    assert "as 2 local job(s)" in out  # two CPU workers
    rows = sweep_status(tmp_path / "sweep")
    assert [r.state for r in rows] == ["done", "done"]
    assert "resuming from step_00000001.pt" in RunDir(runs[spec.run_id]).log_path.read_text()
    for path in runs.values():
        record = leases.last_job(path)
        assert leases.read_lease(path) is None and record["cluster"] == "local" and int(record["job_id"]) > 0
    assert (tmp_path / "sweep" / "jobs" / "local").is_dir()


def test_cancel_stops_a_local_job_and_status_reports_it(tiny_spec, tmp_path, capsys):
    spec = tiny_spec("transformer", train={"tokens": 32 * 8 * 5000}, checkpoint_every=50, log_every=1)
    (path,) = make_sweep(tmp_path / "sweep", [spec]).values()
    profile = tmp_path / "p.yaml"
    profile.write_text(LOCAL_TEST_PROFILE)
    code, out, _ = cli("submit", tmp_path / "sweep", "--cluster", "local", "--profile", profile, capsys=capsys)
    assert code == 0
    run, deadline = RunDir(path), time.time() + 60
    while time.time() < deadline and not run.metrics():
        time.sleep(0.1)
    assert run.metrics(), "the local job never started training"
    assert sweep_status(tmp_path / "sweep")[0].state == "running"
    pid = int(leases.read_lease(path)["job_pid"])
    code, out, _ = cli("cancel", tmp_path / "sweep", capsys=capsys)
    assert code == 0 and f"stopped local job {pid}" in out
    deadline = time.time() + 30
    while time.time() < deadline and pid_alive(pid):
        time.sleep(0.1)
    assert not pid_alive(pid)
    (row,) = sweep_status(tmp_path / "sweep")
    assert row.state == "cancelled" and row.step < spec.total_steps
    code, out, _ = cli("submit", tmp_path / "sweep", "--cluster", "local", "--profile", profile, capsys=capsys)
    assert "skipped 1 cancelled (resubmit with --retry-failed)" in out
    code, out, _ = cli("cancel", tmp_path / "sweep", capsys=capsys)
    assert "already cancelled" in out


def test_cancel_marks_runs_without_a_job(tiny_spec, tmp_path, capsys):
    runs = make_sweep(tmp_path / "sweep", [tiny_spec("transformer"), tiny_spec("ebt")])
    first = sorted(runs)[0]
    code, out, _ = cli("cancel", tmp_path / "sweep", first[:6], capsys=capsys)
    assert code == 0 and f"{first}: marked cancelled" in out
    states = {r.run_id: r.state for r in sweep_status(tmp_path / "sweep")}
    assert states == {first: "cancelled", sorted(runs)[1]: "pending"}
    code, _, err = cli("cancel", tmp_path / "sweep", "zzz", capsys=capsys)
    assert code == 2 and "no such run" in err


def test_submit_plans_a_sweep_preset_first(tmp_path):
    from ebt_scaling.harness.cli.submit import resolve_sweep_dir
    from ebt_scaling.sweeps.generate import expand
    from ebt_scaling.sweeps.sweep_spec import load_sweep

    target = resolve_sweep_dir("tiny", str(tmp_path / "planned"))
    planned = {r.run_id for r in expand(load_sweep("tiny"))}
    rows = sweep_status(target)
    assert {r.run_id for r in rows} == planned and {r.state for r in rows} == {"pending"}
    assert {r.arch for r in rows} == {"T++", "EBT-S1"} and all("pair=" in r.label for r in rows)
    assert resolve_sweep_dir("tiny", str(tmp_path / "planned")) == target  # planning again keeps the specs
    assert resolve_sweep_dir(str(target), None) == target


def test_slurm_local_command_ships_its_script(capsys):
    from ebt_scaling.harness.cli.slurm_local import script_path

    code, out, _ = cli("slurm-local", "script", capsys=capsys)
    assert code == 0 and out.strip() == script_path() and Path(script_path()).is_file()
    text = Path(script_path()).read_text()
    for needle in ("cred_expire=10", "bf_interval=1,sched_interval=2", "KillWait=5", "slurm.conf.sha256",
                   "accounting_storage/slurmdbd"):
        assert needle in text
    assert subprocess.run(["bash", "-n", script_path()]).returncode == 0


def test_racing_submitters_never_start_two_jobs_for_one_run(tiny_spec, tmp_path, monkeypatch):
    import threading

    from ebt_scaling.harness.dispatch import sweep_ops as submit_module

    runs = make_sweep(tmp_path / "sweep", [tiny_spec("transformer", seed=i) for i in range(6)])
    started: list[str] = []
    lock = threading.Lock()

    def fake_local(self, submission):  # a "job" per run that stays alive: this process
        for member in submission.runs:
            submission.record_job(f"fake-{member.run_id}", [member], job_pid=os.getpid(),
                                  job_pid_start=proc_start(os.getpid()), job_host=hostname())
            with lock:
                started.append(member.run_id)
        time.sleep(0.05)

    monkeypatch.setattr(LocalBackend, "submit", fake_local)
    profile = load_profile("local", "local")
    reports = []
    threads = [threading.Thread(target=lambda: reports.append(
        submit_module.submit_sweep(tmp_path / "sweep", "local", profile))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(started) == sorted(runs)  # each run once, whoever won it
    assert sum(len(r.submitted) for r in reports) == 6
    assert all(r.state == "pending" and r.job_id.startswith("fake-") for r in sweep_status(tmp_path / "sweep"))


class FakeJob:
    def __init__(self, job_id):
        self.job_id = job_id


class FakeExecutor:
    """Records what submit hands to submitit (no cluster needed)."""

    made: list["FakeExecutor"] = []

    def __init__(self, folder, **kwargs):
        self.folder, self.kwargs, self.params, self.submitted, self.batches = folder, kwargs, {}, [], 0
        FakeExecutor.made.append(self)

    def update_parameters(self, **params):
        self.params.update(params)

    def batch(self):
        import contextlib

        self.batches += 1
        return contextlib.nullcontext()

    def submit(self, fn):
        self.submitted.append(fn)
        base = 100 + len(FakeExecutor.made)
        return FakeJob(f"{base}_{len(self.submitted) - 1}" if self.batches else str(os.getpid()))


def test_local_jobs_get_one_gpu_each_round_robin_and_an_explicit_timeout(tiny_spec, tmp_path, monkeypatch):
    import submitit

    from ebt_scaling.harness.dispatch import sweep_ops as submit_module

    make_sweep(tmp_path / "sweep", [tiny_spec("transformer", seed=i) for i in range(5)])
    FakeExecutor.made = []
    monkeypatch.setattr(submitit, "LocalExecutor", FakeExecutor)
    profile = profile_from_dict({"name": "gpus", "gpus_per_node": 1, "local_gpus": [0, 1, 2], "timeout_min": 600})
    report = submit_module.submit_sweep(tmp_path / "sweep", "local", profile)
    assert len(report.submitted) == 5
    gpus = [e.params["visible_gpus"] for e in FakeExecutor.made]
    assert gpus == [(0,), (1,), (2,)] and all(e.params["gpus_per_node"] == 1 for e in FakeExecutor.made)
    assert all(e.params["timeout_min"] == 600 for e in FakeExecutor.made)  # never submitit's 2-minute default
    assert [len(e.submitted[0].entries) for e in FakeExecutor.made] == [2, 2, 1]
    assert all(e.kwargs["python"].strip("'") == sys.executable for e in FakeExecutor.made)


def test_slurm_submits_one_array_per_resource_class(tiny_spec, tmp_path, monkeypatch):
    import submitit

    from ebt_scaling.harness.dispatch import sweep_ops as submit_module

    specs = [tiny_spec("transformer", seed=i, tags={"size": size}) for i, size in enumerate(["s", "xl", "s", "l"])]
    make_sweep(tmp_path / "sweep", specs)
    FakeExecutor.made = []
    monkeypatch.setattr(submitit, "AutoExecutor", FakeExecutor)
    report = submit_module.submit_sweep(tmp_path / "sweep", "slurm", load_profile("example-cluster"))
    assert len(report.submitted) == 4 and len(report.jobs) == 2
    by_class = {e.params["name"].rsplit("-", 1)[1]: e for e in FakeExecutor.made}
    assert set(by_class) == {"default", "node"} and all(e.batches == 1 for e in FakeExecutor.made)
    assert len(by_class["default"].submitted) == 2 and len(by_class["node"].submitted) == 2
    assert by_class["node"].params["slurm_array_parallelism"] == 4 and by_class["node"].params["tasks_per_node"] == 8
    assert all(e.kwargs["cluster"] == "slurm" and e.kwargs["slurm_python"].strip("'") == sys.executable
               for e in FakeExecutor.made)
    assert all(len(job.entries) == 1 for e in FakeExecutor.made for job in e.submitted)  # one run per array task
    leased = [leases.read_lease(p.parent) for p in (tmp_path / "sweep" / "runs").glob("*/spec.yaml")]
    assert all(lease["state"] == "queued" and "_" in lease["job_id"] for lease in leased)


# ---- reviewed faults: submitted leases, temporaries, scheduler errors, final SLURM states ------
def test_submitted_runs_keep_their_leases_when_recording_a_job_fails(tiny_spec, tmp_path, monkeypatch):
    import submitit

    from ebt_scaling.harness.dispatch import sweep_ops as submit_module

    runs = make_sweep(tmp_path / "sweep", [tiny_spec("transformer", seed=i) for i in range(3)])
    FakeExecutor.made = []
    monkeypatch.setattr(submitit, "AutoExecutor", FakeExecutor)
    real_update, calls = leases.update_lease, []

    def flaky_update(*args, **kwargs):  # the disk fills up after sbatch accepted the array
        calls.append(args)
        if len(calls) > 1:
            raise OSError(28, "No space left on device")
        return real_update(*args, **kwargs)

    monkeypatch.setattr(leases, "update_lease", flaky_update)
    with pytest.raises(OSError):
        submit_module.submit_sweep(tmp_path / "sweep", "slurm", load_profile("slurm"))
    assert len(FakeExecutor.made[0].submitted) == 3
    assert all(leases.read_lease(path) is not None for path in runs.values())  # none released


def test_stale_temporaries_are_removed_under_the_lock_and_young_unknown_ones_kept(tmp_path):
    import threading

    (tmp_path / "checkpoints").mkdir()
    lease_tmp, ckpt_tmp = tmp_path / ".lease.json.abc.tmp", tmp_path / "checkpoints" / ".step_3.pt.x.tmp"
    young, old = tmp_path / ".notes.json.def.tmp", tmp_path / ".notes.json.old.tmp"
    for f in (lease_tmp, ckpt_tmp, young, old):
        f.write_text("partial")
    os.utime(old, (time.time() - 600, time.time() - 600))
    removed: list = []
    with leases.run_lock(tmp_path):  # a lease writer is mid-write: the cleaner must wait for it
        cleaner = threading.Thread(target=lambda: removed.extend(remove_stale_temporaries(tmp_path)))
        cleaner.start()
        cleaner.join(0.3)
        assert cleaner.is_alive() and lease_tmp.exists()
    cleaner.join(10)
    assert sorted(removed) == sorted([lease_tmp, ckpt_tmp, old])
    assert young.exists() and not old.exists() and not ckpt_tmp.exists()


@pytest.mark.parametrize("failure", ["exit", "timeout"])
def test_a_failed_slurm_query_keeps_the_job_alive(tmp_path, monkeypatch, failure):
    monkeypatch.setattr(slurm_backend.shutil, "which", lambda name: f"/usr/bin/{name}")

    def broken(cmd, **kwargs):
        if failure == "timeout":
            raise subprocess.TimeoutExpired(cmd, 60)
        return subprocess.CompletedProcess(cmd, 1, "", "slurm_load_jobs error: Unable to contact slurm controller")

    monkeypatch.setattr(slurm_backend.subprocess, "run", broken)
    assert slurm_backend.slurm_states(["77_1"]) == {"77_1": slurm_backend.UNREACHABLE}
    old = dict(leases.new_lease("slurm"), job_id="77_1", submitted_at=time.time() - 3600)
    assert probe([old])[0].alive and not is_dead(old)
    assert leases.take_lease(tmp_path, old, is_dead)[0]
    assert not leases.take_lease(tmp_path, leases.new_lease("slurm"), is_dead)[0]  # no second job
    assert run_state(tmp_path, probe([old])[0])[0] == "pending"


def test_a_job_slurmctld_forgot_is_asked_of_sacct_and_then_dead(monkeypatch):
    monkeypatch.setattr(slurm_backend.shutil, "which", lambda name: f"/usr/bin/{name}")

    def forgetful(cmd, **kwargs):
        if cmd[0] == "squeue":
            return subprocess.CompletedProcess(cmd, 1, "", "slurm_load_jobs error: Invalid job id specified")
        return subprocess.CompletedProcess(cmd, 0, "JobID|State|NodeList\n", "")

    monkeypatch.setattr(slurm_backend.subprocess, "run", forgetful)
    assert slurm_backend.slurm_states(["78_1"]) == {"78_1": "UNKNOWN"}
    old = dict(leases.new_lease("slurm"), job_id="78_1", submitted_at=time.time() - 3600)
    assert is_dead(old)


def test_sacct_answers_array_tasks_ranges_and_requeued_jobs(monkeypatch):
    monkeypatch.setattr(slurm_backend.shutil, "which", lambda name: f"/usr/bin/{name}")
    sacct = "80_0|COMPLETED\n80_0.batch|FAILED\n80_1|CANCELLED by 0\n80_[2-3,5%2]|PENDING\n81|RUNNING\n"
    calls = []

    def forgotten_by_squeue(cmd, **kwargs):
        calls.append(cmd)
        if cmd[0] == "squeue":
            return subprocess.CompletedProcess(cmd, 1, "", "slurm_load_jobs error: Invalid job id specified")
        return subprocess.CompletedProcess(cmd, 0, sacct, "")

    monkeypatch.setattr(slurm_backend.subprocess, "run", forgotten_by_squeue)
    states = slurm_backend.slurm_states(["80_0", "80_1", "80_3", "80_4", "81"])
    assert states == {"80_0": "COMPLETED", "80_1": "CANCELLED", "80_3": "PENDING", "80_4": "UNKNOWN", "81": "RUNNING"}
    assert len(calls) == 2  # one squeue, one sacct for every job


def test_preempted_timeout_and_node_fail_with_checkpoints_are_resumable(tiny_spec, tmp_path, monkeypatch):
    from ebt_scaling.harness.dispatch.snapshot import SweepSnapshot
    from ebt_scaling.harness.dispatch.sweep_ops import plan_submission

    for state in ("PREEMPTED", "TIMEOUT", "NODE_FAIL"):
        job = slurm_job(monkeypatch, state, lease_state="running")
        assert run_state(make_run_dir(tmp_path, checkpoint=True), job)[0] == "preempted"
    assert run_state(make_run_dir(tmp_path), slurm_job(monkeypatch, "TIMEOUT"))[0] == "failed"
    assert run_state(make_run_dir(tmp_path), slurm_job(monkeypatch, "PREEMPTED"))[0] == "pending"
    monkeypatch.setattr(slurm_backend, "slurm_states", lambda ids: {i: "PREEMPTED" for i in ids})
    runs = make_sweep(tmp_path / "sweep", [tiny_spec("transformer", seed=i) for i in range(2)])
    for i, path in enumerate(runs.values()):
        (path / "checkpoints").mkdir()
        (path / "checkpoints" / "step_00000003.pt").write_bytes(b"")
        leases.take_lease(path, dict(leases.new_lease("slurm"), job_id=f"9_{i}", submitted_at=time.time()),
                          is_dead)
    rows = sweep_status(tmp_path / "sweep")
    assert all(r.state == "preempted" and not r.job_alive for r in rows)  # not "requeued" forever
    todo, skipped, _ = plan_submission(SweepSnapshot.read(tmp_path / "sweep").runs, retry_failed=False)
    assert sorted(r.run_id for r in todo) == sorted(runs) and not skipped


@pytest.mark.parametrize("runs", [1, 10])
def test_bench_plan_with_few_runs(runs, capsys):
    code, out, _ = cli("bench-plan", "--runs", runs, "--repeat", 1, capsys=capsys)
    assert code == 0 and f"planned {runs} runs" in out


def test_ci_script_fails_on_any_install_step():
    text = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
    assert "set -euo pipefail" in text
    assert not [ln for ln in text.splitlines() if "&&" in ln and not ln.lstrip().startswith("#")]
