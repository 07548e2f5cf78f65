"""Training runs: exact resume after SIGKILL, divergence, data parallel, evaluation."""
from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from conftest import comparable, stop_after

from ebt_scaling.harness.contract.run_dir import RunDir
from ebt_scaling.harness.contract.run_state import run_state
from ebt_scaling.harness.contract.spec import TrainSpec, spec_to_yaml
from ebt_scaling.harness.training.schedule import lr_at
from ebt_scaling.harness.training.trainer import eval_steps, train_run


def test_eval_points_are_log_spaced_and_include_the_end():
    steps = sorted(eval_steps(1000, 4))
    assert steps == [1, 10, 100, 1000]
    assert 37 in eval_steps(37, 1)


def test_cosine_schedule_warms_up_then_decays_to_the_floor():
    train = TrainSpec(lr=1.0, warmup_fraction=0.1, min_lr_ratio=0.1, schedule="cosine")
    lrs = [lr_at(s, 100, train) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[-1] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    wsd = TrainSpec(lr=1.0, warmup_fraction=0.0, min_lr_ratio=0.0, schedule="wsd", decay_fraction=0.2)
    lrs = [lr_at(s, 100, wsd) for s in range(100)]
    assert lrs[79] == 1.0 and lrs[-1] == pytest.approx(0.0) and lrs[85] < 1.0


@pytest.mark.parametrize("arch", ["transformer", "ebt"])
def test_sigkill_mid_run_then_resume_equals_an_uninterrupted_run(tiny_spec, tmp_path, arch):
    # 96 steps: the kill (after step 8, polled every 50 ms) lands mid-run even on a fast machine.
    spec = tiny_spec(arch, train={"tokens": 32 * 8 * 96})
    reference = train_run(spec, tmp_path / "reference", quiet=True)
    assert reference["status"] == "done"

    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(spec_to_yaml(spec))
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "ebt_scaling.harness.cli", "train", str(spec_file), "--out", str(out), "--quiet"]
    # The reference ran on one thread (conftest); so must the subprocess: the thread count
    # changes the order of floating-point reductions.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    run = RunDir(out)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        rows = run.metrics()
        if run.checkpoints() and rows and rows[-1]["step"] >= 8:  # past a checkpoint, mid-run
            break
        time.sleep(0.05)
    assert proc.poll() is None, f"training ended before it could be killed: {proc.stderr.read().decode()}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert run.result() is None  # killed: no result yet

    resumed = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from step_" in run.log_path.read_text()
    assert comparable(run.metrics()) == comparable(RunDir(tmp_path / "reference").metrics())
    assert run.result()["val_loss"] == reference["val_loss"]


def test_stop_request_checkpoints_and_resume_is_exact(tiny_spec, tmp_path):
    spec = tiny_spec("ebt")
    reference = train_run(spec, tmp_path / "ref", quiet=True)
    first = train_run(spec, tmp_path / "run", quiet=True, stop_requested=stop_after(7))
    assert first == {"status": "preempted", "step": 7}
    second = train_run(spec, tmp_path / "run", quiet=True)
    assert second["status"] == "done" and second["val_loss"] == reference["val_loss"]
    assert comparable(RunDir(tmp_path / "run").metrics()) == comparable(RunDir(tmp_path / "ref").metrics())


def test_corrupt_latest_checkpoint_falls_back_to_the_previous_one(tiny_spec, tmp_path):
    spec = tiny_spec("transformer")
    reference = train_run(spec, tmp_path / "ref", quiet=True)
    train_run(spec, tmp_path / "run", quiet=True, stop_requested=stop_after(12))
    run = RunDir(tmp_path / "run")
    newest = run.checkpoints()[0]
    newest.write_bytes(newest.read_bytes()[:100])  # torn file
    result = train_run(spec, tmp_path / "run", quiet=True)
    log = run.log_path.read_text()
    assert f"checkpoint {newest.name} is unreadable" in log and "resuming from step_00000010.pt" in log
    assert result["val_loss"] == reference["val_loss"]


def test_divergence_is_recorded_not_dropped(tiny_spec, tmp_path):
    spec = tiny_spec("transformer", train={"lr": 1e20, "warmup_fraction": 0.0, "grad_clip": 0.0})
    result = train_run(spec, tmp_path / "run", quiet=True)
    assert result["status"] == "diverged"
    assert 1 <= result["step"] < spec.total_steps
    assert "non-finite" in result["note"]
    run = RunDir(tmp_path / "run")
    assert run_state(run.path)[0] == "diverged"
    assert json.loads(run.result_path.read_text())["final"]["step"] <= result["step"] + 1


def test_validation_loss_is_the_token_mean_nll(tiny_spec, tmp_path):
    """Independent recomputation: load the final weights and sum NLLs over the val set."""
    from ebt_scaling.harness.data.pipeline import open_dataset
    from ebt_scaling.models.architectures import build_model

    spec = tiny_spec("transformer", train={"tokens": 32 * 8 * 6})
    result = train_run(spec, tmp_path / "run", quiet=True)
    run = RunDir(tmp_path / "run")
    state = torch.load(run.checkpoints()[0], weights_only=False)
    model = build_model(spec.model)
    model.load_state_dict(state["model"])
    model.eval()
    total, count = 0.0, 0
    for batch in open_dataset(spec).val_batches(spec.eval.batch_size, spec.eval.batches):
        with torch.no_grad():
            logits = model.logits(batch.inputs).double()
        logp = torch.log_softmax(logits, -1)
        mask = batch.targets != -100
        picked = logp.gather(-1, batch.targets.clamp(min=0)[..., None])[..., 0]
        total += float(-(picked * mask).sum())
        count += int(mask.sum())
    assert result["val_loss"] == pytest.approx(total / count, rel=1e-5)
    assert result["val_ppl"] == pytest.approx(math.exp(total / count), rel=1e-5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, spec, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    train_run(spec, out, quiet=True)


def _train_two_processes(spec, out: Path) -> dict:
    mp.start_processes(_ddp_worker, args=(2, _free_port(), spec, str(out)), nprocs=2, start_method="spawn")
    return RunDir(out).result()


def test_two_processes_match_one_with_the_same_global_batch(tiny_spec, tmp_path):
    spec = tiny_spec("transformer", train={"tokens": 32 * 8 * 6})
    single = train_run(spec, tmp_path / "one", quiet=True)
    double = _train_two_processes(spec, tmp_path / "two")
    assert double["status"] == "done"
    one_rows, two_rows = RunDir(tmp_path / "one").metrics(), RunDir(tmp_path / "two").metrics()
    assert len(one_rows) == len(two_rows)
    for a, b in zip(one_rows, two_rows):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4)
    assert double["val_loss"] == pytest.approx(single["val_loss"], rel=1e-4)
    one_state = torch.load(RunDir(tmp_path / "one").checkpoints()[0], weights_only=False)["model"]
    two_state = torch.load(RunDir(tmp_path / "two").checkpoints()[0], weights_only=False)["model"]
    for key in one_state:
        torch.testing.assert_close(two_state[key], one_state[key], rtol=1e-3, atol=1e-5)


def test_ebt_trains_data_parallel_with_distinct_noise_per_process(tiny_spec, tmp_path):
    """EBT candidates are random, and each process draws its own, so two processes cannot
    equal one bit for bit; they must still train to a comparable loss."""
    spec = tiny_spec("ebt", model={"options": {"alpha_init": 5.0}})
    single = train_run(spec, tmp_path / "one", quiet=True)
    double = _train_two_processes(spec, tmp_path / "two")
    assert double["status"] == "done"
    first = RunDir(tmp_path / "one").metrics()[0]["train_loss"]
    assert double["val_loss"] < 0.9 * first and single["val_loss"] < 0.9 * first  # both learn
    assert double["val_loss"] == pytest.approx(single["val_loss"], rel=0.1)


def test_gradient_accumulation_matches_the_full_batch(tiny_spec, tmp_path):
    """Two micro-batches of 4 give the step one batch of 8 gives (up to float sums)."""
    full = tiny_spec("transformer", train={"tokens": 32 * 8 * 6})
    accumulated = tiny_spec("transformer", train={"tokens": 32 * 8 * 6, "micro_batch_size": 4})
    assert full.run_id != accumulated.run_id
    a = train_run(full, tmp_path / "full", quiet=True)
    b = train_run(accumulated, tmp_path / "acc", quiet=True)
    for x, y in zip(RunDir(tmp_path / "full").metrics(), RunDir(tmp_path / "acc").metrics()):
        assert y["train_loss"] == pytest.approx(x["train_loss"], rel=1e-5)
        assert y["grad_norm"] == pytest.approx(x["grad_norm"], rel=1e-4)
    assert b["val_loss"] == pytest.approx(a["val_loss"], rel=1e-5)


def test_replay_buffer_survives_resume_exactly(tiny_spec, tmp_path):
    """System 2's replay buffer is per-process state: a preempted and resumed run must
    restore it, or the candidates it starts from (and the metrics) change."""
    spec = tiny_spec("ebt", model={"options": {"replay_buffer_size": 16}})
    reference = train_run(spec, tmp_path / "ref", quiet=True)
    assert train_run(spec, tmp_path / "run", quiet=True, stop_requested=stop_after(7))["status"] == "preempted"
    resumed = train_run(spec, tmp_path / "run", quiet=True)
    assert resumed["val_loss"] == reference["val_loss"]
    assert comparable(RunDir(tmp_path / "run").metrics()) == comparable(RunDir(tmp_path / "ref").metrics())


def test_a_run_resumed_after_its_last_checkpoint_keeps_its_final_row(tiny_spec, tmp_path):
    spec = tiny_spec("transformer")
    reference = train_run(spec, tmp_path / "run", quiet=True)
    RunDir(tmp_path / "run").result_path.unlink()  # killed after the final checkpoint
    again = train_run(spec, tmp_path / "run", quiet=True)
    assert again["final"] == reference["final"] and again["val_loss"] == reference["val_loss"]


def test_a_run_planned_before_the_options_rename_resumes_in_its_directory(tiny_spec, tmp_path):
    """A spec.yaml written with the old keys (model.ebt, steps) in a directory named by its
    old run id: it loads with a warning, resumes from its checkpoint to the same result as
    an uninterrupted run, and the analysis lists it under its directory's name."""
    from ebt_scaling.analysis.load import load_runs
    from ebt_scaling.harness.contract.spec import load_spec

    spec = tiny_spec("ebt", model={"options": {"refine_steps": 1}})
    reference = train_run(spec, tmp_path / "ref", quiet=True)
    old = tmp_path / "sweep" / "runs" / "0123456789ab"  # an id from before the rename
    assert train_run(spec, old, quiet=True, stop_requested=stop_after(5))["status"] == "preempted"
    legacy = spec_to_yaml(spec).replace("  options:\n", "  ebt:\n").replace("refine_steps: 1", "steps: 1")
    (old / "spec.yaml").write_text(legacy)
    with pytest.warns(FutureWarning, match="model.ebt: deprecated"):
        resumed = load_spec(old / "spec.yaml")
    assert resumed.model.options.refine_steps == 1 and resumed.run_id == spec.run_id
    assert train_run(resumed, old, quiet=True)["val_loss"] == reference["val_loss"]
    assert list(load_runs(tmp_path / "sweep").runs["run_id"]) == ["0123456789ab"]
