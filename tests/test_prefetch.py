"""The batch prefetch thread: the same batches as the synchronous iterator, a state that
describes the last *consumed* batch however far the thread ran ahead, resume, errors
raised in the trainer with their traceback, and no thread left behind."""
from __future__ import annotations

import gc
import json
import pickle
import time
import traceback

import pytest
import torch
from conftest import comparable
from test_data import hf_corpus, hf_spec, same_batches, take, token_corpus, token_spec  # noqa: F401 - fixtures

from ebt_scaling.harness.cli.main import main as cli_main
from ebt_scaling.harness.contract.run_dir import RunDir
from ebt_scaling.harness.contract.spec import spec_to_yaml
from ebt_scaling.harness.data.batches import Batch
from ebt_scaling.harness.data.common import DataError
from ebt_scaling.harness.data.pipeline import open_dataset
from ebt_scaling.harness.data.prefetch import PrefetchedBatches, prefetched
from ebt_scaling.harness.training import trainer
from ebt_scaling.harness.training.checkpoint import load_latest_checkpoint

DEPTH = 4


def wait_until_full(it: PrefetchedBatches) -> None:
    """Let the thread run as far ahead as the queue allows."""
    deadline = time.monotonic() + 10
    while it._slots.qsize() < it.depth:
        assert time.monotonic() < deadline, "the prefetch thread did not fill its queue"
        time.sleep(0.005)


class Counter:
    """A resumable source with a known truth: batch k holds the number k; the state is the
    number of batches drawn."""

    def __init__(self, fail_at: int | None = None):
        self.step, self.fail_at = 0, fail_at

    def __next__(self) -> Batch:
        if self.step == self.fail_at:
            raise_data_error(self.step)
        self.step += 1
        value = torch.full((1, 1), self.step - 1)
        return Batch(value, value, 1)

    def state_dict(self) -> dict:
        return {"step": self.step}

    def load_state_dict(self, state: dict) -> None:
        self.step = state["step"]


def raise_data_error(step: int) -> None:
    raise DataError(f"data.hf_dataset: stream broke at batch {step}")


def values(batches) -> list[int]:
    return [int(b.inputs) for b in batches]


def test_state_names_the_last_consumed_batch_while_the_thread_is_ahead():
    it = PrefetchedBatches(Counter(), depth=DEPTH)
    assert it.state_dict() == {"step": 0}
    assert values(take(it, 3)) == [0, 1, 2]
    wait_until_full(it)
    assert it.source.step >= 3 + DEPTH  # the source itself is ahead (one more may wait for a slot) ...
    assert it.state_dict() == {"step": 3}  # ... the state is not
    resumed = PrefetchedBatches(Counter(), depth=DEPTH)
    resumed.load_state_dict(pickle.loads(pickle.dumps(it.state_dict())))
    assert values(take(resumed, 4)) == [3, 4, 5, 6]
    it.load_state_dict({"step": 1})  # repositions a running prefetcher: what it built ahead is dropped
    assert values(take(it, 2)) == [1, 2] and it.state_dict() == {"step": 3}
    it.close()  # puts the source back at the consumed position; next() goes on from there
    assert it.source.step == 3 and values(take(it, 1)) == [3]
    it.close()
    resumed.close()


def check_prefetch_matches_sync(spec, first: int, then: int) -> None:
    """The prefetched batches are the synchronous iterator's. Its state, saved after `first`
    batches with the thread ahead, is the synchronous iterator's there, and resuming it --
    prefetched or plain (a prefetched run's checkpoint resumes either) -- gives the next
    `then` batches, as does the original going on."""
    sync = open_dataset(spec).train_batches()
    reference = take(sync, first)
    sync_state = sync.state_dict()
    reference += take(sync, then)
    ahead = PrefetchedBatches(open_dataset(spec).train_batches(), depth=DEPTH)
    assert same_batches(take(ahead, first), reference[:first])
    wait_until_full(ahead)
    state = ahead.state_dict()
    assert state == sync_state
    resumed = PrefetchedBatches(open_dataset(spec).train_batches(), depth=DEPTH)
    plain = open_dataset(spec).train_batches()
    for continued in (resumed, plain):
        continued.load_state_dict(state)
        assert same_batches(take(continued, then), reference[first:])
    assert same_batches(take(ahead, then), reference[first:])
    ahead.close()
    resumed.close()


@pytest.mark.parametrize("batching", ["packed", "paper"])
def test_token_store_batches_and_resume_match_the_synchronous_iterator(token_corpus, batching):  # noqa: F811
    tmp_path, _ = token_corpus
    check_prefetch_matches_sync(token_spec(tmp_path, batching=batching, train={"batch_size": 4}),
                                first=7, then=6)  # several epochs of this tiny corpus


@pytest.mark.parametrize("batching", ["packed", "paper"])
def test_hf_stream_tokenised_in_the_thread_resumes_exactly(hf_corpus, batching):  # noqa: F811
    pytest.importorskip("datasets", reason="the Hugging Face streaming path needs the optional 'datasets' package")
    tmp_path, _, _ = hf_corpus
    check_prefetch_matches_sync(hf_spec(tmp_path, batching=batching), first=6, then=4)  # packed: mid-document


def test_an_error_in_the_thread_reaches_the_caller_with_its_traceback():
    it = PrefetchedBatches(Counter(fail_at=2), depth=DEPTH)
    assert values(take(it, 2)) == [0, 1]
    with pytest.raises(DataError, match="stream broke at batch 2") as caught:
        next(it)
    frames = [frame.name for frame in traceback.extract_tb(caught.value.__traceback__)]
    assert "raise_data_error" in frames  # raised in the thread, reported where it happened
    assert it._thread is None and it.state_dict() == {"step": 2}
    with pytest.raises(DataError):  # and again on every later call, never a hang
        next(it)


def test_the_thread_ends_when_the_iterator_is_dropped_or_closed():
    it = PrefetchedBatches(Counter(), depth=2)
    next(it)
    thread = it._thread
    wait_until_full(it)  # blocked on a full queue
    del it
    gc.collect()
    thread.join(timeout=5)
    assert not thread.is_alive()
    closed = PrefetchedBatches(Counter(), depth=2)
    next(closed)
    thread = closed._thread
    closed.close()
    assert not thread.is_alive()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="pinned memory needs CUDA")
def test_batches_are_pinned_for_cuda():
    it = PrefetchedBatches(Counter(), depth=2, pin_device=torch.device("cuda", torch.cuda.current_device()))
    batch = next(it)
    assert batch.inputs.is_pinned() and batch.targets.is_pinned() and int(batch.inputs) == 0
    it.close()


def test_a_prefetched_run_stopped_and_resumed_equals_a_synchronous_run(tiny_spec, tmp_path, monkeypatch):
    """The trainer's CUDA path on the CPU: its checkpoint, taken with the thread ahead, holds
    the synchronous iterator's state, and the resumed run ends as an uninterrupted one."""
    spec = tiny_spec("transformer")
    source = open_dataset(spec).train_batches()
    assert prefetched(source, torch.device("cpu")) is source  # the CPU trains without the thread
    reference = trainer.train_run(spec, tmp_path / "ref", quiet=True)  # synchronous
    made = []

    def always_prefetched(batches, device):
        made.append(PrefetchedBatches(batches, DEPTH))
        return made[-1]

    monkeypatch.setattr(trainer, "prefetched", always_prefetched)
    calls = iter(range(1, 1000))
    first = trainer.train_run(spec, tmp_path / "run", quiet=True, stop_requested=lambda: next(calls) >= 7)
    assert first == {"status": "preempted", "step": 7} and len(made) == 1
    synchronous = open_dataset(spec).train_batches()
    take(synchronous, 7)
    assert load_latest_checkpoint(RunDir(tmp_path / "run"), map_location="cpu")["data"] == synchronous.state_dict()
    second = trainer.train_run(spec, tmp_path / "run", quiet=True)
    assert len(made) == 2 and second["status"] == "done" and second["val_loss"] == reference["val_loss"]
    assert comparable(RunDir(tmp_path / "run").metrics()) == comparable(RunDir(tmp_path / "ref").metrics())


def test_bench_feed_times_a_spec_both_ways(tiny_spec, tmp_path, capsys):
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(spec_to_yaml(tiny_spec("transformer")))
    assert cli_main(["bench", "--feed", str(spec_file), "--device", "cpu", "--warmup", "0", "--iters", "2",
                     "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["batch"] == 8 and result["ctx"] == 32 and result["source"] == "shakespeare, packed"
    for key in ("build_ms", "sync_ms", "prefetch_ms"):
        assert len(result[key]) == 3 and all(ms > 0 for ms in result[key])
    assert min(result["sync_ms"]) > max(result["build_ms"])  # a step includes building its batch
    # Flags the spec decides are refused, not ignored: one line naming them.
    for extra, named in ((["--size", "xxs"], "--size"), (["--batch", "4"], "--batch"),
                         (["--seed", "0", "--precision", "fp32", "--no-compile"], "--precision, --compile, --seed"),
                         (["--peak-tflops", "inf", "--save"], "--peak-tflops, --save"),
                         # given equal to the model timing's default is still given
                         (["--vocab-size", "50277", "--arch", "transformer", "ebt"], "--vocab-size, --arch"),
                         (["--matmul-precision", "high", "--ebt.refine-steps", "3"],
                          "--ebt.refine-steps, --matmul-precision")):
        assert cli_main(["bench", "--feed", str(spec_file), *extra]) == 2
        assert capsys.readouterr().err == ("ebt-scaling bench: error: --feed: the run spec sets the model, batch, "
                                           f"precision, compilation and seed; drop {named}\n")
