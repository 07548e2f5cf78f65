"""Log output: the per-step line of a job (stdout and train.log, at exactly the logged
steps), -v / -q, --version, a closed pipe, an interrupt, the one-line file errors of the
CLI; a data-parallel `train` (a refused lease ends every rank; a resume is said once); and
what a training error leaves behind (no prefetch thread, sinks closed)."""
from __future__ import annotations

import errno
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path

import pytest

from ebt_scaling.harness.cli.main import main as cli_main
from ebt_scaling.harness.contract.run_dir import RunDir
from ebt_scaling.harness.contract.spec import spec_to_yaml
from ebt_scaling.harness.data.prefetch import PrefetchedBatches
from ebt_scaling.harness.dispatch.run_files import last_job, read_lease, training_lease
from ebt_scaling.harness.tracking.logs import PACKAGE_LOGGER
from ebt_scaling.harness.training import trainer
from ebt_scaling.harness.training.progress import TrainingProgress

ROOT = Path(__file__).resolve().parents[1]
STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"
LINE = re.compile(r"step (\d+)/(\d+) \| tokens (\S+) \| loss (\d+\.\d{4}) \| lr (\S+) \| (\S+) tok/s \| ETA (\S+)"
                  r"(?: \| val_loss (\d+\.\d{4}))?$")


@pytest.fixture(autouse=True)
def _restore_package_logger():
    """The CLI sets the package logger's level and handler; later tests get it back as it was."""
    logger = logging.getLogger(PACKAGE_LOGGER)
    level, handlers = logger.level, list(logger.handlers)
    yield
    logger.setLevel(level)
    logger.handlers[:] = handlers


def progress_lines(text: str, prefix: str) -> list[re.Match]:
    """The progress lines of `text` whose start (after the time stamp) matches `prefix`."""
    return [m for line in text.splitlines()
            if re.match(rf"{STAMP} {prefix}", line) and (m := LINE.search(line))]


def check_against_metrics(lines: list[re.Match], run: RunDir, total: int) -> None:
    rows = {r["step"]: r for r in run.metrics()}
    for m in lines:
        row = rows[int(m[1])]
        assert int(m[2]) == total
        assert float(m[4]) == pytest.approx(row["train_loss"], abs=5e-5)
        assert (m[8] is None) == ("val_loss" not in row)
        if m[8] is not None:
            assert float(m[8]) == pytest.approx(row["val_loss"], abs=5e-5)


def test_a_job_logs_a_line_per_metrics_row_to_stdout_and_train_log(tiny_spec, tmp_path):
    spec = tiny_spec(log_every=5)  # 24 steps; evaluations at steps 1, 5 and 24 (3 log-spaced points)
    run_dir = tmp_path / "runs" / spec.run_id
    run_dir.mkdir(parents=True)
    (run_dir / "spec.yaml").write_text(spec_to_yaml(spec))
    code = ("import sys, torch; from ebt_scaling.harness.dispatch.job import TrainingJob; "
            "TrainingJob([(sys.argv[1], 'token')], 'debug', threads=1)()")
    proc = subprocess.run([sys.executable, "-c", code, str(run_dir)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    expected = [1, 5, 10, 15, 20, 24]  # every 5th step, and the evaluations
    on_stdout = progress_lines(proc.stdout, f"INFO {spec.run_id}: ")
    assert [int(m[1]) for m in on_stdout] == expected
    assert [m[8] is not None for m in on_stdout] == [True, True, False, False, False, True]
    assert progress_lines(proc.stderr, "") == []
    run = RunDir(run_dir)
    in_train_log = progress_lines(run.log_path.read_text(), "")
    assert [m.group(0) for m in in_train_log] == [m.group(0) for m in on_stdout]
    check_against_metrics(on_stdout, run, 24)
    assert on_stdout[1][3] == "1.28k"  # 5 steps x 8 sequences x 32 tokens
    assert re.search(rf"INFO {spec.run_id}: done at step 24$", proc.stdout, re.M)  # train.log's events too


def test_verbosity_flags_before_or_after_the_command(tiny_spec, tmp_path, capsys):
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(spec_to_yaml(tiny_spec(train={"tokens": 32 * 8 * 6}, log_every=2)))  # evals at 1, 2, 6

    assert cli_main(["train", str(spec_file), "--out", str(tmp_path / "default")]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["status"] == "done"  # stdout holds the command's output only
    lines = progress_lines(err, "INFO ")
    assert [int(m[1]) for m in lines] == [1, 2, 4, 6]
    check_against_metrics(lines, RunDir(tmp_path / "default"), 6)
    assert " DEBUG " not in err

    assert cli_main(["-q", "train", str(spec_file), "--out", str(tmp_path / "quiet")]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["status"] == "done" and err == ""
    assert len(progress_lines(RunDir(tmp_path / "quiet").log_path.read_text(), "")) == 4  # train.log keeps them

    assert cli_main(["train", str(spec_file), "--out", str(tmp_path / "verbose"), "-v"]) == 0
    err = capsys.readouterr().err
    assert len(progress_lines(err, "INFO ebt_scaling.harness.contract.run_dir: ")) == 4
    assert re.search(rf"^{STAMP} DEBUG ebt_scaling\.harness\.training\.progress: ", err, re.M)

    with pytest.raises(SystemExit) as exit_:
        cli_main(["-q", "train", str(spec_file), "--out", str(tmp_path / "both"), "-v"])
    assert exit_.value.code == 2 and "not allowed with argument -v/--verbose" in capsys.readouterr().err


def test_version_answers_without_importing_torch():
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    code = ("import sys; from ebt_scaling.harness.cli.main import main\n"
            "try:\n    main(['--version'])\nexcept SystemExit:\n    pass\n"
            "print('torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout == f"ebt-scaling {version}\nFalse\n"


def test_a_closed_pipe_ends_quietly():
    # The reader is gone before the command writes: every write fails (EPIPE), deterministically.
    proc = subprocess.Popen([sys.executable, "-m", "ebt_scaling.harness.cli", "plan", "tiny", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141 and err == ""
    # The usual shape: `| head -1` reads a line and leaves.
    shell = subprocess.run(["bash", "-o", "pipefail", "-c",
                            f"'{sys.executable}' -m ebt_scaling.harness.cli plan tiny --json | head -1"],
                           capture_output=True, text=True, timeout=120)
    assert shell.stdout.startswith('{"sweep"') and shell.stderr == ""
    assert shell.returncode in (0, 141)  # 0 when everything fit in the pipe before head left


def test_file_errors_are_one_line(tiny_spec, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(spec_to_yaml(tiny_spec(data={"cache_dir": str(blocker / "cache")})))
    assert cli_main(["data", "prepare", str(spec_file)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ebt-scaling data: error: ") and str(blocker) in err and err.count("\n") == 1


@pytest.mark.parametrize("raised, line", [
    (OSError(errno.ENOSPC, "No space left on device"), "No space left on device (ENOSPC)"),
    (PermissionError(errno.EACCES, "Permission denied", "/sweeps/x.csv"),
     "cannot read or write /sweeps/x.csv: Permission denied"),
    (IsADirectoryError(errno.EISDIR, "Is a directory", "/a/.b.tmp", None, "/a/b"),
     "cannot read or write /a/.b.tmp -> /a/b: Is a directory"),
])
def test_the_file_error_safety_net(monkeypatch, capsys, tmp_path, raised, line):
    from ebt_scaling.harness.cli import fit

    def run(args):
        raise raised

    monkeypatch.setattr(fit, "run", run)
    assert cli_main(["fit", str(tmp_path / "x.csv"), "--params-col", "N", "--loss-col", "L"]) == 2
    assert capsys.readouterr().err == f"ebt-scaling fit: error: {line}\n"


def test_other_os_errors_keep_their_traceback(monkeypatch):
    from ebt_scaling.harness.cli import fit

    def run(args):
        raise ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")

    monkeypatch.setattr(fit, "run", run)
    with pytest.raises(ConnectionRefusedError):
        cli_main(["fit", "x.csv", "--params-col", "N", "--loss-col", "L"])


def test_an_interrupted_train_says_so_in_one_line_with_status_130(tiny_spec, tmp_path):
    """`cancel` stops a plain `train` with SIGINT (as Ctrl-C does): one line, no traceback,
    the lease released as "interrupted"."""
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(spec_to_yaml(tiny_spec(train={"tokens": 32 * 8 * 100_000})))  # far longer than the test
    out = tmp_path / "run"
    # SIGINT default in the child, whatever this process inherited (a background job ignores it).
    proc = subprocess.Popen([sys.executable, "-m", "ebt_scaling.harness.cli", "-q", "train", str(spec_file),
                             "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120
        while not (out / "metrics.jsonl").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)  # training: its first metrics row is written
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert (proc.returncode, stdout, stderr) == (130, "", "ebt-scaling: interrupted\n")
    assert read_lease(out) is None and last_job(out)["outcome"] == "interrupted"


def launch_two_ranks(argv: list[str], timeout: float = 120) -> list[tuple[int, str, str]]:
    """(status, stdout, stderr) of each rank of `ebt-scaling ARGV` launched data parallel on
    this machine, as torchrun sets it up; a rank still running after `timeout` fails the test."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    procs = [subprocess.Popen([sys.executable, "-m", "ebt_scaling.harness.cli", *argv], text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env={**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
                                   "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"})
             for rank in range(2)]
    deadline = time.monotonic() + timeout
    ranks = []
    try:
        for proc in procs:
            stdout, stderr = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            ranks.append((proc.returncode, stdout, stderr))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return ranks


def test_a_lease_refused_to_rank_0_ends_every_rank_of_a_data_parallel_train(tiny_spec, tmp_path):
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(spec_to_yaml(tiny_spec(train={"tokens": 32 * 8 * 6})))
    out = tmp_path / "run"
    with training_lease(out, "--out"):  # this process trains the run now
        ranks = launch_two_ranks(["-q", "train", str(spec_file), "--out", str(out)], timeout=90)
    for status, stdout, stderr in ranks:  # neither rank waits for the other in a collective
        assert status == 2 and stdout == ""
        # torch's own C++ warnings ("[W...] ... hostname of the client socket cannot be
        # retrieved" when a reverse lookup is slow) are not ours; everything else is one line.
        ours = [line for line in stderr.splitlines() if not line.startswith("[W")]
        assert len(ours) == 1 and ours[0].startswith(f"ebt-scaling train: error: --out: {out} is being trained by ")
    assert not (out / "metrics.jsonl").exists()


@pytest.mark.parametrize("damage", ["result.json torn", "lease.json a directory"])
def test_a_run_directory_rank_0_cannot_use_ends_every_rank_of_a_data_parallel_train(tiny_spec, tmp_path, damage):
    """What rank 0 meets before the lease (a damaged result.json) or while taking it (a file
    error) reaches rank 1 too: both end at once with rank 0's line, none waits in a collective."""
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(spec_to_yaml(tiny_spec(train={"tokens": 32 * 8 * 6})))
    out = tmp_path / "run"
    out.mkdir()
    if damage == "result.json torn":
        (out / "result.json").write_text('{"status": "do')
        said = f"ebt-scaling train: error: {out / 'result.json'}: is not valid JSON"
    else:
        (out / "lease.json").mkdir()  # the lease cannot be written
        said = f"ebt-scaling train: error: cannot read or write {out / 'lease.json'}: Is a directory"
    ranks = launch_two_ranks(["-q", "train", str(spec_file), "--out", str(out)], timeout=60)
    for status, stdout, stderr in ranks:
        ours = [line for line in stderr.splitlines() if not line.startswith("[W")]  # torch's C++ warnings
        assert (status, stdout, len(ours)) == (2, "", 1) and ours[0].startswith(said), stderr
    assert not (out / "metrics.jsonl").exists()


def test_a_data_parallel_resume_is_said_once(tiny_spec, tmp_path):
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(spec_to_yaml(tiny_spec(train={"tokens": 32 * 8 * 6})))
    out = tmp_path / "run"
    command = ["-q", "train", str(spec_file), "--out", str(out)]
    assert [status for status, _, _ in launch_two_ranks(command)] == [0, 0]
    (out / "result.json").unlink()  # as if killed during the final evaluation: it resumes at the last step
    assert [status for status, _, _ in launch_two_ranks(command)] == [0, 0]
    resumed = [line for line in (out / "train.log").read_text().splitlines() if "resuming from" in line]
    assert len(resumed) == 1 and "step_00000006.pt" in resumed[0]


def test_a_step_that_raises_closes_the_sinks_and_stops_the_prefetch_thread(tiny_spec, tmp_path, monkeypatch):
    # The GPU's feed (a thread building batches ahead), here on the CPU.
    monkeypatch.setattr(trainer, "prefetched", lambda source, device: PrefetchedBatches(source))
    closed = []
    real_close, real_lr_at = TrainingProgress.close, trainer.lr_at

    def close(progress):
        closed.append(progress)
        real_close(progress)

    def lr_at(step, total, train, *group_scales):  # a bug that shows in step 4
        if step == 3:
            raise RuntimeError("a bug in step 4")
        return real_lr_at(step, total, train, *group_scales)

    monkeypatch.setattr(TrainingProgress, "close", close)
    monkeypatch.setattr(trainer, "lr_at", lr_at)
    before = set(threading.enumerate())
    with pytest.raises(RuntimeError, match="a bug in step 4"):
        trainer.train_run(tiny_spec(), tmp_path / "run", quiet=True)
    assert [t for t in threading.enumerate() if t.name == "batch-prefetch" and t not in before] == []
    assert len(closed) == 1
