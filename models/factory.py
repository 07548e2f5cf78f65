"""Build a model from its config: the one place that maps `arch` to a class."""
from __future__ import annotations

from .base import LanguageModel
from .config import ModelConfig
from .ebt import EBT
from .transformer import TransformerPP


def build_model(config: ModelConfig) -> LanguageModel:
    return {"transformer": TransformerPP, "ebt": EBT}[config.arch](config)
