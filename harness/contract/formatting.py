"""Numbers as every layer's tables, reports and files write and read them.

One place for each: the SI-suffixed counts of tables (``si``), signed percentages
(``pct``), time spans (``duration``: ETAs), the estimates and intervals of the report, the
headline and the laws' tables (``fmt_num``, ``fmt_interval``, ``fmt_estimate``: a missing
value reads "n/a", an infinite one "∞", such as a crossover interval whose upper end is "no
crossing below the budget"), the conversion of analysis results to plain, strict JSON
(``jsonable``: numpy to Python; NaN and infinities have no JSON spelling, so they become
null and the strings "inf" / "-inf"), and the lenient reading of a number from a run's
files or tags (``as_number``).
"""
from __future__ import annotations

import math
from typing import Any


def si(value: float, digits: int = 3) -> str:
    """`digits` significant digits with an SI suffix (k .. E): 1234567 -> '1.23M', and
    999.99e6 -> '1G' (rounded first, so never '1e+03M')."""
    value = float(f"{value:.{digits}g}")
    for threshold, suffix in ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= threshold:
            return f"{value / threshold:.{digits}g}{suffix}"
    return f"{value:.{digits}g}"


def pct(value: Any, digits: int = 3) -> str:
    """0.0123 -> '+1.23%'; 'n/a' for None, NaN, infinities and non-numbers."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "n/a"
    return f"{value * 100:+.{digits}g}%"


def jsonable(obj: Any, *, infinity_as_string: bool = True) -> Any:
    """Plain-JSON copy: numpy scalars/arrays to Python, NaN -> None, +/-inf -> "inf" / "-inf"
    (or None with infinity_as_string=False: for readers that expect a number or null)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v, infinity_as_string=infinity_as_string) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v, infinity_as_string=infinity_as_string) for v in obj]
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):  # numpy arrays and scalars
        return jsonable(obj.tolist(), infinity_as_string=infinity_as_string)
    if isinstance(obj, bool):
        return obj
    if isinstance(obj, float):
        if math.isnan(obj):
            return None
        if math.isinf(obj):
            return ("inf" if obj > 0 else "-inf") if infinity_as_string else None
    return obj


def duration(seconds: float | None) -> str:
    """A time span in its two largest units: '4m05s', '3h07m', '2d04h'; '-' when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    seconds = int(round(seconds))
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


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


def as_number(value: Any, kind: type[float] | type[int] = float) -> float | int | None:
    """`value` (a number, or its text: tags are text) as a finite `kind`; None for None, NaN,
    infinities and anything that is not a number (a missing field, a run that diverged)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return kind(number) if math.isfinite(number) else None
