"""Contamination check: does any long token n-gram of an evaluation example occur in the
training split?

The index holds a 64-bit rolling hash of every n-gram (default n = 13 tokens, the
GPT-3 paper's window, in tokens of the run's tokenizer) of the training split's token
stream, sorted; an example is flagged when any of its n-grams is in it (a hash collision
could only add a false flag, with probability ~ n-grams / 2^64). Examples are tokenised
with the run's tokenizer and checked whole (before truncation to the context).

Only datasets held in a token store (Shakespeare, a token file) can be checked; for
streamed datasets the check reports ``{"checked": false}``. Stores larger than
``max_tokens`` are checked on evenly spaced stretches of that many tokens in all (the
result says how many training tokens it covered).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_NGRAM = 13
DEFAULT_MAX_TOKENS = 20_000_000
_PRIME = np.uint64(1099511628211)  # FNV-64 prime
_CACHE: dict = {}


def ngram_hashes(tokens: np.ndarray, n: int) -> np.ndarray:
    """uint64 hash of every window of n consecutive tokens (len(tokens) - n + 1 of them)."""
    tokens = np.asarray(tokens).astype(np.uint64)
    count = len(tokens) - n + 1
    if count <= 0:
        return np.zeros(0, dtype=np.uint64)
    h = np.zeros(count, dtype=np.uint64)
    one = np.uint64(1)
    for i in range(n):
        h = h * _PRIME + tokens[i:i + count] + one  # wraps mod 2^64 (array ops do not warn)
    return h


@dataclass
class NgramIndex:
    hashes: np.ndarray  # sorted uint64
    n: int
    tokens_checked: int
    tokens_total: int

    def contains(self, hashes: np.ndarray) -> np.ndarray:
        if len(self.hashes) == 0 or len(hashes) == 0:
            return np.zeros(len(hashes), dtype=bool)
        at = np.searchsorted(self.hashes, hashes)
        at[at == len(self.hashes)] = 0
        return self.hashes[at] == hashes


def index_from_spans(tokens: np.ndarray, starts: np.ndarray, lengths: np.ndarray, n: int = DEFAULT_NGRAM,
                     max_tokens: int = DEFAULT_MAX_TOKENS) -> NgramIndex:
    """Index of the n-grams inside the given spans of `tokens` (no n-gram straddles two spans)."""
    total = int(np.sum(lengths))
    pieces = []
    if total <= max_tokens:
        pieces = [np.asarray(tokens[int(s):int(s) + int(l)]) for s, l in zip(starts, lengths)]
    else:  # evenly spaced stretches (up to 64 of them), max_tokens in all
        count = max(1, min(64, max_tokens // n))
        stretch = max(n, max_tokens // count)
        cum = np.concatenate([[0], np.cumsum(lengths)])
        for at in np.linspace(0, total - stretch, count).astype(np.int64):
            span = int(np.searchsorted(cum, at, side="right")) - 1
            offset = int(at - cum[span])
            take = min(stretch, int(lengths[span]) - offset)
            start = int(starts[span]) + offset
            pieces.append(np.asarray(tokens[start:start + take]))
    hashes = [ngram_hashes(p, n) for p in pieces if len(p) >= n]
    merged = np.concatenate(hashes) if hashes else np.zeros(0, dtype=np.uint64)
    merged.sort()
    return NgramIndex(merged, n, int(sum(len(p) for p in pieces)), total)


def training_index(dataset, n: int = DEFAULT_NGRAM, max_tokens: int = DEFAULT_MAX_TOKENS) -> NgramIndex | None:
    """The n-gram index of the dataset's training split (cached per store and n); None
    when the dataset has no token store (streamed)."""
    store = getattr(dataset, "store", None)
    if store is None:
        return None
    key = (str(store.path), len(store.tokens), n, max_tokens)
    if key not in _CACHE:
        starts, lengths = store.spans("train")
        _CACHE.clear()  # one index at a time: they can be large
        _CACHE[key] = index_from_spans(store.tokens, starts, lengths, n, max_tokens)
    return _CACHE[key]


def contamination(token_lists, index: NgramIndex | None) -> dict:
    """{"checked", "fraction" of examples flagged, "flagged", "examples", "ngram",
    "train_tokens_checked", "train_tokens"} for examples given as token id sequences."""
    if index is None:
        return {"checked": False, "reason": "the training data is streamed (no token store to index)"}
    flagged = sum(bool(index.contains(ngram_hashes(ids, index.n)).any()) for ids in token_lists)
    examples = len(token_lists)
    return {"checked": True, "fraction": flagged / max(examples, 1), "flagged": flagged, "examples": examples,
            "ngram": index.n, "train_tokens_checked": index.tokens_checked, "train_tokens": index.tokens_total}
