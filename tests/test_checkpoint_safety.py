"""Checkpoints as untrusted files: a pickle payload never runs, eval never scores an older
checkpoint than the run's final one, a full disk during a save keeps the previous
checkpoint and says so, and a killed save's temporary is removed by the trainer itself."""
from __future__ import annotations

import errno
import logging
import random

import numpy as np
import pytest
import torch
from conftest import stop_after

from ebt_scaling.harness.cli.main import main as cli_main
from ebt_scaling.harness.contract.run_dir import RunDir
from ebt_scaling.harness.contract.spec import spec_from_dict
from ebt_scaling.harness.training.trainer import train_run


class Payload:
    """Unpickling this object calls open(marker, "w"): the marker file appears."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


@pytest.fixture(scope="module")
def reference(data_cache, tmp_path_factory):
    """conftest's tiny Transformer++ spec, trained once uninterrupted (on one thread, as the tests run)."""
    spec = spec_from_dict({
        "model": {"arch": "transformer", "n_layers": 1, "d_model": 32, "n_heads": 2, "vocab_size": 512, "context": 32},
        "data": {"cache_dir": data_cache}, "train": {"tokens": 32 * 8 * 24, "batch_size": 8, "lr": 3e-3},
        "eval": {"points": 3, "batches": 2, "batch_size": 8}, "checkpoint_every": 5, "log_every": 1, "device": "cpu"})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return spec, train_run(spec, tmp_path_factory.mktemp("ref"), quiet=True)
    finally:
        torch.set_num_threads(threads)


def test_a_pickle_payload_in_checkpoints_never_runs_on_resume_or_eval(reference, tmp_path, capsys, caplog):
    spec, expected = reference
    run = RunDir(tmp_path / "run")
    train_run(spec, run.path, quiet=True, stop_requested=stop_after(7))
    marker = tmp_path / "pwned"
    torch.save({"step": 8, "model": Payload(marker)}, run.checkpoint_dir / "step_00000008.pt")

    with caplog.at_level(logging.INFO, logger="ebt_scaling"):
        result = train_run(spec, run.path, quiet=True)
    assert not marker.exists()
    log = run.log_path.read_text()
    assert "step_00000008.pt is unreadable" in log and "resuming from step_00000007.pt" in log
    # A skipped checkpoint is a warning (`-q` shows it), said once; the resume itself is news.
    levels = {m: [r.levelno for r in caplog.records if m in r.getMessage()]
              for m in ("step_00000008.pt is unreadable", "resuming from")}
    assert levels == {"step_00000008.pt is unreadable": [logging.WARNING], "resuming from": [logging.INFO]}
    assert result["val_loss"] == expected["val_loss"]  # resumed exactly from the valid one

    # eval of the finished run: its final checkpoint replaced by the payload
    final = run.checkpoints()[0]
    torch.save({"step": 24, "model": Payload(marker)}, final)
    assert cli_main(["eval", str(run.path), "--tasks", "pretrain"]) == 2
    assert not marker.exists()
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("ebt-scaling eval: error:")]
    assert len(errors) == 1 and str(run.path) in errors[0] and final.name in errors[0]


def test_eval_refuses_a_run_whose_final_checkpoint_is_damaged(reference, tmp_path, capsys):
    spec, _ = reference
    run = RunDir(tmp_path / "run")
    train_run(spec, run.path, quiet=True)
    before = run.result_path.read_text()
    final = run.checkpoints()[0]
    assert final.name == f"step_{spec.total_steps:08d}.pt" and len(run.checkpoints()) == 2
    final.write_bytes(final.read_bytes()[:200])  # truncated; the older checkpoint still loads
    assert cli_main(["eval", str(run.path), "--tasks", "pretrain"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("ebt-scaling eval: error:")]
    assert len(errors) == 1 and str(run.path) in errors[0] and final.name in errors[0]
    assert run.result_path.read_text() == before  # no older score written


def test_disk_full_during_a_checkpoint_keeps_the_previous_one_and_says_so(reference, tmp_path, monkeypatch, caplog):
    spec, expected = reference
    run = RunDir(tmp_path / "run")
    real_save = torch.save

    def full_disk(obj, f, *args, **kwargs):  # the disk fills up while the step-10 checkpoint is written
        if isinstance(obj, dict) and obj.get("step") == 10:
            f.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError) as failure, caplog.at_level(logging.INFO, logger="ebt_scaling"):
        train_run(spec, run.path, quiet=True)
    assert failure.value.errno == errno.ENOSPC
    assert [r.levelno for r in caplog.records if "step_00000010.pt not written" in r.getMessage()] == [logging.ERROR]
    assert [p.name for p in run.checkpoints()] == ["step_00000005.pt"]
    assert list(run.checkpoint_dir.iterdir()) == [run.checkpoint_dir / "step_00000005.pt"]  # no temporary left
    said = [line for line in run.log_path.read_text().splitlines() if "step_00000010.pt" in line]
    assert len(said) == 1 and "No space left on device" in said[0] and "step_00000005.pt" in said[0]

    monkeypatch.setattr(torch, "save", real_save)  # space freed: the run resumes from step 5
    assert train_run(spec, run.path, quiet=True)["val_loss"] == expected["val_loss"]


def test_a_killed_saves_temporary_is_removed_when_training_resumes(reference, tmp_path):
    spec, _ = reference
    run = RunDir(tmp_path / "run")
    train_run(spec, run.path, quiet=True, stop_requested=stop_after(7))
    leftover = run.checkpoint_dir / ".step_00000010.pt.k1ll3d.tmp"
    leftover.write_bytes(b"half a checkpoint")
    train_run(spec, run.path, quiet=True, stop_requested=stop_after(1))
    assert not leftover.exists()
    assert leftover.name in run.log_path.read_text()


def test_a_checkpoint_written_by_the_previous_code_still_resumes(reference, tmp_path):
    """Checkpoints written before the safe loader hold numpy's RNG state as an ndarray."""
    spec, expected = reference
    run = RunDir(tmp_path / "run")
    train_run(spec, run.path, quiet=True, stop_requested=stop_after(7))
    newest = run.checkpoints()[0]
    state = torch.load(newest, weights_only=False)
    np.random.seed(1234)
    np.random.standard_normal()  # a cached Gaussian: every field of the state is set
    old_numpy = np.random.get_state()
    state["processes"][0]["rng"]["numpy"] = old_numpy
    state["processes"][0]["rng"]["python"] = random.getstate()
    torch.save(state, newest)
    np.random.seed(0)

    result = train_run(spec, run.path, quiet=True, stop_requested=stop_after(1))
    assert "resuming from step_00000007.pt" in run.log_path.read_text()
    assert "unreadable" not in run.log_path.read_text()
    assert result == {"status": "preempted", "step": 8}
    restored = np.random.get_state()  # set at resume; the step since draws nothing from numpy
    assert restored[0] == old_numpy[0] and np.array_equal(restored[1], old_numpy[1])
    assert restored[2:] == old_numpy[2:]
    assert train_run(spec, run.path, quiet=True)["val_loss"] == expected["val_loss"]


def test_eval_of_a_diverged_run_says_it_diverged_not_train_again(tiny_spec, tmp_path, capsys):
    """A diverged run's checkpoints (one per step here) all predate the divergence: none is
    scored as its final weights, and the error does not advise training the same spec again."""
    spec = tiny_spec(train={"lr": 1e20, "warmup_fraction": 0.0, "grad_clip": 0.0}, checkpoint_every=1)
    run = RunDir(tmp_path / "run")
    result = train_run(spec, run.path, quiet=True)
    assert result["status"] == "diverged" and run.checkpoints()  # weights from before it exist
    before = run.result_path.read_text()
    assert cli_main(["eval", str(run.path), "--tasks", "pretrain"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("ebt-scaling eval: error:")]
    assert len(errors) == 1
    err = errors[0]
    assert f"the run diverged after step {result['step']}" in err and "predate the divergence" in err
    assert "train the run again" not in err and "lower train.lr" in err
    assert run.result_path.read_text() == before
