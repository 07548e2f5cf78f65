"""Batching over a token store: "packed" windows or "paper" rows, in a seeded order.

Both modes turn a split into a list of *items*, each one row of context + 1 tokens at
most (inputs = row[:-1], targets = row[1:]):

* packed: the split's documents, each ending with its end-of-document token, are
  concatenated in file order into one stream, cut into windows of S + 1 tokens that
  overlap by one token (stride S), so every next-token transition of the stream is
  trained exactly once per epoch. Each epoch starts the windows at a seeded offset in
  [0, S), so repeated epochs see different cuts. No padding: all B * S targets count.
* paper (the paper's RedPajama recipe): one document per row, truncated to its first
  S + 1 tokens and padded with the pad id; pad targets are -100 (IGNORE_INDEX) and a
  document shorter than 2 tokens (nothing to predict) is skipped. A store with finer
  cut points (Shakespeare: one speech of a play or one stanza of a poem, i.e. what sits
  between blank lines) groups consecutive segments of one work greedily into documents
  of at most S + 1 tokens, so each row starts at a natural beginning, as a web
  document would, and hardly any text is cut away (a segment longer than S + 1 forms
  its own row and is truncated); whole 20k-token works truncated to 257 tokens would
  throw away 99% of the corpus. Stores without cut points use whole documents.

Order. Global row g (row j of global batch k is g = k * B + j) is item
``perm_e[g mod n]`` of epoch ``e = g // n``, where ``perm_e`` (and the packed offset)
come from a numpy Generator seeded with (seed, epoch) only: never the global torch RNG,
and independent of the architecture, the rank and the world size. So a pair of runs
(EBT and Transformer++, same seed and data) gets identical batches, rank r of W takes
rows [r * B / W, (r + 1) * B / W) of the same global batches (W processes together see
exactly what one process sees), the stream is infinite (a new permutation per epoch),
and the whole iterator state is the number of batches drawn.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ebt_scaling.models.base import IGNORE_INDEX

from .common import DataError

_ORDER_SALT = 0xEB75CA1E  # separates data-order streams from any other use of the seed


@dataclass
class Batch:
    inputs: torch.Tensor  # (B_local, S) int64 token ids; pad id at pad positions
    targets: torch.Tensor  # (B_local, S) int64 next ids; IGNORE_INDEX (-100) at pads
    global_tokens: int  # non-pad targets in the whole global batch (all ranks)

    def to(self, device, non_blocking: bool = False) -> "Batch":
        return Batch(self.inputs.to(device, non_blocking=non_blocking),
                     self.targets.to(device, non_blocking=non_blocking), self.global_tokens)

    def pin_memory(self) -> "Batch":
        """A copy in page-locked host memory, so that .to(cuda, non_blocking=True) is asynchronous."""
        return Batch(self.inputs.pin_memory(), self.targets.pin_memory(), self.global_tokens)


def make_batch(rows: list[np.ndarray], context: int, pad_id: int, global_tokens: int | None = None) -> Batch:
    """Rows of 2..S+1 token ids -> (inputs, targets); short rows are padded."""
    width = context + 1
    array = np.full((len(rows), width), pad_id, dtype=np.int64)
    lengths = np.empty(len(rows), dtype=np.int64)
    for i, row in enumerate(rows):
        n = min(len(row), width)
        array[i, :n] = row[:n]
        lengths[i] = n
    inputs, targets = array[:, :-1].copy(), array[:, 1:].copy()
    pad = np.arange(context)[None, :] >= (lengths - 1)[:, None]
    inputs[pad] = pad_id
    targets[pad] = IGNORE_INDEX
    if global_tokens is None:
        global_tokens = int((lengths - 1).sum())
    return Batch(torch.from_numpy(inputs), torch.from_numpy(targets), int(global_tokens))


class PackedItems:
    """Windows of S + 1 tokens (stride S) over the concatenation of token spans."""

    def __init__(self, tokens: np.ndarray, starts: np.ndarray, lengths: np.ndarray, context: int, what: str):
        self.tokens, self.context = tokens, context
        self.starts = np.asarray(starts, dtype=np.int64)
        self.cum = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
        total = int(self.cum[-1])
        self.n = (total - context) // context  # windows that fit whatever the offset in [0, S)
        self.offsets = context
        if self.n < 1:
            raise DataError(f"model.context: the {what} has {total} tokens, too few for one window of "
                            f"context + 1 = {context + 1} tokens; use a shorter context or more data")

    def row(self, item: int, offset: int) -> np.ndarray:
        start, need = offset + item * self.context, self.context + 1
        span = int(np.searchsorted(self.cum, start, side="right")) - 1
        pieces, at = [], start - int(self.cum[span])
        while need > 0:
            take = min(need, int(self.cum[span + 1] - self.cum[span]) - at)
            begin = int(self.starts[span]) + at
            pieces.append(self.tokens[begin:begin + take])
            need -= take
            span, at = span + 1, 0
        return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)

    def row_targets(self, items: np.ndarray) -> int:
        return len(items) * self.context


class PaperItems:
    """One document per row, truncated to S + 1 tokens; documents of < 2 tokens dropped."""

    def __init__(self, tokens: np.ndarray, starts: np.ndarray, lengths: np.ndarray, context: int, what: str):
        lengths = np.minimum(np.asarray(lengths, dtype=np.int64), context + 1)
        keep = lengths >= 2
        self.tokens, self.context = tokens, context
        self.starts, self.lengths = np.asarray(starts, dtype=np.int64)[keep], lengths[keep]
        self.n = len(self.starts)
        self.offsets = 1
        if self.n < 1:
            raise DataError(f"data.batching: the {what} has no document of 2 or more tokens")

    def row(self, item: int, offset: int = 0) -> np.ndarray:
        start = int(self.starts[item])
        return self.tokens[start:start + int(self.lengths[item])]

    def row_targets(self, items: np.ndarray) -> int:
        return int((self.lengths[items] - 1).sum())


def chunk_segments(seg_starts: np.ndarray, seg_lengths: np.ndarray, seg_docs: np.ndarray,
                   limit: int) -> tuple[np.ndarray, np.ndarray]:
    """Greedily group consecutive segments of one document into chunks of <= limit
    tokens (a longer segment is a chunk of its own)."""
    starts, lengths = [], []
    cur_start, cur_len, cur_doc = 0, 0, -1
    for start, length, doc in zip(seg_starts.tolist(), seg_lengths.tolist(), seg_docs.tolist()):
        if cur_len and (doc != cur_doc or cur_len + length > limit):
            starts.append(cur_start)
            lengths.append(cur_len)
            cur_len = 0
        if cur_len == 0:
            cur_start, cur_doc = start, doc
        cur_len += length
    if cur_len:
        starts.append(cur_start)
        lengths.append(cur_len)
    return np.array(starts, dtype=np.int64), np.array(lengths, dtype=np.int64)


class EpochOrder:
    """Seeded permutation (and packed-window offset) per epoch; a pure function of
    (seed, epoch), so no generator state ever needs saving."""

    def __init__(self, n_items: int, seed: int, offsets: int):
        self.n, self.seed, self.offsets = n_items, seed, offsets
        self._epochs: dict[int, tuple[np.ndarray, int]] = {}

    def epoch(self, e: int) -> tuple[np.ndarray, int]:
        if e not in self._epochs:
            rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([_ORDER_SALT, self.seed, e])))
            offset = int(rng.integers(0, self.offsets)) if self.offsets > 1 else 0
            self._epochs = {k: v for k, v in self._epochs.items() if k >= e - 1}
            ids = np.arange(self.n, dtype=np.uint32 if self.n < 1 << 32 else np.int64)  # half the memory
            self._epochs[e] = (rng.permutation(ids), offset)
        return self._epochs[e]

    def locate(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(item, offset) of each global row number."""
        items = np.empty(len(rows), dtype=np.int64)
        offsets = np.empty(len(rows), dtype=np.int64)
        epochs = rows // self.n
        for e in np.unique(epochs).tolist():
            perm, offset = self.epoch(e)
            where = epochs == e
            items[where] = perm[rows[where] % self.n]
            offsets[where] = offset
        return items, offsets


class TrainBatches:
    """Infinite, resumable iterator of this rank's slice of each global batch."""

    def __init__(self, items, seed: int, batch_size: int, rank: int, world_size: int, pad_id: int):
        if batch_size % world_size:
            raise DataError(f"train.batch_size: {batch_size} must be divisible by the number of processes "
                            f"({world_size})")
        if not 0 <= rank < world_size:
            raise DataError(f"rank {rank} is outside world size {world_size}")
        self.items, self.batch_size, self.pad_id = items, batch_size, pad_id
        self.order = EpochOrder(items.n, seed, items.offsets)
        local = batch_size // world_size
        self.local = slice(rank * local, (rank + 1) * local)
        self.step = 0

    @property
    def epoch(self) -> float:
        """Epochs drawn so far (fractional)."""
        return self.step * self.batch_size / self.items.n

    def __iter__(self) -> "TrainBatches":
        return self

    def __next__(self) -> Batch:
        batch = self.batch_at(self.step)
        self.step += 1
        return batch

    def batch_at(self, step: int) -> Batch:
        rows = np.arange(step * self.batch_size, (step + 1) * self.batch_size, dtype=np.int64)
        items, offsets = self.order.locate(rows)
        global_tokens = self.items.row_targets(items)
        local = [self.items.row(int(i), int(o)) for i, o in zip(items[self.local], offsets[self.local])]
        return make_batch(local, self.items.context, self.pad_id, global_tokens)

    def state_dict(self) -> dict:
        return {"step": self.step, "items": self.items.n, "batch_size": self.batch_size}

    def load_state_dict(self, state: dict) -> None:
        if state.get("items") != self.items.n or state.get("batch_size") != self.batch_size:
            raise DataError(f"data state does not match this dataset (saved: {state.get('items')} items, batch "
                            f"{state.get('batch_size')}; now: {self.items.n} items, batch {self.batch_size}); "
                            f"resume with the spec the run started with")
        self.step = int(state["step"])


def evenly_spaced_batches(items, batch_size: int, n_batches: int, pad_id: int) -> list[Batch]:
    """A fixed list of full batches of items spread evenly over the split (offset 0);
    fewer batches when the split has fewer than batch_size * n_batches items (the last
    may then be short)."""
    want = batch_size * n_batches
    picks = np.arange(items.n) if items.n <= want else (np.arange(want) * items.n) // want
    batches = []
    for lo in range(0, len(picks), batch_size):
        rows = [items.row(int(i), 0) for i in picks[lo:lo + batch_size]]
        batches.append(make_batch(rows, items.context, pad_id))
    return batches
