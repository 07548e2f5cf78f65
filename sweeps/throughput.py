"""The throughput file, and the training rate behind every GPU-hour estimate.

`ebt-scaling bench --save [FILE]` writes the measured figures of each benchmarked model
into a JSON file; `plan` and `status` read it (``--throughput FILE``; default
``default_throughput_path()`` when that file exists) and turn training FLOPs into
GPU-hours: hours = full-convention FLOPs / achieved FLOP/s / 3600.

Which rate a run gets (``Rates.rate``), first match wins:

1. the sweep file's ``throughput.mfu`` when the user set it (a number for every
   architecture, or a mapping ``{ebt: 0.05, transformer: 0.2}`` for the ones it names),
   times ``throughput.peak_tflops``;
2. a measured entry of the file: same architecture, on one device (``device``, a
   case-insensitive substring of the device name; default the device of the newest GPU
   entry, or of the newest entry when the file holds no GPU figures), the run's precision
   when such entries exist (else any), and the nearest size in log(n_layers x d_model^2)
   (proportional to the non-embedding parameter count within an architecture); ties go to
   the newest entry. Its achieved FLOP/s is used as measured: no extrapolation in size,
   batch or context (larger models usually run at a higher MFU, so figures from a smaller
   size overstate the hours);
3. the architecture's documented ``default_mfu`` (``Architecture``; GENERIC_DEFAULT_MFU
   when an architecture sets none) times the peak.

Torch-free: `plan` and `status` run on login nodes.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from ebt_scaling.harness.contract.architecture import ARCHITECTURES
from ebt_scaling.harness.contract.errors import ConfigError, require
from ebt_scaling.harness.contract.formatting import si
from ebt_scaling.harness.contract.run_dir import atomic_write_json
from ebt_scaling.harness.contract.typed_config import from_dict

ENV_VAR = "EBT_SCALING_THROUGHPUT"
FORMAT = "ebt-scaling throughput"
VERSION = 1
DEFAULT_PEAK_TFLOPS = 989.0  # H100 / H200 SXM, dense bf16 (docs/flops.md)
GENERIC_DEFAULT_MFU = 0.05  # an architecture whose registry entry sets no default_mfu
BENCH_HINT = "run `ebt-scaling bench --save` on your GPU"


def default_throughput_path() -> Path:
    """Where `bench --save` writes and `plan` / `status` read by default: $EBT_SCALING_THROUGHPUT
    if set, else $XDG_CACHE_HOME/ebt-scaling/throughput.json, else
    ~/.cache/ebt-scaling/throughput.json. The one place that resolves it."""
    explicit = os.environ.get(ENV_VAR)
    if explicit:
        return Path(explicit).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache).expanduser() / "ebt-scaling" / "throughput.json"


def display_path(path: Path | str) -> str:
    """A path with the home directory written as ~."""
    text, home = str(path), str(Path.home())
    return "~" + text[len(home):] if home not in ("", "/") and (text == home or text.startswith(home + os.sep)) else text


# --------------------------------------------------------------------------- the file
@dataclass(frozen=True)
class BenchShape:
    n_layers: int
    d_model: int
    n_heads: int
    vocab: int
    ctx: int
    batch: int

    def __post_init__(self) -> None:
        for name in ("n_layers", "d_model", "n_heads", "vocab", "ctx", "batch"):
            require(getattr(self, name) >= 1, name, f"must be a positive integer, got {getattr(self, name)}")

    @property
    def size(self) -> float:
        """n_layers x d_model^2: proportional to the non-embedding parameters of one architecture."""
        return float(self.n_layers) * self.d_model ** 2


@dataclass(frozen=True, eq=False)  # compared and hashed by identity (options is a dict)
class ThroughputEntry:
    """One benchmarked model: what `ebt-scaling bench` measured (harness/benchmarks/steps.py)."""

    arch: str  # the registry name (model.arch)
    size: str  # a ladder name (xxs) or L<layers>-d<d_model>
    shape: BenchShape
    precision: str  # fp32 | bf16 (autocast)
    compiled: bool
    device: str  # torch.cuda.get_device_name(), or a CPU description
    torch_version: str
    date: str  # ISO 8601, when it was measured
    step_ms: float  # median training step
    tokens_per_s: float
    flops_per_step: float  # counted by FlopCounterMode: the full convention
    achieved_flops_per_s: float  # flops_per_step / step time
    mfu: float | None = None  # achieved / peak_flops_per_s; None where no peak is known (CPU)
    peak_flops_per_s: float | None = None
    device_type: str = "cuda"  # cuda | cpu | ...
    label: str = ""  # the architecture's label when measured
    matmul_precision: str = "highest"
    params_non_embedding: int | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        require(bool(self.arch), "arch", "must name an architecture, e.g. ebt")
        require(bool(self.device), "device", "must name the device, e.g. NVIDIA H100 80GB HBM3")
        for name in ("step_ms", "tokens_per_s", "flops_per_step", "achieved_flops_per_s"):
            value = getattr(self, name)
            require(math.isfinite(value) and value > 0, name, f"must be a number > 0, got {value!r}")
        for name in ("mfu", "peak_flops_per_s"):
            value = getattr(self, name)
            require(value is None or (math.isfinite(value) and value > 0), name,
                    f"must be a number > 0 or null, got {value!r}")
        try:
            datetime.fromisoformat(self.date)
        except ValueError:
            raise ConfigError(f"date: must be an ISO 8601 date, e.g. 2026-11-30T12:00:00+00:00, got {self.date!r}") \
                from None

    @property
    def key(self) -> tuple:
        """Entries with the same key replace each other when saving."""
        return self.arch, self.shape, self.precision, self.device

    @property
    def day(self) -> str:
        return self.date[:10]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ThroughputFile:
    path: Path
    entries: tuple[ThroughputEntry, ...]


def _entries_from(data: Any, where: str) -> tuple[ThroughputEntry, ...]:
    require(isinstance(data, dict), where, f"must be a JSON object {{format, version, entries}}, got "
                                           f"{type(data).__name__}")
    require(data.get("format") == FORMAT, f"{where}: format", f"must be {FORMAT!r}, got {data.get('format')!r}; "
                                                              "write the file with `ebt-scaling bench --save`")
    version = data.get("version")
    require(version == VERSION, f"{where}: version",
            f"must be {VERSION}, got {version!r}" + ("; this file was written by a newer ebt-scaling: upgrade"
                                                     if isinstance(version, int) and version > VERSION else ""))
    entries = data.get("entries")
    require(isinstance(entries, list), f"{where}: entries", "must be a list of measured entries")
    out = []
    for i, entry in enumerate(entries):
        try:
            out.append(from_dict(ThroughputEntry, entry, f"entries[{i}]"))
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    return tuple(out)


def load_throughput_file(path: str | Path) -> ThroughputFile:
    """Read and validate a throughput file; ConfigError 'FILE: field: message' when it is not one."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the throughput file ({exc.strerror})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: line {exc.lineno}: invalid JSON ({exc.msg}); fix it, or delete the file and run "
                          "`ebt-scaling bench --save` again") from None
    return ThroughputFile(path, _entries_from(data, str(path)))


def resolve_throughput_file(path: str | Path | None) -> ThroughputFile | None:
    """The file `--throughput PATH` names (it must exist), else the default one if it exists, else None."""
    if path is not None:
        if not Path(path).is_file():
            raise ConfigError(f"--throughput: {path} does not exist; write it with `ebt-scaling bench --save {path}`")
        return load_throughput_file(path)
    default = default_throughput_path()
    return load_throughput_file(default) if default.is_file() else None


def save_entries(path: str | Path, new: list[dict[str, Any]]) -> ThroughputFile:
    """Merge `new` entries into the throughput file at `path` (an entry replaces one of the same
    architecture, shape, precision and device) and write it atomically. An existing file that
    is not a valid throughput file is left alone: ConfigError naming it."""
    path = Path(path)
    old = load_throughput_file(path).entries if path.exists() else ()
    added = [from_dict(ThroughputEntry, e, f"entries[{i}]") for i, e in enumerate(new)]
    keys = {e.key for e in added}
    merged = [e for e in old if e.key not in keys] + added
    try:
        atomic_write_json(path, {"format": FORMAT, "version": VERSION, "entries": [e.to_json() for e in merged]})
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write the throughput file ({exc.strerror}); pass another --save PATH") \
            from None
    return ThroughputFile(path, tuple(merged))


# --------------------------------------------------------------------------- rates
@dataclass(frozen=True)
class Rate:
    """The training rate of one architecture at one size: achieved FLOP/s and where it came from."""

    arch: str
    flops_per_s: float
    source: Literal["sweep", "measured", "default"]
    mfu: float | None
    peak_tflops: float | None = None  # sweep / default: the peak mfu applies to
    entry: ThroughputEntry | None = None  # measured
    file: str | None = None  # the throughput file (measured, or consulted without an entry)
    note: str = ""  # default: why no measurement was used

    def hours(self, full_flops: float) -> float:
        return full_flops / self.flops_per_s / 3600.0

    def figure(self) -> str:
        """'3.1% MFU' or, without a known peak (CPU), '243M FLOP/s'."""
        return f"{100 * self.mfu:.2g}% MFU" if self.mfu is not None else f"{si(self.flops_per_s)} FLOP/s"

    def where(self) -> str:
        """The measurement's details: 'NVIDIA H100 80GB HBM3, xxs, bf16, 2026-11-30'."""
        e = self.entry
        return ", ".join(x for x in (e.device, e.size or f"L{e.shape.n_layers}-d{e.shape.d_model}",
                                     e.precision + (" compiled" if e.compiled else ""), e.day) if x)

    def to_json(self) -> dict[str, Any]:
        out = {"arch": self.arch, "source": self.source, "mfu": self.mfu,
               "achieved_flops_per_second": self.flops_per_s, "peak_tflops": self.peak_tflops, "file": self.file}
        if self.entry is not None:
            out["entry"] = self.entry.to_json()
        return out


def describe(label: str, rates: list[Rate]) -> str:
    """One line saying which figure the GPU-hours of `label`'s runs used, e.g.
    'EBT: 3.1% MFU measured (bench file ~/.cache/ebt-scaling/throughput.json, NVIDIA H100 80GB HBM3,
    xxs, bf16, 2026-11-30)' or 'EBT: 5% MFU of 989 TFLOP/s (documented default; run
    `ebt-scaling bench --save` on your GPU)'."""
    unique = list(dict.fromkeys(rates))
    parts = []
    for kind in ("sweep", "measured", "default"):
        group = [r for r in unique if r.source == kind]
        if not group:
            continue
        if kind == "measured":
            file = display_path(group[0].file or "")
            if len(group) == 1:
                parts.append(f"{group[0].figure()} measured (bench file {file}, {group[0].where()})")
            else:
                parts.append(f"measured (bench file {file}): " + "; ".join(f"{r.figure()} ({r.where()})" for r in group))
        else:
            r = group[0]
            why = "sweep file throughput.mfu" if kind == "sweep" else (
                f"documented default; {r.note + '; ' if r.note else ''}{BENCH_HINT}")
            parts.append(f"{r.figure()} of {r.peak_tflops:g} TFLOP/s ({why})")
    return f"{label}: " + "; ".join(parts)


class Rates:
    """Resolves the rate of (architecture, shape, precision); cached, so planning 10,000 runs
    asks each combination once. ``mfu``: the sweep file's explicit throughput.mfu (None, a
    number for every architecture, or {arch: mfu}); ``device``: a substring of the device
    name whose entries to use (default: see the module docstring)."""

    def __init__(self, file: ThroughputFile | None, *, peak_tflops: float = DEFAULT_PEAK_TFLOPS,
                 mfu: float | Mapping[str, float] | None = None, device: str | None = None):
        self.file = file
        self.peak_tflops = peak_tflops
        self.mfu = mfu
        self.device = self._pick_device(device)
        self._cache: dict[tuple, Rate] = {}

    def _pick_device(self, want: str | None) -> str | None:
        entries = self.file.entries if self.file else ()
        if want is not None:
            require(self.file is not None, "--throughput-device", "needs a throughput file (--throughput FILE, or "
                                                                  "`ebt-scaling bench --save` first)")
            matching = [e for e in entries if want.lower() in e.device.lower()]
            devices = sorted({e.device for e in entries})
            require(bool(matching), "--throughput-device",
                    f"no entry of {self.file.path} was measured on a device matching {want!r}; devices there: "
                    f"{', '.join(devices) or 'none'}")
            return max(matching, key=lambda e: _when(e.date)).device
        if not entries:
            return None
        gpus = [e for e in entries if e.device_type != "cpu"]
        return max(gpus or entries, key=lambda e: _when(e.date)).device

    def rate(self, arch: str, n_layers: int, d_model: int, precision: str = "bf16") -> Rate:
        key = (arch, n_layers, d_model, precision)
        hit = self._cache.get(key)
        if hit is None:
            hit = self._cache[key] = self._resolve(arch, n_layers, d_model, precision)
        return hit

    def _resolve(self, arch: str, n_layers: int, d_model: int, precision: str) -> Rate:
        file = str(self.file.path) if self.file else None
        explicit = self.mfu.get(arch) if isinstance(self.mfu, Mapping) else self.mfu
        if explicit is not None:
            return Rate(arch, self.peak_tflops * 1e12 * explicit, "sweep", explicit, self.peak_tflops)
        candidates = [e for e in (self.file.entries if self.file else ()) if e.arch == arch and e.device == self.device]
        if candidates:
            same = [e for e in candidates if e.precision == precision]
            target = math.log(float(n_layers) * d_model ** 2)
            best = min(same or candidates, key=lambda e: (abs(math.log(e.shape.size) - target), -_when(e.date)))
            return Rate(arch, best.achieved_flops_per_s, "measured", best.mfu, entry=best, file=file)
        default = default_mfu(arch)
        note = ""
        if self.file is not None:
            note = f"no {arch} entry" + (f" for {self.device}" if self.device else "") + \
                   f" in {display_path(self.file.path)}"
        return Rate(arch, self.peak_tflops * 1e12 * default, "default", default, self.peak_tflops, file=file,
                    note=note)


def default_mfu(arch: str) -> float:
    """The MFU assumed for `arch` without a measurement: its registry entry's default_mfu."""
    value = ARCHITECTURES.get(arch).default_mfu if arch in ARCHITECTURES else None
    return GENERIC_DEFAULT_MFU if value is None else value


def _when(date: str) -> float:
    return datetime.fromisoformat(date).timestamp()  # a date without a zone is local time
