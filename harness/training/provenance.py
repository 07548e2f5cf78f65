"""Which code and which machine trained a run: its provenance.

A plain-JSON record of the process that trains: the git commit, dirty flag and (when
dirty) a hash of the uncommitted changes of the checkout the package is imported from, the
package version, Python, torch, the CUDA and cuDNN torch was built with, the GPU, the host
and the SLURM job. The trainer computes it once per process, writes it into every
checkpoint and into result.json (``provenance``), and on resume compares it with the
checkpoint's: when the code changed (a field of CODE_FIELDS differs) it warns, and the
earlier record, with the step it trained up to, joins ``provenance_history`` (oldest first;
carried on through checkpoints, so result.json names every code a run was trained with).
At each session start the main process also writes both to SESSION_FILE in the run
directory, so that ``status`` sees the code of runs still training (or stopped) as well as
of finished ones, and groups a sweep's runs by the same fields.

torch is imported only where the record is collected: ``status`` reads this module on a
login node without it.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.metadata
import logging
import os
import platform
import socket
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ebt_scaling.harness.contract.run_dir import atomic_write_json, read_json

# A change of these between the part of a run before a resume and the part after it is
# warned about; status groups runs by them. The rest (host, job, GPU) changes on every requeue.
CODE_FIELDS = ("package_version", "commit", "dirty", "diff", "torch")
GIT_TIMEOUT_S = 5.0  # a hung network filesystem must not hold up a run's start
DIFF_HEX = 12  # hex digits of the changes' sha256 kept: enough to tell two edits apart, short to read
SESSION_FILE = "provenance.json"  # in the run directory: the provenance of its latest training session


@dataclass(frozen=True)
class Checkout:
    """The git checkout the package is imported from (all None: not imported from one)."""
    commit: str | None = None  # HEAD
    dirty: bool | None = None  # tracked files differ from HEAD (untracked files are not counted)
    diff: str | None = None  # when dirty: the first DIFF_HEX hex digits of sha256(`git diff HEAD --binary`)
    source: str | None = None  # the checkout's top-level folder


@dataclass(frozen=True)
class Provenance:
    commit: str | None  # Checkout's fields
    dirty: bool | None
    diff: str | None  # two dirty trees trained the same code only when their changes hash alike
    source: str | None
    package_version: str | None
    python: str
    torch: str
    cuda: str | None  # the CUDA torch was built with (None: a CPU build)
    cudnn: int | None
    gpu: str | None  # the run's device, when it is a GPU
    hostname: str
    slurm_job: str | None  # ARRAYJOB_TASK for an array task (as squeue names it), else SLURM_JOB_ID

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def source_checkout(folder: Path) -> Checkout:
    """The git checkout holding `folder`; all None when there is none, git is missing or too
    slow, or the checkout ignores `folder` (a virtual environment inside a checkout: its
    commit is not this code's)."""
    def git(*args: str) -> bytes | None:
        try:
            done = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, timeout=GIT_TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout if done.returncode == 0 else None

    head = git("rev-parse", "HEAD", "--show-toplevel")
    if head is None or git("check-ignore", "-q", ".") is not None:  # check-ignore succeeds: ignored
        return Checkout()
    commit, top = head.decode().splitlines()[:2]
    status = git("status", "--porcelain", "--untracked-files=no")
    dirty = None if status is None else bool(status.strip())
    # --binary: a changed binary file counts by its content, not as "Binary files differ".
    changes = git("diff", "HEAD", "--binary", "--no-ext-diff", "--no-color") if dirty else None
    diff = hashlib.sha256(changes).hexdigest()[:DIFF_HEX] if changes is not None else None
    return Checkout(commit=commit, dirty=dirty, diff=diff, source=top)


def slurm_job() -> str | None:
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{task}" if array and task else os.environ.get("SLURM_JOB_ID") or None


def collect_provenance(device: Any = None) -> Provenance:
    """The provenance of this process; `device` (a torch.device) names the GPU when it is one."""
    import torch

    checkout = source_checkout(Path(__file__).resolve().parent)
    try:
        version = importlib.metadata.version("ebt-scaling")
    except importlib.metadata.PackageNotFoundError:
        version = None
    gpu = torch.cuda.get_device_name(device) if device is not None and device.type == "cuda" else None
    return Provenance(**dataclasses.asdict(checkout), package_version=version,
                      python=platform.python_version(), torch=str(torch.__version__), cuda=torch.version.cuda,
                      cudnn=torch.backends.cudnn.version(), gpu=gpu, hostname=socket.gethostname(),
                      slurm_job=slurm_job())


# Once per process and device: the git calls cost tens of milliseconds.
current_provenance = functools.cache(collect_provenance)


def code_changes(earlier: dict, now: dict) -> str:
    """'commit A -> B, torch X -> Y' for the CODE_FIELDS that differ; '' when none does.
    A field the earlier record lacks (written before it was recorded) is not compared."""
    return ", ".join(f"{key} {earlier.get(key)} -> {now.get(key)}" for key in CODE_FIELDS
                     if key in earlier and earlier[key] != now.get(key))


def resumed_provenance(state: dict | None, now: Provenance, log: Callable[[str, int], None]) -> dict[str, Any]:
    """{"provenance", "provenance_history"} of a run that starts from checkpoint `state`
    (None: from scratch), for its checkpoints and result.json. A change of code since the
    checkpoint is warned about (`log(message, level)`: RunDir.log, so train.log and the
    package logger, once, at WARNING) and its record kept in the history."""
    record = now.to_dict()
    history = [h for h in (state or {}).get("provenance_history") or [] if isinstance(h, dict)]
    earlier = (state or {}).get("provenance")
    if isinstance(earlier, dict) and (changed := code_changes(earlier, record)):
        history.append({**earlier, "until_step": state["step"]})
        message = (f"resumed at step {state['step']} under different code ({changed}); "
                   "result.json keeps the earlier provenance in provenance_history")
        log(message, logging.WARNING)
    return {"provenance": record, "provenance_history": history}


def write_session_provenance(run_dir: Path, provenance: dict[str, Any], step: int) -> None:
    """SESSION_FILE: resumed_provenance's record of the session that starts at `step` (main process)."""
    atomic_write_json(Path(run_dir) / SESSION_FILE, {**provenance, "from_step": step})


def session_provenance(run_dir: Path) -> dict | None:
    """SESSION_FILE's content; None when it is missing or not a JSON object (a run started
    before it was written, or a damaged file: its provenance is then unknown)."""
    return read_json(os.path.join(run_dir, SESSION_FILE))


def _label(record: dict) -> str:
    commit = str(record.get("commit") or "unknown")[:10]
    dirty = "" if not record.get("dirty") else f" (dirty {record['diff']})" if record.get("diff") else " (dirty)"
    return f"version {record.get('package_version')} commit {commit}{dirty} torch {record.get('torch')}"


def provenance_differences(runs: Iterable[tuple[str, dict | None, list]], named: int = 8) -> list[str]:
    """Lines for `status` about the (run id, provenance, provenance_history) of a sweep's
    runs: the groups of runs whose code differs (the largest counted, the others with up
    to `named` run ids each), and the runs trained with more than one code. Runs without
    a record (never started, or started before provenance was recorded) are left out."""
    groups: dict[str, list[str]] = {}
    mixed = []
    for run_id, record, history in runs:
        if not isinstance(record, dict):
            continue
        groups.setdefault(_label(record), []).append(run_id)
        earlier = [h for h in history or [] if isinstance(h, dict)]
        if earlier:
            mixed.append(f"{run_id} ({' -> '.join(_label(r) for r in [*earlier, record])})")
    lines = []
    if len(groups) > 1:
        ordered = sorted(groups.items(), key=lambda item: -len(item[1]))
        parts = [f"{ordered[0][0]} ({len(ordered[0][1])} run{'s' if len(ordered[0][1]) > 1 else ''})"]
        for label, ids in ordered[1:]:
            shown = ", ".join(ids[:named]) + (f", +{len(ids) - named} more" if len(ids) > named else "")
            parts.append(f"{label} ({len(ids)} run{'s' if len(ids) > 1 else ''}: {shown})")
        lines.append("provenance differs: " + " vs ".join(parts))
    if mixed:
        lines.append("resumed under different code: " + "; ".join(mixed))
    return lines
