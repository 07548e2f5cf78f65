"""Tuning trials (filled in by the tuning work)."""
from __future__ import annotations

from ebt_scaling.harness.contract.errors import ConfigError


def expand_trials(planner, runs):
    if planner.sweep.tune is None:
        return runs
    raise ConfigError("tune: not implemented yet")
