"""EBT "System 2" evaluation: thinking longer, self-verification, energy as a verifier.

For each task's batches (``think_task``), under one of two protocols (THINKING_PROTOCOLS,
harness/evaluation/task_grammar.py; every result records which, and its noise):

* curves: perplexity against refinement steps, without and with Langevin noise:
  - "paper" (default): n = 1..ceil(M / K) steps on each of the K energy landscapes in turn
    (``EBT.thinking_schedule("paper", n)``, the reference code's inference). Each n is its
    own chain (time_embed's K x n steps are not a prefix of K x (n + 1)), so one
    ``EBT.think`` call per n; x = K x n. Noisy curve: sigma 1 (the reference inference's);
  - "final_landscape": 1..M steps, those beyond the trained ones on the last landscape (the
    project's earlier protocol); every point is a prefix of the longest chain, so one
    ``EBT.think`` call gives the whole curve. Noisy curve: the trained sigma, else 3;
  each batch's chains start from the same seed, so the points differ by the steps only;
* the trained point: ``ppl_trained`` is the validation protocol's perplexity (the
  validation schedule with the trained Langevin sigma: the trainer's val_ppl), and
  ``trained_steps`` its step count;
* best-of-N (N = 1, 2, 4, 8): N random starts, each refined on the validation schedule
  with the trained sigma; each position keeps the candidate of lowest final energy
  (``EBT.think(samples=N)``); perplexity and mean final energy per N. Each batch runs
  under its own fixed seed, so N = 1 is ``ppl_trained``, the N = 8 candidates include the
  N = 1 candidate and the final energy can only go down with N;
* thinking gain: (ppl_trained - best ppl over the curve points with > trained_steps
  steps, with or without noise, and BoN) / ppl_trained;
* energy as a verifier (``auroc`` of -energy, low energy = plausible), over scored
  positions: "onehot": the one-hot correct next token vs a one-hot uniformly random wrong
  token (the last landscape of the validation schedule); "refined": the validation
  protocol's final candidate when its argmax is right vs wrong.

A Transformer++ cannot think: ``flat_reference`` gives its one perplexity at every step
and N, the flat line EBT's curves are compared against.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ebt_scaling.models.base import IGNORE_INDEX

from .perplexity import fixed_seed, model_device, ppl_from_nll, score_batches
from .task_grammar import DEFAULT_THINKING_PROTOCOL, THINKING_PROTOCOLS

PAPER_INFERENCE_SIGMA = 1.0  # the reference inference script's Langevin noise, at every step
DEFAULT_SIGMA = 3.0  # the paper's System-2 Langevin noise, when the model was trained without


def langevin_curve_sigma(protocol: str, trained_sigma: float, given: float | None = None) -> float:
    """The noise of the Langevin curve: `given` (the task's sigma=) if set, else the
    protocol's default (paper: the reference inference's 1; final_landscape: the trained
    sigma, else DEFAULT_SIGMA)."""
    if given is not None:
        return given
    if protocol == "paper":
        return PAPER_INFERENCE_SIGMA
    return trained_sigma or DEFAULT_SIGMA


def auroc(scores, labels) -> float | None:
    """Area under the ROC curve = P(score of a random positive > a random negative), ties
    counting one half (Mann-Whitney U from average ranks). None without both classes."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels, dtype=bool).ravel()
    n_pos = int(labels.sum())
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(scores, kind="mergesort")
    ordered = scores[order]
    new_value = np.concatenate([[True], ordered[1:] != ordered[:-1]])
    group = np.cumsum(new_value) - 1
    first = np.flatnonzero(new_value)  # 0-based start of each tie group
    last = np.append(first[1:], len(scores))  # exclusive end
    average_rank = (first + 1 + last) / 2.0  # mean of the 1-based ranks first+1 .. last
    ranks = np.empty(len(scores))
    ranks[order] = average_rank[group]
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _bon_list(bon_max: int) -> list[int]:
    return [2 ** i for i in range(int(math.log2(bon_max)) + 1)]


def curve_schedules(model, protocol: str, max_steps: int) -> list[list[int]]:
    """The schedule (landscape of each step) of every point of a thinking curve with up to
    `max_steps` steps; a point's x is its length. paper: one chain per n = 1..ceil(M / K);
    final_landscape: the prefixes 1..M of one chain."""
    if protocol not in THINKING_PROTOCOLS:
        raise ValueError(f"thinking protocol must be one of {', '.join(THINKING_PROTOCOLS)}, got {protocol!r}")
    if protocol == "paper":
        return [model.thinking_schedule("paper", n) for n in range(1, -(-max_steps // model.landscapes) + 1)]
    chain = model.thinking_schedule("final_landscape", max_steps)
    return [chain[:k] for k in range(1, max_steps + 1)]


def _curve_nll(model, inputs, targets, schedules: list[list[int]], sigma: float, seed: int, device) -> torch.Tensor:
    """(points, B, S) NLL at each point of the curve; every chain starts under `seed`."""
    if all(a == b[:len(a)] for a, b in zip(schedules, schedules[1:])):  # prefixes: one chain gives all
        with fixed_seed(seed, device):
            nll = model.think(inputs, targets, schedules[-1], langevin_sigma=sigma, final_energy=False).nll
        return nll[[len(s) - 1 for s in schedules]]
    points = []
    for schedule in schedules:  # each point its own chain, from the same start
        with fixed_seed(seed, device):
            points.append(model.think(inputs, targets, schedule, langevin_sigma=sigma, final_energy=False).nll[-1])
    return torch.stack(points)


@torch.no_grad()
def think_task(model, batches, max_steps: int, sigma: float | None = None, bon_max: int = 8, seed: int = 0,
               vocab_limit: int | None = None, protocol: str = DEFAULT_THINKING_PROTOCOL) -> tuple[dict, dict]:
    """Thinking results of an EBT on one task's batches under `protocol` (sigma: the
    Langevin curve's noise, None for the protocol's default), and the raw verifier scores
    ({"onehot": (scores, labels), "refined": (scores, labels)}) for pooling."""
    device = model_device(model)
    validation = model.validation_schedule()
    trained = len(validation)
    trained_sigma = model.config.options.langevin_sigma
    sigma = langevin_curve_sigma(protocol, trained_sigma, sigma)
    max_steps = max(max_steps, trained)
    schedules = curve_schedules(model, protocol, max_steps)
    vocab = model.config.vocab_size
    limit = min(vocab_limit or vocab, vocab)
    ns = _bon_list(bon_max)
    curve = np.zeros(len(schedules))
    curve_noise = np.zeros(len(schedules))
    bon_nll = {n: 0.0 for n in ns}
    bon_energy = {n: 0.0 for n in ns}
    onehot_scores, onehot_labels, refined_scores, refined_labels = [], [], [], []
    tokens = 0
    was_training = model.training
    model.eval()
    try:
        for i, batch in enumerate(batches):
            inputs, targets = batch.inputs.to(device), batch.targets.to(device)
            mask = targets != IGNORE_INDEX
            count = int(mask.sum())
            if count == 0:
                continue
            tokens += count
            for sums, noise in ((curve, 0.0), (curve_noise, sigma)):
                nll = _curve_nll(model, inputs, targets, schedules, noise, seed + i, device)
                sums += (nll.double() * mask).sum(dim=(1, 2)).cpu().numpy()
            # Best-of-N for every N from one run of max(N) samples: think(samples=N) draws its
            # starts (and noise) one sample after the other and keeps, per position, the first
            # sample of lowest final energy, so the best of the first N of them *is*
            # think(samples=N); the first is the validation protocol's own prediction.
            best = None
            with fixed_seed(seed + i, device):
                for k in range(1, ns[-1] + 1):
                    sample = model.think(inputs, targets, validation, langevin_sigma=trained_sigma)
                    if best is None:  # the model's own prediction: right or wrong?
                        right = sample.logits.argmax(-1) == targets
                        refined_scores.append(-sample.energy[-1][mask].double().cpu().numpy())
                        refined_labels.append(right[mask].cpu().numpy())
                        best = (sample.nll[-1], sample.energy[-1])
                    else:
                        lower = sample.energy[-1] < best[1]
                        best = (torch.where(lower, sample.nll[-1], best[0]), torch.where(lower, sample.energy[-1], best[1]))
                    if k in bon_nll:
                        bon_nll[k] += float((best[0].double() * mask).sum())
                        bon_energy[k] += float((best[1].double() * mask).sum())
            kvs = model.real_stream(model.tok_emb(inputs), validation[-1])
            truth = targets.clamp(min=0)
            with fixed_seed(seed + i, device):
                wrong = (truth + torch.randint(1, limit, truth.shape, device=device)) % limit
            dtype = model.candidate_proj.weight.dtype
            e_true = model.energy(F.one_hot(truth, vocab).to(dtype), kvs)[mask]
            e_wrong = model.energy(F.one_hot(wrong, vocab).to(dtype), kvs)[mask]
            onehot_scores += [-e_true.double().cpu().numpy(), -e_wrong.double().cpu().numpy()]
            onehot_labels += [np.ones(count, bool), np.zeros(count, bool)]
    finally:
        model.train(was_training)
    raw = {"onehot": (np.concatenate(onehot_scores) if onehot_scores else np.zeros(0),
                      np.concatenate(onehot_labels) if onehot_labels else np.zeros(0, bool)),
           "refined": (np.concatenate(refined_scores) if refined_scores else np.zeros(0),
                       np.concatenate(refined_labels) if refined_labels else np.zeros(0, bool))}
    denom = max(tokens, 1)
    bon = {str(n): ppl_from_nll(bon_nll[n] / denom) for n in ns}
    out = {"protocol": protocol, "landscapes": model.landscapes, "steps": [len(s) for s in schedules],
           "ppl": [ppl_from_nll(v / denom) for v in curve],
           "ppl_langevin": [ppl_from_nll(v / denom) for v in curve_noise],
           "sigma": sigma, "validation_sigma": trained_sigma, "bon": bon,
           "bon_energy": {str(n): bon_energy[n] / denom for n in ns},
           "trained_steps": trained, "ppl_trained": bon["1"], "tokens": tokens,
           "energy_auroc": {"onehot": auroc(*raw["onehot"]), "refined": auroc(*raw["refined"]),
                            "refined_accuracy": float(raw["refined"][1].mean()) if tokens else None}}
    out.update(thinking_gain(out))
    return out, raw


def thinking_gain(result: dict) -> dict:
    """{"best_ppl": the best perplexity with more than trained_steps steps (with or without
    noise) or any BoN, "gain": (ppl_trained - best_ppl) / ppl_trained}. Points at the trained
    step count are left out: with a noisy validation protocol (System 2) the noise-free point
    there differs from ppl_trained by the noise alone, which is not thinking."""
    k, at_k = result["trained_steps"], result["ppl_trained"]
    more = [p for s, p in zip(result["steps"], result["ppl"]) if s > k]
    more += [p for s, p in zip(result["steps"], result["ppl_langevin"]) if s > k]
    best = min(more + list(result["bon"].values()))
    return {"best_ppl": best, "gain": (at_k - best) / at_k if at_k > 0 else 0.0}


def flat_reference(model, batches, max_steps: int, trained_steps: int, bon_max: int = 8, seed: int = 0,
                   protocol: str = DEFAULT_THINKING_PROTOCOL) -> dict:
    """A model that cannot think (Transformer++): its perplexity at every step and N, with
    the keys of think_task. It has one landscape, where both protocols' x are 1..max_steps
    (as an EBT's of the default variant)."""
    score = score_batches(model, batches, seed)
    ns = _bon_list(bon_max)
    out = {"protocol": protocol, "landscapes": 1, "steps": list(range(1, max_steps + 1)),
           "ppl": [score["ppl"]] * max_steps, "ppl_langevin": [score["ppl"]] * max_steps, "sigma": 0.0,
           "validation_sigma": 0.0, "bon": {str(n): score["ppl"] for n in ns}, "bon_energy": None,
           "trained_steps": trained_steps, "ppl_trained": score["ppl"], "tokens": score["tokens"],
           "energy_auroc": None, "flat": True}
    out.update({"best_ppl": score["ppl"], "gain": 0.0})
    return out


def pooled_auroc(raws: list[dict], kind: str = "onehot") -> float | None:
    """AUROC over the positions of several tasks together."""
    scores = [r[kind][0] for r in raws if len(r[kind][0])]
    labels = [r[kind][1] for r in raws if len(r[kind][1])]
    if not scores:
        return None
    return auroc(np.concatenate(scores), np.concatenate(labels))
