"""A run directory and everything its files say about the run.

Layout (lingua style; the analysis reads nothing else):

    RUN_DIR/spec.yaml        the RunSpec (its hash is the directory's run id)
    RUN_DIR/metrics.jsonl    one JSON row per logged step / evaluation
    RUN_DIR/checkpoints/     step_XXXXXXXX.pt, the newest few kept
    RUN_DIR/train.log        human-readable log
    RUN_DIR/result.json      written once, atomically, when the run ends (done or diverged)
    RUN_DIR/provenance.json  the code and machine of the current session (written at its start)

Every whole-file write goes through a temporary file in the same directory, fsync and
rename, so readers never see half a file and a kill leaves the previous version intact.

Reading: result.json and metrics.jsonl are read here and only here, and what is read is
checked against what the trainer writes (a JSON object; the numbers it reads numbers).
Anything else -- bytes that are not UTF-8, JSON of another shape, a line that is not a
row -- raises RunFileError naming the file, so that `analyze` and `status` name the run
and go on with the others instead of failing inside a caller. The one exception is a
last metrics line without its newline: what a kill during the append leaves.
"""
from __future__ import annotations

import json
import logging
import os
import stat
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, BinaryIO

from .errors import ConfigError
from .formatting import jsonable

log = logging.getLogger(__name__)

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


def json_text(obj: Any) -> str:
    """Strict JSON (RFC 8259: what every reader accepts), indented, keys sorted. NaN and
    infinities have no JSON spelling and are written as null: a diverged run's last loss,
    an overflowed perplexity. (Values already passed through ``jsonable`` keep its strings.)"""
    return json.dumps(jsonable(obj, infinity_as_string=False), indent=2, sort_keys=True, allow_nan=False) + "\n"


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json_text(obj))


def read_json(path: Path) -> dict | None:
    """A JSON object file's content; None when it is missing, unreadable or not an object
    (marker, lease and plan files, whose callers treat those alike)."""
    try:
        with open(path, encoding="utf-8") as f:  # a str or a Path: no Path made per file of a sweep
            data = json.loads(f.read())
    except (OSError, ValueError):  # ValueError: not UTF-8, or not JSON
        return None
    return data if isinstance(data, dict) else None


class RunFileError(ConfigError):
    """A run directory's file holds something other than what the trainer writes."""

    def __init__(self, path: Path, problem: str):
        super().__init__(f"{path}: {problem}; restore it, or delete the run directory and submit the run again")
        self.path = Path(path)


# Values of a metrics row (and of result.json's "final") that readers use as numbers.
ROW_NUMBERS = ("step", "tokens", "train_loss", "val_loss", "val_ppl", "lr", "grad_norm", "tokens_per_s")
RESULT_NUMBERS = ("step", "total_steps", "val_loss", "val_ppl")
RESULT_OBJECTS = ("final", "evaluations", "params")
METRICS_TAIL_BYTES = 4096  # read at a time from the end of metrics.jsonl (a row is a few hundred bytes)
# The most RunDir.metrics_tail reads looking for a keyed row (a running run's last validation,
# which log-spaced evaluations leave far back): about 3,000 of the trainer's rows. Beyond it
# `status` shows no val_loss for the run until its next validation, so that one poll of a
# sweep with hundreds of running runs reads at most this much of each.
METRICS_TAIL_LIMIT = 1 << 20


def _not_number(value: Any) -> bool:
    return value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)))


# The types of a row's values that need no look at their key (the trainer logs only these).
_PLAIN_VALUES = frozenset({int, float, type(None)})


def row_problem(row: Any) -> str | None:
    """What is wrong with a metrics row (None: nothing): an object whose numbers are numbers.
    (`status` checks a few rows of every run of a sweep: a row of plain numbers is passed
    in one C-level scan, before any key is looked at.)"""
    if not isinstance(row, dict):
        return f"{json.dumps(row)[:40]} is not a JSON object"
    if _PLAIN_VALUES.issuperset(map(type, row.values())):
        return None
    for key, value in row.items():
        if value is None or type(value) is float or type(value) is int:
            continue
        if (key in ROW_NUMBERS or key.startswith("flops_")) and _not_number(value):
            return f"{key} = {json.dumps(value)[:40]} is not a number"
    return None


def result_problem(result: Any) -> str | None:
    """What is wrong with result.json's content (None: nothing)."""
    if not isinstance(result, dict):
        return f"{json.dumps(result)[:40]} is not a JSON object"
    if not isinstance(result.get("status", ""), str):
        return f"status = {json.dumps(result['status'])[:40]} is not a string"
    bad = [k for k in RESULT_NUMBERS if _not_number(result.get(k))]
    if bad:
        return f"{bad[0]} = {json.dumps(result[bad[0]])[:40]} is not a number"
    bad = [k for k in RESULT_OBJECTS if result.get(k) is not None and not isinstance(result[k], dict)]
    if bad:
        return f"{bad[0]} is not a JSON object"
    problem = row_problem(result.get("final") or {})
    return f"final: {problem}" if problem else None


def read_text(path: Path) -> str | None:
    """A run file's text; None when it does not exist, RunFileError when it cannot be read as text."""
    try:
        with open(path, "rb") as f:  # not Path.read_bytes: `status` reads one per run of a sweep
            return f.read().decode("utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise RunFileError(path, f"cannot be read ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise RunFileError(path, f"is not UTF-8 text (at byte offset {exc.start})") from None


def done_disagreement(result: dict, last: dict | None, total_steps: int) -> str | None:
    """Why the files of a run whose result.json says done disagree about how far it trained
    (None: they agree). The trainer logs the final step's row, then writes result.json with
    that step and row, so result.json's step, its final row and the last metrics row all
    equal the spec's total steps; a cut or stale metrics.jsonl would otherwise silently
    stand in for the finished run in the analysis (its tokens and FLOPs are the last row's).
    `last` is metrics.jsonl's last row (None: it has none)."""
    step = result.get("step")
    if step is not None and step != total_steps:
        return f"result.json says done at step {step}, but its spec plans {total_steps} steps"
    if result.get("total_steps") is not None and result["total_steps"] != total_steps:
        return f"result.json plans {result['total_steps']} steps, its spec {total_steps}"
    if last is None:
        return f"result.json says done at step {total_steps}, but metrics.jsonl has no rows"
    final = result.get("final") or {}
    if last.get("step") != total_steps:
        return (f"result.json says done at step {total_steps}, but metrics.jsonl ends at step {last.get('step')} "
                "(cut or damaged)")
    for key in ("tokens", *(k for k in final if k.startswith("flops_"))):
        ours, theirs = last.get(key), final.get(key)
        if ours is not None and theirs is not None and abs(ours - theirs) > 1e-9 * max(abs(ours), abs(theirs)):
            return f"metrics.jsonl's last row has {key} {ours:.6g}, result.json's final row {theirs:.6g}"
    return None


@dataclass(frozen=True)
class MetricsTail:
    """What RunDir.metrics_tail read of metrics.jsonl's end."""

    rows: list[dict]  # the last rows, oldest first
    keyed: dict | None  # the last row whose asked-for key is not None; None: none in the part read


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    spec_path = cached_property(lambda self: self.path / "spec.yaml")
    metrics_path = cached_property(lambda self: self.path / "metrics.jsonl")
    result_path = cached_property(lambda self: self.path / "result.json")
    log_path = cached_property(lambda self: self.path / "train.log")
    checkpoint_dir = cached_property(lambda self: self.path / "checkpoints")

    def checkpoints(self) -> list[Path]:
        """Checkpoint files, newest first."""
        return sorted(self.checkpoint_dir.glob("step_*.pt"), reverse=True)

    def remove_checkpoint_temporaries(self) -> list[Path]:
        """Delete what killed checkpoint saves left (atomic_write_with's .<name>.<random>.tmp).
        Only the run's trainer writes checkpoints, so when it (or the job about to start it)
        begins, every such file is stale; the trainer and the dispatcher both call this."""
        removed = []
        for tmp in sorted(self.checkpoint_dir.glob(".*.tmp")):
            try:
                tmp.unlink()
            except OSError:
                continue
            removed.append(tmp)
        return removed

    def result(self) -> dict | None:
        """result.json's content; None before the run ends. RunFileError if it is damaged."""
        text = read_text(self.result_path)
        if text is None:
            return None
        try:
            result = json.loads(text)
        except json.JSONDecodeError as exc:
            raise RunFileError(self.result_path, f"is not valid JSON ({exc.msg}, line {exc.lineno})") from None
        problem = result_problem(result)
        if problem:
            raise RunFileError(self.result_path, problem)
        return result

    def _metrics_row(self, line: str, where: str) -> dict:
        """One line of metrics.jsonl as a row; RunFileError naming the line (`where`) otherwise."""
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise RunFileError(self.metrics_path, f"{where} is not JSON ({exc.msg})") from None
        problem = row_problem(row)
        if problem is None and not isinstance(row.get("step"), int):
            problem = "it has no integer step"
        if problem:
            raise RunFileError(self.metrics_path, f"{where}: {problem}")
        return row

    def metrics(self) -> list[dict]:
        """The rows of metrics.jsonl. A last line without its newline is skipped: the torn
        append of a killed run (a resume rewrites the file without it). Any other line that
        is not a row raises RunFileError naming the line."""
        text = read_text(self.metrics_path)
        if not text:
            return []
        lines = text.split("\n")
        lines.pop()  # "" after the final newline, else the torn last line
        return [self._metrics_row(line, f"line {number}") for number, line in enumerate(lines, 1)]

    def _open_metrics(self) -> BinaryIO | None:
        """metrics.jsonl opened for reading; None when there is none. Anything but a regular file
        in its place (a FIFO, a device such as /dev/zero) is a RunFileError, never read forever."""
        try:  # O_NONBLOCK: opening a FIFO without a writer must not hang; a regular file ignores it
            fd = os.open(self.metrics_path, os.O_RDONLY | os.O_NONBLOCK)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise RunFileError(self.metrics_path, f"cannot be read ({exc.strerror})") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise RunFileError(self.metrics_path, "is not a regular file")
        return os.fdopen(fd, "rb")

    @staticmethod
    def _read_back(f: BinaryIO, enough: Callable[[bytes, int], bool], limit: int | None = None) -> tuple[bytes, int]:
        """(the end of file `f` from offset `start`, start): read backwards, METRICS_TAIL_BYTES
        first and twice as much each time after, until ``enough(chunk, start)`` -- called with
        each chunk read, from the file's end back, and where it starts -- the file's start, or
        `limit` bytes in all. The chunks are joined once, at the end: joining them as they come
        costs more than reading them (a fresh buffer of up to a MiB each time)."""
        start, read, size, chunks = f.seek(0, os.SEEK_END), 0, METRICS_TAIL_BYTES, []
        while start > 0 and (limit is None or read < limit):
            size = min(size, start) if limit is None else min(size, start, limit - read)
            start -= size
            f.seek(start)
            chunks.append(f.read(size))
            read += len(chunks[-1])
            if enough(chunks[-1], start):
                break
            size *= 2
        return b"".join(reversed(chunks)), start

    @staticmethod
    def _lines_read(rows: int) -> Callable[[bytes, int], bool]:
        """_read_back's `enough` for "the last `rows` complete lines and (unless at the file's
        start) the newline before the first of them"."""
        newlines = 0

        def enough(chunk: bytes, start: int) -> bool:
            nonlocal newlines
            newlines += chunk.count(b"\n")
            return newlines - (start > 0) >= rows
        return enough

    def last_metrics_row(self) -> dict | None:
        """metrics()[-1] (None: no rows), read from the end of the file: deciding whether a done
        run's files agree needs only its last row, and a sweep has thousands of long files.
        The same rules as metrics() for that row (a torn last line is skipped: the complete line
        before it counts); lines before it are not read, so their damage goes unnoticed here."""
        f = self._open_metrics()
        if f is None:
            return None
        with f:
            tail, _ = self._read_back(f, self._lines_read(1))
        end = tail.rfind(b"\n")  # where the last complete line ends (after it: the torn line, if any)
        if end < 0:  # no complete line
            return None
        line = tail[tail.rfind(b"\n", 0, end) + 1:end]
        try:  # a newline byte never occurs inside a UTF-8 character, so the line decodes on its own
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RunFileError(self.metrics_path, f"is not UTF-8 text (in its last line, at byte {exc.start})") from None
        return self._metrics_row(text, "its last line")

    def metrics_tail(self, rows: int, keyed: str | None = None) -> MetricsTail:
        """The last `rows` rows of metrics.jsonl and (with `keyed`) the last row whose `keyed`
        value is not None, read from the file's end: what `status` shows of a run, in a bounded
        read of a file of any length. The rows are held to metrics()'s rules; a file short enough
        to be read whole for them has every line checked, named by its number, as metrics() does,
        while a long file's earlier lines go unread. A keyed row that is not among the last rows
        is looked for further back, up to METRICS_TAIL_LIMIT bytes (beyond that it is None)."""
        f = self._open_metrics()
        if f is None:
            return MetricsTail([], None)
        with f:
            tail, start = self._read_back(f, self._lines_read(rows))
            lines = self._tail_lines(tail, start)
            if start == 0:
                checked = [self._metrics_row(line, f"line {i}") for i, line in enumerate(lines, 1)]
            else:
                checked = [self._metrics_row(lines[i], f"line {len(lines) - i} from its end")
                           for i in range(max(0, len(lines) - rows), len(lines))]
            found = next((r for r in reversed(checked) if r.get(keyed) is not None), None) if keyed else None
            if keyed and found is None and start > 0:
                found = self._last_keyed_row(f, keyed)
        return MetricsTail(checked[-rows:], found)

    def _tail_span(self, tail: bytes, start: int) -> tuple[int, int]:
        """Where the complete lines of `tail` (the end of metrics.jsonl from offset `start`) lie:
        the first, cut line of a window from the middle and the torn last line of a killed
        append left out. RunFileError naming the first byte in them that is not UTF-8."""
        first, end = (0 if start == 0 else tail.find(b"\n") + 1), tail.rfind(b"\n") + 1
        if not tail.isascii():  # the trainer's rows are ASCII: decode only what may not be UTF-8
            try:
                tail[first:end].decode("utf-8")
            except UnicodeDecodeError as exc:
                raise RunFileError(self.metrics_path,
                                   f"is not UTF-8 text (at byte offset {start + first + exc.start})") from None
        return first, end

    def _tail_lines(self, tail: bytes, start: int) -> list[str]:
        first, end = self._tail_span(tail, start)
        return tail[first:end].decode("utf-8").split("\n")[:-1]

    def _last_keyed_row(self, f: BinaryIO, keyed: str) -> dict | None:
        """The last row of open metrics.jsonl `f` whose `keyed` value is not None, looked for in
        its last METRICS_TAIL_LIMIT bytes; only the lines that name the key are parsed, found
        from the end by a search of the bytes (up to a MiB: never split into lines)."""
        needle = f'"{keyed}":'.encode()
        cut_line = b""  # what was read before its first newline, with it: a line complete once read back to its start

        def named(chunk: bytes, start: int) -> bool:  # in a line complete now (none read before held it)
            nonlocal cut_line
            part = chunk + cut_line
            first = part.find(b"\n") + 1
            cut_line = part[:first] if first else part
            return part.find(needle, 0 if start == 0 else first, part.rfind(b"\n")) >= 0
        tail, start = self._read_back(f, named, METRICS_TAIL_LIMIT)
        first, end = self._tail_span(tail, start)
        before = end
        while (hit := tail.rfind(needle, first, before)) >= 0:
            line_start, line_end = tail.rfind(b"\n", 0, hit) + 1, tail.index(b"\n", hit)
            from_end = tail.count(b"\n", line_end, end)  # its number, counted from the last line (1)
            row = self._metrics_row(tail[line_start:line_end].decode("utf-8"), f"line {from_end} from its end")
            if row.get(keyed) is not None:
                return row
            before = line_start
        return None

    def append_metrics(self, row: dict) -> None:
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(row, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def truncate_metrics(self, after_step: int) -> None:
        """Keep rows up to `after_step`: a resumed run re-logs what came after its checkpoint."""
        kept = [r for r in self.metrics() if r["step"] <= after_step]
        atomic_write_text(self.metrics_path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))

    def log(self, message: str, level: int = logging.INFO) -> None:
        """Append a line to train.log; the package logger gets it too (a job's stdout, see
        harness/tracking/logs.py), first, so it is seen even when the file cannot be written."""
        log.log(level, "%s: %s", self.path.name, message)
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "a") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")
