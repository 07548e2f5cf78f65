"""EBT "System 2" evaluation: thinking longer, self-verification, energy as a verifier.

For each task's batches (``think_task``):

* curves: perplexity after each refinement step 1..M (M defaults to 4 x the trained K),
  without and with Langevin noise (one ``EBT.think(steps=M)`` call gives the whole curve);
* best-of-N (N = 1, 2, 4, 8): N random starts refined for K steps, each position keeps
  the minimum-energy candidate (``EBT.think(samples=N)``); perplexity and mean final
  energy per N. Each batch is refined under its own fixed seed, so the N = 8 candidates
  include the N = 1 candidate and the final energy can only go down with N;
* thinking gain: (ppl at K steps - best ppl over more steps / Langevin / BoN) / ppl at K;
* energy as a verifier (``auroc`` of -energy, low energy = plausible), over scored
  positions: "onehot": the one-hot correct next token vs a one-hot uniformly random wrong
  token (energy landscape of the last trained step); "refined": the final candidate after
  K steps when its argmax is right vs wrong.

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


def _steps_list(max_steps: int) -> list[int]:
    return list(range(1, max_steps + 1))


def _bon_list(bon_max: int) -> list[int]:
    return [2 ** i for i in range(int(math.log2(bon_max)) + 1)]


@torch.no_grad()
def think_task(model, batches, max_steps: int, sigma: float, bon_max: int = 8, seed: int = 0,
               vocab_limit: int | None = None) -> tuple[dict, dict]:
    """Thinking results of an EBT on one task's batches, and the raw verifier scores
    ({"onehot": (scores, labels), "refined": (scores, labels)}) for pooling."""
    device = model_device(model)
    trained = model.config.architecture.thinking.trained_steps(model.config.options)
    max_steps = max(max_steps, trained)
    vocab = model.config.vocab_size
    limit = min(vocab_limit or vocab, vocab)
    ns = _bon_list(bon_max)
    curve = np.zeros(max_steps)
    curve_noise = np.zeros(max_steps)
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
            with fixed_seed(seed + i, device):
                result = model.think(inputs, targets, steps=max_steps)
            curve += (result.nll.double() * mask).sum(dim=(1, 2)).cpu().numpy()
            with fixed_seed(seed + i, device):
                noisy = model.think(inputs, targets, steps=max_steps, langevin_sigma=sigma)
            curve_noise += (noisy.nll.double() * mask).sum(dim=(1, 2)).cpu().numpy()
            # Best-of-N for every N from one run of max(N) samples: think(samples=N) draws its
            # starts one after the other and keeps, per position, the first sample of lowest
            # final energy, so the best of the first N of them *is* think(samples=N).
            best = None
            with fixed_seed(seed + i, device):
                for k in range(1, ns[-1] + 1):
                    sample = model.think(inputs, targets, steps=trained)
                    if best is None:  # the model's own prediction after K steps: right or wrong?
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
            kvs = model.real_stream(model.tok_emb(inputs), trained - 1)
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
    ppl = [ppl_from_nll(v / denom) for v in curve]
    ppl_noise = [ppl_from_nll(v / denom) for v in curve_noise]
    bon = {str(n): ppl_from_nll(bon_nll[n] / denom) for n in ns}
    out = {"steps": _steps_list(max_steps), "ppl": ppl, "ppl_langevin": ppl_noise, "sigma": sigma,
           "bon": bon, "bon_energy": {str(n): bon_energy[n] / denom for n in ns},
           "trained_steps": trained, "tokens": tokens,
           "energy_auroc": {"onehot": auroc(*raw["onehot"]), "refined": auroc(*raw["refined"]),
                            "refined_accuracy": float(raw["refined"][1].mean()) if tokens else None}}
    out.update(thinking_gain(out))
    return out, raw


def thinking_gain(result: dict) -> dict:
    """{"ppl_trained": ppl after the trained K steps, "best_ppl": best with K or more steps
    (with or without noise) or any BoN, "gain": (ppl_trained - best_ppl) / ppl_trained}."""
    k = result["trained_steps"]
    at_k = result["ppl"][k - 1]
    more = [p for s, p in zip(result["steps"], result["ppl"]) if s >= k]
    more += [p for s, p in zip(result["steps"], result["ppl_langevin"]) if s >= k]
    best = min(more + list(result["bon"].values()))
    return {"ppl_trained": at_k, "best_ppl": best, "gain": (at_k - best) / at_k if at_k > 0 else 0.0}


def flat_reference(model, batches, max_steps: int, trained_steps: int, bon_max: int = 8, seed: int = 0) -> dict:
    """A model that cannot think (Transformer++): its perplexity at every step and N."""
    score = score_batches(model, batches, seed)
    ns = _bon_list(bon_max)
    out = {"steps": _steps_list(max_steps), "ppl": [score["ppl"]] * max_steps,
           "ppl_langevin": [score["ppl"]] * max_steps, "sigma": 0.0, "bon": {str(n): score["ppl"] for n in ns},
           "bon_energy": None, "trained_steps": trained_steps, "tokens": score["tokens"], "energy_auroc": None,
           "flat": True}
    out.update({"ppl_trained": score["ppl"], "best_ppl": score["ppl"], "gain": 0.0})
    return out


def pooled_auroc(raws: list[dict], kind: str = "onehot") -> float | None:
    """AUROC over the positions of several tasks together."""
    scores = [r[kind][0] for r in raws if len(r[kind][0])]
    labels = [r[kind][1] for r in raws if len(r[kind][1])]
    if not scores:
        return None
    return auroc(np.concatenate(scores), np.concatenate(labels))
