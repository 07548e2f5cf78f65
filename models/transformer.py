"""Transformer++ (Llama-2 style): pre-norm RMSNorm, RoPE, SwiGLU, no biases, untied head."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ebt_scaling.harness.contract.model_config import ModelConfig

from .base import IGNORE_INDEX, LanguageModel, StepOutput
from .layers import NORM_EPS, Block, RMSNorm, Rotary, VocabPadding, at_least_fp32, init_model


class TransformerPP(LanguageModel):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        c = config
        self.tok_emb = nn.Embedding(c.vocab_size, c.d_model)
        self.rotary = Rotary(c.head_dim, c.context + 2, c.rope_theta)
        eps = NORM_EPS[c.init]
        self.blocks = nn.ModuleList(Block(c.d_model, c.n_heads, c.hidden, self.rotary, eps) for _ in range(c.n_layers))
        self.norm = RMSNorm(c.d_model, eps)
        self.lm_head = nn.Linear(c.d_model, c.vocab_size, bias=False)
        self.vocab_pad = VocabPadding(c.vocab_size, c.padded_vocab_size)
        init_model(self, c)

    def logits(self, inputs: torch.Tensor) -> torch.Tensor:
        """(B, S, padded vocabulary) logits; the padding columns are masked (VocabPadding)."""
        h = self.tok_emb(inputs)
        for block in self.blocks:
            h, _ = block(h)
        return self.vocab_pad.logits(self.norm(h), self.lm_head.weight)

    def compile_hot_path(self) -> None:
        """The forward pass (validation and evaluation) and, for training, the forward with its
        cross-entropy, so that Inductor fuses the upcast, log-softmax and loss over V."""
        self.logits = torch.compile(self.logits)
        self._mean_nll = torch.compile(self._mean_nll)

    def _mean_nll(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = self.logits(inputs)
        return F.cross_entropy(at_least_fp32(logits.flatten(0, 1)), targets.flatten(), ignore_index=IGNORE_INDEX)

    def step(self, inputs: torch.Tensor, targets: torch.Tensor) -> StepOutput:
        loss = self._mean_nll(inputs, targets)
        return StepOutput(loss, {"ce": loss.detach(), "tokens": (targets != IGNORE_INDEX).sum()})

    def token_nll(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = self.logits(inputs)
        return F.cross_entropy(at_least_fp32(logits.transpose(1, 2)), targets, ignore_index=IGNORE_INDEX, reduction="none")

    def embedding_parameters(self) -> list[nn.Parameter]:
        return [self.tok_emb.weight, self.lm_head.weight]
