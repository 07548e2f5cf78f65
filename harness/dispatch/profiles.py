"""Cluster profiles: where and with what resources a sweep's runs are trained.

A profile is a YAML file read into :class:`ClusterProfile` with one-line errors (unknown
keys, wrong types, impossible values). ``--profile NAME`` finds ``NAME.yaml`` among the
profiles shipped in harness/profiles/; anything with a slash or a .yaml suffix is a path.

Runs can be split into *resource classes* (``classes:``): each class overrides some of the
top-level resources and selects runs by their spec tags (``match: {size: [l, xl]}``) or by
an explicit ``resource_class`` tag. On SLURM every class becomes one job array.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from ebt_scaling.harness.contract.errors import ConfigError, require
from ebt_scaling.harness.contract.typed_config import from_dict, load_yaml

from .backend import BACKENDS

# Fields a resource class may override (None there = inherit the profile's value).
RESOURCE_FIELDS = ("partition", "account", "qos", "constraint", "gpus_per_node", "cpus_per_task", "mem_gb",
                   "timeout_min", "nodes", "tasks_per_node", "setup", "array_parallelism",
                   "additional_parameters")


@dataclass(frozen=True)
class ResourceClass:
    """Resources for a subset of runs; unset fields inherit the profile's."""

    name: str
    match: dict[str, list[str]] = field(default_factory=dict)  # spec tag -> accepted values (all must match)
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    gpus_per_node: int | None = None
    cpus_per_task: int | None = None
    mem_gb: float | None = None
    timeout_min: int | None = None
    nodes: int | None = None
    tasks_per_node: int | None = None
    setup: tuple[str, ...] | None = None
    array_parallelism: int | None = None
    additional_parameters: dict[str, str | int | bool] | None = None

    def __post_init__(self) -> None:
        require(bool(self.name) and self.name != "default", "name",
                 f"must be a non-empty name other than 'default', got {self.name!r}")
        for tag, values in self.match.items():
            ok = isinstance(values, str) or (isinstance(values, list) and all(isinstance(v, str) for v in values))
            require(ok, f"match.{tag}", f"must be a string or a list of strings, got {values!r}")

    def selects(self, tags: dict[str, str]) -> bool:
        if tags.get("resource_class") == self.name:
            return True
        # a string matches itself (not its substrings), a list any of its values
        return bool(self.match) and all(str(tags.get(k)) in ([v] if isinstance(v, str) else v)
                                        for k, v in self.match.items())


@dataclass(frozen=True)
class Resources:
    """What one run's job asks for: the profile's values with its class's overrides applied."""

    class_name: str
    partition: str | None
    account: str | None
    qos: str | None
    constraint: str | None
    gpus_per_node: int
    cpus_per_task: int | None
    mem_gb: float | None
    timeout_min: int
    nodes: int
    tasks_per_node: int
    setup: tuple[str, ...]
    array_parallelism: int
    additional_parameters: dict[str, str | int | bool]

    @property
    def world_size(self) -> int:
        return self.nodes * self.tasks_per_node

    def key(self) -> tuple:
        """Hashable identity: runs with equal keys share one job array."""
        return tuple((f.name, tuple(sorted(v.items())) if isinstance(v, dict) else v)
                     for f in dataclasses.fields(self) for v in [getattr(self, f.name)])


@dataclass(frozen=True)
class ClusterProfile:
    """A cluster's resources and submission options (see harness/profiles/*.yaml)."""

    name: str = "custom"
    description: str = ""
    # --- SLURM placement -------------------------------------------------------------
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    # --- resources per run ------------------------------------------------------------
    gpus_per_node: int = 0
    cpus_per_task: int | None = None  # also the torch thread count of a job
    mem_gb: float | None = None
    timeout_min: int = 1440  # wall-clock limit per job (local jobs too; submitit's default is 2 min)
    nodes: int = 1
    tasks_per_node: int = 1  # processes per node (data parallel: one per GPU)
    setup: tuple[str, ...] = ()  # shell lines run before the job (module load, conda activate, ...)
    array_parallelism: int = 64  # most array tasks running at once (SLURM %N)
    # extra sbatch flags, e.g. {requeue: true, exclude: node12} (true: a bare flag)
    additional_parameters: dict[str, str | int | bool] = field(default_factory=dict)
    # --- behaviour ----------------------------------------------------------------------
    log_folder: str = "jobs"  # submitit logs and pickles; relative to the sweep dir (must be shared storage)
    max_num_timeout: int = 3  # requeues after hitting the time limit before giving up
    signal_delay_s: int = 120  # USR2 this long before the time limit
    preempt_grace_s: int = 60  # after USR2, wait this long for a step boundary, then requeue anyway
    local_gpus: tuple[int, ...] | None = None  # local: GPU indices to use (default: all visible)
    local_cpu_workers: int = 1  # local without GPUs: jobs on the CPU at once
    classes: tuple[ResourceClass, ...] = ()

    def __post_init__(self) -> None:
        require(self.gpus_per_node >= 0, "gpus_per_node", f"must be >= 0, got {self.gpus_per_node}")
        require(self.cpus_per_task is None or self.cpus_per_task >= 1, "cpus_per_task",
                 f"must be >= 1 or null, got {self.cpus_per_task}")
        require(self.mem_gb is None or self.mem_gb > 0, "mem_gb", f"must be > 0 or null, got {self.mem_gb}")
        require(self.timeout_min >= 1, "timeout_min", f"must be >= 1 minute, got {self.timeout_min}")
        require(self.nodes >= 1, "nodes", f"must be >= 1, got {self.nodes}")
        require(self.tasks_per_node >= 1, "tasks_per_node", f"must be >= 1, got {self.tasks_per_node}")
        require(self.array_parallelism >= 1, "array_parallelism", f"must be >= 1, got {self.array_parallelism}")
        require(self.max_num_timeout >= 0, "max_num_timeout", f"must be >= 0, got {self.max_num_timeout}")
        require(self.signal_delay_s >= 1, "signal_delay_s", f"must be >= 1, got {self.signal_delay_s}")
        require(0 <= self.preempt_grace_s < self.signal_delay_s, "preempt_grace_s",
                 f"must be in [0, signal_delay_s={self.signal_delay_s}), got {self.preempt_grace_s}; the job "
                 "needs time to checkpoint after the grace period")
        require(self.local_cpu_workers >= 1, "local_cpu_workers", f"must be >= 1, got {self.local_cpu_workers}")
        require(bool(self.log_folder), "log_folder", "must be a non-empty path")
        names = [c.name for c in self.classes]
        dup = sorted({n for n in names if names.count(n) > 1})
        require(not dup, "classes", f"duplicate class name {dup[0]!r}" if dup else "")
        self.resources()  # validates the merged values
        for c in self.classes:
            self.resources(c.name)

    def class_for(self, tags: dict[str, str]) -> str:
        """Name of the first class selecting these spec tags, else 'default'."""
        for c in self.classes:
            if c.selects(tags):
                return c.name
        if "resource_class" in tags and tags["resource_class"] != "default":
            raise ConfigError(f"resource_class: tag {tags['resource_class']!r} names no class of profile "
                              f"{self.name!r}; known: default, {', '.join(c.name for c in self.classes) or '(none)'}")
        return "default"

    def resources(self, class_name: str = "default") -> Resources:
        values = {f: getattr(self, f) for f in RESOURCE_FIELDS}
        if class_name != "default":
            matches = [c for c in self.classes if c.name == class_name]
            require(bool(matches), "classes", f"no class named {class_name!r}")
            for f in RESOURCE_FIELDS:
                if (v := getattr(matches[0], f)) is not None:
                    values[f] = v
        res = Resources(class_name=class_name, **values)
        where = f"classes[{class_name}]" if class_name != "default" else ""
        key = lambda k: f"{where}.{k}" if where else k  # noqa: E731
        require(res.nodes >= 1 and res.tasks_per_node >= 1 and res.timeout_min >= 1, key("nodes"),
                 "nodes, tasks_per_node and timeout_min must be >= 1")
        require(res.gpus_per_node == 0 or res.tasks_per_node <= res.gpus_per_node, key("tasks_per_node"),
                 f"{res.tasks_per_node} tasks per node need as many GPUs, got gpus_per_node={res.gpus_per_node}; "
                 "run one task per GPU")
        return res

    def for_runs(self, tags_per_run: dict[str, dict[str, str]]) -> dict[str, Resources]:
        """run id -> the resources of its class."""
        return {run_id: self.resources(self.class_for(tags)) for run_id, tags in tags_per_run.items()}


def builtin_profiles() -> dict[str, Path]:
    """Shipped profile name -> file."""
    folder = resources.files("ebt_scaling.harness") / "profiles"
    return {Path(str(p)).stem: Path(str(p)) for p in folder.iterdir() if str(p).endswith(".yaml")}


def profile_from_dict(data: dict, source: str = "profile") -> ClusterProfile:
    try:
        return from_dict(ClusterProfile, data or {})
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def load_profile(name_or_path: str | None, cluster: str = "slurm") -> ClusterProfile:
    """A shipped profile by name (default: the cluster backend's), or a YAML file by path,
    checked against what that backend can run."""
    backend = BACKENDS.get(cluster, key="--cluster")
    name_or_path = name_or_path or backend.default_profile
    shipped = builtin_profiles()
    if name_or_path in shipped and "/" not in name_or_path:
        path = shipped[name_or_path]
    else:
        path = Path(name_or_path).expanduser()
        if not path.is_file():
            raise ConfigError(f"--profile: {name_or_path!r} is neither a file nor a shipped profile "
                              f"({', '.join(sorted(shipped))})")
    profile = profile_from_dict(load_yaml(path), str(path))
    if not profile.name or profile.name == "custom":
        profile = dataclasses.replace(profile, name=path.stem)
    try:
        backend.check_profile(profile)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return profile
