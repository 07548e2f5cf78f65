"""How the report, the headline and the laws' tables write a number and an interval.

A missing value reads "n/a"; an infinite one "∞" (a crossover interval whose upper end is
"no crossing below the budget").
"""
from __future__ import annotations

import math


def fmt_num(v, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if isinstance(v, float) and math.isinf(v):
        return "∞" if v > 0 else "-∞"
    return f"{v:.{digits}g}"


def fmt_interval(iv, digits: int = 3, pct: bool = False) -> str:
    if not iv:
        return ""
    lo, hi = iv

    def f(v) -> str:
        if not pct or v is None or math.isnan(v) or math.isinf(v):
            return fmt_num(v, digits)
        return f"{v * 100:+.{max(digits - 1, 1)}g}%"

    return f"[{f(lo)}, {f(hi)}]"


def fmt_estimate(value, interval, digits: int = 4) -> str:
    """A point estimate followed by its interval (if any): '0.05 [0.04, 0.06]'."""
    return f"{fmt_num(value, digits)} {fmt_interval(interval, digits)}".strip()
