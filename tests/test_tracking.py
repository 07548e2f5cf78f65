"""Tracking sinks with the real libraries: TensorBoard event files read back by TensorBoard's
own reader, and a W&B offline run read back from its .wandb file; both agree with
metrics.jsonl, and a resumed run writes no step twice (each session's files hold the whole
curve; W&B's earlier folders are set aside, never deleted, and only by a clean close)."""
from __future__ import annotations

import json
import struct
import sys
import time
from pathlib import Path

import pytest
from conftest import stop_after
from google.protobuf.message import DecodeError
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from wandb.proto import wandb_internal_pb2

from ebt_scaling.harness.cli.main import main
from ebt_scaling.harness.contract.run_dir import RunDir
from ebt_scaling.harness.contract.spec import spec_to_yaml
from ebt_scaling.harness.tracking.sinks import TRACK_ENV, TrackedRun, open_sinks
from ebt_scaling.harness.training.trainer import train_run

FIELDS = ("train_loss", "lr", "grad_norm", "tokens", "tokens_per_s")  # compared row by row


def wandb_records(path: Path) -> list:
    """The protobuf records of a .wandb file, read independently of wandb's own code: a
    7-byte header (':W&B', magic, version), then LevelDB log blocks of 32 KiB, each record
    chunk behind a 7-byte header (crc32, length, type: 1 full, 2 first, 3 middle, 4 last)."""
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    records, pending, pos, block = [], b"", 7, 32768
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if length == 0 and kind == 0:  # zero padding up to the next block
            pos += block - pos % block
            continue
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def only_wandb_folder(run_dir: Path) -> Path:
    """The run's one offline-run folder (superseded ones are set aside in wandb/superseded/)."""
    (session,) = (run_dir / "wandb").glob("offline-run-*")
    return session


def finished_records(session: Path, wait_s: float = 20.0) -> list:
    """The records of an offline-run folder's .wandb file once its exit record is there: wandb's
    service process may still be writing the file for a moment after finish() returns."""
    (file,) = session.glob("run-*.wandb")
    deadline = time.monotonic() + wait_s
    while True:
        try:
            records = wandb_records(file)
        except (DecodeError, struct.error):  # a record half written
            records = []
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.05)


def wandb_history(session: Path) -> tuple[object, dict[int, dict[str, float]]]:
    """(run record, step -> logged values) of one offline-run folder."""
    runs, history = [], {}
    for record in finished_records(session):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            runs.append(record.run)
        elif kind == "history":
            items = {"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in record.history.item}
            step = int(items["_step"])
            assert step not in history, f"step {step} logged twice to W&B"
            assert step > max(history, default=0), "W&B steps must increase"
            history[step] = items
    (run,) = runs
    return run, history


def test_sinks_match_metrics_jsonl_and_a_resume_writes_no_step_twice(tiny_spec, tmp_path, monkeypatch):
    spec = tiny_spec(tags={"sweep": "demo"})  # 24 steps, a row every step, checkpoints every 5
    out = tmp_path / "run"
    monkeypatch.setenv(TRACK_ENV, "tensorboard,wandb")
    # A job killed after logging steps 11-12 but before their checkpoint: it resumes from step 10
    # and logs 11 and 12 again.
    assert train_run(spec, out, quiet=True, stop_requested=stop_after(12))["status"] == "preempted"
    first_folder = only_wandb_folder(out)
    first_run, first_history = wandb_history(first_folder)
    assert sorted(first_history) == list(range(1, 13))
    run = RunDir(out)
    assert [p.name for p in run.checkpoints()][0] == "step_00000012.pt"
    run.checkpoints()[0].unlink()
    result = train_run(spec, out, quiet=True)
    assert result["status"] == "done" and result["run_id"] == spec.run_id  # tracking is not part of the id
    rows = run.metrics()
    assert [r["step"] for r in rows] == list(range(1, 25))

    # TensorBoard, as its own reader shows it: one value per step, equal to metrics.jsonl
    # (float32 in the event file).
    events = EventAccumulator(str(out / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    assert {"train_loss", "val_loss", "lr", "tokens_per_s"} <= set(events.Tags()["scalars"])
    for field in FIELDS:
        scalars = events.Scalars(field)
        assert [s.step for s in scalars] == list(range(1, 25)), field
        assert [s.value for s in scalars] == pytest.approx([r[field] for r in rows], rel=1e-6), field
    assert [(s.step, s.value) for s in events.Scalars("val_loss")] == \
        [(r["step"], pytest.approx(r["val_loss"], rel=1e-6)) for r in rows if "val_loss" in r]
    # The resumed session's file opens with the restart marker that purges every earlier event,
    # and holds the whole curve on its own: steps 1-10 replayed from metrics.jsonl (as a cooldown
    # branch replays its parent's rows), then its own.
    files = sorted((out / "tensorboard").glob("events.out.tfevents.*"))
    assert len(files) == 2
    markers = [e.step for e in EventFileLoader(str(files[1])).Load() if e.HasField("session_log")]
    assert markers == [0]
    second = EventAccumulator(str(files[1]), size_guidance={"scalars": 0})
    second.Reload()
    assert [(s.step, s.value) for s in second.Scalars("train_loss")] == \
        [(r["step"], pytest.approx(r["train_loss"], rel=1e-6)) for r in rows]

    # W&B offline: the resumed session is a W&B run of its own that replayed steps 1-10 from
    # metrics.jsonl and set the first session's folder aside; it holds every row of metrics.jsonl
    # once, the re-logged 11-12 as this session measured them.
    wandb_run, history = wandb_history(only_wandb_folder(out))
    assert wandb_run.run_id != first_run.run_id and wandb_run.run_id.startswith(spec.run_id)
    assert wandb_run.display_name == spec.run_id and wandb_run.project == "demo"
    config = {i.key: json.loads(i.value_json) for i in wandb_run.config.update}
    assert config["run_id"] == spec.run_id and config["model"]["d_model"] == 32 and config["train"]["lr"] == 3e-3
    assert sorted(history) == list(range(1, 25))
    for row in rows:
        for field in (*FIELDS, *(("val_loss",) if "val_loss" in row else ())):
            assert history[row["step"]][field] == pytest.approx(row[field], rel=1e-12), (row["step"], field)
    assert history[11]["tokens_per_s"] != first_history[11]["tokens_per_s"]  # measured again, not the old row
    assert list((out / "wandb" / "superseded").iterdir()) == [out / "wandb" / "superseded" / first_folder.name]


def test_tracking_is_off_by_default(tiny_spec, tmp_path, monkeypatch):
    monkeypatch.delenv(TRACK_ENV, raising=False)
    out = tmp_path / "run"
    train_run(tiny_spec(train={"tokens": 32 * 8 * 3}), out, quiet=True)
    assert (out / "result.json").is_file()
    assert not (out / "tensorboard").exists() and not (out / "wandb").exists()


@pytest.mark.parametrize("flag", [True, False])
def test_a_missing_library_is_one_line_naming_the_extra(tiny_spec, tmp_path, monkeypatch, capsys, flag):
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed: find_spec and import fail
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(spec_to_yaml(tiny_spec()))
    argv = ["train", str(spec_file), "--out", str(tmp_path / "run")]
    if flag:
        argv += ["--track", "tensorboard,wandb"]
    else:
        monkeypatch.setenv(TRACK_ENV, "wandb")
    assert main(argv) == 2
    key = "--track" if flag else TRACK_ENV
    assert capsys.readouterr().err == (f"ebt-scaling train: error: {key}: the wandb sink needs the wandb package; "
                                       "pip install 'ebt-scaling[wandb]'\n")
    assert not (tmp_path / "run").exists()  # checked before anything is written


def test_an_unknown_sink_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(TRACK_ENV, raising=False)
    assert main(["train", str(tmp_path / "spec.yaml"), "--out", str(tmp_path / "run"), "--track", "mlflow"]) == 2
    assert capsys.readouterr().err.startswith("ebt-scaling train: error: --track: unknown sink 'mlflow'; ")


def test_a_failed_wandb_write_keeps_earlier_folders_and_a_clean_close_sets_them_aside(tmp_path):
    """W&B writes through a service process, so a full disk may cut the new folder without an
    error reaching the run: an earlier folder is only set aside (never deleted), and only by a
    session whose every write succeeded."""
    run = TrackedRun(directory=tmp_path, name="r", project="p", config={}, start_step=0)
    rows = [{"step": step, "train_loss": 1.0 / step} for step in (1, 2, 3)]

    def session(fail_from: int | None = None) -> Path:
        sinks = open_sinks(["wandb"], run)
        sink = sinks.sinks["wandb"]
        folder = Path(sink.run.settings.sync_dir)
        if fail_from is not None:
            log = sink.run.log

            def full_disk(data, step):
                if step >= fail_from:
                    raise OSError(28, "No space left on device")
                log(data, step=step)

            sink.run.log = full_disk
        for row in rows:
            sinks.write(row)
        sinks.close()
        return folder

    first = session()
    failed = session(fail_from=2)  # dropped after step 1, then closed
    assert first.is_dir() and failed.is_dir()
    assert sorted(wandb_history(first)[1]) == [1, 2, 3]  # untouched
    assert not (tmp_path / "wandb" / "superseded").exists()
    last = session()
    assert only_wandb_folder(tmp_path) == last
    aside = tmp_path / "wandb" / "superseded"
    assert sorted(p.name for p in aside.iterdir()) == sorted([first.name, failed.name])
    assert sorted(wandb_history(aside / first.name)[1]) == [1, 2, 3]  # moved whole
    assert sorted(wandb_history(last)[1]) == [1, 2, 3]
