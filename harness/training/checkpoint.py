"""Checkpoints for exact resume: model, optimizer, every RNG state and the data position.

Written atomically (whole file to a temp name, fsync, rename) and kept two deep, so a
kill during a save, or a latest checkpoint that turns out unreadable, falls back to the
previous valid one -- and the run log says so. Checkpoints at the steps a run is asked to
keep (its cooldown branches start there: cooldown_branch.py) are never rotated away.

A checkpoint is an untrusted file (anyone who can write to a sweep can drop one in): it
is read with ``torch.load(weights_only=True)``, which builds tensors and plain containers
and refuses every other global, so a pickle payload fails to load instead of running. The
payload is saved in those types only: the RNG states as tuples, lists and tensors, the
data position as ints, EBT's replay buffer as tensors. A save that fails (a full disk)
leaves the previous checkpoint, removes its temporary, says so in train.log and fails the run.
"""
from __future__ import annotations

import contextlib
import logging
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ebt_scaling.harness.contract.run_dir import RunDir, atomic_write_with

KEEP = 2

# Checkpoints written before the RNG states were saved as plain types hold numpy's MT19937
# state as a uint32 ndarray. These globals are all such a file needs beyond weights_only's
# own: numpy's array reconstructor (the function numpy pickles every array with), the
# array class, the dtype and its uint32 class. They rebuild an array and run nothing else.
# Allowed for the whole process (add_safe_globals, since torch 2.4; the scoped context
# manager is newer).
torch.serialization.add_safe_globals([np.zeros(0).__reduce__()[0], np.ndarray, np.dtype, type(np.dtype(np.uint32))])


class UnreadableCheckpoint(ValueError):
    """A checkpoint that is torn, foreign, or holds something other than a checkpoint's types."""


def rng_state() -> dict[str, Any]:
    name, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": (name, keys.tolist(), pos, has_gauss, cached_gaussian)}  # a list: no numpy global to load
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached_gaussian = state["numpy"]  # keys: a list, or an ndarray in older files
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached_gaussian))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_path(run: RunDir, step: int) -> Path:
    return run.checkpoint_dir / f"step_{step:08d}.pt"


def checkpoint_step(path: Path) -> int:
    return int(path.stem.removeprefix("step_"))


def save_checkpoint(run: RunDir, step: int, payload: dict[str, Any], keep: frozenset[int] = frozenset()) -> Path:
    """Write the checkpoint of `step`; keep the newest KEEP others and those at the `keep` steps.
    A failed write (OSError: a full disk, a quota) is logged, with the checkpoint kept, and raised."""
    path = checkpoint_path(run, step)
    try:
        # Streamed into the temporary file: no second in-memory copy of a large checkpoint.
        atomic_write_with(path, lambda f: torch.save({"step": step, **payload}, f))
    except OSError as exc:
        previous = next((p.name for p in run.checkpoints() if p != path), None)
        message = (f"checkpoint {path.name} not written ({exc.strerror or exc}); "
                   + (f"{previous} is kept: free space in {run.checkpoint_dir}, then run again to resume from it"
                      if previous else "no earlier checkpoint: run again, from step 0, once there is space"))
        with contextlib.suppress(OSError):  # the log may not fit on that disk either
            run.log(message, logging.ERROR)
        raise  # as it came: the CLI and the dispatcher's failure line name the file and the reason
    rotating = [p for p in run.checkpoints() if checkpoint_step(p) not in keep]
    for old in rotating[KEEP:]:
        old.unlink(missing_ok=True)
    return path


def _why(exc: Exception) -> str:
    """One line: weights_only's refusal names the global the file asked for; else the first line."""
    text = str(exc)
    refused = re.search(r"Unsupported global: GLOBAL (\S+)|but got <class '([^']+)'>", text)
    if refused:
        return f"it asks for {refused.group(1) or refused.group(2)}, which a checkpoint never holds; refused, nothing run"
    return f"{type(exc).__name__}: {(text.splitlines() or [''])[0]}"


def read_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint in `path`; UnreadableCheckpoint (saying why in one line) for anything else."""
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # a torn, foreign or hostile file: any unpickling error
        raise UnreadableCheckpoint(f"checkpoint {path.name} is unreadable ({_why(exc)})") from exc
    if not isinstance(state, dict) or "step" not in state:
        raise UnreadableCheckpoint(f"checkpoint {path.name} is unreadable (not a checkpoint of this harness)")
    return state


def load_latest_checkpoint(run: RunDir, map_location: str | torch.device = "cpu",
                           report: bool = True) -> dict[str, Any] | None:
    """The newest checkpoint that loads; unreadable ones are skipped, and with `report` (the
    main process: every process reads the same files) said in train.log, as is the one resumed from."""
    for path in run.checkpoints():
        try:
            state = read_checkpoint(path, map_location)
        except UnreadableCheckpoint as exc:
            if report:
                run.log(f"{exc}; trying the previous one", logging.WARNING)
            continue
        if report:
            run.log(f"resuming from {path.name} (step {state['step']})")
        return state
    return None
