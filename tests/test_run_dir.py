"""Run directory files: atomic, readable, torn-line tolerant."""
from __future__ import annotations

import os

from ebt_scaling.harness.contract.run_dir import UMASK, RunDir, atomic_write_text


def test_atomic_writes_leave_files_readable_like_open_does(tmp_path):
    atomic_write_text(tmp_path / "result.json", "{}")
    assert (tmp_path / "result.json").stat().st_mode & 0o777 == 0o666 & ~UMASK
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_a_torn_last_metrics_line_is_skipped(tmp_path):
    run = RunDir(tmp_path)
    run.append_metrics({"step": 1, "train_loss": 2.0})
    with open(run.metrics_path, "a") as f:
        f.write('{"step": 2, "train_lo')  # killed mid-write
    assert run.metrics() == [{"step": 1, "train_loss": 2.0}]
    run.truncate_metrics(1)
    assert run.metrics_path.read_text().count("\n") == 1
