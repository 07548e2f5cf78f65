"""A sweep's runs, read once: SWEEP_DIR/runs/<run_id>/spec.yaml of every run, parsed.

One command takes one snapshot and hands it on -- `submit` to its --wait and `run` to the
analysis, `cancel` to both of its status passes -- and each poll of --wait works on it:
a spec never changes under a run id (the id is the spec's hash), so no spec.yaml is parsed
twice in a command, only the files a run's progress changes are read again. Runs are
selected by id or unique id prefix.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from ebt_scaling.harness.contract.errors import ConfigError, DispatchError
from ebt_scaling.harness.contract.run_dir import RunDir
from ebt_scaling.harness.contract.spec import RunSpec, load_spec


@dataclass(frozen=True)
class SweepRun:
    run_id: str
    path: Path
    spec: RunSpec

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
        """Every run of the sweep directory, its spec parsed (or why it cannot be)."""
        sweep_dir = Path(sweep_dir)
        runs_dir = sweep_dir / "runs"
        if not runs_dir.is_dir():
            raise DispatchError(f"{sweep_dir}: not a sweep directory (no runs/ inside); "
                                "create one with `ebt-scaling plan SWEEP --write DIR`")
        runs, unreadable = [], []
        for spec_path in sorted(runs_dir.glob("*/spec.yaml")):
            run_dir = spec_path.parent
            try:
                runs.append(SweepRun(run_dir.name, run_dir, load_spec(spec_path)))
            except ConfigError as exc:
                unreadable.append(UnreadableRun(run_dir.name, run_dir, str(exc)))
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
