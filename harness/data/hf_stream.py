"""Hugging Face ``datasets`` streaming (RedPajama-v2, FineWeb, ... on clusters; any local
dataset directory, e.g. jsonl files, anywhere).

``datasets`` is optional (extra "hf") and imported only here, lazily.

Split: a record is a validation document when a fixed 64-bit hash (blake2b) of its text
falls below ``val_fraction``; training skips those. So the split is by whole document,
never overlaps (identical texts land on the same side), is the same for every run and
needs no pass over the data. Validation batches are the first validation documents of
the unshuffled stream.

Order: the training stream is ``dataset.shuffle(seed, buffer_size=SHUFFLE_BUFFER)`` with
``set_epoch(epoch)``, so it depends only on the seed and reshuffles every epoch; it
restarts by itself when it ends (infinite). Documents are tokenised with the end-of-
document id appended, then batched as in batches.py: packed windows of S + 1 tokens with
stride S over the concatenated stream, or paper rows (first S + 1 tokens, padded).

Ranks: every rank reads and tokenises the same global stream and keeps rows
[r * B / W, (r + 1) * B / W) of each global batch, so W processes together see exactly
the batches one process sees, ``global_tokens`` is exact without communication, and a
run can resume on a different number of processes. The price is that each rank
tokenises the whole global batch (in paper mode only a prefix of each document: enough
characters for S + 1 + 64 tokens, falling back to the full text when a prefix is short).

Resume: the state is (epoch, records consumed in that epoch's shuffled stream, tokens of
the next document already used); restoring reads and drops that many raw records (no
tokenising) and goes on from there.

The trainer reads this iterator through prefetch.py's thread, so reading and tokenising
happen off the step loop (``encode_batch`` releases the GIL while it tokenises; the
single-text fallback of paper mode, ``encode``, does not).
"""
from __future__ import annotations

import collections
import hashlib
import itertools
from typing import Iterator

import numpy as np

from .batches import Batch, make_batch
from .common import DataError
from .tokenizer import encode_many

SHUFFLE_BUFFER = 10_000  # documents in the streaming shuffle buffer
ENCODE_CHUNK = 256  # documents tokenised per encode_batch call
_PREFIX_MARGIN = 64  # extra tokens a paper-mode prefix must yield to be trusted
_HASH_SCALE = float(1 << 64)
INSTALL_HINT = "pip install 'ebt-scaling[hf]'"


def import_datasets():
    try:
        import datasets
    except ImportError:
        raise DataError(f"data.source: 'hf' needs the Hugging Face datasets package; run: {INSTALL_HINT}") from None
    return datasets


def is_validation_text(text: str, val_fraction: float) -> bool:
    digest = hashlib.blake2b(text.encode("utf-8", errors="replace"), digest_size=8, person=b"ebt-val").digest()
    return int.from_bytes(digest, "big") / _HASH_SCALE < val_fraction


class HFDocuments:
    """Tokenised documents of one split of a streamed dataset, restartable anywhere."""

    def __init__(self, data, tokenizer, eod_id: int, seed: int, split: str, prefix_tokens: int | None = None):
        self.data, self.tokenizer, self.eod_id, self.seed = data, tokenizer, eod_id, seed
        self.split = split  # "train" or "val"
        self.prefix_tokens = prefix_tokens  # paper mode: only the first this-many tokens matter
        self._dataset = None

    def dataset(self):
        if self._dataset is None:
            datasets = import_datasets()
            try:
                self._dataset = datasets.load_dataset(self.data.hf_dataset, self.data.hf_config,
                                                      split=self.data.hf_split, streaming=True)
            except Exception as exc:  # datasets raises many types; the message is what matters
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise DataError(f"data.hf_dataset: cannot stream {self.data.hf_dataset!r} (config "
                                f"{self.data.hf_config!r}, split {self.data.hf_split!r}): {first}") from None
        return self._dataset

    def _stream(self, epoch: int, skip: int):
        ds = self.dataset()
        if self.split == "train":
            ds = ds.shuffle(seed=self.seed, buffer_size=SHUFFLE_BUFFER)
            ds.set_epoch(epoch)
        # Plain iteration, not ds.skip(): on a shuffled stream skip() fixes the shard order,
        # so the skipped stream would not continue the original one.
        return itertools.islice(ds, skip, None)

    def _text(self, record) -> str:
        field = self.data.hf_text_field
        if field not in record:
            raise DataError(f"data.hf_text_field: records of {self.data.hf_dataset!r} have no field {field!r}; "
                            f"fields: {', '.join(sorted(record))}")
        return record[field] or ""

    def _encode(self, texts: list[str]) -> list[np.ndarray]:
        limit = self.prefix_tokens
        if limit is None:
            return [np.array(ids + [self.eod_id], dtype=np.int64) for ids in encode_many(self.tokenizer, texts)]
        # Paper mode keeps the first `limit` tokens; tokenise a prefix long enough that the
        # cut cannot reach them (a cut changes at most the last pre-tokens), else the text.
        cut = 16 * (limit + _PREFIX_MARGIN)
        out = []
        for text, ids in zip(texts, encode_many(self.tokenizer, [t[:cut] for t in texts])):
            complete = len(text) <= cut
            if not complete and len(ids) < limit + _PREFIX_MARGIN:
                ids, complete = self.tokenizer.encode(text, add_special_tokens=False).ids, True
            out.append(np.array((ids + [self.eod_id] if complete else ids)[:limit], dtype=np.int64))
        return out

    def read(self, epoch: int = 0, record: int = 0) -> Iterator[tuple[int, int, np.ndarray]]:
        """(epoch, record number within the epoch, token ids ending with eod) from the
        given position on; training cycles epochs forever, validation stops at the end."""
        while True:
            pending: list[tuple[int, str]] = []
            found = False
            for index, row in enumerate(self._stream(epoch, record), start=record):
                text = self._text(row)
                if is_validation_text(text, self.data.val_fraction) == (self.split == "val"):
                    pending.append((index, text))
                if len(pending) >= ENCODE_CHUNK:
                    found = True
                    yield from ((epoch, i, ids) for (i, _), ids in zip(pending, self._encode([t for _, t in pending])))
                    pending = []
            if pending:
                found = True
                yield from ((epoch, i, ids) for (i, _), ids in zip(pending, self._encode([t for _, t in pending])))
            if self.split == "val":
                return
            if not found and record == 0:
                raise DataError(f"data.hf_dataset: {self.data.hf_dataset!r} split {self.data.hf_split!r} yielded no "
                                f"training documents (field {self.data.hf_text_field!r})")
            epoch, record = epoch + 1, 0


class HFTrainBatches:
    """Infinite, resumable iterator of this rank's rows of each global batch."""

    def __init__(self, docs: HFDocuments, mode: str, context: int, batch_size: int, rank: int, world_size: int,
                 pad_id: int):
        if batch_size % world_size:
            raise DataError(f"train.batch_size: {batch_size} must be divisible by the number of processes "
                            f"({world_size})")
        self.docs, self.mode, self.context = docs, mode, context
        self.batch_size, self.pad_id = batch_size, pad_id
        local = batch_size // world_size
        self.local = slice(rank * local, (rank + 1) * local)
        self.step = 0
        self._start = (0, 0, 0)  # (epoch, record, tokens used) where reading (re)starts
        self._reader = None
        # Documents read but not used up: [epoch, record, ids, tokens of ids already used].
        self._buffer: collections.deque = collections.deque()

    def __iter__(self) -> "HFTrainBatches":
        return self

    def _pull(self) -> None:
        if self._reader is None:
            epoch, record, used = self._start
            self._reader = self.docs.read(epoch, record)
            e, r, ids = next(self._reader)
            self._buffer.append([e, r, ids, used if (e, r) == (epoch, record) else 0])
        else:
            self._buffer.append([*next(self._reader), 0])

    def __next__(self) -> Batch:
        if self.mode == "paper":
            rows = []
            while len(rows) < self.batch_size:
                if not self._buffer:
                    self._pull()
                _, _, ids, _ = self._buffer.popleft()
                if len(ids) >= 2:
                    rows.append(ids)
            global_tokens = sum(min(len(r), self.context + 1) - 1 for r in rows)
            local = rows[self.local]
        else:
            need = self.batch_size * self.context + 1
            while sum(len(e[2]) - e[3] for e in self._buffer) < need:
                self._pull()
            stream = np.concatenate([e[2][e[3]:] for e in self._buffer])[:need]
            local = [stream[j * self.context: (j + 1) * self.context + 1]
                     for j in range(self.local.start, self.local.stop)]
            global_tokens = self.batch_size * self.context
            advance = need - 1  # windows overlap by one token: the last one starts the next batch
            while advance:
                head = self._buffer[0]
                left = len(head[2]) - head[3]
                if left <= advance:
                    advance -= left
                    self._buffer.popleft()
                else:
                    head[3] += advance
                    advance = 0
        self.step += 1
        return make_batch(local, self.context, self.pad_id, global_tokens)

    def state_dict(self) -> dict:
        if not self._buffer and self._reader is not None:
            self._pull()  # the next document's position is the state
        epoch, record, _, used = self._buffer[0] if self._buffer else (*self._start[:2], None, self._start[2])
        return {"step": self.step, "epoch": epoch, "record": record, "offset": used, "batch_size": self.batch_size}

    def load_state_dict(self, state: dict) -> None:
        if state.get("batch_size") != self.batch_size or "record" not in state:
            raise DataError(f"data state does not match this dataset (saved batch {state.get('batch_size')}, now "
                            f"{self.batch_size}); resume with the spec the run started with")
        self.step = int(state["step"])
        self._start = (int(state["epoch"]), int(state["record"]), int(state["offset"]))
        self._reader, self._buffer = None, collections.deque()


def hf_validation_batches(docs: HFDocuments, mode: str, context: int, batch_size: int, n_batches: int,
                          pad_id: int) -> list[Batch]:
    """The first batch_size * n_batches validation rows of the unshuffled stream."""
    want = batch_size * n_batches
    rows: list[np.ndarray] = []
    if mode == "paper":
        for _, _, ids in docs.read():
            if len(ids) >= 2:
                rows.append(ids[:context + 1])
                if len(rows) == want:
                    break
    else:
        buffer = np.zeros(0, dtype=np.int64)
        for _, _, ids in docs.read():
            buffer = np.concatenate([buffer, ids])
            while len(buffer) >= context + 1 and len(rows) < want:
                rows.append(buffer[:context + 1])
                buffer = buffer[context:]
            if len(rows) == want:
                break
    if not rows:
        raise DataError(f"data.hf_dataset: no validation rows in {docs.data.hf_dataset!r} (val_fraction "
                        f"{docs.data.val_fraction}); raise data.val_fraction or use more data")
    return [make_batch(rows[lo:lo + batch_size], context, pad_id) for lo in range(0, len(rows), batch_size)]
