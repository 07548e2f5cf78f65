"""What a tracking sink is, which ones exist, and how a run asks for them.

A run asks through one environment variable, ``EBT_SCALING_TRACK`` (comma-separated sink
names, e.g. ``tensorboard,wandb``; empty or ``none``: no tracking). An environment variable
because it reaches every process that trains without threading through the dispatch
layers: ``train``, an in-process debug submission, local workers and SLURM jobs (sbatch
passes the submitting environment on, and a requeued job keeps it). ``--track`` on
``train``, ``submit`` and ``run`` sets it for that command; a cluster profile's ``setup:``
lines can export it too.

Each sink lives in a module of its own, imported only when a run opens it, so a missing
optional library is a one-line ConfigError naming the extra to install.

Every session of a run starts each sink by replaying the metrics.jsonl rows up to its start
step (what earlier sessions logged, as the resume kept them, or a cooldown branch's copy of
its parent's rows), so each session's files hold the whole curve, the same in every sink.

A sink failing mid-run (a full disk under its files, a library error) costs the tracking,
not the run: it is closed as not clean, a warning names it, and training and metrics.jsonl
go on.
"""
from __future__ import annotations

import importlib
import importlib.util
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ebt_scaling.harness.contract.errors import require
from ebt_scaling.harness.contract.run_dir import RunDir

log = logging.getLogger(__name__)

TRACK_ENV = "EBT_SCALING_TRACK"


@dataclass(frozen=True)
class TrackedRun:
    """What a sink needs to know about the run it tracks."""

    directory: Path  # the run directory: each sink keeps its files in a folder of its own there
    name: str  # the run id
    project: str  # the sweep's name (W&B project)
    config: dict[str, Any]  # the run spec, as a plain dict
    start_step: int  # training (re)starts after this step; rows after it are written (again)


class Sink(Protocol):
    def write(self, row: dict[str, Any]) -> None:
        """One metrics.jsonl row (its "step" is the x axis)."""

    def close(self, clean: bool) -> None:
        """clean: every row given to write() was taken without an error. Only then may a sink
        set aside what earlier sessions left, which its replay made redundant."""


@dataclass(frozen=True)
class SinkKind:
    name: str
    module: str  # under ebt_scaling.harness.tracking; it defines open_sink(TrackedRun) -> Sink
    package: str  # the import it needs
    extra: str  # pip install 'ebt-scaling[extra]'


KINDS = {kind.name: kind for kind in (SinkKind("tensorboard", "tensorboard", "tensorboard", "tensorboard"),
                                      SinkKind("wandb", "wandb_offline", "wandb", "wandb"))}


def parse_track(text: str, key: str) -> tuple[str, ...]:
    """'tensorboard,wandb' -> ('tensorboard', 'wandb'); '' or 'none' -> (); ConfigError on `key` else."""
    names = tuple(dict.fromkeys(n.strip().lower() for n in text.split(",") if n.strip()))
    if names == ("none",):
        return ()
    unknown = [n for n in names if n not in KINDS]
    require(not unknown, key, f"unknown sink {unknown[0]!r}; use a comma-separated list of "
                              f"{', '.join(KINDS)}, or none" if unknown else "")
    return names


def requested_sinks() -> tuple[str, ...]:
    """The sinks EBT_SCALING_TRACK names."""
    return parse_track(os.environ.get(TRACK_ENV, ""), TRACK_ENV)


def check_installed(names: Iterable[str], key: str) -> None:
    """ConfigError on `key` naming the extra to install for the first sink whose library is missing."""
    for name in names:
        kind = KINDS[name]
        require(importlib.util.find_spec(kind.package) is not None, key,
                f"the {name} sink needs the {kind.package} package; pip install 'ebt-scaling[{kind.extra}]'")


def scalars(row: dict[str, Any]) -> dict[str, float]:
    """The row's numbers other than the step (booleans and strings are not plotted)."""
    return {k: float(v) for k, v in row.items()
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}


class SinkSet:
    """The open sinks of one run: each row goes to all; one that fails is dropped with a warning."""

    def __init__(self, sinks: dict[str, Sink]):
        self.sinks = sinks

    def write(self, row: dict[str, Any]) -> None:
        for name, sink in list(self.sinks.items()):
            try:
                sink.write(row)
            except Exception as exc:  # tracking is optional: it must never end a run
                log.warning("tracking: the %s sink failed at step %s (%s: %s); it stops, metrics.jsonl goes on",
                            name, row.get("step"), type(exc).__name__, exc)
                self._drop(name, clean=False)

    def close(self, clean: bool = True) -> None:
        for name in list(self.sinks):
            self._drop(name, clean)

    def _drop(self, name: str, clean: bool) -> None:
        sink = self.sinks.pop(name)
        try:
            sink.close(clean)
        except Exception as exc:
            log.warning("tracking: closing the %s sink failed (%s: %s)", name, type(exc).__name__, exc)


def open_sinks(names: Iterable[str], run: TrackedRun, key: str = TRACK_ENV) -> SinkSet:
    """The named sinks, open, with the earlier rows replayed (a replay that fails drops its sink)."""
    names = tuple(names)
    check_installed(names, key)
    opened = SinkSet({})
    try:
        for name in names:
            module = importlib.import_module(f"{__package__}.{KINDS[name].module}")
            opened.sinks[name] = module.open_sink(run)
            log.debug("tracking: %s sink open for %s (rows after step %d)", name, run.name, run.start_step)
    except BaseException:
        opened.close(clean=False)  # nothing replayed yet: the earlier sessions' files are still needed
        raise
    for row in RunDir(run.directory).metrics():  # the trainer kept only rows up to start_step
        if row["step"] <= run.start_step:
            opened.write(row)
    return opened
