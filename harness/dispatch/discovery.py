"""Finding a sweep's runs: SWEEP_DIR/runs/<run_id>/spec.yaml, selected by id or prefix."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ebt_scaling.harness.contract.errors import ConfigError, DispatchError
from ebt_scaling.harness.contract.run_dir import RunDir
from ebt_scaling.harness.contract.spec import RunSpec, load_spec


@dataclass
class SweepRun:
    run_id: str
    path: Path
    spec: RunSpec

    @property
    def run(self) -> RunDir:
        return RunDir(self.path)


def discover(sweep_dir: str | Path, only: list[str] | None = None,
             unreadable: list[tuple[str, Path, str]] | None = None) -> list[SweepRun]:
    """The runs of a sweep directory (SWEEP_DIR/runs/<run_id>/spec.yaml), sorted by id;
    `only` selects runs by id or unique id prefix. A spec.yaml that cannot be read raises,
    unless `unreadable` is given: then its (run id, path, error) is added there instead
    (`status` lists a damaged run and goes on with the others)."""
    sweep_dir = Path(sweep_dir)
    runs_dir = sweep_dir / "runs"
    if not runs_dir.is_dir():
        raise DispatchError(f"{sweep_dir}: not a sweep directory (no runs/ inside); "
                            "create one with `ebt-scaling plan SWEEP --write DIR`")
    found = []
    for spec_path in sorted(runs_dir.glob("*/spec.yaml")):
        try:
            spec = load_spec(spec_path)
        except ConfigError as exc:
            if unreadable is None:
                raise DispatchError(str(exc)) from None
            if not only or any(spec_path.parent.name.startswith(key) for key in only):
                unreadable.append((spec_path.parent.name, spec_path.parent, str(exc)))
            continue
        found.append(SweepRun(spec_path.parent.name, spec_path.parent, spec))
    if only:
        chosen = []
        for key in only:
            hits = [r for r in found if r.run_id == key or r.run_id.startswith(key)]
            if not hits and any(run_id.startswith(key) for run_id, _, _ in unreadable or ()):
                continue  # listed in `unreadable`
            if len(hits) != 1:
                raise DispatchError(f"run {key!r}: " + ("no such run in " + str(sweep_dir) if not hits else
                                                        f"ambiguous prefix ({len(hits)} runs); give more digits"))
            chosen.append(hits[0])
        found = list({r.run_id: r for r in chosen}.values())
    return found
