"""The built-in sweep axes: what each value of ``axis.values`` means and the points it plans.

Each axis is one ``SweepAxis`` entry of sweep_spec.SWEEP_AXES, registered through the entry
point ``ebt_scaling.sweep_axes``: how a value is read, the points it gives the planner
(sweeps/generate.py), what the sweep must also give (``axis.size``) and what the analysis
fits against it (``fitted``: its run-table column, its words, the EBT paper's advantage).

A point (AxisPoint) is a shape and what the axis fixes there instead of the rules: the
tokens (data), a FLOP budget (compute, isoflop), the batch (batch), or model fields.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ebt_scaling.harness.contract.errors import ConfigError

from . import rules
from .shapes import Shape, SolvedShape, shape_name
from .sweep_spec import (
    ExplicitSize,
    FittedAxis,
    SweepAxis,
    parse_size,
    positive_integer,
    positive_number,
)

if TYPE_CHECKING:
    from .generate import Planner


@dataclass(frozen=True)
class AxisPoint:
    """One point of the axis: its label (tag ``axis_value``), its shape, and what it fixes."""

    axis_value: str
    solved: SolvedShape
    tokens: float | None = None   # the training tokens, instead of the token rule's
    budget: float | None = None   # the FLOP budget the point trains for (in flops.convention)
    batch: int | None = None      # the batch in sequences, instead of the batch rule's
    model_fields: tuple[tuple[str, Any], ...] = ()   # ModelConfig fields set at this point, e.g. (("context", 256),)


def format_value(value: float) -> str:
    """An axis value as a label: 6 significant digits (1e+14, not 1.0000000000000002e+14)."""
    return f"{value:.6g}"


def fixed_size(planner: Planner) -> SolvedShape:
    """The shape of ``axis.size``, which every point of a fixed-size axis starts from."""
    return planner.solver.resolve(parse_size(planner.sweep.axis.size, "axis.size"))


def explicit_shape(planner: Planner, shape: Shape) -> SolvedShape:
    """A shape the axis gives outright (no target), with the reference's parameter count."""
    return SolvedShape(shape, None, planner.solver.count(shape.n_layers, shape.d_model, shape.n_heads))


def _size_label(value: str | float | ExplicitSize) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, ExplicitSize):
        return value.name or shape_name(value.n_layers, value.d_model)
    return format_value(value)


def _parameter_points(planner: Planner, values: list) -> list[AxisPoint]:
    out = []
    for i, value in enumerate(values):
        solved = planner.solver.resolve(value)
        s = solved.shape
        if s.d_model % s.n_heads or (s.d_model // s.n_heads) % 2:
            raise ConfigError(f"axis.values[{i}]: d_model {s.d_model} must be n_heads ({s.n_heads}) x an even head_dim")
        out.append(AxisPoint(_size_label(value), solved))
    return out


def _data_points(planner: Planner, values: list) -> list[AxisPoint]:
    size = fixed_size(planner)
    return [AxisPoint(format_value(v), size, tokens=v) for v in values]


def _batch_points(planner: Planner, values: list) -> list[AxisPoint]:
    size = fixed_size(planner)
    return [AxisPoint(str(v), size, batch=v) for v in values]


def _width_points(planner: Planner, values: list) -> list[AxisPoint]:
    layers, head_dim = fixed_size(planner).shape.n_layers, planner.sweep.shape.head_dim
    out = []
    for i, d_model in enumerate(values):
        if d_model % head_dim:
            raise ConfigError(f"axis.values[{i}]: d_model {d_model} is not a multiple of shape.head_dim ({head_dim}); "
                              f"use multiples of {head_dim} (n_heads = d_model / head_dim)")
        shape = Shape(layers, d_model, d_model // head_dim, shape_name(layers, d_model))
        out.append(AxisPoint(str(d_model), explicit_shape(planner, shape)))
    return out


def _depth_points(planner: Planner, values: list) -> list[AxisPoint]:
    base = fixed_size(planner).shape
    return [AxisPoint(str(layers), explicit_shape(planner, Shape(layers, base.d_model, base.n_heads,
                                                                 shape_name(layers, base.d_model))))
            for layers in values]


def compute_optimal_target(planner: Planner, budget: float) -> float:
    """The parameter target the token rule predicts as compute-optimal for a budget."""
    def reference_at(target: float) -> tuple[float, float]:
        solved = planner.solver.solve(target)
        return solved.achieved, planner.reference_flops_per_token(solved.shape)
    return rules.compute_optimal_size(planner.sweep.tokens, budget, reference_at)


def _compute_points(planner: Planner, values: list) -> list[AxisPoint]:
    return [AxisPoint(format_value(v), planner.solver.solve(compute_optimal_target(planner, v)), budget=v)
            for v in values]


def _isoflop_points(planner: Planner, values: list) -> list[AxisPoint]:
    """The planned sizes around each budget's optimum, and any `plan --extend` added beyond them."""
    axis = planner.sweep.axis
    out = []
    for v in values:
        optimum = compute_optimal_target(planner, v)
        out += [AxisPoint(format_value(v), planner.solver.solve(optimum * axis.spread ** o), budget=v)
                for o in axis.offsets(v)]
    return out


BUILTIN = (
    SweepAxis("parameters", parse_size, _parameter_points, mapping_values=True),
    SweepAxis("data", positive_number, _data_points, fixed_size=True),
    SweepAxis("width", positive_integer, _width_points, fixed_size=True,
              fitted=FittedAxis("d_model", "width", "d_model", "d_model", "embedding dim", (0.02, None))),
    SweepAxis("depth", positive_integer, _depth_points, fixed_size=True,
              fitted=FittedAxis("n_layers", "depth", "layers", "layers", "depth", (5.29, None))),
    SweepAxis("batch", positive_integer, _batch_points, fixed_size=True,
              fitted=FittedAxis("batch_size", "batch", "sequences per step", "batch size (sequences per step)",
                                "batch size", (28.46, None))),
    SweepAxis("compute", positive_number, _compute_points, budgets=True),
    SweepAxis("isoflop", positive_number, _isoflop_points, budgets=True, sizes_per_budget=True),
)
