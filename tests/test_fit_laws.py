"""Fit laws (analysis/laws): a law is one module and one registry entry. A law defined in
this module and registered for one test appears in fits.json, the comparisons, the
headline and the report; the built-in Approach 3 law's curve is its compute-optimal
frontier."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import pytest
from conftest import SIZES, power_law, write_synthetic_sweep

from ebt_scaling.analysis.approach3 import Approach3Fit
from ebt_scaling.analysis.laws.chinchilla import Approach3Result
from ebt_scaling.analysis.laws.law import LAWS, FitLaw, Fitting, LabelPoints, Skipped, joined, refit_jobs
from ebt_scaling.harness.cli.main import main
from ebt_scaling.harness.contract.formatting import fmt_estimate

# ---------------------------------------------------------------------------- a law of this module


@dataclass(frozen=True)
class LogPowerFit:
    """L(C) = A (ln C)^-b: a Curve."""

    log_A: float
    b: float

    def log_predict(self, c) -> np.ndarray:
        return self.log_A - self.b * np.log(np.log(np.asarray(c, dtype=float)))

    def predict(self, c) -> np.ndarray:
        return np.exp(self.log_predict(c))

    def inverse(self, loss) -> np.ndarray:
        with np.errstate(over="ignore"):
            return np.exp(np.exp((self.log_A - np.log(np.asarray(loss, dtype=float))) / self.b))


def fit_log_power(compute, loss) -> LogPowerFit:
    x, y = np.log(np.log(compute)), np.log(loss)
    if np.unique(x).size < 2:
        raise ValueError("a log-power law needs >= 2 distinct compute values")
    slope, intercept = np.polyfit(x, y, 1)
    return LogPowerFit(float(intercept), float(-slope))


@dataclass(frozen=True)
class LogPowerResult:
    fit: LogPowerFit
    samples: tuple
    ci: float

    warnings = ()
    skips = ()

    @property
    def curve(self) -> LogPowerFit:
        return self.fit

    def to_json(self) -> dict:
        out = {"status": "ok", "A": math.exp(self.fit.log_A), "b": self.fit.b}
        if self.samples:
            b = [s.b for s in self.samples if s is not None]
            out["intervals"] = {"b": [float(v) for v in np.quantile(b, [(1 - self.ci) / 2, (1 + self.ci) / 2])]}
        return out

    def cells(self) -> list[str]:
        entry = self.to_json()
        return [f"{entry['A']:.4g}", fmt_estimate(entry["b"], entry.get("intervals", {}).get("b"))]

    def legend(self) -> str:
        return f"L = {math.exp(self.fit.log_A):.3g}·(ln C)^-{self.fit.b:.3f}"


class LogPowerLaw(FitLaw):
    name = "log_power"
    section = "log_power"
    title = "Log-power law L(C) = A (ln C)^-b"
    headers = ("A", "b")
    compared = True
    plural = "log-power laws"

    def fit(self, points: LabelPoints) -> Fitting:
        c, y, codes = points.on_axis("flops")
        try:
            fit = fit_log_power(c, y)
        except ValueError as exc:
            return Fitting.done(Skipped("log-power law", str(exc)))
        jobs = refit_jobs(fit_log_power, c, y, points.weights(codes))
        return Fitting(jobs, lambda outputs: LogPowerResult(fit, tuple(joined(outputs)), points.config.ci))


LOG_POWER = LogPowerLaw()

# ---------------------------------------------------------------------------- tests

TWO_ARCHS = {"T++": {"arch": "transformer", "law": power_law(30.0, 0.05)},
             "EBT": {"arch": "ebt", "law": power_law(30.0 * 1e20 ** 0.01, 0.06)}}


@pytest.fixture
def log_power():
    LAWS.register(LOG_POWER.name, LOG_POWER)
    yield LOG_POWER
    LAWS.unregister(LOG_POWER.name)


def test_a_law_registered_here_appears_in_fits_json_the_headline_and_the_report(tmp_path, log_power):
    write_synthetic_sweep(tmp_path, archs=TWO_ARCHS, sizes=SIZES[:5], noise=0.002)
    out = tmp_path / "analysis"
    assert main(["analyze", str(tmp_path), "--out", str(out), "--bootstrap", "40"]) == 0   # a process pool
    fits = json.loads((out / "fits.json").read_text())
    for label in ("T++", "EBT"):
        entry = fits["log_power"][label]
        assert entry["status"] == "ok" and entry["b"] > 0
        lo, hi = entry["intervals"]["b"]
        assert lo <= entry["b"] <= hi
    comp = fits["comparisons"]["EBT"]
    assert comp["crossover"]["log_power"]["status"] == "crossover"
    assert 0 < comp["crossover"]["log_power"]["fraction_crossing"] <= 1
    assert all(row["log_power"] > 0 and len(row["log_power_interval"]) == 2 for row in comp["multiplier"])
    sentence = next(h for h in fits["headline"] if h.startswith("Crossover (log-power laws): EBT overtakes T++ at "))
    md = (out / "report.md").read_text()
    assert f"- {sentence}" in md
    assert "### Log-power law L(C) = A (ln C)^-b\n\n| label | A | b |" in md
    assert "multiplier (log-power laws)" in md and "| log power |" in md
    # the built-in laws are unchanged beside it
    assert fits["power_laws"]["EBT"]["flops"]["status"] == fits["saturating"]["EBT"]["status"] == "ok"
    assert {"power_law", "saturating"} <= set(comp["crossover"])


def test_approach3_curve_is_the_compute_optimal_frontier():
    fit = Approach3Fit(E=1.8, A=420.0, B=1500.0, alpha=0.34, beta=0.30)
    frontier = Approach3Result(fit, None)
    C = np.geomspace(1e18, 1e24, 7)
    assert frontier.predict(C) == pytest.approx(fit.predict(*fit.compute_optimal(C)), rel=1e-12)
    assert frontier.inverse(frontier.predict(C)) == pytest.approx(C, rel=1e-9)
    assert np.isinf(frontier.inverse(1.7))   # below E: never reached
