"""The isoFLOP headline comes from the compute-optimal frontier (analysis/frontier.py):
checked on a synthetic isoFLOP sweep whose frontiers are known in closed form, against
a brute-force minimisation of the true L(N, D) written here."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import SIZES, chinchilla_law, write_synthetic_sweep
from scipy.optimize import brentq

from ebt_scaling.analysis.config import AnalysisConfig
from ebt_scaling.analysis.load import load_runs
from ebt_scaling.analysis.pipeline import analyze

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
