"""The isoFLOP headline comes from the compute-optimal frontier (analysis/frontier.py):
checked on a synthetic isoFLOP sweep whose frontiers are known in closed form, against
a brute-force minimisation of the true L(N, D) written here."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import SIZES, chinchilla_law, write_synthetic_sweep
from scipy.optimize import brentq

from ebt_scaling.analysis.pipeline import AnalysisConfig, analyze
from ebt_scaling.analysis.load import load_runs

TRUE = {"T++": dict(E=1.5, A=400.0, B=1500.0, alpha=0.34, beta=0.28),
        "EBT": dict(E=1.5, A=300.0, B=1200.0, alpha=0.38, beta=0.30)}
BUDGETS = [1e12, 3e12, 1e13, 3e13]


def true_frontier(p: dict, c: float) -> float:
    """min over N of E + A/N^alpha + B/D^beta with 6 N D = c, by a dense grid in log N."""
    n = np.geomspace(1e2, 1e12, 200_001)
    d = c / (6 * n)
    return float(np.min(p["E"] + p["A"] / n ** p["alpha"] + p["B"] / d ** p["beta"]))


@pytest.fixture(scope="module")
def analysis(tmp_path_factory):
    root = tmp_path_factory.mktemp("frontier")
    archs = {lb: {"arch": "transformer" if lb == "T++" else "ebt", "law": chinchilla_law(**p)} for lb, p in TRUE.items()}
    write_synthetic_sweep(root, archs=archs, sizes=SIZES, mode="isoflop", budgets=BUDGETS)
    return analyze(load_runs(root), AnalysisConfig(bootstrap=50, workers=1))


def test_headline_says_it_uses_the_frontier(analysis):
    head = analysis.result["headline"]
    assert head[0].startswith("Estimator for EBT vs T++: the compute-optimal frontier")
    assert any(h.startswith("On the frontier (Approach 2)") for h in head)
    assert any(h.startswith("Per-axis power law through every run") for h in head)


def test_frontier_multipliers_match_the_true_frontiers(analysis):
    c0 = max(BUDGETS)
    target = true_frontier(TRUE["T++"], c0)
    # compute at which EBT's true frontier reaches T++'s loss at c0
    c_ebt = brentq(lambda lc: true_frontier(TRUE["EBT"], 10 ** lc) - target, 6, 16, xtol=1e-6)
    truth = 10 ** c_ebt / c0
    f = analysis.frontiers["EBT"]
    got = {}
    for name, eff in f.efficiency.items():
        got[name] = next(r[name] for r in eff.multiplier_json() if r["largest_reference_run"])
    assert got["approach3"] == pytest.approx(truth, rel=0.03), (truth, got)
    assert got["approach2"] == pytest.approx(truth, rel=0.25), (truth, got)


def test_frontier_slopes_match_the_true_local_slopes(analysis):
    slopes = analysis.frontiers["EBT"].slopes
    for lb, est in (("T++", slopes.reference), ("EBT", slopes.candidate)):
        lo, hi = min(BUDGETS), max(BUDGETS)
        true = np.log(true_frontier(TRUE[lb], hi) / true_frontier(TRUE[lb], lo)) / np.log(hi / lo)
        assert est == pytest.approx(true, rel=0.1), (lb, true, est)


def test_an_approach3_fit_without_a_frontier_is_skipped_not_raised():
    """A fit with beta <= 0 has no compute-optimal split: its frontier math fails, so the
    comparison must skip it with a reason instead of stopping the analysis."""
    from ebt_scaling.analysis.approach3 import Approach3Fit
    from ebt_scaling.analysis.frontier import _approach3_curve
    from ebt_scaling.analysis.laws.chinchilla import Approach3Result

    bad = Approach3Result(Approach3Fit(E=1.0, A=10.0, B=5.0, alpha=0.3, beta=-0.001), None)
    with pytest.raises(ValueError):
        bad.log_K   # noqa: B018 -- what the analysis used to hit
    curve, why = _approach3_curve(bad, 6.0)
    assert curve is None and "no frontier" in why
    good = Approach3Result(Approach3Fit(**TRUE["EBT"]), None)
    curve, why = _approach3_curve(good, 12.0)   # q = 12: twice 6 N D, so the same loss costs twice the FLOPs
    assert why is None and curve.curve.predict(2e13) == pytest.approx(good.predict(1e13), rel=1e-12)
