"""Perplexity = exp(sum of token NLLs / number of scored tokens) over all batches.

Never a mean of per-batch (or per-example) exps: every scored token weighs the same,
whatever batch it sits in and however many pads its row has (the reference code's
definition, and the trainer's validation loss).
"""
from __future__ import annotations

import contextlib
import math

import torch

from ebt_scaling.models.base import IGNORE_INDEX


def ppl_from_nll(mean_nll: float) -> float:
    return math.exp(min(mean_nll, 700.0))


def fixed_seed(seed: int, device: torch.device):
    """A forked RNG seeded with `seed`: EBT's random starts are the same in every
    evaluation, and the caller's RNG stream is left untouched."""
    devices = [device] if device.type == "cuda" else []
    stack = contextlib.ExitStack()
    stack.enter_context(torch.random.fork_rng(devices=devices))
    torch.manual_seed(seed)
    return stack


def model_device(model) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def score_batches(model, batches, seed: int = 0, autocast=contextlib.nullcontext, ctx=None) -> dict:
    """{"nll": token-mean NLL, "ppl": exp of it, "tokens": scored tokens} of `model` on
    `batches` (each with .inputs and .targets; -100 targets are not scored).

    Batch i runs under seed + i, so EBT's random starts for a batch do not depend on which
    batches came before it -- nor on how many processes share the list: with a
    DistributedContext `ctx`, process r scores batches r, r + W, ... and the sums are
    all-reduced, giving every process the single-process result.
    """
    device = model_device(model)
    was_training = model.training
    model.eval()
    totals = torch.zeros(2, dtype=torch.float64, device=device)  # NLL sum, scored tokens
    rank, world = (ctx.rank, ctx.world_size) if ctx is not None else (0, 1)
    try:
        for i, batch in enumerate(batches):
            if i % world != rank:
                continue
            targets = batch.targets.to(device)
            with fixed_seed(seed + i, device), autocast():
                nll = model.token_nll(batch.inputs.to(device), targets)
            mask = targets != IGNORE_INDEX
            totals[0] += nll.double()[mask].sum()
            totals[1] += mask.sum()
    finally:
        model.train(was_training)
    if ctx is not None:
        ctx.all_reduce_sum(totals)
    total, count = totals.tolist()
    mean = total / max(count, 1)
    return {"nll": mean, "ppl": ppl_from_nll(mean), "tokens": int(count)}
