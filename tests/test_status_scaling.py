"""`status` at sweep scale: each run's metrics.jsonl is read from its end, a bounded number of
bytes whatever its length, and shows what a full parse of the trainer's file shows; the
specs are parsed once per command, and not again while unchanged; `bench-status` prints its
figures."""
from __future__ import annotations

import json

import pytest

from ebt_scaling.harness.benchmarks.status import build_sweep, claim_running_leases, metrics_rows, run_spec
from ebt_scaling.harness.cli.main import main
from ebt_scaling.harness.contract import run_dir as run_dir_module
from ebt_scaling.harness.contract.run_dir import RunDir, RunFileError
from ebt_scaling.harness.dispatch import snapshot as snapshot_module
from ebt_scaling.harness.dispatch.status import RECENT_ROWS, sweep_status
from ebt_scaling.harness.dispatch.sweep_ops import cancel_runs
from ebt_scaling.harness.training.trainer import train_run


def _full_parse_progress(run: RunDir) -> dict:
    """What `status` showed of a run when it parsed metrics.jsonl whole (before the tail reader)."""
    rows = run.metrics()
    evals = [r["val_loss"] for r in rows if r.get("val_loss") is not None]
    rates = [r["tokens_per_s"] for r in rows[-RECENT_ROWS:] if r.get("tokens_per_s")]
    return {"last": rows[-1] if rows else None, "val_loss": evals[-1] if evals else None,
            "tokens_per_s": sum(rates) / len(rates) if rates else None}


def _tail_progress(run: RunDir) -> dict:
    tail = run.metrics_tail(RECENT_ROWS, "val_loss")
    rates = [r["tokens_per_s"] for r in tail.rows if r.get("tokens_per_s")]
    return {"last": tail.rows[-1] if tail.rows else None, "val_loss": tail.keyed["val_loss"] if tail.keyed else None,
            "tokens_per_s": sum(rates) / len(rates) if rates else None}


class CountingReads:
    """Wraps RunDir._open_metrics: the bytes each metrics.jsonl gives its reader."""

    def __init__(self, monkeypatch):
        self.read: dict[str, int] = {}
        opener = RunDir._open_metrics

        def counted(run: RunDir):
            f = opener(run)
            if f is None:
                return None
            real_read = f.read

            def read(size=-1):
                data = real_read(size)
                self.read[run.path.name] = self.read.get(run.path.name, 0) + len(data)
                return data

            f.read = read
            return f
        monkeypatch.setattr(RunDir, "_open_metrics", counted)


@pytest.mark.parametrize("tail_bytes", [7, 64, run_dir_module.METRICS_TAIL_BYTES])
def test_the_tail_gives_what_the_full_parse_gives_on_the_trainers_output(tiny_spec, tmp_path, monkeypatch,
                                                                        tail_bytes):
    """A real run's metrics.jsonl (every step logged, log-spaced validations) and the trainer's
    rows of a long run: the last row, the last val_loss and the recent tokens/s agree with a
    full parse at every cut, and with a torn last line."""
    monkeypatch.setattr(run_dir_module, "METRICS_TAIL_BYTES", tail_bytes)
    trained = RunDir(tmp_path / "trained")
    train_run(tiny_spec(), trained.path, quiet=True)
    long_run = RunDir(tmp_path / "long")
    long_run.path.mkdir()
    spec = run_spec(0, "EBT", 2000)
    rows = metrics_rows(spec, spec.total_steps // 2)
    assert any("val_loss" in r for r in rows) and "val_loss" not in rows[-1]
    for run, text in [(trained, trained.metrics_path.read_text()),
                      (long_run, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))]:
        lines = text.splitlines(keepends=True)
        for cut in sorted({1, 2, len(lines) // 3, len(lines) - 1, len(lines)}):
            for torn in ("", lines[cut - 1][:20]):
                run.metrics_path.write_text("".join(lines[:cut]) + torn)
                assert _tail_progress(run) == _full_parse_progress(run), (run.path.name, cut, torn)


def test_status_reads_a_bounded_tail_of_metrics_whatever_its_length(tmp_path, monkeypatch):
    """Done, running, preempted and pending runs with 10 and 20,000 metrics rows: a done run's
    metrics.jsonl gives its last block and no more; an unfinished one its last block and the
    search for its last validation, which stops at METRICS_TAIL_LIMIT (a validation further
    back is then not shown); everything else status shows is what a full parse shows."""
    limit, block = run_dir_module.METRICS_TAIL_LIMIT, run_dir_module.METRICS_TAIL_BYTES
    for rows in (10, 20_000):
        sweep = build_sweep(tmp_path / f"rows{rows}", runs=4, rows=rows)  # done, running, preempted, pending
        claim_running_leases(sweep)
        with monkeypatch.context() as patched:
            counter = CountingReads(patched)
            status = sweep_status(sweep)
        assert sorted(r.state for r in status) == ["done", "pending", "preempted", "running"]
        for r in status:
            run = RunDir(r.path)
            if r.state == "pending":
                assert r.run_id not in counter.read and r.step == 0
                continue
            full, size = _full_parse_progress(run), run.metrics_path.stat().st_size
            assert (r.step, r.tokens_per_s) == (full["last"]["step"], full["tokens_per_s"])
            if r.state == "done":
                assert r.val_loss == run.result()["val_loss"] and counter.read[r.run_id] == min(size, block)
            elif size <= limit:
                assert r.val_loss == full["val_loss"] and counter.read[r.run_id] <= size
            else:  # its last validation lies beyond the bound
                assert full["val_loss"] is not None and r.val_loss is None
                assert size > 2 * (block + limit) and counter.read[r.run_id] <= block + limit


def test_a_metrics_file_that_is_not_a_regular_file_is_named_not_read(tmp_path):
    run = RunDir(tmp_path)
    run.metrics_path.symlink_to("/dev/zero")
    with pytest.raises(RunFileError, match="not a regular file"):
        run.metrics_tail(RECENT_ROWS, "val_loss")
    with pytest.raises(RunFileError, match="not a regular file"):
        run.last_metrics_row()


def _count_spec_parses(monkeypatch) -> list:
    parsed = []
    real_load = snapshot_module.load_spec
    monkeypatch.setattr(snapshot_module, "load_spec", lambda path: parsed.append(path) or real_load(path))
    return parsed


def test_one_command_parses_each_spec_once(tmp_path, monkeypatch, capsys):
    """status, and cancel (two status passes), parse every spec.yaml at most once; a second
    command parses none that did not change."""
    sweep = build_sweep(tmp_path / "sweep", runs=6, rows=10)
    parsed = _count_spec_parses(monkeypatch)
    assert main(["status", str(sweep), "--json"]) == 0
    assert len(parsed) == len(set(parsed)) == 6
    parsed.clear()
    first = sorted(p.name for p in (sweep / "runs").iterdir())[0]
    cancel_runs(sweep, [first])
    assert len(parsed) == len(set(parsed)) <= 6
    parsed.clear()
    assert main(["status", str(sweep), "--json"]) == 0
    assert parsed == []


def test_a_spec_changed_after_it_was_summarised_is_read_again(tmp_path, monkeypatch, capsys):
    """The spec summaries status keeps are used only for an unchanged spec.yaml: an edited,
    damaged or new one is parsed (and judged) again, and a damaged cache is rebuilt; what
    status prints is what it prints with no cache."""
    sweep = build_sweep(tmp_path / "sweep", runs=4, rows=10)
    cache = sweep / snapshot_module.SUMMARY_CACHE
    parsed = _count_spec_parses(monkeypatch)

    def status() -> dict:
        assert main(["status", str(sweep), "--json"]) in (0, 1)
        return {r["run_id"]: r for r in json.loads(capsys.readouterr().out)["runs"]}

    uncached = status()
    assert cache.is_file() and len(parsed) == 4
    parsed.clear()
    assert status() == uncached and parsed == []

    ids = sorted(uncached)
    edited = sweep / "runs" / ids[0] / "spec.yaml"
    edited.write_text(edited.read_text().replace("size: s64", "size: s65"))
    damaged = sweep / "runs" / ids[1] / "spec.yaml"
    damaged.write_text("model: [unclosed")
    rows = status()
    assert sorted(p.parent.name for p in parsed) == ids[:2]
    assert "size=s65" in rows[ids[0]]["label"]
    assert rows[ids[1]]["state"] == "failed" and "spec.yaml" in rows[ids[1]]["detail"]
    assert {k: rows[k] for k in ids[2:]} == {k: uncached[k] for k in ids[2:]}

    parsed.clear()
    cache.write_text("{not json")
    assert status() == rows and len(parsed) == 4

    parsed.clear()  # summaries made by other code (another release, an edited checkout) are not used
    cache.write_text(json.dumps({**json.loads(cache.read_text()), "version": "0.0.0 0123456789abcdef"}))
    assert status() == rows and len(parsed) == 4


def test_a_summarised_run_still_gives_its_full_spec(tmp_path):
    """A run whose summary came from the cache parses its spec when a caller asks for it."""
    sweep = build_sweep(tmp_path / "sweep", runs=2, rows=10)
    first = snapshot_module.SweepSnapshot.read(sweep)
    again = snapshot_module.SweepSnapshot.read(sweep)
    assert all(r.parsed is not None for r in first.runs) and all(r.parsed is None for r in again.runs)
    assert [r.spec for r in again.runs] == [r.spec for r in first.runs]
    assert [r.summary for r in again.runs] == [r.summary for r in first.runs]


def test_bench_status_prints_time_and_bytes_per_run(tmp_path, capsys):
    assert main(["bench-status", "--runs", "4", "--rows", "10", "50", "--repeat", "1", "--keep", str(tmp_path)]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("status --json")]
    assert len(lines) == 2 and all("bytes read/run" in ln and " s (" in ln for ln in lines)
    assert (tmp_path / "runs4x50" / "runs").is_dir()  # kept, and reused by the next call
