"""Mean next-token cross-entropy over vocabulary-sized logits, in bounded memory.

``F.cross_entropy`` keeps its float32 log-softmax (N x V) alive until the backward: for
8,192 tokens and V = 50,304 that is 1.65 GB per call, and the EBT calls it once per
refinement step. ``cross_entropy`` keeps only the logits it was given (the EBT's next
candidate, which the next step reads anyway) and works through the rows in chunks of
about CHUNK_ELEMENTS, so its temporaries stay that small:

* forward: float32 log-softmax of a chunk, pick the targets' entries, drop the chunk;
* backward: softmax of a chunk minus the one-hot targets, scaled by the incoming gradient
  over the number of scored tokens, cast to the logits' dtype.

It costs one pass over the logits more than F.cross_entropy (the backward recomputes the
softmax), so Transformer++, whose memory is not the constraint, keeps F.cross_entropy.

Same value and gradient as ``F.cross_entropy(logits.float(), targets, ignore_index=...)``
(tests/test_cross_entropy.py checks both, and gradcheck).
"""
from __future__ import annotations

import torch

CHUNK_ELEMENTS = 1 << 26  # 64M logits (256 MiB in float32) per chunk


def _chunks(rows: int, width: int) -> list[slice]:
    step = max(1, CHUNK_ELEMENTS // max(width, 1))
    return [slice(i, min(i + step, rows)) for i in range(0, rows, step)]


def _float(x: torch.Tensor) -> torch.Tensor:
    """Half precisions in float32; float32 and float64 unchanged."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


class _ChunkedCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor, ignore_index: int) -> torch.Tensor:
        valid = targets != ignore_index
        safe = torch.where(valid, targets, 0).unsqueeze(1)
        total = logits.new_zeros((), dtype=torch.promote_types(logits.dtype, torch.float32))
        for rows in _chunks(*logits.shape):
            log_probs = torch.log_softmax(_float(logits[rows]), dim=-1)
            total = total - (log_probs.gather(1, safe[rows]).squeeze(1) * valid[rows]).sum()
        count = valid.sum()
        ctx.save_for_backward(logits, safe, valid, count)
        return total / count.clamp(min=1)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        logits, safe, valid, count = ctx.saved_tensors
        weight = (valid * (grad / count.clamp(min=1))).unsqueeze(1)  # 0 on ignored rows
        out = torch.empty_like(logits)
        for rows in _chunks(*logits.shape):
            probs = torch.softmax(_float(logits[rows]), dim=-1)
            target = safe[rows].squeeze(1)
            probs.index_put_((torch.arange(len(target), device=target.device), target),
                             torch.tensor(-1.0, dtype=probs.dtype, device=probs.device), accumulate=True)
            torch.mul(probs, weight[rows], out=out[rows])  # scale and cast in one pass
        return out, None, None


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """Mean cross-entropy of logits (..., V) against targets (...), ignoring ignore_index
    (0 when every target is ignored), computed in at least float32."""
    return _ChunkedCrossEntropy.apply(logits.flatten(0, -2), targets.flatten(), ignore_index)
