"""A run directory and everything its files say about the run.

Layout (lingua style; the analysis reads nothing else):

    RUN_DIR/spec.yaml        the RunSpec (its hash is the directory's run id)
    RUN_DIR/metrics.jsonl    one JSON row per logged step / evaluation
    RUN_DIR/checkpoints/     step_XXXXXXXX.pt, the newest few kept
    RUN_DIR/train.log        human-readable log
    RUN_DIR/result.json      written once, atomically, when the run ends (done or diverged)

Every whole-file write goes through a temporary file in the same directory, fsync and
rename, so readers never see half a file and a kill leaves the previous version intact.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

# The process umask, read once (os.umask can only be read by setting it).
UMASK = os.umask(0o022)
os.umask(UMASK)


def atomic_write_with(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Let `write` fill a temporary file beside `path`, fsync it, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    # mkstemp makes the file private; results on shared storage must stay readable to the
    # group as a plain open() would leave them.
    os.fchmod(fd, 0o666 & ~UMASK)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write_with(path, lambda f: f.write(data))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: Path) -> Any | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return None


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    spec_path = property(lambda self: self.path / "spec.yaml")
    metrics_path = property(lambda self: self.path / "metrics.jsonl")
    result_path = property(lambda self: self.path / "result.json")
    log_path = property(lambda self: self.path / "train.log")
    checkpoint_dir = property(lambda self: self.path / "checkpoints")

    def checkpoints(self) -> list[Path]:
        """Checkpoint files, newest first."""
        return sorted(self.checkpoint_dir.glob("step_*.pt"), reverse=True)

    def result(self) -> dict | None:
        return read_json(self.result_path)

    def metrics(self) -> list[dict]:
        """All complete rows of metrics.jsonl (a torn last line from a kill is skipped)."""
        rows = []
        try:
            lines = self.metrics_path.read_text().splitlines()
        except OSError:
            return rows
        for line in lines:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return rows

    def append_metrics(self, row: dict) -> None:
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(row, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def truncate_metrics(self, after_step: int) -> None:
        """Keep rows up to `after_step`: a resumed run re-logs what came after its checkpoint."""
        kept = [r for r in self.metrics() if r["step"] <= after_step]
        atomic_write_text(self.metrics_path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))

    def log(self, message: str) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "a") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")
