"""Tokenizers: a byte-level BPE trained locally, or a user's tokenizer.json / hub name.

The local BPE is GPT-2 style (byte-level pre-tokenizer and decoder, no prefix space, so
any text round-trips exactly) with two special tokens: ``<|endoftext|>`` (end of
document, id 0) and ``<|pad|>`` (id 1). Its vocabulary size is ``model.vocab_size``,
special tokens and the 256 byte symbols included.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from .common import DataError

EOD_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"
MIN_BPE_VOCAB = 256 + 2
# Everything that changes the trained tokenizer; part of the cache key.
BPE_SETTINGS = {"kind": "byte_level_bpe", "add_prefix_space": False, "min_frequency": 2,
                "special_tokens": [EOD_TOKEN, PAD_TOKEN], "version": 1}

# End-of-document / pad tokens of common tokenizers, tried in order.
_EOD_NAMES = (EOD_TOKEN, "<|end_of_text|>", "</s>", "<eos>", "<|eot_id|>", "[SEP]")
_PAD_NAMES = (PAD_TOKEN, "<pad>", "[PAD]", "<|padding|>")


def train_bpe(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    if vocab_size < MIN_BPE_VOCAB:
        raise DataError(f"model.vocab_size: the byte-level BPE needs at least {MIN_BPE_VOCAB} tokens "
                        f"(256 bytes + 2 special), got {vocab_size}")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=BPE_SETTINGS["add_prefix_space"])
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=BPE_SETTINGS["min_frequency"],
        special_tokens=list(BPE_SETTINGS["special_tokens"]),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    return tokenizer


def load_tokenizer(path_or_name: str, key: str = "data.tokenizer_path") -> Tokenizer:
    """A tokenizer.json file (or a directory holding one), else a Hugging Face hub name."""
    path = Path(path_or_name).expanduser()
    if path.is_dir():
        path = path / "tokenizer.json"
    if path.is_file():
        try:
            return Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises its own Exception subclass
            raise DataError(f"{key}: cannot read {path} as a tokenizers tokenizer.json ({exc})") from None
    if path_or_name.endswith(".json") or path.is_absolute() or path_or_name.startswith("."):
        raise DataError(f"{key}: file not found: {path}")
    try:
        return Tokenizer.from_pretrained(path_or_name)
    except Exception as exc:
        raise DataError(f"{key}: {path_or_name!r} is no local file and could not be loaded from the hub "
                        f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None


def special_ids(tokenizer: Tokenizer, key: str = "data.tokenizer_path") -> tuple[int, int]:
    """(end-of-document id, pad id). Pad falls back to the end-of-document id: pad inputs
    are masked out of the loss by their -100 targets, so any valid id works."""
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    eod = next((vocab[name] for name in _EOD_NAMES if name in vocab), None)
    if eod is None:
        raise DataError(f"{key}: the tokenizer has no end-of-document token (looked for "
                        f"{', '.join(_EOD_NAMES)}); add one of them as a special token")
    pad = next((vocab[name] for name in _PAD_NAMES if name in vocab), eod)
    return eod, pad


def encode_many(tokenizer: Tokenizer, texts: list[str]) -> list[list[int]]:
    """Token ids of many texts, in parallel (encode_batch_fast skips offsets where it exists)."""
    encode = getattr(tokenizer, "encode_batch_fast", tokenizer.encode_batch)
    return [e.ids for e in encode(texts, add_special_tokens=False)]


def tokenizer_size(tokenizer: Tokenizer) -> int:
    """Ids run from 0 to size - 1 (added tokens included)."""
    return max(tokenizer.get_vocab(with_added_tokens=True).values()) + 1


def describe(tokenizer: Tokenizer) -> str:
    model = json.loads(tokenizer.to_str()).get("model", {}).get("type", "?")
    return f"{model} tokenizer, {tokenizer_size(tokenizer)} tokens"
