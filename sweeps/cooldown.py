"""Cooldown branches of WSD runs (filled in by the cooldown work)."""
from __future__ import annotations

from ebt_scaling.harness.contract.errors import ConfigError


def add_branches(planner, runs):
    if planner.sweep.cooldown is None:
        return runs
    raise ConfigError("cooldown: not implemented yet")
