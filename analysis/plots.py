"""Plots of an Analysis: loss vs FLOPs / parameters / tokens with the power laws and their
bootstrap bands (against FLOPs also every other compared law's curve), the frontier of
final points (Approach 1), isoFLOP curves (Approach 2), and the FLOP multiplier of every
compared law with the power laws' crossover.

Every function returns a matplotlib Figure outside pyplot (or None when there is nothing
to draw); ``all_plots`` renders each as PNG, PDF and SVG (analysis/figures.py:
no global backend, labels shown literally), and report.py writes them atomically and
embeds the PNGs in report.html.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from .figures import new_figure, render

from .approach1 import Envelope
from .approach2 import Isoflop
from .comparison import Efficiency
from .laws.power import POWER_LAW
from .points import fitted_axis
from .result import Analysis

FIGSIZE = (7.4, 5.0)
LOSS_LABEL = "final validation loss (nats/token)"
SYMBOL = {"flops": "C", "params": "N", "tokens": "D"}


def _plain_log_x(ax) -> None:
    """Parameter axes spanning about a decade: ticks at 1, 2, 5 x 10^k written as 1e+05, 2e+05, ..."""
    from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FormatStrFormatter("%.0e"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _plain_log_y(ax) -> None:
    """Loss axes span less than a decade: label ticks as plain numbers, not 9x10^0."""
    from matplotlib.ticker import FormatStrFormatter

    ax.yaxis.set_major_formatter(FormatStrFormatter("%.3g"))
    ax.yaxis.set_minor_formatter(FormatStrFormatter("%.3g"))


def _colors(labels: list[str]) -> dict[str, str]:
    return {lb: f"C{i % 10}" for i, lb in enumerate(labels)}


def _axis_label(an: Analysis, axis: str) -> str:
    return fitted_axis(axis).label.format(conv=an.config.convention, params=an.fit_points.params_kind)


def _band(fit, grid: np.ndarray, ci: float) -> tuple[np.ndarray, np.ndarray] | None:
    """Percentile band of exp(a + b log x) over a power law's bootstrap slopes and intercepts."""
    if fit.slopes is None:
        return None
    b, a = fit.slopes, fit.intercepts
    ok = np.isfinite(b) & np.isfinite(a)
    if ok.sum() < 10:
        return None
    pred = a[ok, None] + b[ok, None] * np.log(grid)[None, :]
    lo, hi = np.quantile(pred, [(1 - ci) / 2, (1 + ci) / 2], axis=0)
    return np.exp(lo), np.exp(hi)


def _draw_curves(ax, an: Analysis, colors: dict, alpha: float) -> None:
    """Every fitted run's validation curve (loss vs FLOPs), one LineCollection per label."""
    from matplotlib.collections import LineCollection

    fc = f"flops_{an.config.convention}"
    curves = an.data.curves[an.data.curves["run_id"].isin(an.points["run_id"])]
    curves = curves[(curves[fc] > 0) & (curves["val_loss"] > 0)].sort_values(["run_id", fc])
    for lb, g in curves.groupby("arch_label"):
        segs = [np.column_stack([r[fc].to_numpy(float), r["val_loss"].to_numpy(float)])
                for _, r in g.groupby("run_id", sort=False) if len(r) >= 2]
        if segs:
            ax.add_collection(LineCollection(segs, colors=colors.get(lb, "0.5"), alpha=alpha, linewidths=0.8,
                                             zorder=1))
    ax.autoscale_view()


def plot_loss_vs(an: Analysis, axis: str) -> Figure | None:
    """Final loss against one axis: runs, power-law fit with its band; against FLOPs also
    every other compared law's curve (dashed) and the training curves (faint)."""
    labels = an.labels
    col = an.axes.get(axis)
    power = an.laws[POWER_LAW]
    if not labels or col is None or not any(power[lb].fitted(axis) for lb in labels):
        return None  # no label has >= 2 distinct values on this axis
    colors = _colors(labels)
    fig = new_figure(FIGSIZE)
    ax = fig.subplots()
    pts = an.points
    xmin = float(pts[col][pts[col] > 0].min()) if (pts[col] > 0).any() else 1.0
    xmax = float(pts[col].max())
    ci = an.config.ci
    if axis == "flops":
        _draw_curves(ax, an, colors, alpha=0.18)
    grid = np.geomspace(xmin / 1.5, xmax * 3.0, 200)
    for lb in labels:
        p = pts[pts["arch_label"] == lb]
        c = colors[lb]
        ax.scatter(p[col], p["val_loss"], color=c, s=26, zorder=4, edgecolor="white", linewidth=0.5,
                   label=f"{lb}: runs ({len(p)})")
        fitted = power[lb].fitted(axis)
        if fitted is not None:
            fit = fitted.fit
            ax.plot(grid, fit.predict(grid), color=c, lw=1.8, zorder=3,
                    label=f"{lb}: L = {fit.prefactor:.3g}·{SYMBOL.get(axis, 'X')}^{fit.slope:.4f}")
            band = _band(fitted, grid, ci)
            if band is not None:
                ax.fill_between(grid, *band, color=c, alpha=0.18, lw=0, zorder=2,
                                label=f"{lb}: {ci * 100:g}% bootstrap band")
        for law, fits in an.laws.items():
            other = fits[lb] if axis == "flops" and law.compared and law is not POWER_LAW else None
            if other is not None and other.curve is not None:
                ax.plot(grid, other.curve.predict(grid), color=c, lw=1.2, ls="--", zorder=3,
                        label=f"{lb}: {other.legend()}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ys = pts["val_loss"].to_numpy(float)
    if ys.size:  # frame the final losses; early training curves run off the top
        ax.set_ylim(ys.min() / 1.08, ys.max() * 1.3)
    ax.set_xlabel(_axis_label(an, axis))
    ax.set_ylabel(LOSS_LABEL)
    _plain_log_y(ax)
    ax.set_title(f"Final validation loss vs {fitted_axis(axis).noun}" + (" (faint: training curves)" if axis == "flops" else ""))
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=7, loc="best")
    return fig


def plot_envelope(an: Analysis) -> Figure | None:
    """Approach 1: every finished run's training curve (faint), each label's cooled-down final points and
    their running-minimum frontier with its fit."""
    found = {lb: e for lb, e in an.approach1.items() if isinstance(e, Envelope)}
    if not found:
        return None
    colors = _colors(an.labels)
    fig = new_figure(FIGSIZE)
    ax = fig.subplots()
    _draw_curves(ax, an, colors, alpha=0.25)
    for lb, env in found.items():
        on = env.frontier
        ax.scatter(env.flops[~on], env.loss[~on], s=14, facecolors="none", edgecolors=colors[lb], zorder=3)
        ax.step(env.flops[on], env.loss[on], where="post", color=colors[lb], lw=2.4, marker="o", ms=4, zorder=4,
                label=f"{lb}: frontier (running minimum of final points)")
        f = env.fit
        ax.plot(env.flops, f.predict(env.flops), color=colors[lb], lw=1.2, ls="--",
                label=f"{lb}: frontier fit L = {f.prefactor:.3g}·C^{f.slope:.4f}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ys = an.points["val_loss"].to_numpy(float)
    if ys.size:
        ax.set_ylim(ys.min() / 1.1, ys.max() * 2.0)
    ax.set_xlabel(_axis_label(an, "flops"))
    ax.set_ylabel("validation loss (nats/token)")
    _plain_log_y(ax)
    ax.set_title("Approach 1: cooled-down final points and their frontier (faint: training curves)")
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=7)
    return fig


def plot_isoflop(an: Analysis) -> Figure | None:
    """Approach 2: loss vs N at each budget (one panel per label), minima marked; last panel N*(C)."""
    found = {lb: e for lb, e in an.approach2.items() if isinstance(e, Isoflop)}
    labels = [lb for lb in an.labels if lb in found]
    if not labels:
        return None
    colors = _colors(an.labels)
    n = len(labels) + 1
    fig = new_figure((4.3 * n, 4.4))
    axes = fig.subplots(1, n, squeeze=False)
    axes = axes[0]
    for ax, lb in zip(axes, labels):
        budgets = found[lb].budgets
        cmap = matplotlib.colormaps["viridis"]
        for j, rec in enumerate(budgets):
            col = cmap(j / max(1, len(budgets) - 1))
            ax.plot(rec.sizes, rec.loss, "o-", color=col, ms=3, lw=1.1, label=f"C = {rec.compute:.2g}")
            if rec.n_opt is not None:
                ax.plot([rec.n_opt], [rec.loss_opt], marker="*", color="red", ms=11, zorder=5)
                interval = rec.n_opt_interval
                if interval is not None and all(math.isfinite(v) for v in interval):
                    ax.hlines(rec.loss_opt, *interval, color="red", lw=1)
        ax.set_xscale("log")
        _plain_log_x(ax)
        ax.set_xlabel(_axis_label(an, "params"))
        ax.set_ylabel("validation loss at the budget (nats/token)")
        ax.set_title(f"{lb}: isoFLOP curves (★ minimum, edge minima dropped)", fontsize=9)
        ax.grid(True, which="both", alpha=0.25)
        ax.legend(fontsize=6, ncol=2)
    ax = axes[-1]
    for lb in labels:
        recs = found[lb].interior
        if not recs:
            continue
        c = np.array([r.compute for r in recs])
        nstar = np.array([r.n_opt for r in recs])
        ax.scatter(c, nstar, color=colors[lb], zorder=4, label=f"{lb}: N* at each budget")
        for r in recs:
            interval = r.n_opt_interval
            if interval is not None and all(math.isfinite(v) for v in interval):
                ax.vlines(r.compute, *interval, color=colors[lb], lw=1)
        fit = found[lb].fit
        if fit is not None:
            g = np.geomspace(c.min() / 1.5, c.max() * 1.5, 50)
            ax.plot(g, fit.predict(g), color=colors[lb], lw=1.4, label=f"{lb}: N* ∝ C^{fit.slope:.3f}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(_axis_label(an, "flops"))
    ax.set_ylabel("compute-optimal N* (parameters)")
    ax.set_title("Approach 2: N*(C)", fontsize=9)
    ax.grid(True, which="both", alpha=0.25)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no budget with an interior minimum", transform=ax.transAxes, ha="center", fontsize=8)
    return fig


def plot_multiplier(an: Analysis) -> Figure | None:
    """FLOP multiplier C_cand(L_ref(C)) / C against C for every candidate: the power laws' with
    its band and crossover, every other compared law's dashed."""
    found = {cand: comp.efficiency for cand, comp in an.comparisons.items() if isinstance(comp.efficiency, Efficiency)}
    if not found:
        return None
    colors = _colors(an.labels)
    ref = an.reference
    fig = new_figure(FIGSIZE)
    ax = fig.subplots()
    data_hi = float(an.points[an.axes["flops"]].max())
    data_lo = float(an.points[an.axes["flops"]].min())
    ax.axvspan(data_lo, data_hi, color="0.85", alpha=0.6, lw=0, label="measured compute range")
    ax.axhline(1.0, color="black", lw=1, ls=":", label="equal compute (multiplier 1)")
    ci = an.config.ci
    finite_vals = []
    for cand, eff in found.items():
        c = colors[cand]
        grid = eff.grid
        m = eff.multipliers.get(POWER_LAW)
        if m is not None:
            y = np.where(np.isfinite(m.on_grid) & (m.on_grid > 0), m.on_grid, np.nan)
            finite_vals.append(y)
            if m.band is not None:
                finite_vals.extend(np.where(np.isfinite(v) & (v > 0), v, np.nan) for v in m.band)
            ax.plot(grid, y, color=c, lw=1.8, label=f"{cand} vs {ref}: {POWER_LAW.plural}")
            if m.band is not None:
                lo, hi = m.band
                ax.fill_between(grid, np.where(np.isfinite(lo) & (lo > 0), lo, np.nan),
                                np.where(np.isfinite(hi) & (hi > 0), hi, np.nan), color=c, alpha=0.18, lw=0,
                                label=f"{cand}: {ci * 100:g}% bootstrap band")
        for law, other in eff.multipliers.items():
            if law is not POWER_LAW:
                ys = np.where(np.isfinite(other.on_grid) & (other.on_grid > 0), other.on_grid, np.nan)
                ax.plot(grid, ys, color=c, lw=1.2, ls="--",
                        label=f"{cand} vs {ref}: {law.plural} (∞ where unreachable)")
        cross = eff.crossovers[POWER_LAW].to_json() if POWER_LAW in eff.crossovers else {}
        if cross.get("status") == "crossover":
            ax.axvline(cross["compute"], color=c, lw=1.2, ls="-.")
            iv = cross.get("interval") or [math.nan, math.nan]
            ax.annotate(f"crossover {cross['compute']:.2g} FLOPs\n{ci * 100:g}% [{iv[0]:.2g}, {iv[1]:.2g}]",
                        (cross["compute"], 1.0), textcoords="offset points", xytext=(6, 12), fontsize=7, color=c)
            ax.plot([cross["compute"]], [1.0], marker="o", color=c, ms=6, zorder=5)
            lo_c = iv[0] if math.isfinite(iv[0]) else cross["compute"]
            hi_c = iv[1] if math.isfinite(iv[1]) else float(grid[-1])
            ax.hlines(1.0, lo_c, hi_c, color=c, lw=4, alpha=0.5, zorder=4)
        else:
            ax.annotate(f"{cand}: no crossover below {eff.budget:.0e} FLOPs", (0.02, 0.04), xycoords="axes fraction",
                        fontsize=7, color=c)
    ax.set_xscale("log")
    ax.set_yscale("log")
    vals = np.concatenate([np.ravel(v) for v in finite_vals]) if finite_vals else np.array([1.0])
    vals = vals[np.isfinite(vals) & (vals > 0)]
    if vals.size:
        lo, hi = min(vals.min(), 1.0) / 2.0, max(vals.max(), 1.0) * 2.0
        ax.set_ylim(max(lo, 1e-6), min(hi, 1e8))   # saturating curves that run to infinity leave the plot
    ax.set_xlabel(_axis_label(an, "flops"))
    ax.set_ylabel(f"FLOP multiplier: candidate compute / {ref} compute\nfor the same loss (>1: candidate needs more)")
    ax.set_title(f"FLOPs each candidate needs to match {ref}, extrapolated to {an.config.budget:.0e} FLOPs")
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=7, loc="upper right")
    return fig


def plot_tuning(an: Analysis) -> Figure | None:
    """A tuned sweep's LR curves: final loss against LR per cell (the other knobs at the cell's
    best factors), one panel per label; the best trial starred, a best LR on the grid's edge ringed."""
    if an.tuning is None:
        return None
    runs, cells = an.all_runs, an.tuning.tuning.cells
    labels = list(dict.fromkeys(c.label for c in cells))
    fig = new_figure((5.2 * len(labels), 4.2))
    axes = fig.subplots(1, len(labels), squeeze=False)
    sizes = sorted({(c.params, c.size) for c in cells})
    shade = {size: matplotlib.colormaps["viridis"](i / max(1, len(sizes) - 1)) for i, (_, size) in enumerate(sizes)}
    for ax, label in zip(axes[0], labels):
        for c in (c for c in cells if c.label == label and c.best_factors):
            g = runs[(runs["arch_label"] == label) & (runs["axis_value"] == c.axis_value) & (runs["size"] == c.size)
                     & (runs["seed"] == c.seed) & (runs["tune_stage"].fillna("trial") == "trial")
                     & (runs["status"] == "done")]
            for knob, best in c.best_factors.items():   # the LR slice through the best factors of the others
                if knob != "lr":
                    g = g[g[f"tune_{knob}"] == best]
            g = g.sort_values("lr")
            ax.plot(g["lr"], g["val_loss"], "o-", color=shade[c.size], ms=4, lw=1.2,
                    label=f"{c.size} seed {c.seed}")
            ax.plot([c.best_lr], [c.best_loss], "*", color=shade[c.size], ms=13, mec="k", mew=0.6)
            if "lr" in c.edges:
                ax.plot([c.best_lr], [c.best_loss], "o", ms=17, mfc="none", mec="crimson", mew=1.5)
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("final held-out loss (nats)")
        ax.set_title(f"{label}: best trial starred, grid edge ringed", fontsize=10)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3, which="both")
    return fig


@dataclass(frozen=True)
class Plot:
    """A rendered plot: the report's PNG file name, its title, and its bytes per format."""

    name: str                 # "<stem>.png": what the report links and embeds
    title: str
    files: dict[str, bytes]   # format (png, pdf, svg) -> bytes

    @property
    def png(self) -> bytes:
        return self.files["png"]

    def filenames(self) -> dict[str, str]:
        """format -> file name: the PNG's name with each format's suffix."""
        stem = self.name.removesuffix(".png")
        return {fmt: f"{stem}.{fmt}" for fmt in self.files}


def all_plots(an: Analysis) -> list[Plot]:
    """Every plot the analysis supports, rendered, in report order."""
    out = []
    specs = [("loss_vs_flops.png", "Final loss vs training FLOPs", lambda: plot_loss_vs(an, "flops")),
             ("flop_multiplier.png", "FLOP multiplier and crossover", lambda: plot_multiplier(an)),
             ("loss_vs_params.png", "Final loss vs parameters", lambda: plot_loss_vs(an, "params")),
             ("loss_vs_tokens.png", "Final loss vs tokens", lambda: plot_loss_vs(an, "tokens"))]
    for axis in an.axes:
        if axis not in ("flops", "params", "tokens"):
            specs.append((f"loss_vs_{axis}.png", f"Final loss vs {fitted_axis(axis).unit}",
                          lambda axis=axis: plot_loss_vs(an, axis)))
    specs += [("envelope.png", "Approach 1: running-minimum frontier of the final points", lambda: plot_envelope(an)),
              ("isoflop.png", "Approach 2: isoFLOP curves", lambda: plot_isoflop(an)),
              ("tuning.png", "Tuning: final loss against LR per cell", lambda: plot_tuning(an))]
    for name, title, make in specs:
        fig = make()
        if fig is not None:
            out.append(Plot(name, title, render(fig)))
    return out
