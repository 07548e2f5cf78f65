"""The shape rule: a target parameter count -> (n_layers, d_model, n_heads).

``aspect`` rule (documented in sweeps/sweep_spec.py ShapeRule):

* head_dim is fixed (``shape.head_dim``, 64 by default); d_model is a multiple of it and
  n_heads = d_model / head_dim;
* the parameter count matched is the sweep's ``param_count`` (``total`` by default, or
  ``non_embedding``) of the *reference* architecture's model (models/flops.py
  ``param_counts``: exact, analytic, no model is built). Both architectures of a pair share
  the shape; EBT has d + 1 more non-embedding parameters (energy head, alpha) and a V x d
  candidate projection (+ K x d step table) more in total;
* for every depth 1..max_layers the width closest to the target is found (the count is a
  quadratic in d_model at fixed depth, solved in closed form), plus the widest and
  narrowest widths the aspect band allows; only shapes with d_model / n_layers within a
  factor ``aspect_slack`` (4) of ``aspect`` count; among those within ``tolerance`` (5%)
  of the target the one whose d_model / n_layers is closest to ``aspect`` (in log) wins; when none is within tolerance (e.g. a target smaller than one
  layer of width head_dim plus the embeddings) the closest count wins and a warning says
  by how much it misses.

``ladder`` rule: the paper's named size (models/architectures.py) nearest in log parameter count,
with the same warning beyond the tolerance.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from ebt_scaling.harness.contract.model_config import ModelConfig
from ebt_scaling.models.architectures import PAPER_SIZES
from ebt_scaling.models.flops import param_counts

from .sweep_spec import ExplicitSize, ShapeRule


@dataclass(frozen=True)
class Shape:
    n_layers: int
    d_model: int
    n_heads: int
    name: str

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads


@dataclass(frozen=True)
class SolvedShape:
    """A shape with what it was asked for and what it got (``count`` = the sweep's param_count)."""

    shape: Shape
    target: float | None  # None for ladder names and explicit shapes given as such
    achieved: int
    warning: str | None = None


def shape_name(n_layers: int, d_model: int) -> str:
    return f"L{n_layers}-d{d_model}"


def ladder_shape(name: str) -> Shape:
    s = PAPER_SIZES[name]
    return Shape(s.n_layers, s.d_model, s.n_heads, name)


class ShapeSolver:
    """Solves targets for one sweep; every per-shape computation is cached."""

    def __init__(self, template: ModelConfig, count: str, rule: ShapeRule):
        self.template = template  # the reference architecture at the sweep's vocab/context/ffn
        self.count_kind = count
        self.rule = rule
        self._quad: dict[int, tuple[float, float, float]] = {}
        self._counts: dict[tuple[int, int, int], dict[str, int]] = {}
        self._solved: dict[float, SolvedShape] = {}
        self._np = None

    # ----------------------------------------------------------------- counts
    def config(self, shape: Shape | tuple[int, int, int]) -> ModelConfig:
        L, d, h = (shape.n_layers, shape.d_model, shape.n_heads) if isinstance(shape, Shape) else shape
        return replace(self.template, n_layers=L, d_model=d, n_heads=h)

    def counts(self, n_layers: int, d_model: int, n_heads: int) -> dict[str, int]:
        key = (n_layers, d_model, n_heads)
        hit = self._counts.get(key)
        if hit is None:
            hit = self._counts[key] = param_counts(self.config(key))
        return hit

    def count(self, n_layers: int, d_model: int, n_heads: int) -> int:
        return self.counts(n_layers, d_model, n_heads)[self.count_kind]

    def _quadratic(self, n_layers: int) -> tuple[float, float, float]:
        """(a, b, c) with count = a d^2 + b d + c at this depth, from three exact counts.

        param_counts is a quadratic in d_model at fixed depth (d x d projections, d x hidden
        MLP with hidden = d or fixed, V x d tables, d-sized norms); head counts do not enter.
        """
        hit = self._quad.get(n_layers)
        if hit is None:
            p = [param_counts(replace(self.template, n_layers=n_layers, d_model=d, n_heads=1))[self.count_kind]
                 for d in (2, 4, 6)]
            a = (p[2] - 2 * p[1] + p[0]) / 8.0
            b = (p[1] - p[0]) / 2.0 - 6 * a
            c = p[0] - 4 * a - 2 * b
            hit = self._quad[n_layers] = (a, b, c)
        return hit

    # ----------------------------------------------------------------- solving
    def solve(self, target: float) -> SolvedShape:
        hit = self._solved.get(target)
        if hit is None:
            hit = self._solved[target] = (self._solve_ladder(target) if self.rule.rule == "ladder"
                                          else self._solve_aspect(target))
        return hit

    def _arrays(self):
        """Depths 1..max_layers and their quadratic coefficients, as numpy arrays (cached)."""
        if self._np is None:
            depths = np.arange(1, self.rule.max_layers + 1)
            coef = np.array([self._quadratic(int(L)) for L in depths], dtype=np.float64)
            self._np = (depths, coef[:, 0], coef[:, 1], coef[:, 2])
        return self._np

    def _solve_aspect(self, target: float) -> SolvedShape:
        rule, hd = self.rule, self.rule.head_dim
        depths, a, b, c = self._arrays()
        disc = np.maximum(b * b - 4 * a * (c - target), 0.0)
        m = (-b + np.sqrt(disc)) / (2 * a) / hd  # width in head_dim units that hits the target
        # two candidate widths per depth: the multiples of head_dim either side
        k = np.concatenate([np.maximum(1, np.floor(m)), np.maximum(1, np.ceil(m))])
        L = np.concatenate([depths, depths])
        d = k * hd
        aa, bb, cc = np.concatenate([a, a]), np.concatenate([b, b]), np.concatenate([c, c])
        err = np.abs((aa * d * d + bb * d + cc) / target - 1.0)
        dist = np.abs(np.log(d / L) - math.log(rule.aspect))
        # a depth whose widths all miss the aspect band still offers the band's edge widths
        eligible = dist <= math.log(rule.aspect_slack) + 1e-9
        lo = np.maximum(1, np.ceil(depths * rule.aspect / rule.aspect_slack / hd - 1e-9))
        hi = np.maximum(lo, np.floor(depths * rule.aspect * rule.aspect_slack / hd + 1e-9))
        k_edge = np.concatenate([lo, hi])
        d_edge = k_edge * hd
        err_edge = np.abs((aa * d_edge * d_edge + bb * d_edge + cc) / target - 1.0)
        dist_edge = np.abs(np.log(d_edge / L) - math.log(rule.aspect))
        d = np.concatenate([d, d_edge])
        L = np.concatenate([L, L])
        err = np.concatenate([err, err_edge])
        dist = np.concatenate([dist, dist_edge])
        eligible = np.concatenate([eligible, dist_edge <= math.log(rule.aspect_slack) + 1e-9])
        ok = eligible & (err <= rule.tolerance)
        if ok.any():
            best = np.lexsort((err, np.where(ok, dist, np.inf)))[0]  # closest aspect, then closest count
        elif eligible.any():
            best = int(np.argmin(np.where(eligible, err, np.inf)))
        else:
            best = int(np.argmin(err))
        L, d = int(L[best]), int(d[best])
        shape = Shape(L, d, d // hd, shape_name(L, d))
        achieved = self.count(L, d, d // hd)
        return SolvedShape(shape, target, achieved, self._warning(target, shape, achieved))

    def _solve_ladder(self, target: float) -> SolvedShape:
        best = min(PAPER_SIZES, key=lambda n: abs(math.log(self.count(*_lhd(n)) / target)))
        shape = ladder_shape(best)
        achieved = self.count(*_lhd(best))
        return SolvedShape(shape, target, achieved, self._warning(target, shape, achieved))

    def _warning(self, target: float, shape: Shape, achieved: int) -> str | None:
        err = achieved / target - 1.0
        if abs(err) <= self.rule.tolerance:
            return None
        how = ("use shape.rule: aspect, or another target" if self.rule.rule == "ladder"
               else "raise the target, lower shape.head_dim or widen shape.aspect_slack" if err > 0
               else "lower the target, raise shape.max_layers or widen shape.aspect_slack")
        return (f"size target {target:.4g} params ({self.count_kind}): nearest shape {shape.name} "
                f"(n_layers={shape.n_layers}, d_model={shape.d_model}, n_heads={shape.n_heads}) has {achieved:,} "
                f"({err:+.1%}), beyond the {self.rule.tolerance:.0%} tolerance; {how}")

    # ----------------------------------------------------------------- any size entry
    def resolve(self, size: str | float | ExplicitSize) -> SolvedShape:
        """A parsed size entry (ladder name, parameter target or explicit shape) -> shape."""
        if isinstance(size, str):
            shape = ladder_shape(size)
            return SolvedShape(shape, None, self.count(*_lhd(size)))
        if isinstance(size, ExplicitSize):
            shape = Shape(size.n_layers, size.d_model, size.n_heads,
                          size.name or shape_name(size.n_layers, size.d_model))
            return SolvedShape(shape, None, self.count(size.n_layers, size.d_model, size.n_heads))
        return self.solve(float(size))


def _lhd(name: str) -> tuple[int, int, int]:
    s = PAPER_SIZES[name]
    return s.n_layers, s.d_model, s.n_heads
