"""Build a model from its config through the architecture registry."""
from __future__ import annotations

from ebt_scaling.harness.contract.model_config import ModelConfig

from .base import LanguageModel


def build_model(config: ModelConfig) -> LanguageModel:
    return config.architecture.build(config)
