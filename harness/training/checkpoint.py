"""Checkpoints for exact resume: model, optimizer, every RNG state and the data position.

Written atomically (whole file to a temp name, fsync, rename) and kept two deep, so a
kill during a save, or a latest checkpoint that turns out unreadable, falls back to the
previous valid one -- and the run log says so. Checkpoints at the steps a run is asked to
keep (its cooldown branches start there: cooldown_branch.py) are never rotated away.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ebt_scaling.harness.contract.run_dir import RunDir, atomic_write_with

KEEP = 2


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_path(run: RunDir, step: int) -> Path:
    return run.checkpoint_dir / f"step_{step:08d}.pt"


def checkpoint_step(path: Path) -> int:
    return int(path.stem.removeprefix("step_"))


def save_checkpoint(run: RunDir, step: int, payload: dict[str, Any], keep: frozenset[int] = frozenset()) -> Path:
    """Write the checkpoint of `step`; keep the newest KEEP others and those at the `keep` steps."""
    path = checkpoint_path(run, step)
    # Streamed into the temporary file: no second in-memory copy of a large checkpoint.
    atomic_write_with(path, lambda f: torch.save({"step": step, **payload}, f))
    rotating = [p for p in run.checkpoints() if checkpoint_step(p) not in keep]
    for old in rotating[KEEP:]:
        old.unlink(missing_ok=True)
    return path


def load_latest_checkpoint(run: RunDir, map_location: str | torch.device = "cpu") -> dict[str, Any] | None:
    """The newest checkpoint that loads; unreadable ones are reported and skipped."""
    for path in run.checkpoints():
        try:
            state = torch.load(path, map_location=map_location, weights_only=False)
            if not isinstance(state, dict) or "step" not in state:
                raise ValueError("not a checkpoint of this harness")
        except Exception as exc:  # a torn or corrupt file: any unpickling error
            run.log(f"checkpoint {path.name} is unreadable ({type(exc).__name__}: {exc}); trying the previous one")
            continue
        run.log(f"resuming from {path.name} (step {state['step']})")
        return state
    return None
