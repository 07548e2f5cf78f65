"""The built-in architectures: Transformer++ (the baseline) and the Energy-Based Transformer,
``build_model`` (any registered architecture), and the paper's named model ladder.

Registered through the ``ebt_scaling.architectures`` entry point (pyproject.toml). This
module stays torch-free -- specs are validated and FLOPs counted without torch -- so each
``build`` imports its model class only when a model is really built.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ebt_scaling.harness.contract.architecture import Architecture, Thinking

from . import flops
from .ebt_options import EBTOptions

if TYPE_CHECKING:  # torch-free at run time
    from ebt_scaling.harness.contract.model_config import ModelConfig

    from .base import LanguageModel


@dataclass(frozen=True)
class NoOptions:
    """Transformer++ has no options beyond the shared backbone shape."""


def _build_transformer(config):
    from .transformer import TransformerPP

    return TransformerPP(config)


def _build_ebt(config):
    from .ebt import EBT

    return EBT(config)


TRANSFORMER = Architecture(
    name="transformer", label="Transformer++", options=NoOptions, build=_build_transformer,
    param_counts=flops.transformer_param_counts,
    step_flops={"paper": flops.transformer_paper_step_flops, "full": flops.transformer_step_flops},
    compiles=True, baseline=True,
    # GPU-hour planning without a measurement: a compiled Transformer++ with fused SDPA and fused
    # AdamW reached 17% (xxs) to 26% (small) MFU on one H100 (bf16, batch 32 x 256; the
    # reference code eager: 4.6-7.3%). docs/performance.md, "GPU-hours in plan".
    default_mfu=0.20)

EBT = Architecture(
    name="ebt", label="EBT", options=EBTOptions, build=_build_ebt,
    param_counts=flops.ebt_param_counts,
    step_flops={"paper": flops.ebt_paper_step_flops, "full": flops.ebt_step_flops},
    # The refinement step is a first-order function (torch.func computes dE/dx inside it),
    # so AOTAutograd derives its backward and torch.compile compiles both (models/ebt.py).
    compiles=True,
    thinking=Thinking(langevin_sigma=lambda options: options.langevin_sigma),
    # The reference code draws one random alpha per forward and anneals alpha to lr x min_lr_ratio.
    reference_options={"alpha_random_draw": "forward", "alpha_lr_floor": "shared"},
    # The reference EBT code reached 3.0% (xxs) to 4.8% (small) MFU on one H100 (bf16, batch
    # 32 x 256); this project's EBT has not been measured on a GPU yet. docs/performance.md.
    default_mfu=0.05)

BUILTIN = (TRANSFORMER, EBT)


def build_model(config: ModelConfig) -> LanguageModel:
    """The model of `config`, built by its architecture's registry entry."""
    return config.architecture.build(config)


@dataclass(frozen=True)
class NamedSize:
    n_layers: int
    n_heads: int
    d_model: int
    peak_lr: float


# The paper's named model ladder (docs/ebt.md, reference code) and its suggested LRs.
PAPER_SIZES: dict[str, NamedSize] = {
    "4xs": NamedSize(2, 2, 128, 0.0018),  # LR not in the paper's table: extrapolated from the ladder
    "3xs": NamedSize(4, 4, 256, 0.0015),  # LR not in the paper's table: extrapolated from the ladder
    "xxs": NamedSize(6, 6, 384, 0.0012),
    "xs": NamedSize(12, 6, 384, 0.0009),
    "small": NamedSize(12, 12, 768, 0.0006),
    "medium": NamedSize(24, 16, 1024, 0.0003),
    "large": NamedSize(24, 16, 1536, 0.00025),
    "xl": NamedSize(24, 32, 2048, 0.0002),
}
