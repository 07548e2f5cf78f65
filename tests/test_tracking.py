"""Tracking sinks with the real libraries: TensorBoard event files read back by TensorBoard's
own reader, and a W&B offline run read back from its .wandb file; both agree with
metrics.jsonl, and a resumed run writes no step twice (W&B: its one remaining offline run
holds the whole curve)."""
from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import pytest
from conftest import stop_after
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from wandb.proto import wandb_internal_pb2

from ebt_scaling.harness.cli import main
from ebt_scaling.harness.contract.run_dir import RunDir
from ebt_scaling.harness.contract.spec import spec_to_yaml
from ebt_scaling.harness.tracking import TRACK_ENV
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


def wandb_history(run_dir: Path) -> tuple[object, dict[int, dict[str, float]]]:
    """(run record, step -> logged values) of the run's one offline-run folder."""
    (session,) = (run_dir / "wandb").glob("offline-run-*")
    (file,) = session.glob("run-*.wandb")
    runs, history = [], {}
    for record in wandb_records(file):
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
    first_run, first_history = wandb_history(out)
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
    # The resumed session's file opens with the restart marker that purges steps >= 11.
    files = sorted((out / "tensorboard").glob("events.out.tfevents.*"))
    assert len(files) == 2
    markers = [e.step for e in EventFileLoader(str(files[1])).Load() if e.HasField("session_log")]
    assert markers == [11]

    # W&B offline: the resumed session is a W&B run of its own that replayed steps 1-10 from
    # metrics.jsonl and deleted the first session's folder; it holds every row of metrics.jsonl
    # once, the re-logged 11-12 as this session measured them.
    wandb_run, history = wandb_history(out)
    assert wandb_run.run_id != first_run.run_id and wandb_run.run_id.startswith(spec.run_id)
    assert wandb_run.display_name == spec.run_id and wandb_run.project == "demo"
    config = {i.key: json.loads(i.value_json) for i in wandb_run.config.update}
    assert config["run_id"] == spec.run_id and config["model"]["d_model"] == 32 and config["train"]["lr"] == 3e-3
    assert sorted(history) == list(range(1, 25))
    for row in rows:
        for field in (*FIELDS, *(("val_loss",) if "val_loss" in row else ())):
            assert history[row["step"]][field] == pytest.approx(row[field], rel=1e-12), (row["step"], field)
    assert history[11]["tokens_per_s"] != first_history[11]["tokens_per_s"]  # measured again, not the old row


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
