"""The interface every architecture shares, so the trainer, FLOP accounting and
benchmarks never branch on the model type, and the one place mixed precision is set:
`bf16` is autocast with float32 master weights (``autocast``)."""
from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

import torch
from torch import nn

from ebt_scaling.harness.contract.model_config import ModelConfig

IGNORE_INDEX = -100  # target value of pad positions: excluded from every loss


@dataclass
class StepOutput:
    """What one forward pass on a batch yields.

    loss: the training objective to backpropagate. metrics: detached scalar tensors (the
    trainer syncs them to floats only when it logs, so steps never stall on .item());
    every model reports ``ce`` (the next-token cross-entropy comparable across
    architectures: for EBT the final refinement step's) and ``tokens`` (scored tokens).
    """

    loss: torch.Tensor
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)


class LanguageModel(nn.Module):
    config: ModelConfig

    def step(self, inputs: torch.Tensor, targets: torch.Tensor) -> StepOutput:
        """Loss and metrics for a batch: inputs (B, S) token ids, targets (B, S) next ids
        with IGNORE_INDEX at pad positions."""
        raise NotImplementedError

    def token_nll(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per-position next-token NLL (B, S) used for evaluation (0 at pad positions)."""
        raise NotImplementedError

    def compile_hot_path(self) -> None:
        """torch.compile what is worth compiling (for architectures whose registry entry says
        ``compiles``); by default the training step."""
        self.step = torch.compile(self.step)

    def process_state(self) -> dict[str, torch.Tensor]:
        """State that differs between data-parallel processes (checkpointed per process,
        unlike state_dict(), which every process shares)."""
        return {}

    def load_process_state(self, state: dict[str, torch.Tensor]) -> None:
        pass

    def embedding_parameters(self) -> list[nn.Parameter]:
        """Vocabulary-sized tables (and other lookup tables) excluded from N_non-embedding."""
        raise NotImplementedError

    def param_counts(self) -> dict[str, int]:
        total = sum(p.numel() for p in self.parameters())
        embedding = sum(p.numel() for p in self.embedding_parameters())
        return {"total": total, "non_embedding": total - embedding}

    def optimizer_groups(self, weight_decay: float, decay_norms_and_embeddings: bool = False,
                         lr_scale: float = 1.0) -> list[dict]:
        """AdamW parameter groups: matrices decayed; norms and embeddings decayed only on
        request. Subclasses add their own groups (EBT's alpha). A group's lr_scale scales its
        peak LR and floor_scale its LR floor (schedule.lr_at); here both are lr_scale."""
        embedding_ids = {id(p) for p in self.embedding_parameters()}
        decay, no_decay = [], []
        for p in self.parameters():
            if not p.requires_grad or getattr(p, "_own_optimizer_group", False):
                continue
            is_plain_matrix = p.dim() >= 2 and id(p) not in embedding_ids
            (decay if is_plain_matrix or decay_norms_and_embeddings else no_decay).append(p)
        scales = {"lr_scale": lr_scale, "floor_scale": lr_scale}
        groups = [{"params": decay, "weight_decay": weight_decay, **scales, "name": "decay"},
                  {"params": no_decay, "weight_decay": 0.0, **scales, "name": "no_decay"}]
        return [g for g in groups if g["params"]]


PRECISIONS = ("fp32", "bf16")


def autocast(device: torch.device, precision: str) -> Callable[[], AbstractContextManager]:
    """A factory of the context every forward pass of a run enters."""
    if precision == "bf16":
        return lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    if precision == "fp32":
        return contextlib.nullcontext
    raise ValueError(f"precision: must be one of {PRECISIONS}, got {precision!r}")
