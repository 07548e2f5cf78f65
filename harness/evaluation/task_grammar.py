"""The task-name grammar of ``EvalSpec.tasks``. Torch-free: the contract checks a spec's
tasks when it loads, through the ``ebt_scaling.eval_task_grammars`` entry point (``GRAMMAR``).

One string per evaluation::

    TASK   := NAME [ "=" PATH ] ( "," KEY "=" VALUE )*

    pretrain                      held-out perplexity on the run's validation split
    dyck                          generated Dyck-language completions (BIG-bench style)
    arithmetic                    generated elementary arithmetic QA
    gsm8k=PATH                    GSM8K jsonl ({"question", "answer"} per line)
    squad=PATH                    SQuAD v1.1 json (context + question -> first answer)
    bigbench=PATH                 a BIG-bench task.json (dyck_languages, elementary_math_qa, ...)
    thinking                      EBT thinking on every other task (Transformer++: flat reference)

Options (after commas; a PATH therefore cannot contain a comma):

    n=INT        examples (pretrain: validation sequences; thinking: examples per task)
    score=all|answer   score every non-pad token (the paper) or only the answer's tokens
    seed=INT     generated sets (dyck, arithmetic): the seed of the generator
    label=NAME   the key of the task in the results (default: the name; bigbench: bigbench_<task>)
    ngram=INT    contamination window in tokens (default 13)
    steps=INT    thinking: the largest number of refinement steps (default 4 x the validation steps)
    sigma=FLOAT  thinking: Langevin noise std of the noisy curve (default: paper 1.0, the
                 reference inference's; final_landscape the model's, else 3.0 as the paper's S2)
    bon=INT      thinking: the largest N of best-of-N, a power of two (N = 1, 2, 4, .., bon)
    protocol=paper|final_landscape   thinking: how more steps are taken (THINKING_PROTOCOLS;
                 default paper)

Examples: ``pretrain``, ``dyck,n=64,seed=1``, ``gsm8k=/data/gsm8k/test.jsonl,score=answer``,
``bigbench=/data/bigbench/benchmark_tasks/dyck_languages/task.json``, ``thinking,n=8,steps=8``,
``thinking,protocol=final_landscape``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import PurePath

from ebt_scaling.harness.contract.errors import ConfigError
from ebt_scaling.harness.contract.spec import TaskGrammar

GENERATED = ("dyck", "arithmetic")
FROM_FILE = ("gsm8k", "squad", "bigbench")
TASK_NAMES = ("pretrain", *GENERATED, *FROM_FILE, "thinking")
VALID_NAMES = "pretrain, dyck, arithmetic, gsm8k=PATH, squad=PATH, bigbench=PATH/task.json, thinking"

_DOWNSTREAM_OPTIONS = {"n", "score", "label", "ngram"}
OPTIONS: dict[str, set[str]] = {
    "pretrain": {"n", "label"},
    **{name: _DOWNSTREAM_OPTIONS | {"seed"} for name in GENERATED},
    **{name: set(_DOWNSTREAM_OPTIONS) for name in FROM_FILE},
    "thinking": {"n", "steps", "sigma", "bon", "protocol"},
}
# How thinking takes more refinement steps than trained (docs/ebt.md), and how reports name it.
THINKING_PROTOCOLS = {
    "paper": "n steps on each of the K energy landscapes in turn, K x n in all: the reference code's inference",
    "final_landscape": "n steps in all, those beyond the trained ones on the last landscape: this project's earlier "
                       "protocol",
}
DEFAULT_THINKING_PROTOCOL = "paper"
_LABEL = re.compile(r"^[A-Za-z0-9_.\-]+$")


@dataclass(frozen=True)
class TaskSpec:
    """One parsed entry of EvalSpec.tasks."""

    name: str
    path: str | None = None
    options: dict = field(default_factory=dict)
    raw: str = ""

    @property
    def label(self) -> str:
        if "label" in self.options:
            return self.options["label"]
        if self.name == "bigbench":
            return "bigbench_" + _bigbench_name(self.path)
        return self.name

    def get(self, key: str, default=None):
        return self.options.get(key, default)


def _bigbench_name(path: str) -> str:
    parts = PurePath(path).parts
    if "benchmark_tasks" in parts:
        inner = parts[parts.index("benchmark_tasks") + 1:]
        inner = inner[:-1] if inner and inner[-1].endswith(".json") else inner
        if inner:
            return "_".join(inner)
    p = PurePath(path)
    return p.parent.name if p.name == "task.json" and p.parent.name else p.stem


def _fail(raw: str, problem: str) -> ConfigError:
    return ConfigError(f"eval.tasks: {raw!r}: {problem}; valid names: {VALID_NAMES} (options after commas: "
                       f"n, score, seed, label, ngram; thinking: n, steps, sigma, bon, protocol)")


def _value(raw: str, key: str, value: str):
    def integer(low: int) -> int:
        try:
            number = int(value)
        except ValueError:
            raise _fail(raw, f"option {key} must be an integer, got {value!r}") from None
        if number < low:
            raise _fail(raw, f"option {key} must be >= {low}, got {number}")
        return number

    if key in ("n", "steps"):
        return integer(1)
    if key == "seed":
        return integer(0)
    if key == "ngram":
        return integer(4)
    if key == "bon":
        number = integer(1)
        if number & (number - 1):
            raise _fail(raw, f"option bon must be a power of two (1, 2, 4, 8, ...), got {number}")
        return number
    if key == "sigma":
        try:
            number = float(value)
        except ValueError:
            raise _fail(raw, f"option sigma must be a number, got {value!r}") from None
        if not number >= 0:
            raise _fail(raw, f"option sigma must be >= 0, got {value}")
        return number
    if key == "protocol":
        if value not in THINKING_PROTOCOLS:
            raise _fail(raw, f"option protocol must be one of {', '.join(THINKING_PROTOCOLS)}, got {value!r}")
        return value
    if key == "score":
        if value not in ("all", "answer"):
            raise _fail(raw, f"option score must be 'all' or 'answer', got {value!r}")
        return value
    if key == "label":
        if not _LABEL.match(value) or value == "thinking":
            raise _fail(raw, f"option label must be letters, digits, '_', '.', '-' (not 'thinking'), got {value!r}")
        return value
    raise _fail(raw, f"unknown option {key!r}")


def parse_task(raw: str) -> TaskSpec:
    """Parse one task string; a ConfigError names eval.tasks, the entry and the valid names."""
    if not isinstance(raw, str) or not raw.strip():
        raise _fail(str(raw), "empty task name")
    head, *option_strings = raw.strip().split(",")
    name, has_path, path = head.partition("=")
    name = name.strip()
    if name not in TASK_NAMES:
        raise _fail(raw, f"unknown task {name!r}")
    if name in FROM_FILE and not (has_path and path.strip()):
        raise _fail(raw, f"{name} needs a file: {name}=PATH")
    if name not in FROM_FILE and has_path:
        raise _fail(raw, f"{name} takes no path")
    options = {}
    for item in option_strings:
        key, has_value, value = item.partition("=")
        key = key.strip()
        if not has_value:
            raise _fail(raw, f"option {item!r} must be KEY=VALUE")
        if key not in OPTIONS[name]:
            raise _fail(raw, f"option {key!r} is not valid for {name} (valid: {', '.join(sorted(OPTIONS[name]))})")
        if key in options:
            raise _fail(raw, f"option {key!r} given twice")
        options[key] = _value(raw, key, value.strip())
    return TaskSpec(name, path.strip() if has_path else None, options, raw)


def parse_tasks(tasks) -> list[TaskSpec]:
    """Parse and cross-check all entries (no duplicate labels, at most one thinking)."""
    parsed = [parse_task(t) for t in tasks]
    seen: dict[str, str] = {}
    for task in parsed:
        key = "thinking" if task.name == "thinking" else task.label
        if key in seen:
            raise _fail(task.raw, f"duplicates {seen[key]!r} (results key {key!r}); give one of them label=NAME")
        seen[key] = task.raw
    return parsed


def validate_tasks(tasks, key: str = "eval.tasks") -> None:
    """Raise ConfigError("<key>: ...") for the first bad entry. EvalSpec passes key="tasks":
    the typed-config loader prefixes the path (eval.tasks, or base.eval.tasks in a sweep)."""
    try:
        parse_tasks(tasks)
    except ConfigError as exc:
        raise ConfigError(key + str(exc)[len("eval.tasks"):]) from None


GRAMMAR = TaskGrammar(name="builtin", validate=validate_tasks)  # registered in pyproject.toml
