"""Mixed precision in one place: `bf16` is autocast with float32 master weights."""
from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager

import torch

PRECISIONS = ("fp32", "bf16")


def autocast(device: torch.device, precision: str) -> Callable[[], AbstractContextManager]:
    """A factory of the context every forward pass of a run enters."""
    if precision == "bf16":
        return lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    if precision == "fp32":
        return contextlib.nullcontext
    raise ValueError(f"precision: must be one of {PRECISIONS}, got {precision!r}")
