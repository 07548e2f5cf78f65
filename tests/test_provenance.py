"""Provenance: which checkout (and which uncommitted changes) and versions trained a run,
recorded in result.json, each checkpoint and the session's provenance.json; a resume under
other code warns once and keeps both; `status` names the runs, finished or not, whose
provenance differs within a sweep."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import platform
import socket
import subprocess
from pathlib import Path

import torch
from conftest import make_sweep, stop_after

from ebt_scaling.harness.cli.main import main as cli_main
from ebt_scaling.harness.contract.run_dir import RunDir, atomic_write_json
from ebt_scaling.harness.training import provenance
from ebt_scaling.harness.training.provenance import (
    SESSION_FILE,
    Checkout,
    collect_provenance,
    current_provenance,
    resumed_provenance,
    source_checkout,
)
from ebt_scaling.harness.training.trainer import train_run

ROOT = Path(__file__).resolve().parents[1]


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                          capture_output=True, text=True, check=True).stdout.strip()


def test_the_checkout_commit_dirty_flag_and_changes_and_none_outside_a_checkout(tmp_path):
    repo = tmp_path / "repo"
    (repo / "src").mkdir(parents=True)
    (repo / ".venv" / "site-packages" / "pkg").mkdir(parents=True)
    (repo / "src" / "mod.py").write_text("x = 1\n")
    (repo / ".gitignore").write_text(".venv/\n")
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "first")
    head, top = git(repo, "rev-parse", "HEAD"), str(repo.resolve())
    assert source_checkout(repo / "src") == Checkout(commit=head, dirty=False, diff=None, source=top)
    (repo / "src" / "new.py").write_text("untracked\n")
    assert source_checkout(repo / "src").dirty is False  # untracked files do not count
    (repo / "src" / "mod.py").write_text("x = 2\n")
    changes = subprocess.run(["git", "-C", str(repo), "diff", "HEAD", "--binary"], capture_output=True).stdout
    first_edit = Checkout(commit=head, dirty=True, diff=hashlib.sha256(changes).hexdigest()[:12], source=top)
    assert source_checkout(repo / "src") == first_edit
    (repo / "src" / "mod.py").write_text("x = 3\n")  # still dirty, other changes: another hash
    other_edit = source_checkout(repo / "src")
    assert other_edit.dirty is True and other_edit.diff not in (None, first_edit.diff)
    (repo / "src" / "mod.py").write_text("x = 2\n")
    git(repo, "add", "src/mod.py")  # the same changes, staged: the same code
    assert source_checkout(repo / "src") == first_edit
    # installed into an ignored virtual environment inside a checkout: not that checkout's code
    assert source_checkout(repo / ".venv" / "site-packages" / "pkg") == Checkout()
    (tmp_path / "plain").mkdir()
    assert source_checkout(tmp_path / "plain") == Checkout()


def test_a_resume_warns_once_when_the_version_or_the_uncommitted_changes_differ():
    now = dataclasses.replace(current_provenance(torch.device("cpu")), dirty=True, diff="b" * 12)
    said: list[tuple[int, str]] = []

    def resume_from(record: dict) -> list:
        said.clear()
        return resumed_provenance({"step": 5, "provenance": record, "provenance_history": []}, now,
                                  lambda message, level: said.append((level, message)))["provenance_history"]

    same = now.to_dict()
    assert resume_from({**same, "hostname": "elsewhere", "slurm_job": "9"}) == [] and said == []  # not code
    for key, earlier in (("diff", "a" * 12), ("package_version", "0.0.9")):
        record = {**same, key: earlier}
        assert resume_from(record) == [{**record, "until_step": 5}]
        assert len(said) == 1 and said[0][0] == logging.WARNING and f"{key} {earlier} -> {same[key]}" in said[0][1]
    # A record written before the changes were hashed (no "diff" key): that field is not compared.
    assert resume_from({k: v for k, v in same.items() if k != "diff"}) == [] and said == []


def test_the_record_names_versions_host_and_slurm_job(monkeypatch):
    for name in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID"):
        monkeypatch.delenv(name, raising=False)
    record = collect_provenance(torch.device("cpu")).to_dict()
    expected_commit = git(ROOT, "rev-parse", "HEAD") if (ROOT / ".git").exists() else None
    assert record["commit"] == expected_commit
    assert record["torch"] == torch.__version__ and record["cuda"] == torch.version.cuda
    assert record["python"] == platform.python_version() and record["hostname"] == socket.gethostname()
    assert record["package_version"] == "0.1.0" and record["gpu"] is None and record["slurm_job"] is None
    assert json.loads(json.dumps(record)) == record
    monkeypatch.setenv("SLURM_JOB_ID", "80")
    assert provenance.slurm_job() == "80"
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "77")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    assert provenance.slurm_job() == "77_3"


def test_checkpoints_and_result_record_provenance_and_a_resume_under_other_code_keeps_both(
        tiny_spec, tmp_path, caplog):
    spec = tiny_spec("transformer")
    run = RunDir(tmp_path / "run")
    train_run(spec, run.path, quiet=True, stop_requested=stop_after(7))
    now = current_provenance(torch.device("cpu")).to_dict()
    newest = run.checkpoints()[0]
    state = torch.load(newest, weights_only=True)
    assert state["provenance"] == now and state["provenance_history"] == []
    session = json.loads((run.path / SESSION_FILE).read_text())
    assert session == {"provenance": now, "provenance_history": [], "from_step": 0}

    earlier = {**now, "commit": "0" * 40, "torch": "2.4.0", "hostname": "node-a"}
    state["provenance"] = earlier  # as if steps 1-7 had run under another commit and torch
    torch.save(state, newest)
    with caplog.at_level(logging.INFO, logger="ebt_scaling"):
        result = train_run(spec, run.path, quiet=True)
    assert result["status"] == "done"
    warned = [line for line in run.log_path.read_text().splitlines() if "different code" in line]
    assert len(warned) == 1
    assert f"commit {'0' * 40} -> {now['commit']}" in warned[0] and f"torch 2.4.0 -> {now['torch']}" in warned[0]
    # One line on the log stream (a job's stdout), at WARNING: `-q` (warnings and errors) keeps it.
    logged = [r for r in caplog.records if "different code" in r.getMessage()]
    assert [r.levelno for r in logged] == [logging.WARNING]
    on_disk = run.result()
    assert on_disk["provenance"] == now
    assert on_disk["provenance_history"] == [{**earlier, "until_step": 7}]
    session = json.loads((run.path / SESSION_FILE).read_text())
    assert session == {"provenance": now, "provenance_history": on_disk["provenance_history"], "from_step": 7}
    final = torch.load(run.checkpoints()[0], weights_only=True)  # carried on: a later resume keeps it
    assert final["provenance_history"] == on_disk["provenance_history"]


def test_status_names_the_runs_whose_provenance_differs(tiny_spec, tmp_path, capsys):
    runs = make_sweep(tmp_path / "sweep", [tiny_spec("transformer", seed=i) for i in range(8)])
    ids = sorted(runs)
    base = {**current_provenance(torch.device("cpu")).to_dict(), "dirty": False, "diff": None}
    other = {**base, "commit": "def4567" + "0" * 33, "dirty": True, "diff": "0123456789ab"}
    # ids[4]: finished before provenance was recorded; ids[5]: a damaged record, read as none;
    # ids[6]: still training under the other code (its session's provenance.json, no result.json);
    # ids[7]: not finished, its provenance.json damaged: unknown
    records = {ids[0]: base, ids[1]: base, ids[2]: base, ids[3]: other, ids[4]: None, ids[5]: None,
               ids[6]: other, ids[7]: None}
    for run_id, record in list(records.items())[:6]:
        result = {"status": "done", "step": 24, "val_loss": 5.0}
        if record is not None:
            result["provenance"], result["provenance_history"] = record, []
        atomic_write_json(runs[run_id] / "result.json", result)
    atomic_write_json(runs[ids[5]] / "result.json", {"status": "done", "provenance": "abc", "provenance_history": 7})
    atomic_write_json(runs[ids[6]] / SESSION_FILE, {"provenance": other, "provenance_history": [], "from_step": 12})
    (runs[ids[7]] / SESSION_FILE).write_bytes(b"\xff{not json")
    resumed = json.loads((runs[ids[2]] / "result.json").read_text())
    resumed["provenance_history"] = [{**other, "until_step": 12}]
    atomic_write_json(runs[ids[2]] / "result.json", resumed)

    assert cli_main(["status", str(tmp_path / "sweep")]) == 0
    out = capsys.readouterr().out.splitlines()
    differs = [line for line in out if line.startswith("provenance differs:")]
    version = f"version {base['package_version']}"
    base_label = f"{version} commit {str(base['commit'] or 'unknown')[:10]}"
    assert differs == [f"provenance differs: {base_label} torch {base['torch']} (3 runs) vs "
                       f"{version} commit def4567000 (dirty 0123456789ab) torch {base['torch']} "
                       f"(2 runs: {ids[3]}, {ids[6]})"]
    mixed = [line for line in out if line.startswith("resumed under different code:")]
    assert len(mixed) == 1 and ids[2] in mixed[0] and ids[3] not in mixed[0]

    assert cli_main(["status", str(tmp_path / "sweep"), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["totals"]["provenance_differs"][0] == differs[0]
    assert {r["run_id"]: r["provenance"] for r in doc["runs"]} == records
