"""The paper's named model ladder (docs/ebt.md, reference code) and its suggested LRs."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class NamedSize:
    n_layers: int
    n_heads: int
    d_model: int
    peak_lr: float


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
