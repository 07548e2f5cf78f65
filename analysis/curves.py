"""A run's training curve as arrays, and log-log interpolation along it (shared by
Approaches 1 and 2)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

CURVE_TOL = 0.05            # a budget up to 5% past a curve's last point reads the last point


def curve_arrays(curves: pd.DataFrame, flops_col: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """run_id -> (flops, val_loss) of its eval points, sorted, positive and finite only."""
    out = {}
    if curves.empty:
        return out
    c = curves[["run_id", flops_col, "val_loss"]].copy()
    c[flops_col] = pd.to_numeric(c[flops_col], errors="coerce")
    c["val_loss"] = pd.to_numeric(c["val_loss"], errors="coerce")
    c = c[(c[flops_col] > 0) & (c["val_loss"] > 0) & np.isfinite(c[flops_col]) & np.isfinite(c["val_loss"])]
    for run_id, g in c.groupby("run_id", sort=False):
        g = g.sort_values(flops_col).drop_duplicates(flops_col, keep="last")
        out[run_id] = (g[flops_col].to_numpy(float), g["val_loss"].to_numpy(float))
    return out


def log_interp(x_pts: np.ndarray, y_pts: np.ndarray, x: np.ndarray, tol: float = CURVE_TOL) -> np.ndarray:
    """log-log interpolation of y(x) at x inside [x_pts[0], x_pts[-1] (1 + tol)]; nan outside."""
    lx, ly = np.log(x_pts), np.log(y_pts)
    lq = np.log(np.asarray(x, dtype=float))
    out = np.interp(lq, lx, ly)
    inside = (lq >= lx[0] - 1e-12) & (lq <= lx[-1] + math.log1p(tol))
    return np.where(inside, out, np.nan)


