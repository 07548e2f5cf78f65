"""A sweep's runs, read once: SWEEP_DIR/runs/<run_id>/spec.yaml of every run.

One command takes one snapshot and hands it on -- `submit` to its --wait and `run` to the
analysis, `cancel` to both of its status passes -- and each poll of --wait works on it:
a spec never changes under a run id (the id is the spec's hash), so no spec.yaml is parsed
twice in a command, only the files a run's progress changes are read again. Runs are
selected by id or unique id prefix.

`status` needs only a few facts of each spec (``SpecSummary``), and parsing 10,000 YAML
specs takes longer than the rest of a poll. So the snapshot keeps each readable spec's
summary in SWEEP_DIR/.spec_summaries.json under the spec file's identity (inode, size,
mtime in ns), the package version and a hash of the code that derives it: a run whose
spec.yaml is unchanged since it was last read is not parsed again until a caller asks for
its full spec; an edited, replaced or new spec.yaml is parsed (and judged readable or not)
as before. The file is only a cache: written atomically when something new was parsed,
never required, and rebuilt when missing, unreadable or written by other code.
"""
from __future__ import annotations

import contextlib
import functools
import gc
import hashlib
import json
import os
import sys
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from ebt_scaling.harness.contract import model_config as model_config_module
from ebt_scaling.harness.contract import spec as spec_module
from ebt_scaling.harness.contract.errors import ConfigError, DispatchError
from ebt_scaling.harness.contract.run_dir import RunDir, atomic_write_text
from ebt_scaling.harness.contract.spec import RunSpec, load_spec
from ebt_scaling.models import flops as flops_module
from ebt_scaling.models.flops import training_step_flops

SUMMARY_CACHE = ".spec_summaries.json"


@dataclass(frozen=True)
class SpecSummary:
    """The facts of a run's spec that `status` shows and prices."""

    arch: str
    tags: dict[str, str]
    total_steps: int
    tokens_per_step: int
    n_layers: int
    d_model: int
    precision: str
    step_flops_full: float  # FLOPs of one training step, full convention (GPU-hours left)

    @classmethod
    def of(cls, spec: RunSpec) -> SpecSummary:
        m = spec.model
        return cls(arch=m.arch, tags=dict(spec.tags), total_steps=spec.total_steps,
                   tokens_per_step=spec.tokens_per_step, n_layers=m.n_layers, d_model=m.d_model,
                   precision=spec.precision,
                   step_flops_full=training_step_flops(m, spec.train.batch_size, convention="full"))


@dataclass(frozen=True)
class SweepRun:
    run_id: str
    path: Path
    summary: SpecSummary
    parsed: RunSpec | None = field(default=None, repr=False, compare=False)  # when the snapshot parsed it

    @cached_property
    def spec(self) -> RunSpec:
        """The run's spec: parsed when the snapshot was taken, else (its summary came from
        the cache) the first time a caller asks."""
        return self.parsed if self.parsed is not None else load_spec(self.path / "spec.yaml")

    @property
    def run(self) -> RunDir:
        return RunDir(self.path)


@dataclass(frozen=True)
class UnreadableRun:
    """A run directory whose spec.yaml cannot be read as a RunSpec (`status` lists it as failed)."""

    run_id: str
    path: Path
    error: str


@dataclass(frozen=True)
class SweepSnapshot:
    sweep_dir: Path
    runs: tuple[SweepRun, ...]  # sorted by run id
    unreadable: tuple[UnreadableRun, ...] = ()

    @classmethod
    def read(cls, sweep_dir: str | Path) -> SweepSnapshot:
        """Every run of the sweep directory: its spec's summary (from the cache where its
        spec.yaml is unchanged, else parsed now), or why its spec cannot be read."""
        sweep_dir = Path(sweep_dir)
        runs_dir = sweep_dir / "runs"
        if not runs_dir.is_dir():
            raise DispatchError(f"{sweep_dir}: not a sweep directory (no runs/ inside); "
                                "create one with `ebt-scaling plan SWEEP --write DIR`")
        cached = _read_cache(sweep_dir)
        kept: dict[str, list] = {}
        runs, unreadable = [], []
        with _cyclic_gc_paused():
            for name in sorted(os.listdir(runs_dir)):
                if name.startswith("."):  # hidden entries are not runs
                    continue
                try:  # a str path: a sweep has thousands of runs, and a Path costs more than the stat
                    st = os.stat(os.path.join(runs_dir, name, "spec.yaml"))
                except OSError:  # no spec.yaml: not a run directory
                    continue
                run_dir = runs_dir / name
                identity = [st.st_ino, st.st_size, st.st_mtime_ns]
                entry = cached.get(name)
                if entry is not None and entry[0] == identity:
                    try:
                        runs.append(SweepRun(name, run_dir, SpecSummary(**entry[1])))
                        kept[name] = entry
                        continue
                    except TypeError:  # fields of other code: parse the spec again
                        pass
                try:
                    spec = load_spec(run_dir / "spec.yaml")
                except ConfigError as exc:
                    unreadable.append(UnreadableRun(name, run_dir, str(exc)))
                    continue
                summary = SpecSummary.of(spec)
                runs.append(SweepRun(name, run_dir, summary, spec))
                kept[name] = [identity, asdict(summary)]
        if kept != cached:
            _write_cache(sweep_dir, kept)
        return cls(sweep_dir, tuple(runs), tuple(unreadable))

    @classmethod
    def of(cls, sweep: str | Path | SweepSnapshot) -> SweepSnapshot:
        """The snapshot a caller took already, else one of the sweep directory it names."""
        return sweep if isinstance(sweep, SweepSnapshot) else cls.read(sweep)

    def resolved(self) -> SweepSnapshot:
        """The same runs under the sweep directory's absolute path (what jobs that start
        elsewhere are handed), without parsing anything again."""
        root = self.sweep_dir.resolve()
        return replace(self, sweep_dir=root, runs=tuple(replace(r, path=root / "runs" / r.run_id) for r in self.runs),
                       unreadable=tuple(replace(u, path=root / "runs" / u.run_id) for u in self.unreadable))

    def require_readable(self) -> SweepSnapshot:
        """The snapshot, unless a spec.yaml cannot be read: DispatchError naming it (submitting
        or cancelling around a damaged run would hide it)."""
        if self.unreadable:
            raise DispatchError(self.unreadable[0].error)
        return self

    def select(self, only: list[str] | None) -> SweepSnapshot:
        """The runs `only` names by id or unique id prefix (every run when None); an unreadable
        run a key names is kept in `unreadable`."""
        if not only:
            return self
        chosen: dict[str, SweepRun] = {}
        for key in only:
            hits = [r for r in self.runs if r.run_id == key or r.run_id.startswith(key)]
            if not hits and any(r.run_id.startswith(key) for r in self.unreadable):
                continue  # listed in `unreadable`
            if len(hits) != 1:
                raise DispatchError(f"run {key!r}: " + ("no such run in " + str(self.sweep_dir) if not hits else
                                                        f"ambiguous prefix ({len(hits)} runs); give more digits"))
            chosen.setdefault(hits[0].run_id, hits[0])
        unreadable = tuple(r for r in self.unreadable if any(r.run_id.startswith(key) for key in only))
        return replace(self, runs=tuple(chosen.values()), unreadable=unreadable)

    @property
    def specs(self) -> dict[str, RunSpec]:
        """Each readable run's spec by its run id (what the analysis takes instead of parsing them again)."""
        return {r.run_id: r.spec for r in self.runs}


@contextlib.contextmanager
def _cyclic_gc_paused():
    """No cyclic garbage collection while specs are parsed: parsing leaves no cycles (reference
    counting frees it all), but every full collection walks the parsed specs the snapshot keeps,
    which made collections a fifth of a first `status` of 10,000 runs."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@functools.cache
def _summary_version() -> str:
    """What a cached summary was made by: the package version and a hash of the code that
    reads a spec and derives its summary (spec and model validation, FLOP accounting, this
    module), so that a summary made by other code -- a new release or an edited checkout --
    is never used."""
    try:
        release = version("ebt-scaling")
    except PackageNotFoundError:  # imported from a plain source tree
        release = "unknown"
    digest = hashlib.sha256()
    for module in (spec_module, model_config_module, flops_module, sys.modules[__name__]):
        digest.update(Path(module.__file__).read_bytes())
    return f"{release} {digest.hexdigest()[:16]}"


def _read_cache(sweep_dir: Path) -> dict[str, list]:
    """run id -> [spec.yaml's identity, its SpecSummary's fields]; {} for a missing or
    damaged file, or one another version wrote."""
    try:
        data = json.loads((sweep_dir / SUMMARY_CACHE).read_bytes())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != _summary_version() or not isinstance(data.get("runs"), dict):
        return {}
    return {k: v for k, v in data["runs"].items() if isinstance(v, list) and len(v) == 2 and isinstance(v[1], dict)}


def _write_cache(sweep_dir: Path, runs: dict[str, list]) -> None:
    """Best effort: a sweep directory this user may only read is read, not cached."""
    try:
        atomic_write_text(sweep_dir / SUMMARY_CACHE, json.dumps({"version": _summary_version(), "runs": runs}))
    except OSError:
        pass
