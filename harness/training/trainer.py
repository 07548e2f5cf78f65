"""Train one run: RunSpec in, run directory out (see harness/contract/run_dir.py for the layout).

Guarantees the rest of the harness builds on:
* exact resume -- a run directory with a checkpoint resumes from it and ends with the
  same metrics as an uninterrupted run (checkpoints hold model, optimizer, every RNG
  state and the data position; metrics rows after the checkpoint are re-logged);
* evaluation never perturbs training (it runs under a forked, fixed-seed RNG), so the
  eval schedule cannot change the training trajectory;
* divergence (a NaN/Inf loss or gradient) ends the run with status ``diverged``, the step
  and the last metrics kept in result.json -- never silently skipped;
* data parallel over processes with a global batch independent of the process count
  (each shard's loss is weighted by its share of the global batch's target tokens).
"""
from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ebt_scaling.harness.contract.errors import ConfigError
from ebt_scaling.harness.contract.run_dir import RunDir, atomic_write_json, atomic_write_text
from ebt_scaling.harness.contract.spec import RunSpec, TrainSpec, load_spec, spec_to_yaml
from ebt_scaling.harness.data.pipeline import open_dataset
from ebt_scaling.harness.data.prefetch import PrefetchedBatches, prefetched
from ebt_scaling.harness.evaluation.perplexity import score_batches
from ebt_scaling.models.architectures import build_model
from ebt_scaling.models.base import IGNORE_INDEX, LanguageModel, autocast
from ebt_scaling.models.flops import CONVENTIONS, training_step_flops

from .checkpoint import load_latest_checkpoint, rng_state, save_checkpoint, set_rng_state
from .cooldown_branch import branch_start, kept_steps
from .distributed import DistributedContext
from .progress import TrainingProgress
from .provenance import current_provenance, resumed_provenance, write_session_provenance
from .schedule import lr_at


def resolve_device(requested: str, local_rank: int = 0) -> torch.device:
    """"auto" (CUDA when visible), "cpu", "cuda" (this process's LOCAL_RANK) or "cuda:N";
    ConfigError naming `device` when CUDA is asked for and absent."""
    if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(f"device: {requested!r} requested but no CUDA device is visible; use 'auto' or 'cpu'")
    device = torch.device(requested)
    device = torch.device("cuda", local_rank if device.index is None else device.index)
    torch.cuda.set_device(device)
    return device


def build_optimizer(model: LanguageModel, train: TrainSpec, device: torch.device) -> torch.optim.AdamW:
    """AdamW over the model's parameter groups; each group keeps its `lr_scale` (EBT's
    alpha: the LR multiplier) and `floor_scale` (its LR floor's), and the trainer sets
    lr = lr_at(step, ..., lr_scale, floor_scale) every step."""
    groups = model.optimizer_groups(train.weight_decay, train.decay_norms_and_embeddings)
    return torch.optim.AdamW(
        [{"params": g["params"], "weight_decay": g["weight_decay"], "lr_scale": g["lr_scale"],
          "floor_scale": g["floor_scale"], "lr": train.lr * g["lr_scale"]} for g in groups],
        lr=train.lr, betas=train.betas, eps=train.eps, fused=device.type == "cuda")


def eval_steps(total_steps: int, points: int) -> set[int]:
    """Steps (1-based counts of optimizer steps) log-spaced in training FLOPs -- FLOPs grow
    linearly with steps -- always including the final step."""
    return {int(s) for s in np.unique(np.round(np.geomspace(1, total_steps, points)))} | {total_steps}


def prepare_run_dir(run: RunDir, spec: RunSpec) -> None:
    """Create the run directory, or check that the one there belongs to this spec."""
    if run.spec_path.exists():
        existing = load_spec(run.spec_path)
        if existing.run_id != spec.run_id:
            raise ConfigError(f"{run.path}: holds run {existing.run_id}, not {spec.run_id}; "
                              "use a new --out directory for a different spec")
        return
    run.path.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run.spec_path, spec_to_yaml(spec))


def train_run(spec: RunSpec, run_path: str | Path, quiet: bool = False,
              stop_requested: Callable[[], bool] = lambda: False) -> dict:
    """Train (or resume, or return the result of) the run in `run_path`.

    Returns result.json's content for finished runs, or {"status": "preempted", ...} when
    `stop_requested()` turned true: the run then holds a checkpoint to resume from.
    """
    run = RunDir(run_path)
    if (done := run.result()) is not None:
        return done
    # LOCAL_RANK first: resolving device 0 on every process would open a CUDA context there.
    device = resolve_device(spec.device, int(os.environ.get("LOCAL_RANK", "0")))
    ctx = DistributedContext.from_env(device.type)
    if ctx.is_main:
        prepare_run_dir(run, spec)
    ctx.barrier()

    batch_size = spec.train.batch_size
    if batch_size % ctx.world_size:
        raise ConfigError(f"train.batch_size: {batch_size} does not split over {ctx.world_size} processes; "
                          "use a multiple of the process count")
    local_batch = batch_size // ctx.world_size
    micro = spec.train.micro_batch_size or local_batch
    if local_batch % micro:
        raise ConfigError(f"train.micro_batch_size: {micro} must divide the per-process batch {local_batch}")

    torch.manual_seed(spec.seed)  # identical initial weights on every process
    model = build_model(spec.model).to(device)
    # Each process then draws its own stream (EBT's random candidates, Langevin noise):
    # with one shared stream every shard of the batch would start from the same noise.
    torch.manual_seed(spec.seed + 1_000_003 * (ctx.rank + 1))
    data = open_dataset(spec, ctx.rank, ctx.world_size)  # checks the tokenizer fits model.vocab_size
    optimizer = build_optimizer(model, spec.train, device)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    batches = prefetched(data.train_batches(), device)  # on CUDA: built ahead in a thread, pinned
    val_batches = data.val_batches(spec.eval.batch_size, spec.eval.batches)

    step = 0
    # On the CPU: RNG states must stay CPU tensors; weights and optimizer state are copied
    # to the model's device by load_state_dict.
    state = load_latest_checkpoint(run, map_location="cpu", report=ctx.is_main)
    if state is None:  # a cooldown branch starts from its parent's checkpoint where it can
        state = branch_start(run, spec, ctx)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        batches.load_state_dict(state["data"])
        own = state["processes"][ctx.rank]
        set_rng_state(own["rng"])
        model.load_process_state(own["model"])
        step = state["step"]
    # Only the main process writes checkpoints and result.json, so only it keeps their provenance.
    provenance = resumed_provenance(state, current_provenance(device), run.log) if ctx.is_main else {}
    if ctx.is_main:
        write_session_provenance(run.path, provenance, step)  # for `status`, before result.json exists
        for leftover in run.remove_checkpoint_temporaries():  # the dispatcher does it too; a plain train must
            run.log(f"removed {leftover.name}: the temporary file of a checkpoint save that was killed")
        run.truncate_metrics(step)
        run.log(f"{'resume' if step else 'start'} run {spec.run_id} ({spec.model.arch}) at step {step} "
                f"on {device} x{ctx.world_size}")
    ctx.barrier()
    # A run resumed from its final checkpoint (killed during end-of-run evaluation) still
    # reports its last metrics row.
    last_row: dict = (run.metrics() or [{}])[-1] if step else {}

    if spec.model.architecture.compiles and (spec.compile if spec.compile is not None else device.type == "cuda"):
        # A compiler failure on some device must cost speed, not the run: dynamo then runs
        # that graph eagerly (and logs why). Results do not depend on compilation.
        torch._dynamo.config.suppress_errors = True
        model.compile_hot_path()
    amp = autocast(device, spec.precision)
    total = spec.total_steps
    keep = kept_steps(spec)  # its cooldown branches start from these checkpoints
    evals = eval_steps(total, spec.eval.points)
    step_flops = {c: training_step_flops(spec.model, batch_size, spec.model.context, c) for c in CONVENTIONS}
    progress = TrainingProgress(run, spec, step, ctx.is_main, quiet)  # bar, per-step line, tracking sinks
    window_start, window_tokens = time.perf_counter(), 0
    status, note = "done", ""
    model.train()
    try:  # however the loop ends (an error too): the bar and the sinks close, the prefetch thread stops
        while step < total:
            batch = next(batches)
            for group in optimizer.param_groups:  # no floor_scale: a checkpoint from before groups had their own floors
                group["lr"] = lr_at(step, total, spec.train, group["lr_scale"], group.get("floor_scale"))
            sums: dict[str, torch.Tensor] = {}
            for start in range(0, local_batch, micro):
                cpu_targets = batch.targets[start:start + micro]
                # Counted on the host copy: no device sync per micro-batch.
                weight = int((cpu_targets != IGNORE_INDEX).sum()) / max(1, batch.global_tokens)
                inputs = batch.inputs[start:start + micro].to(device, non_blocking=True)
                targets = cpu_targets.to(device, non_blocking=True)
                with amp():
                    out = model.step(inputs, targets)
                (out.loss * weight).backward()
                for key, value in out.metrics.items():
                    if key != "tokens":
                        sums[key] = sums.get(key, 0) + value.detach().float() * weight
            ctx.all_reduce_gradients(params)
            clip = spec.train.grad_clip if spec.train.grad_clip > 0 else float("inf")
            grad_norm = torch.nn.utils.clip_grad_norm_(params, clip)
            # One all-reduce and one host sync per step: the metrics (shard weights sum to 1 over
            # micro-batches and processes, so the sums are global means) and the stop flag (any
            # process asked: all stop at this step, or their collectives would fall out of step).
            names = sorted(sums)
            stop_flag = torch.tensor(float(stop_requested()), device=device)
            reduced = ctx.all_reduce_sum(torch.stack([*(sums[k] for k in names), stop_flag]))
            *values, stops, norm = torch.cat([reduced, grad_norm.detach().float().reshape(1)]).tolist()
            metrics = dict(zip(names, values))
            row = {"step": step + 1, "tokens": (step + 1) * batch_size * spec.model.context,
                   **{f"flops_{c}": (step + 1) * f for c, f in step_flops.items()},
                   "train_loss": metrics.pop("ce"), "lr": optimizer.param_groups[0]["lr"],
                   "grad_norm": norm, **metrics}
            # Every rank holds the same reduced numbers, so all take the same branch.
            if not (math.isfinite(row["train_loss"]) and math.isfinite(row["grad_norm"])):
                status, last_row = "diverged", last_row or row
                note = f"non-finite loss or gradient in step {step + 1}; weights of step {step} kept"
                break
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            last_row = row
            window_tokens += batch_size * spec.model.context
            progress.update(1)
            if step % spec.log_every == 0 or step in evals:
                elapsed = time.perf_counter() - window_start
                row["tokens_per_s"] = window_tokens / max(elapsed, 1e-9)
                window_start, window_tokens = time.perf_counter(), 0
                if step in evals:
                    scored = score_batches(model, val_batches, spec.seed, amp, ctx)
                    row.update(val_loss=scored["nll"], val_ppl=scored["ppl"])
                if ctx.is_main:
                    run.append_metrics(row)
                progress.record(row)  # one line to stdout and train.log; the tracking sinks (main process)
            stopping = stops > 0
            if step % spec.checkpoint_every == 0 or step == total or stopping or step in keep:
                _checkpoint(run, ctx, step, model, optimizer, batches, keep, provenance)
            if stopping and step < total:
                if ctx.is_main:
                    run.log(f"stopped at step {step} on request (preemption); checkpoint saved")
                return {"status": "preempted", "step": step}
    finally:
        progress.close()
        if isinstance(batches, PrefetchedBatches):
            batches.close()
    return _finish(run, ctx, spec, status, step, last_row, model, provenance, note=note)


def _checkpoint(run: RunDir, ctx: DistributedContext, step: int, model, optimizer, batches,
                keep: frozenset[int], provenance: dict) -> None:
    # What differs between processes (RNG streams, EBT's replay buffer) is kept per process.
    processes = ctx.gather_objects({"rng": rng_state(), "model": model.process_state()})
    if ctx.is_main:
        save_checkpoint(run, step, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                    "data": batches.state_dict(), "processes": processes, **provenance}, keep)
    ctx.barrier()


def _finish(run: RunDir, ctx: DistributedContext, spec: RunSpec, status: str, step: int, last: dict,
            model: LanguageModel, provenance: dict, note: str = "") -> dict:
    final_eval = [r for r in run.metrics() if "val_loss" in r] if ctx.is_main else []
    result = {"status": status, "run_id": spec.run_id, "arch": spec.model.arch, "step": step,
              "total_steps": spec.total_steps, "final": last,
              "val_loss": final_eval[-1]["val_loss"] if final_eval else None,
              "val_ppl": final_eval[-1]["val_ppl"] if final_eval else None,
              "params": model.param_counts(),
              "note": note, **provenance}  # provenance, provenance_history: provenance.py
    if ctx.is_main and status == "done" and spec.eval.tasks:
        from ebt_scaling.harness.evaluation.run_evals import run_evals  # end-of-run evaluations (spec.eval.tasks)

        result["evaluations"] = run_evals(model, spec, open_dataset(spec), log=run.log)
    if ctx.is_main:
        atomic_write_json(run.result_path, result)
        run.log(f"{status} at step {step}" + (f": {note}" if note else ""))
    ctx.barrier()
    return result
