"""Downstream evaluation sets, the paper's prompt format, tokenising and batching.

Every example becomes ``"Question: {q}\\nAnswer: {a}"`` (the reference code's format) and
is scored as plain next-token prediction: all non-pad tokens (the paper), or only the
tokens of the answer (``score="answer"``). Sources:

* generated from a seed (nothing to download, never in any training corpus):
  ``dyck_examples`` (BIG-bench dyck_languages style: an unfinished bracket sequence, the
  answer closes it) and ``arithmetic_examples`` (elementary integer arithmetic);
* local files the user has: ``load_gsm8k`` (jsonl), ``load_squad`` (SQuAD v1.1 json:
  context + question -> first answer), ``load_bigbench`` (task.json: ``input`` and
  ``target`` / the best of ``target_scores``).

Files are read in file order and the first ``n`` usable examples are kept.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ebt_scaling.harness.contract.errors import ConfigError
from ebt_scaling.models.base import IGNORE_INDEX

from ..data.batches import Batch, make_batch

PROMPT = "Question: {q}\nAnswer:"
DYCK_PAIRS = (("(", ")"), ("[", "]"), ("{", "}"), ("<", ">"))
DYCK_INSTRUCTION = "Complete the rest of the sequence, making sure that the parentheses are closed properly. Input: "


class EvalDataError(ConfigError):
    """An evaluation file is missing or not in the expected format (one line, with the fix)."""


@dataclass(frozen=True)
class Example:
    question: str
    answer: str


def format_example(example: Example) -> tuple[str, int]:
    """The paper's text and the character offset where the answer part (" {a}") starts."""
    prompt = PROMPT.format(q=example.question)
    return f"{prompt} {example.answer}", len(prompt)


# --------------------------------------------------------------------------- generated sets

def dyck_examples(n: int, seed: int = 1234, min_len: int = 4, max_len: int = 20) -> list[Example]:
    """Random Dyck-4 prefixes with at least one open bracket; the answer closes them all.

    A prefix is a random walk of opens and closes (a close only where something is open),
    of min_len..max_len symbols, space separated as in BIG-bench; the answer is the
    closing brackets of the still-open stack, innermost first.
    """
    rng = random.Random(seed)
    examples = []
    for _ in range(n):
        length = rng.randint(min_len, max_len)
        stack: list[int] = []
        symbols: list[str] = []
        for i in range(length):
            left = length - i
            # close with probability 0.4 when possible; always leave >= 1 bracket open at the end
            can_close = len(stack) > 1 or (stack and left > 1)
            if can_close and rng.random() < 0.4:
                symbols.append(DYCK_PAIRS[stack.pop()][1])
            else:
                kind = rng.randrange(len(DYCK_PAIRS))
                stack.append(kind)
                symbols.append(DYCK_PAIRS[kind][0])
        answer = " ".join(DYCK_PAIRS[k][1] for k in reversed(stack))
        examples.append(Example(DYCK_INSTRUCTION + " ".join(symbols), answer))
    return examples


def _arith_tree(rng: random.Random, depth: int):
    if depth == 0 or rng.random() < 0.35:
        return rng.randint(0, 99 if depth else 20)
    op = rng.choice("+-*")
    if op == "*":  # keep products small: one factor 0..12
        return (op, _arith_tree(rng, depth - 1), rng.randint(0, 12))
    return (op, _arith_tree(rng, depth - 1), _arith_tree(rng, depth - 1))


def _arith_value(node) -> int:
    if isinstance(node, int):
        return node
    op, a, b = node
    a, b = _arith_value(a), _arith_value(b)
    return a + b if op == "+" else a - b if op == "-" else a * b


def _arith_text(node, top: bool = True) -> str:
    if isinstance(node, int):
        return str(node)
    op, a, b = node
    text = f"{_arith_text(a, False)} {op} {_arith_text(b, False)}"
    return text if top else f"({text})"


def arithmetic_examples(n: int, seed: int = 1234, max_depth: int = 2) -> list[Example]:
    """"What is 12 + (7 * 3)?" -> "33": integer +, -, * with one or two operations."""
    rng = random.Random(seed)
    examples = []
    while len(examples) < n:
        tree = _arith_tree(rng, max_depth)
        if isinstance(tree, int):
            continue
        examples.append(Example(f"What is {_arith_text(tree)}?", str(_arith_value(tree))))
    return examples


# --------------------------------------------------------------------------- files

def _read(path: str, what: str) -> str:
    try:
        return Path(path).expanduser().read_text(encoding="utf-8")
    except OSError as exc:
        raise EvalDataError(f"{what}: cannot read {path} ({exc.strerror or exc}); check the path") from None


def _json(path: str, what: str):
    try:
        return json.loads(_read(path, what))
    except json.JSONDecodeError as exc:
        raise EvalDataError(f"{what}: {path} is not valid JSON (line {exc.lineno}: {exc.msg})") from None


def load_gsm8k(path: str, n: int | None = None) -> list[Example]:
    """GSM8K jsonl: one {"question": ..., "answer": ...} per line (the answer keeps its
    worked solution and the final "#### N", as the file has it)."""
    examples = []
    for lineno, line in enumerate(_read(path, "gsm8k").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            examples.append(Example(str(row["question"]).strip(), str(row["answer"]).strip()))
        except (json.JSONDecodeError, KeyError, TypeError):
            raise EvalDataError(f"gsm8k: {path} line {lineno} is not a JSON object with "
                                f"'question' and 'answer'") from None
        if n is not None and len(examples) >= n:
            break
    if not examples:
        raise EvalDataError(f"gsm8k: {path} holds no examples")
    return examples


def load_squad(path: str, n: int | None = None) -> list[Example]:
    """SQuAD v1.1: {"data": [{"paragraphs": [{"context", "qas": [{"question", "answers":
    [{"text"}]}]}]}]}. Question = context + newline + question; answer = the first answer."""
    data = _json(path, "squad")
    examples = []
    try:
        for article in data["data"]:
            for paragraph in article["paragraphs"]:
                context = paragraph["context"].strip()
                for qa in paragraph["qas"]:
                    if not qa.get("answers"):
                        continue  # SQuAD 2.0 style unanswerable: nothing to score
                    examples.append(Example(f"{context}\n{qa['question'].strip()}", qa["answers"][0]["text"].strip()))
                    if n is not None and len(examples) >= n:
                        return examples
    except (KeyError, TypeError, IndexError, AttributeError):
        raise EvalDataError(f"squad: {path} is not SQuAD v1.1 json (data / paragraphs / context / qas / "
                            f"question / answers[0].text)") from None
    if not examples:
        raise EvalDataError(f"squad: {path} holds no answered questions")
    return examples


def _bigbench_target(example: dict) -> str | None:
    target = example.get("target")
    if isinstance(target, list):
        target = target[0] if target else None
    if isinstance(target, str):
        return target
    scores = example.get("target_scores")
    if isinstance(scores, dict) and scores:
        return max(scores, key=lambda k: scores[k])  # the first of the best-scored choices
    return None


def load_bigbench(path: str, n: int | None = None) -> list[Example]:
    """A BIG-bench task.json: {"examples": [{"input": ..., "target": str | [str, ...]} or
    {"input": ..., "target_scores": {choice: score}}]}; the answer is the (first) target or
    the best-scored choice."""
    data = _json(path, "bigbench")
    rows = data.get("examples") if isinstance(data, dict) else None
    if not isinstance(rows, list):
        raise EvalDataError(f"bigbench: {path} has no 'examples' list; give a BIG-bench task.json "
                            f"(benchmark_tasks/<task>/task.json; for subtasks, the subtask's task.json)")
    examples = []
    for row in rows:
        target = _bigbench_target(row) if isinstance(row, dict) else None
        if target is None or not isinstance(row.get("input"), str):
            continue
        examples.append(Example(row["input"].strip(), target.strip()))
        if n is not None and len(examples) >= n:
            break
    if not examples:
        raise EvalDataError(f"bigbench: {path} holds no example with 'input' and 'target' / 'target_scores'")
    return examples


def load_task_examples(task, n: int) -> list[Example]:
    """The examples of a parsed downstream task (grammar.TaskSpec)."""
    seed = task.get("seed", 1234)
    if task.name == "dyck":
        return dyck_examples(n, seed)
    if task.name == "arithmetic":
        return arithmetic_examples(n, seed)
    loader = {"gsm8k": load_gsm8k, "squad": load_squad, "bigbench": load_bigbench}[task.name]
    return loader(task.path, n)


# --------------------------------------------------------------------------- tokens

@dataclass
class Encoded:
    ids: np.ndarray  # the whole formatted example (before truncation)
    answer_token: int  # index of the first token that overlaps the answer part


def encode_examples(examples: list[Example], tokenizer) -> list[Encoded]:
    """Token ids of each formatted example (no special tokens, as the training data)."""
    out = []
    for example in examples:
        text, answer_at = format_example(example)
        encoding = tokenizer.encode(text, add_special_tokens=False)
        ends = [end for _, end in encoding.offsets]
        first = next((i for i, end in enumerate(ends) if end > answer_at), len(ends))
        out.append(Encoded(np.asarray(encoding.ids, dtype=np.int64), first))
    return out


def example_rows(encoded: list[Encoded], context: int, score: str = "all") -> list[tuple[np.ndarray, int]]:
    """(row of <= context + 1 ids, first scored target index) per example.

    score "all": the first context + 1 tokens (the paper's truncation), every target
    scored. score "answer": the last context + 1 tokens (so a long prompt never pushes the
    answer out), only targets inside the answer scored.
    """
    rows = []
    width = context + 1
    for e in encoded:
        if score == "all":
            rows.append((e.ids[:width], 0))
        else:
            cut = max(0, len(e.ids) - width)
            # target j predicts token j + 1: answer targets start at answer_token - 1
            rows.append((e.ids[cut:], max(0, e.answer_token - cut - 1)))
    return rows


def example_batches(encoded: list[Encoded], context: int, pad_id: int, batch_size: int,
                    score: str = "all") -> list[Batch]:
    """Batches of examples: pad inputs with pad_id, pad (and unscored) targets = -100.
    A batch is only as wide as its longest row (the models are causal: same scores)."""
    rows = example_rows(encoded, context, score)
    batches = []
    for lo in range(0, len(rows), batch_size):
        chunk = rows[lo:lo + batch_size]
        batch = make_batch([r for r, _ in chunk], context, pad_id)
        width = max(1, max(len(r) for r, _ in chunk) - 1)
        batch.inputs, batch.targets = batch.inputs[:, :width].contiguous(), batch.targets[:, :width].contiguous()
        for i, (_, first) in enumerate(chunk):
            batch.targets[i, :first] = IGNORE_INDEX
        batch.global_tokens = int((batch.targets != IGNORE_INDEX).sum())
        batches.append(batch)
    return batches
