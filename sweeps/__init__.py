"""Paired scaling sweeps: typed sweep files, shape / token / hyperparameter rules, and
their expansion into RunSpecs (the dispatcher's API: load_sweep, expand)."""
from __future__ import annotations

from .generate import Plan, PlannedRun, expand, make_plan
from .sweep_spec import SweepSpec, load_sweep, preset_names, sweep_from_dict

__all__ = ["Plan", "PlannedRun", "SweepSpec", "expand", "load_sweep", "make_plan", "preset_names", "sweep_from_dict"]
