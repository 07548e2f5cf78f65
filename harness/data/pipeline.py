"""``open_dataset(spec, rank, world_size)``: what the trainer calls.

Prepares the data the spec names if it is not cached yet (a no-op afterwards), then
serves batches::

    ds = open_dataset(spec, rank, world_size)
    ds.tokenizer, ds.vocab_size, ds.pad_id, ds.eod_id
    it = ds.train_batches()          # infinite; next(it) -> Batch(inputs, targets, global_tokens)
    state = it.state_dict()          # plain ints, picklable; it.load_state_dict(state) resumes exactly
    ds.val_batches(batch_size, n)    # fixed list of Batch over validation documents

The data order depends only on (spec.seed, spec.data, model.context, model.vocab_size,
train.batch_size), never on the architecture or the global torch RNG, so both runs of a
pair see the same batches (see batches.py for the order, hf_stream.py for streaming).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from tokenizers import Tokenizer

from .batches import Batch, PackedItems, PaperItems, TrainBatches, chunk_segments, evenly_spaced_batches
from .common import DataError, cache_root
from .token_store import TokenStore, build_shakespeare, index_token_file
from .tokenizer import load_tokenizer, special_ids, tokenizer_size


@dataclass
class PrepareReport:
    source: str
    location: str  # the cache entry (or, for streams, the dataset)
    built: bool  # False: found in the cache
    seconds: float
    train_tokens: int | None = None  # None for streams (not known without reading them all)
    val_tokens: int | None = None
    train_docs: int | None = None
    val_docs: int | None = None
    vocab_size: int = 0
    details: dict = field(default_factory=dict)


def _check_vocab(spec, size: int) -> None:
    if size > spec.model.vocab_size:
        raise DataError(f"model.vocab_size: the tokenizer at data.tokenizer_path has {size} tokens; "
                        f"set model.vocab_size to at least {size}")


def _store_path(spec, log: Callable[[str], None]) -> tuple[Path, bool]:
    data = spec.data
    cache = cache_root(data.cache_dir)
    if data.source == "shakespeare":
        return build_shakespeare(cache, spec.model.vocab_size, data.val_fraction, log)
    return index_token_file(cache, data.tokens_path, data.tokenizer_path, data.val_fraction, log)


class StoreDataset:
    """Shakespeare or a user's token file, served from a memory-mapped token store."""

    def __init__(self, spec, store: TokenStore, tokenizer: Tokenizer, rank: int, world_size: int):
        self.spec, self.store, self.tokenizer = spec, store, tokenizer
        self.rank, self.world_size = rank, world_size
        self.vocab_size = tokenizer_size(tokenizer)
        self.eod_id, self.pad_id = store.eod_id, store.pad_id
        _check_vocab(spec, self.vocab_size)
        self._items = {}

    def items(self, split: str):
        """The split's rows in file order (PackedItems or PaperItems)."""
        if split not in self._items:
            context, what = self.spec.model.context, f"{split} split of the {self.spec.data.source} data"
            if self.spec.data.batching == "packed":
                starts, lengths = self.store.spans(split)
                self._items[split] = PackedItems(self.store.tokens, starts, lengths, context, what)
            else:
                if self.store.seg_bounds is None:  # whole documents
                    starts, lengths = self.store.docs(split)
                else:  # runs of speeches / stanzas of one work (see batches.py)
                    starts, lengths = chunk_segments(*self.store.segments(split), context + 1)
                self._items[split] = PaperItems(self.store.tokens, starts, lengths, context, what)
        return self._items[split]

    def train_batches(self) -> TrainBatches:
        return TrainBatches(self.items("train"), self.spec.seed, self.spec.train.batch_size, self.rank,
                            self.world_size, self.pad_id)

    def val_batches(self, batch_size: int, n_batches: int) -> list[Batch]:
        return evenly_spaced_batches(self.items("val"), batch_size, n_batches, self.pad_id)

    def summary(self) -> dict:
        return {"source": self.spec.data.source, "batching": self.spec.data.batching, **self.store.summary(),
                "train_rows_per_epoch": self.items("train").n}


class StreamDataset:
    """A Hugging Face dataset, streamed and tokenised on the fly."""

    def __init__(self, spec, tokenizer: Tokenizer, rank: int, world_size: int):
        from .hf_stream import HFDocuments, import_datasets

        import_datasets()  # fail early, in one line, when the extra is missing
        self.spec, self.tokenizer = spec, tokenizer
        self.rank, self.world_size = rank, world_size
        self.vocab_size = tokenizer_size(tokenizer)
        self.eod_id, self.pad_id = special_ids(tokenizer)
        _check_vocab(spec, self.vocab_size)
        prefix = spec.model.context + 1 if spec.data.batching == "paper" else None
        self._train = HFDocuments(spec.data, tokenizer, self.eod_id, spec.seed, "train", prefix)
        self._val = HFDocuments(spec.data, tokenizer, self.eod_id, spec.seed, "val", prefix)
        self._val_cache: dict = {}

    def train_batches(self):
        from .hf_stream import HFTrainBatches

        return HFTrainBatches(self._train, self.spec.data.batching, self.spec.model.context,
                              self.spec.train.batch_size, self.rank, self.world_size, self.pad_id)

    def val_batches(self, batch_size: int, n_batches: int) -> list[Batch]:
        from .hf_stream import hf_validation_batches

        key = (batch_size, n_batches)
        if key not in self._val_cache:
            self._val_cache[key] = hf_validation_batches(self._val, self.spec.data.batching, self.spec.model.context,
                                                         batch_size, n_batches, self.pad_id)
        return self._val_cache[key]

    def summary(self) -> dict:
        return {"source": "hf", "batching": self.spec.data.batching, "dataset": self.spec.data.hf_dataset,
                "vocab_size": self.vocab_size}


def prepare(spec, log: Callable[[str], None] = lambda _: None) -> PrepareReport:
    """Download / tokenise / index what the spec names, unless cached. For streams, check
    that the tokenizer loads and the dataset yields a record."""
    start = time.perf_counter()
    data = spec.data
    if data.source == "hf":
        from .hf_stream import HFDocuments, import_datasets

        import_datasets()
        tokenizer = load_tokenizer(data.tokenizer_path)
        _check_vocab(spec, tokenizer_size(tokenizer))
        eod, _ = special_ids(tokenizer)
        first = next(HFDocuments(data, tokenizer, eod, spec.seed, "train").read(), None)
        return PrepareReport("hf", f"{data.hf_dataset} ({data.hf_config or 'default'}, {data.hf_split})", False,
                             time.perf_counter() - start, vocab_size=tokenizer_size(tokenizer),
                             details={"first_document_tokens": None if first is None else len(first[2]),
                                      "note": "streamed: tokenised on the fly, nothing cached"})
    path, built = _store_path(spec, log)
    store = TokenStore.open(path)
    summary = store.summary()
    return PrepareReport(data.source, str(path), built, time.perf_counter() - start,
                         summary["train_tokens"], summary["val_tokens"], summary["train_docs"], summary["val_docs"],
                         int(store.meta["vocab_size"]), details={"dtype": store.meta["dtype"],
                                                                 "seconds": store.meta.get("seconds", {})})


def open_dataset(spec, rank: int = 0, world_size: int = 1, log: Callable[[str], None] = lambda _: None):
    """The dataset of a RunSpec for process `rank` of `world_size` (see module docstring)."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise DataError(f"rank {rank} / world size {world_size}: need 0 <= rank < world_size")
    if spec.train.batch_size % world_size:
        raise DataError(f"train.batch_size: {spec.train.batch_size} must be divisible by the number of processes "
                        f"({world_size})")
    if spec.data.source == "hf":
        return StreamDataset(spec, load_tokenizer(spec.data.tokenizer_path), rank, world_size)
    path, _ = _store_path(spec, log)
    store = TokenStore.open(path)
    if spec.data.source == "shakespeare":
        tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
    else:
        tokenizer = load_tokenizer(spec.data.tokenizer_path)
    return StoreDataset(spec, store, tokenizer, rank, world_size)
