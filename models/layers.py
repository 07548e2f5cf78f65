"""Building blocks written once and shared by Transformer++ and EBT.

RMSNorm, rotary position embeddings, the SwiGLU MLP and multi-head attention with two
entry points:

* ``Attention.forward`` -- ordinary causal self-attention through
  ``F.scaled_dot_product_attention`` (fused kernels where available). Transformer++ uses
  it, and so does the EBT's *real* stream, which never needs a double backward because it
  does not depend on the candidate (see models/ebt.py).
* ``Attention.attend_candidates`` -- the EBT's *predicted* stream: candidate i attends to
  context keys 0..i+offset and to itself only. Written with plain matmuls because it sits
  on the path of the inner gradient dE/dp and must be twice differentiable.

All projections are bias-free (Llama style). ``VocabPadding`` runs the vocabulary-sized
matmuls of both models at an aligned width. ``init_model`` starts a model's weights by
its ``ModelConfig.init`` scheme, and ``NORM_EPS`` gives that scheme's RMSNorm eps.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ebt_scaling.harness.contract.model_config import ModelConfig


def at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """Upcast half precisions to float32 but keep float64 (so float64 checks stay exact)."""
    return x if x.dtype == torch.float64 else x.float()


# The logit of a padding column. exp(MASKED_LOGIT - max) is exactly 0 in every float
# dtype, so softmax, cross-entropy and their gradients ignore it; it is finite, so it never
# turns a 0 * x into NaN, and bf16 represents it.
MASKED_LOGIT = -1e9


class VocabPadding(nn.Module):
    """Vocabulary-sized matmuls at ``padded`` columns (ModelConfig.padded_vocab_size).

    Weights stay at the true vocabulary (parameter counts and checkpoints do not change):
    ``columns`` pads a (d, V) matrix with zero columns at use, and ``logits`` adds the mask
    (0, then MASKED_LOGIT on the padding) as the GEMM's bias, which the GEMM applies in its
    epilogue rather than in a separate pass over B x S x V. A padded softmax is then
    exactly 0 on the padding, and the padding's gradients are exactly 0.
    """

    def __init__(self, vocab: int, padded: int):
        super().__init__()
        self.vocab, self.padded = vocab, padded
        mask = torch.zeros(padded)
        mask[vocab:] = MASKED_LOGIT
        self.register_buffer("mask", mask if padded > vocab else None, persistent=False)

    def columns(self, weight: torch.Tensor) -> torch.Tensor:
        """weight (d, V) -> (d, padded), zero columns appended."""
        return F.pad(weight, (0, self.padded - self.vocab)) if self.padded > self.vocab else weight

    def logits(self, x: torch.Tensor, weight_rows: torch.Tensor) -> torch.Tensor:
        """x (..., d) @ weight_rows.T -> (..., padded) logits, padding masked; weight_rows
        (V, d) or already padded (padded, d)."""
        if weight_rows.shape[0] < self.padded:
            weight_rows = F.pad(weight_rows, (0, 0, 0, self.padded - weight_rows.shape[0]))
        return F.linear(x, weight_rows, self.mask)

    def pad(self, logits: torch.Tensor) -> torch.Tensor:
        """(..., V) logits -> (..., padded), the padding masked."""
        return F.pad(logits, (0, self.padded - self.vocab), value=MASKED_LOGIT) if self.padded > self.vocab else logits

    def unpad(self, logits: torch.Tensor) -> torch.Tensor:
        return logits[..., : self.vocab]


# RMSNorm eps per ModelConfig.init. The reference code gives every norm Llama 2's 1e-5 (its
# model arguments override the 1e-6 default of its RMSNorm class); this project uses 1e-6.
NORM_EPS = {"project": 1e-6, "reference": 1e-5}


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise and scale in float32 for bf16 stability, return in the input dtype (the
        # next matmul would cast a float32 result right back).
        x32 = at_least_fp32(x)
        return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight).type_as(x)


class Rotary(nn.Module):
    """Rotary position embedding (theta = 1e4 by default), rotate-half convention."""

    def __init__(self, head_dim: int, max_positions: int, theta: float = 10_000.0):
        super().__init__()
        inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
        angles = torch.outer(torch.arange(max_positions, dtype=torch.float64), inv_freq)
        # Non-persistent: derived from the config, so checkpoints do not carry them.
        self.register_buffer("cos", angles.cos().float(), persistent=False)
        self.register_buffer("sin", angles.sin().float(), persistent=False)

    def forward(self, x: torch.Tensor, start: int) -> torch.Tensor:
        """Rotate x of shape (B, H, T, Dh) as if it sat at positions start..start+T-1."""
        t = x.shape[-2]
        cos = self.cos[start:start + t].to(x.dtype)
        sin = self.sin[start:start + t].to(x.dtype)
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


class SwiGLU(nn.Module):
    """w_down(silu(w_gate x) * w_up x); the paper's reference code uses hidden = d_model."""

    def __init__(self, d_model: int, hidden: int):
        super().__init__()
        self.w_gate = nn.Linear(d_model, hidden, bias=False)
        self.w_up = nn.Linear(d_model, hidden, bias=False)
        self.w_down = nn.Linear(hidden, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w_down(F.silu(self.w_gate(x)) * self.w_up(x))


class Attention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, rotary: Rotary):
        super().__init__()
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.wq = nn.Linear(d_model, d_model, bias=False)
        self.wk = nn.Linear(d_model, d_model, bias=False)
        self.wv = nn.Linear(d_model, d_model, bias=False)
        self.wo = nn.Linear(d_model, d_model, bias=False)
        self.rotary = rotary

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.n_heads, self.head_dim).transpose(1, 2)

    def _merge(self, x: torch.Tensor) -> torch.Tensor:
        b, h, t, dh = x.shape
        return x.transpose(1, 2).reshape(b, t, h * dh)

    def keys_values(self, x: torch.Tensor, start: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Rotated keys and values of x (B, T, d) at positions start.., each (B, H, T, Dh)."""
        return self.rotary(self._heads(self.wk(x)), start), self._heads(self.wv(x))

    def forward(self, x: torch.Tensor, start: int = 0) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Causal self-attention over x; also returns this layer's (keys, values)."""
        q = self.rotary(self._heads(self.wq(x)), start)
        k, v = self.keys_values(x, start)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.wo(self._merge(out)), (k, v)

    def attend_candidates(self, x: torch.Tensor, start: int, context_kv: tuple[torch.Tensor, torch.Tensor],
                          offset: int) -> torch.Tensor:
        """Candidate i (of S) attends to context keys 0..i+offset and to itself only.

        x: candidate stream (B, S, d) at positions start..start+S-1; context_kv: keys and
        values of the real stream, (B, H, S+offset, Dh). Scores against the context form an
        S x (S+offset) matrix; the self score is a per-row dot product, so candidates never
        see each other. Softmax runs jointly over both parts.
        """
        # The scale goes on q (B, H, S, Dh) rather than on the S x S scores, and the causal
        # mask is the bias of the score GEMM: two passes over the score matrix fewer.
        q = self.rotary(self._heads(self.wq(x)), start) * (1.0 / math.sqrt(self.head_dim))
        k_self, v_self = self.keys_values(x, start)
        k_ctx, v_ctx = context_kv
        b, h, s, dh = q.shape
        n_ctx = k_ctx.shape[-2]
        visible = torch.ones(s, n_ctx, dtype=torch.bool, device=x.device).tril(diagonal=offset)
        mask = torch.zeros(s, n_ctx, dtype=q.dtype, device=x.device).masked_fill(~visible, float("-inf"))
        scores_ctx = torch.baddbmm(mask, q.reshape(b * h, s, dh), k_ctx.reshape(b * h, n_ctx, dh).transpose(-1, -2))
        scores_ctx = scores_ctx.view(b, h, s, n_ctx)
        score_self = (q * k_self).sum(-1, keepdim=True)
        weights = torch.softmax(at_least_fp32(torch.cat((scores_ctx, score_self), dim=-1)), dim=-1).to(q.dtype)
        out = torch.matmul(weights[..., :n_ctx], v_ctx) + weights[..., n_ctx:] * v_self
        return self.wo(self._merge(out))


class Block(nn.Module):
    """Pre-norm residual block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, d_model: int, n_heads: int, hidden: int, rotary: Rotary, norm_eps: float):
        super().__init__()
        self.attn_norm = RMSNorm(d_model, norm_eps)
        self.attn = Attention(d_model, n_heads, rotary)
        self.mlp_norm = RMSNorm(d_model, norm_eps)
        self.mlp = SwiGLU(d_model, hidden)

    def forward(self, x: torch.Tensor, start: int = 0) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        attn_out, kv = self.attn(self.attn_norm(x), start)
        x = x + attn_out
        return x + self.mlp(self.mlp_norm(x)), kv

    def context_keys_values(self, x: torch.Tensor, start: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Only the keys and values this block's attention would compute for x."""
        return self.attn.keys_values(self.attn_norm(x), start)

    def forward_candidates(self, x: torch.Tensor, start: int, context_kv, offset: int) -> torch.Tensor:
        x = x + self.attn.attend_candidates(self.attn_norm(x), start, context_kv, offset)
        return x + self.mlp(self.mlp_norm(x))


def init_project(module: nn.Module, n_layers: int, std: float) -> None:
    """This project's rule (the default): Normal(0, std) for every matrix and table, residual
    output projections scaled by 1/sqrt(2L); vectors (norm gains) keep their value."""
    for name, param in module.named_parameters():
        if param.dim() < 2:
            continue
        scale = 1.0 / math.sqrt(2 * n_layers) if name.endswith(("wo.weight", "w_down.weight")) else 1.0
        nn.init.normal_(param, mean=0.0, std=std * scale)


def init_reference(module: nn.Module) -> None:
    """The reference code's rule (its default ``xavier`` method, gain 1): every nn.Linear
    weight Xavier normal, std sqrt(2 / (fan_in + fan_out)), biases zero; every nn.Embedding
    N(0, 1) (PyTorch's default, which the reference leaves in place); norm gains stay 1."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_normal_(m.weight, gain=1.0)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, mean=0.0, std=1.0)


def init_model(model: nn.Module, config: ModelConfig) -> None:
    """Start a freshly built model's weights by config.init (per-parameter table: docs/ebt.md)."""
    if config.init == "reference":
        init_reference(model)
    else:
        init_project(model, config.n_layers, config.init_std)
