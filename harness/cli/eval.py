"""`ebt-scaling eval RUN_DIR [RUN_DIR ...] [--tasks T ...] [--examples N] [--json]`:
evaluate finished runs after the fact.

Loads each run's spec.yaml and its final checkpoint (the one at result.json's step: an
unreadable or missing one is an error naming the file, never a silent fall back to an
older checkpoint, whose score would pass for the run's), runs the tasks (default: the spec's
eval.tasks, else "pretrain dyck arithmetic thinking"; grammar in
harness/evaluation/task_grammar.py), merges the results into result.json["evaluations"]
(atomically; earlier results of other tasks are kept) and prints a table, or with
--json one JSON object {RUN_DIR: evaluations}. A diverged run is refused, saying so: it has
no final weights, only checkpoints from before the divergence.
"""
from __future__ import annotations

import json

from ebt_scaling.harness.contract.errors import ConfigError

DEFAULT_TASKS = ("pretrain", "dyck", "arithmetic", "thinking")


def add_arguments(parser) -> None:
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="finished run directories (with result.json)")
    parser.add_argument("--tasks", nargs="+", metavar="TASK",
                        help="tasks, e.g. pretrain dyck,n=32 gsm8k=PATH squad=PATH bigbench=PATH/task.json thinking "
                             "(default: the spec's eval.tasks, else " + " ".join(DEFAULT_TASKS) + ")")
    parser.add_argument("--examples", type=int, metavar="N", help="examples per task (overrides every task's n=)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), help="default: the spec's device")
    parser.add_argument("--json", action="store_true", help="print {RUN_DIR: evaluations} as JSON")


def evaluate_run(run_dir, tasks=None, examples: int | None = None, device: str | None = None) -> dict:
    """Evaluate one finished run and merge the results into its result.json; returns them."""
    from ebt_scaling.harness.evaluation.task_grammar import parse_tasks
    from ebt_scaling.harness.contract.run_dir import RunDir, atomic_write_json
    from ebt_scaling.harness.contract.spec import load_spec
    from ebt_scaling.harness.training.checkpoint import UnreadableCheckpoint, checkpoint_path, read_checkpoint
    from ebt_scaling.harness.training.trainer import resolve_device
    from ebt_scaling.models.architectures import build_model

    from ..evaluation.run_evals import merge_evaluations, run_evals

    run = RunDir(run_dir)
    if not run.spec_path.exists():
        raise ConfigError(f"{run_dir}: no spec.yaml; give a run directory")
    result = run.result()
    if result is not None and result.get("status") == "diverged":
        # Its checkpoints all predate the divergence: scored, they would pass for the run's final
        # weights, and training it again diverges again (same spec, same seed).
        raise ConfigError(f"{run_dir}: the run diverged after step {result.get('step')}; eval scores only a "
                          "finished run's final weights and its checkpoints all predate the divergence: train "
                          "a spec that does not diverge (e.g. a lower train.lr) and evaluate that run")
    if result is None or result.get("status") != "done":
        state = "unfinished" if result is None else f"status {result.get('status')!r}"
        raise ConfigError(f"{run_dir}: the run is {state}; only finished runs (status 'done') are evaluated")
    spec = load_spec(run.spec_path)
    tasks = list(tasks or spec.eval.tasks or DEFAULT_TASKS)
    parse_tasks(tasks)  # fail before loading anything
    if examples is not None and examples < 1:
        raise ConfigError(f"--examples: must be >= 1, got {examples}")
    step = result.get("step")
    if not isinstance(step, int):
        raise ConfigError(f"{run_dir}: result.json has no final step ({step!r}); re-train the run to evaluate it")
    torch_device = resolve_device(device or spec.device)
    final = checkpoint_path(run, step)
    try:
        state = read_checkpoint(final, map_location=torch_device)
        if state["step"] != step:
            raise UnreadableCheckpoint(f"checkpoint {final.name} holds step {state['step']}")
    except UnreadableCheckpoint as exc:
        raise ConfigError(f"{run_dir}: {exc}; eval scores only a run's final weights (step {step}): delete "
                          f"{final.name} and result.json, then train the run again (it resumes exactly from "
                          "its newest readable checkpoint)") from None
    model = build_model(spec.model).to(torch_device)
    model.load_state_dict(state["model"])
    evaluations = run_evals(model, spec, tasks=tasks, examples=examples, log=run.log)
    fresh = run.result() or result  # re-read: merge into the newest version
    fresh["evaluations"] = merge_evaluations(fresh.get("evaluations"), evaluations)
    atomic_write_json(run.result_path, fresh)
    run.log(f"evaluated {', '.join(tasks)} at step {state['step']}")
    return fresh["evaluations"]


def run(args) -> int:
    from ..evaluation.run_evals import format_evaluations

    out = {}
    for run_dir in args.run_dirs:
        out[run_dir] = evaluate_run(run_dir, args.tasks, args.examples, args.device)
        if not args.json:
            print(f"== {run_dir}")
            print(format_evaluations(out[run_dir]))
    if args.json:
        print(json.dumps(out))
    return 1 if any("error" in r for e in out.values() for r in (e.get("tasks") or {}).values()) else 0
