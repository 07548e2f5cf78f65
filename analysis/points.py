"""Which runs are fitted, against which axes, which label is the reference, and how the
runs are resampled.

The points fitted are the runs with status ``done``, a finite final held-out loss and
FLOPs in the chosen convention; every other run is listed as excluded with its status and
note. A matched unit is a sweep point (axis value, size, budget) shared by every
architecture and every seed of it; the paired bootstrap draws units with replacement
(bootstrap.draw_units), and a drawn unit brings all of its runs.

Cooldown branches of WSD runs (tag ``cooldown_of``; sweeps/cooldown.py) are kept apart in
``branches``: at one size they add several token counts, which would bend a fit along the
parameters axis (per-axis laws, Approach 2, the comparisons), but they are cooled-down
points where varied tokens are wanted: Approach 1's frontier and Approach 3's L(N, D) read
``LabelPoints.with_branches``. A branch is drawn with its parent's unit (it shares the
parent's stable phase, so it is not an independent sample), so it enters only once its
parent is fitted: until then it is listed as excluded (its parent not finished), and every
unit the bootstrap draws holds a fitted run.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ebt_scaling.harness.contract.architecture import ARCHITECTURES, baseline_name
from ebt_scaling.harness.contract.errors import ConfigError
from ebt_scaling.harness.contract.formatting import as_number
from ebt_scaling.sweeps.cooldown import is_branch
from ebt_scaling.sweeps.sweep_spec import SWEEP_AXES, FittedAxis

from .bootstrap import draw_units, unit_counts
from .laws.law import LabelPoints
from .load import SweepData

if TYPE_CHECKING:
    from .pipeline import AnalysisConfig
    from .result import Caveats

# The axes every sweep is fitted against; a sweep along an axis whose registered entry has a
# ``fitted`` part (width, depth, batch, ...) is also fitted against that axis' column. The
# paper's advantages: docs/ebt.md (arXiv 2507.02092 v1 and a later revision).
BASE_AXES = {
    "flops": FittedAxis(None, "training compute", "FLOPs", "training compute C (FLOPs, {conv} convention)",
                        "FLOPs", (2.92, 8.97)),
    "params": FittedAxis(None, "parameters", "parameters", "parameters N ({params})", "parameters", (2.91, 8.97)),
    "tokens": FittedAxis("tokens", "training tokens", "tokens", "training tokens D", "data", (35.98, None)),
}


def fitted_axis(name: str) -> FittedAxis:
    """How the report and the plots show an axis of the fits: a base axis, a registered sweep
    axis' own, or (a sweep axis no longer registered) its bare name."""
    entry = BASE_AXES.get(name) or (SWEEP_AXES.get(name).fitted if name in SWEEP_AXES else None)
    return entry or FittedAxis(None, name, name, name)


@dataclass(frozen=True)
class FitPoints:
    """The fitted runs (reference label's first, each with its ``unit_code``) and their bootstrap draw."""

    runs: pd.DataFrame
    excluded: list[dict]                 # {"run_id", "arch_label", "status", "note", "step", "total_steps"}
    axes: dict[str, str]                 # axis -> column of runs
    labels: list[str]                    # labels with fitted runs, the reference first
    arch_of: dict[str, str]              # every label of the sweep -> its architecture
    reference: str | None                # None: no reference with fitted runs (no comparisons)
    candidates: list[str]                # every other label with fitted runs
    counts: np.ndarray                   # (resamples, units) draws of each unit; no rows: no bootstrap
    n_units: int
    params_kind: str                     # "total" | "non_embedding"
    config: AnalysisConfig
    branches: pd.DataFrame = field(default_factory=pd.DataFrame)  # fitted labels' finished cooldown branches

    @property
    def flops_col(self) -> str:
        return self.axes["flops"]

    @property
    def n_col(self) -> str:
        return self.axes["params"]

    def of(self, label: str, runs: pd.DataFrame | None = None) -> LabelPoints:
        """The label's points (of ``runs`` when given: a subset, e.g. the pairs a comparison shares)."""
        runs = self.runs if runs is None else runs
        branches = self.branches[self.branches["arch_label"] == label] if len(self.branches) else None
        return LabelPoints(label, runs[runs["arch_label"] == label], self.axes, self.counts, self.config, branches)


def _baseline_label() -> str:
    return ARCHITECTURES.get(baseline_name()).label


def default_reference_labels(arch_of: dict[str, str]) -> list[str]:
    """The labels of the registry's baseline architecture (Transformer++), in label order:
    the first is the default reference."""
    baseline = baseline_name()
    return [label for label, arch in arch_of.items() if arch == baseline]


def select_points(data: SweepData, config: AnalysisConfig, caveats: Caveats) -> FitPoints:
    meta = data.meta or {}
    params_kind = config.params or (meta.get("param_count") if meta.get("param_count") in
                                    ("total", "non_embedding") else "total")
    flops_col, n_col = f"flops_{config.convention}", f"params_{params_kind}"
    points, excluded = _fitted(data.runs, flops_col, n_col)
    runs = data.runs
    if "cooldown_of" not in points:
        points["cooldown_of"] = None
    branch = is_branch(points)
    branches, points = points[branch].copy(), points[~branch].reset_index(drop=True)
    branches, orphans = _with_fitted_parent(branches, points)
    excluded.extend(orphans)
    arch_of = {lb: str(g["arch"].dropna().iloc[0]) if g["arch"].notna().any() else "?"
               for lb, g in runs.groupby("arch_label")}
    reference = _reference(arch_of, config, meta, caveats)
    labels = _ordered_labels(points, reference) if len(points) else []
    if reference is not None and reference not in labels:
        caveats.warn(f"reference {reference} has no finished run with a final loss: no comparisons")
    candidates = [lb for lb in labels if lb != reference] if reference in labels else []
    if reference is None:
        caveats.skip("comparisons", None, f"no {_baseline_label()} label in the sweep (choose one with --reference)")

    axes = {"flops": flops_col, "params": n_col, "tokens": "tokens"}
    own_axis = meta.get("axis") or (runs["axis"].dropna().iloc[0]
                                    if "axis" in runs and runs["axis"].notna().any() else None)
    own_fit = SWEEP_AXES.get(own_axis).fitted if own_axis in SWEEP_AXES else None
    if own_fit is not None:
        axes[own_axis] = own_fit.column
    for col in axes.values():
        if col in points:
            points[col] = pd.to_numeric(points[col], errors="coerce")
            branches[col] = pd.to_numeric(branches[col], errors="coerce")

    # Reference rows first, and units coded in order of first appearance: which unit each column of
    # the draw counts (and so every interval of a seed) follows this order.
    if len(points):
        points = pd.concat([points[points["arch_label"] == lb] for lb in labels]).reset_index(drop=True)
        codes, uniques = pd.factorize(points["unit"].astype(str))
        points["unit_code"] = codes
        branches["unit_code"] = branches["cooldown_of"].map(dict(zip(points["run_id"], codes))).astype(np.int64)
        n_units = len(uniques)
    else:
        n_units = 0
    if config.bootstrap and n_units >= 2:
        counts = unit_counts(draw_units(np.random.default_rng(config.seed), n_units, config.bootstrap), n_units)
    else:
        counts = np.zeros((0, max(n_units, 1)))
        if config.bootstrap and len(points):
            caveats.warn(f"{n_units} matched unit(s): no bootstrap (needs >= 2); intervals are nan")
    for lb in arch_of:
        if lb not in labels:
            caveats.skip("all fits", lb, "no finished run with a final loss")
    return FitPoints(points, excluded, axes, labels, arch_of, reference if reference in labels else None,
                     candidates, counts, n_units, params_kind, config, branches)


def _fitted(runs: pd.DataFrame, flops_col: str, n_col: str) -> tuple[pd.DataFrame, list[dict]]:
    """The runs fitted, and every other run with why it is not."""
    excluded = []
    for _, r in runs[runs["status"] != "done"].iterrows():
        excluded.append({"run_id": r["run_id"], "arch_label": r.get("arch_label"), "status": r["status"],
                         "note": r.get("note") or "", "step": as_number(r.get("step"), int),
                         "total_steps": as_number(r.get("total_steps"), int)})
    done = runs[runs["status"] == "done"].copy()
    for col in ("val_loss", flops_col, n_col, "tokens"):
        done[col] = pd.to_numeric(done[col], errors="coerce")
    ok = (done["val_loss"] > 0) & np.isfinite(done["val_loss"]) & (done[flops_col] > 0)
    for _, r in done[~ok].iterrows():
        excluded.append({"run_id": r["run_id"], "arch_label": r.get("arch_label"), "status": "done",
                         "note": "done but no finite final val_loss or FLOPs recorded: not fitted",
                         "step": as_number(r.get("step"), int), "total_steps": as_number(r.get("total_steps"), int)})
    return done[ok].reset_index(drop=True), excluded


def _with_fitted_parent(branches: pd.DataFrame, points: pd.DataFrame) -> tuple[pd.DataFrame, list[dict]]:
    """The finished cooldown branches whose parent is fitted, and the others as excluded
    (a branch is drawn with its parent's unit: without the parent it has none)."""
    fitted = branches["cooldown_of"].isin(set(points["run_id"]))
    excluded = [{"run_id": r["run_id"], "arch_label": r.get("arch_label"), "status": "done",
                 "note": f"cooldown branch of {r['cooldown_of']}: parent not finished (enters once its parent is "
                         "fitted)", "step": as_number(r.get("step"), int),
                 "total_steps": as_number(r.get("total_steps"), int)}
                for _, r in branches[~fitted].iterrows()]
    return branches[fitted].reset_index(drop=True), excluded


def _reference(arch_of: dict[str, str], config: AnalysisConfig, meta: dict, caveats: Caveats) -> str | None:
    if config.reference is not None:
        if config.reference not in arch_of:
            raise ConfigError(f"reference: label {config.reference!r} is not in the sweep; choose one of "
                              f"{', '.join(sorted(arch_of))}")
        return config.reference
    if meta.get("reference") in arch_of:
        return meta["reference"]
    baseline = default_reference_labels(arch_of)
    if len(baseline) > 1:
        caveats.warn(f"several {_baseline_label()} labels {baseline}: {baseline[0]} is the reference "
                     "(choose with --reference)")
    return baseline[0] if baseline else None


def _ordered_labels(points: pd.DataFrame, reference: str | None) -> list[str]:
    labels = sorted(points["arch_label"].unique(), key=str)
    if reference in labels:
        labels.remove(reference)
        labels.insert(0, reference)
    return labels

