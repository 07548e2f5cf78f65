"""The evaluation entry point: ``run_evals(model, spec, dataset)`` -> plain-JSON dict.

Called by the trainer when a run ends (``result.json["evaluations"]``) and by
``ebt-scaling eval`` on finished runs. Which evaluations run is ``spec.eval.tasks``
(grammar: harness/evaluation/task_grammar.py) unless ``tasks`` is given. The result::

    {"tasks": {LABEL: {"ppl", "nll", "tokens", "examples", "seconds",
                       "contamination": {"checked", "fraction", "flagged", "examples", "ngram", ...}
                                        (null for pretrain: the validation split is disjoint
                                        from training by construction),
                       "score": "all" | "answer", "truncated": rows cut to the context}
               or {"error": "..."} when a task could not run (e.g. a missing file)},
     "thinking": {"protocol", "trained_steps", "max_steps", "sigma", "examples",   # only with "thinking"
                  "tasks": {LABEL: {"protocol", "landscapes", "steps": [x of each point],
                                    "ppl": [...], "ppl_langevin": [...], "sigma", "validation_sigma",
                                    "bon": {"1": ppl, "2": ..}, "bon_energy": {..}, "trained_steps",
                                    "ppl_trained", "best_ppl", "gain", "shift",
                                    "energy_auroc": {"onehot", "refined", "refined_accuracy"}}}},
     "energy_auroc": pooled "onehot" AUROC over all thinking tasks (EBT; null for Transformer++),
     "seconds": total}

"protocol" is how thinking takes more steps (harness/evaluation/thinking.py: "paper" or
"final_landscape"), "trained_steps" the validation schedule's steps (ppl_trained is the
validation protocol's perplexity) and "sigma" the Langevin curve's noise.
"shift" is the distribution shift of a task: its validation-protocol perplexity over
the pretraining one (thinking always includes "pretrain" as the in-distribution
reference). Everything is scored under fixed seeds, so repeated evaluations agree, and
the caller's RNG state is left as it was.
"""
from __future__ import annotations

import math
import time
from typing import Callable

from ebt_scaling.models.base import autocast

from .contamination import DEFAULT_NGRAM, contamination, training_index
from .perplexity import model_device, score_batches
from .task_grammar import DEFAULT_THINKING_PROTOCOL, THINKING_PROTOCOLS, TaskSpec, parse_tasks
from .tasks import encode_examples, example_batches, load_task_examples
from .thinking import flat_reference, langevin_curve_sigma, pooled_auroc, think_task

DEFAULT_EXAMPLES = 64  # per downstream task
DEFAULT_THINK_EXAMPLES = 8  # per task, for thinking (each costs ~50 refinement steps)


def pretrain_batches(dataset, batch_size: int, n: int) -> list:
    """The first n of the evenly spaced validation sequences the trainer evaluates on
    (n = eval.batches * eval.batch_size gives exactly the trainer's batches)."""
    batches = dataset.val_batches(batch_size, -(-n // batch_size))
    out, left = [], n
    for batch in batches:
        if left <= 0:
            break
        if len(batch.inputs) > left:
            batch = type(batch)(batch.inputs[:left], batch.targets[:left], int((batch.targets[:left] != -100).sum()))
        out.append(batch)
        left -= len(batch.inputs)
    return out


def _task_n(task: TaskSpec, examples: int | None, default: int) -> int:
    return examples if examples is not None else task.get("n", default)


def run_evals(model, spec, dataset=None, tasks=None, examples: int | None = None,
              log: Callable[[str], None] = lambda _: None) -> dict:
    """Run the evaluations `tasks` (default spec.eval.tasks) of `model` trained with `spec`
    on `dataset` (default: open_dataset(spec)); `examples` overrides every task's n."""
    start_all = time.perf_counter()
    parsed = parse_tasks(spec.eval.tasks if tasks is None else tasks)
    if dataset is None:
        from ..data.pipeline import open_dataset

        dataset = open_dataset(spec)
    device = model_device(model)
    amp = autocast(device, spec.precision)
    context, batch_size, seed = spec.model.context, spec.eval.batch_size, spec.seed
    out: dict = {"tasks": {}}
    encoded: dict[str, tuple[TaskSpec, list]] = {}
    for task in parsed:
        if task.name == "thinking":
            continue
        start = time.perf_counter()
        try:
            if task.name == "pretrain":
                n = _task_n(task, examples, spec.eval.batches * batch_size)
                batches = pretrain_batches(dataset, batch_size, n)
                result = score_batches(model, batches, seed, amp)
                result.update(examples=sum(len(b.inputs) for b in batches), contamination=None)
            else:
                score = task.get("score", "all")
                items = encode_examples(load_task_examples(task, _task_n(task, examples, DEFAULT_EXAMPLES)),
                                        dataset.tokenizer)
                encoded[task.label] = (task, items)
                result = score_batches(model, example_batches(items, context, dataset.pad_id, batch_size, score),
                                       seed, amp)
                index = training_index(dataset, task.get("ngram", DEFAULT_NGRAM))
                result.update(examples=len(items), score=score,
                              truncated=sum(len(e.ids) > context + 1 for e in items),
                              contamination=contamination([e.ids for e in items], index))
        except Exception as exc:  # one bad task (a missing file) must not lose the others
            result = {"error": f"{type(exc).__name__}: {exc}"}
            log(f"evaluation {task.raw!r} failed: {result['error']}")
        result["seconds"] = time.perf_counter() - start
        out["tasks"][task.label] = result

    thinking = next((t for t in parsed if t.name == "thinking"), None)
    if thinking is not None:
        try:
            out["thinking"], out["energy_auroc"] = _thinking(model, spec, dataset, thinking, encoded, examples)
        except Exception as exc:
            out["thinking"] = {"error": f"{type(exc).__name__}: {exc}"}
            out["energy_auroc"] = None
            log(f"evaluation 'thinking' failed: {out['thinking']['error']}")
    out["seconds"] = time.perf_counter() - start_all
    return out


def _thinking(model, spec, dataset, task: TaskSpec, encoded: dict, examples: int | None) -> tuple[dict, float | None]:
    start = time.perf_counter()
    n = _task_n(task, examples, DEFAULT_THINK_EXAMPLES)
    thinking = spec.model.architecture.thinking
    thinks = thinking is not None
    protocol = task.get("protocol", DEFAULT_THINKING_PROTOCOL)
    # The trained point is the validation schedule's (base plus the most extra steps).
    trained = len(model.validation_schedule()) if thinks else 1
    max_steps = max(task.get("steps", 4 * trained), trained)
    bon = task.get("bon", 8)
    sigma = langevin_curve_sigma(protocol, thinking.langevin_sigma(spec.model.options), task.get("sigma")) \
        if thinks else 0.0
    sets = {"pretrain": pretrain_batches(dataset, spec.eval.batch_size, n)}
    for label, (t, items) in encoded.items():
        sets[label] = example_batches(items[:n], spec.model.context, dataset.pad_id, spec.eval.batch_size,
                                      t.get("score", "all"))
    results, raws = {}, []
    for label, batches in sets.items():
        if thinks:
            result, raw = think_task(model, batches, max_steps, sigma, bon, spec.seed, dataset.vocab_size, protocol)
            raws.append(raw)
        else:
            result = flat_reference(model, batches, max_steps, trained, bon, spec.seed, protocol)
        results[label] = result
    reference = results["pretrain"]["ppl_trained"]
    for result in results.values():
        result["shift"] = result["ppl_trained"] / reference if reference > 0 and math.isfinite(reference) else None
    summary = {"protocol": protocol, "trained_steps": trained, "max_steps": max_steps, "sigma": sigma, "examples": n,
               "tasks": results, "seconds": time.perf_counter() - start}
    return summary, (pooled_auroc(raws) if thinks else None)


# Thinking results of two evaluations are one set of curves only when all of these agree.
SAME_THINKING_SETTINGS = ("protocol", "trained_steps", "max_steps", "sigma", "examples")


def merge_evaluations(old: dict | None, new: dict) -> dict:
    """New results over old ones, per task label. Thinking results are merged per task when
    both were computed with the same settings (SAME_THINKING_SETTINGS), else replaced;
    energy_auroc is the newest call's (pooled over the tasks that call thought on)."""
    merged = dict(old or {})
    merged["tasks"] = {**(merged.get("tasks") or {}), **new.get("tasks", {})}
    if "thinking" in new:
        old_thinking = merged.get("thinking") or {}
        thinking = dict(new["thinking"])
        same = all(old_thinking.get(k) == thinking.get(k) for k in SAME_THINKING_SETTINGS)
        if same and "tasks" in thinking and "tasks" in old_thinking:  # else the old curves are not comparable
            thinking["tasks"] = {**old_thinking["tasks"], **thinking["tasks"]}
        merged["thinking"] = thinking
        merged["energy_auroc"] = new.get("energy_auroc")
    merged["seconds"] = new.get("seconds")
    return merged


def _fmt(value, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.{digits}f}" if abs(value) < 1e5 else f"{value:.2e}"
    return str(value)


def format_evaluations(evaluations: dict) -> str:
    """A plain-text table of the task perplexities and the thinking summary."""
    lines = [f"{'task':<28} {'ppl':>10} {'nll':>7} {'tokens':>7} {'examples':>8} {'contaminated':>12} {'s':>6}"]
    for label, r in (evaluations.get("tasks") or {}).items():
        if "error" in r:
            lines.append(f"{label:<28} error: {r['error']}")
            continue
        c = r.get("contamination")
        cont = "-" if not c else (f"{c['fraction']:.1%}" if c.get("checked") else "unchecked")
        lines.append(f"{label:<28} {_fmt(r['ppl']):>10} {_fmt(r['nll'], 3):>7} {r['tokens']:>7} "
                     f"{r.get('examples', '-'):>8} {cont:>12} {_fmt(r.get('seconds'), 1):>6}")
    thinking = evaluations.get("thinking")
    if thinking and "error" in thinking:
        lines.append(f"thinking: error: {thinking['error']}")
    elif thinking:
        k = thinking["trained_steps"]
        protocol = thinking.get("protocol", "final_landscape")  # results from before protocols were recorded
        lines.append("")
        lines.append(f"thinking, protocol {protocol}: {THINKING_PROTOCOLS.get(protocol, '?')}")
        lines.append(f"  (ppl@val: the validation protocol, {k} steps; up to {thinking['max_steps']} steps, "
                     f"Langevin sigma={thinking['sigma']}, {thinking['examples']} examples per task)")
        any_task = next(iter(thinking["tasks"].values()))
        ns = list(any_task["bon"])
        lines.append(f"{'task':<28} {'ppl@val':>9} {'ppl@max':>9} {'langevin':>9} "
                     + " ".join(f"{'BoN' + n:>8}" for n in ns) + f" {'gain':>7} {'shift':>6} {'AUROC':>6}")
        for label, r in thinking["tasks"].items():
            auc = (r.get("energy_auroc") or {}).get("onehot")
            lines.append(f"{label:<28} {_fmt(r['ppl_trained']):>9} {_fmt(r['ppl'][-1]):>9} {_fmt(r['ppl_langevin'][-1]):>9} "
                         + " ".join(f"{_fmt(r['bon'][n]):>8}" for n in ns)
                         + f" {_fmt(r['gain'] * 100, 1) + '%':>7} {_fmt(r.get('shift')):>6} {_fmt(auc, 3):>6}")
        lines.append(f"energy AUROC (correct vs random wrong token, all tasks): {_fmt(evaluations.get('energy_auroc'), 3)}")
    return "\n".join(lines)
