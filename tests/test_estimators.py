"""Chinchilla Approaches 1, 2 and 3 on synthetic sweeps whose truth is known, written in the
trainer's run-directory format: Approach 1 on training curves with a high-loss start and
a known frontier of final points (conftest.write_curve_sweep); Approaches 2 and 3 on an
isoFLOP grid of L = E + A/N^alpha + B/D^beta with C = 6 N D (conftest.write_synthetic_sweep).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import (
    BATCH,
    CONTEXT,
    SIZES,
    VOCAB,
    chinchilla_law,
    interior_budgets,
    write_curve_sweep,
    write_synthetic_sweep,
)

from ebt_scaling.analysis.approach1 import Envelope, envelopes
from ebt_scaling.analysis.load import load_runs
from ebt_scaling.analysis.pipeline import AnalysisConfig, analyze
from ebt_scaling.analysis.points import select_points
from ebt_scaling.analysis.result import Caveats
from ebt_scaling.harness.contract.spec import spec_from_dict
from ebt_scaling.models.flops import param_counts, training_step_flops

FRONT_A, FRONT_B = 40.0, 0.05          # the frontier of final points: L = A C^-b


def _shape(size: tuple) -> tuple[float, float]:
    """(N, FLOPs of one training step in the full convention) of a synthetic shape."""
    model = spec_from_dict({"model": {"n_layers": size[1], "d_model": size[2], "n_heads": size[3],
                                      "vocab_size": VOCAB, "context": CONTEXT}}).model
    return float(param_counts(model)["total"]), training_step_flops(model, BATCH, CONTEXT, "full")


def _frontier_loss(c: float) -> float:
    return FRONT_A * c ** -FRONT_B


def _approach1(root, bootstrap: int = 200) -> tuple[dict, Caveats]:
    caveats = Caveats()
    points = select_points(load_runs(root), AnalysisConfig(bootstrap=bootstrap, workers=1), caveats)
    return envelopes(points, caveats), caveats


def _slope(x, y) -> float:
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def test_approach1_recovers_the_frontier_of_cooled_down_points(tmp_path):
    """Five sizes, each trained to a compute-optimal C_i ∝ N_i^2 (2 seeds whose losses sit at
    exp(±eps_i) around L = A C^-b, eps growing with size) and to 3 C_i by one seed, 1.15x above the
    frontier. Every curve starts near 300 nats. The frontier's slope is -b, its N_opt exponent 1/2."""
    n0, per0 = _shape(SIZES[0])
    runs, truth_c = [], []
    for i, size in enumerate(SIZES[:5]):
        n, per = _shape(size)
        steps = int(round(60 * (n / n0) ** 2 * per0 / per))
        c = steps * per
        truth_c.append(c)
        eps = 0.02 * (i + 1)
        for seed, sign in ((0, 1), (1, -1)):
            runs.append({"label": "T++", "arch": "transformer", "size": size, "steps": steps, "seed": seed,
                         "final": _frontier_loss(c) * math.exp(sign * eps), "on": True})
        runs.append({"label": "T++", "arch": "transformer", "size": size, "steps": 3 * steps,
                     "final": 1.15 * _frontier_loss(3 * c)})
    ids = write_curve_sweep(tmp_path, runs)
    frontier_ids = sorted(ids[k] for k, r in enumerate(runs) if r.get("on"))
    found, caveats = _approach1(tmp_path)
    env = found["T++"]
    assert isinstance(env, Envelope), env
    got = env.to_json()

    # the frontier: the five seed-averaged compute-optimal points, in ascending compute, never rising
    front = got["frontier"]
    assert [p["flops"] for p in front] == pytest.approx(truth_c, rel=1e-9), \
        f"frontier compute: true {truth_c}, estimated {[p['flops'] for p in front]}"
    losses = [p["loss"] for p in front]
    assert all(b < a for a, b in zip(losses, losses[1:])), f"frontier loss rises: {losses}"
    assert losses == pytest.approx([_frontier_loss(c) for c in truth_c], rel=1e-9)
    assert got["runs_on_envelope"] == frontier_ids and got["n_runs"] == 15 and got["n_points"] == 10
    # its power laws (the best seed of each point instead of the mean would give a slope of about -0.068)
    assert got["slope"] == pytest.approx(-FRONT_B, abs=1e-3), f"slope: true {-FRONT_B}, estimated {got['slope']}"
    assert got["prefactor"] == pytest.approx(FRONT_A, rel=1e-2), f"A: true {FRONT_A}, estimated {got['prefactor']}"
    true_a = _slope(truth_c, [_shape(s)[0] for s in SIZES[:5]])
    assert true_a == pytest.approx(0.5, abs=0.01)    # by construction, up to rounding the steps
    assert got["n_opt_exponent"] == pytest.approx(true_a, abs=1e-6), \
        f"N_opt exponent: true {true_a}, estimated {got['n_opt_exponent']}"
    lo, hi = got["intervals"]["slope"]
    assert lo <= -FRONT_B <= hi, f"slope interval {lo, hi} vs true {-FRONT_B}"
    # a cosine schedule has cooled down only at the end: the caveat says so and names WSD branches
    assert any("final point only" in w and "cooldown: {fractions" in w for w in caveats.warnings), caveats.warnings

    # The data would catch an estimator that lets early points in: the running minimum of every
    # eval point (warmup included) is far steeper than the frontier.
    curves = load_runs(tmp_path).curves.sort_values(["flops_full", "val_loss"])
    c, v = curves["flops_full"].to_numpy(float), curves["val_loss"].to_numpy(float)
    on = v < np.concatenate([[np.inf], np.minimum.accumulate(v)[:-1]])
    all_points_slope = _slope(c[on], v[on])
    assert all_points_slope < -2 * FRONT_B, f"all eval points give slope {all_points_slope}: the test cannot fail"


def test_approach1_takes_wsd_cooldown_branches_as_more_points(tmp_path):
    """Three WSD runs (64, 256, 1024 steps at three sizes) with cooldown branches at 1/4 and 1/2 of
    their steps: nine cooled-down points on L = A C^-b, except the middle run's 1/2 branch, 1.2x
    above it (and so above the point before it). The frontier has the other eight."""
    runs = []
    for i, (size, steps) in enumerate(zip(SIZES[:3], (64, 256, 1024))):
        parent = len(runs)
        runs.append({"label": "T++", "arch": "transformer", "size": size, "steps": steps, "schedule": "wsd"})
        for frac in (4, 2):
            runs.append({"label": "T++", "arch": "transformer", "size": size, "steps": steps // frac,
                         "schedule": "wsd", "cooldown_of": parent, "off": i == 1 and frac == 2})
    for r in runs:
        c = r["steps"] * _shape(r["size"])[1]
        r["final"] = _frontier_loss(c) * (1.2 if r.get("off") else 1.0)
    ids = write_curve_sweep(tmp_path, runs)
    env = _approach1(tmp_path)[0]["T++"]
    got = env.to_json()
    off = ids[[k for k, r in enumerate(runs) if r.get("off")][0]]
    assert got["n_cooldown_branches"] == 6 and got["n_points"] == 9
    assert got["runs_on_envelope"] == sorted(set(ids) - {off}), f"frontier runs: {got['runs_on_envelope']}"
    losses = [p["loss"] for p in got["frontier"]]
    assert all(b < a for a, b in zip(losses, losses[1:])), f"frontier loss rises: {losses}"
    assert got["slope"] == pytest.approx(-FRONT_B, abs=1e-6), f"slope: true {-FRONT_B}, estimated {got['slope']}"
    caveats = _approach1(tmp_path, bootstrap=0)[1]
    assert caveats.warnings == ["Approach 1: WSD cooldown branches entered beside the runs' final points: "
                                "T++: 6 branch point(s) of 3 WSD run(s)"], caveats.warnings


# ---------------------------------------------------------------------------- Approaches 2 and 3

LAW = {"E": 1.7, "A": 300.0, "B": 900.0, "alpha": 0.30, "beta": 0.36}


def _true_frontier(c: np.ndarray) -> np.ndarray:
    """L*(C): the law minimised over N on a dense log grid, with D = C / (6 N)."""
    law = chinchilla_law(**LAW)
    n = np.geomspace(1e2, 1e9, 200001)
    return np.array([np.min(law(None, n, ci / (6.0 * n))) for ci in np.atleast_1d(c)])


@pytest.fixture(scope="module")
def isoflop_analysis(tmp_path_factory):
    """Five budgets whose optimum lies between the 3rd and the 5th of seven sizes, no noise."""
    root = tmp_path_factory.mktemp("isoflop")
    budgets = interior_budgets(LAW, SIZES, 5)
    write_synthetic_sweep(root, mode="isoflop", budgets=budgets, sizes=SIZES,
                          archs={"T++": {"arch": "transformer", "law": chinchilla_law(**LAW)}})
    return analyze(load_runs(root), AnalysisConfig(bootstrap=0, workers=1)).result


def test_approach2_minima_follow_the_analytic_frontier(isoflop_analysis):
    """Approach 2's N* exponent is b/(a+b); its minima L*(C) and their power law match the
    law's compute-optimal frontier at the same budgets."""
    a2 = isoflop_analysis["approach2"]["T++"]
    budgets = [b for b in a2["budgets"] if "dropped" not in b]
    assert len(budgets) == 5, a2["budgets"]
    truth = LAW["beta"] / (LAW["alpha"] + LAW["beta"])
    assert a2["exponent"] == pytest.approx(truth, abs=0.005), f"N* exponent: true {truth}, estimated {a2['exponent']}"
    c = np.array([b["compute"] for b in budgets])
    true_l = _true_frontier(c)
    est_l = np.array([b["loss_opt"] for b in budgets])
    assert est_l == pytest.approx(true_l, rel=5e-4), f"L*(C): true {true_l}, estimated {est_l}"
    true_slope = _slope(c, true_l)
    assert a2["loss_opt_slope"] == pytest.approx(true_slope, abs=1e-4), \
        f"L*(C) slope: true {true_slope}, estimated {a2['loss_opt_slope']}"


def test_approach3_recovers_the_law(isoflop_analysis):
    """Approach 3 on the noise-free isoFLOP grid: E, A, B, alpha, beta and the N_opt exponent."""
    a3 = isoflop_analysis["approach3"]["T++"]
    assert a3["status"] == "ok", a3
    for key, rel in (("E", 1e-3), ("A", 1e-2), ("B", 1e-2), ("alpha", 1e-3), ("beta", 1e-3)):
        assert a3[key] == pytest.approx(LAW[key], rel=rel), f"{key}: true {LAW[key]}, estimated {a3[key]}"
    truth = LAW["beta"] / (LAW["alpha"] + LAW["beta"])
    assert a3["a"] == pytest.approx(truth, abs=1e-3), f"N_opt exponent: true {truth}, estimated {a3['a']}"


def _pareto_slope(c: np.ndarray, loss: np.ndarray, repeats: np.ndarray) -> float:
    """Brute force: the rows repeated, a row on the frontier when no other point has <= compute
    and <= loss (its copies are not other points), log L on log C over every frontier row."""
    c, loss = np.repeat(c, repeats), np.repeat(loss, repeats)
    on = [not np.any((c <= ci) & (loss <= li) & ((c != ci) | (loss != li))) for ci, li in zip(c, loss)]
    x, y = np.log(c[on]), np.log(loss[on])
    return float(np.polyfit(x, y, 1)[0]) if np.unique(x).size >= 2 else math.nan


def test_approach1_bootstrap_repeats_each_unit_as_often_as_it_is_drawn(tmp_path):
    """Four sizes x three step counts, one run per unit, losses scattered around L = A C^-b: each
    resample's frontier slope equals that of the resample built by repeating every unit's run as
    often as it is drawn, so a point drawn twice weighs twice (not once, as a mere subsample would)."""
    rng = np.random.default_rng(3)
    runs = []
    for size in SIZES[:4]:
        per = _shape(size)[1]
        for steps in (20, 45, 100):
            runs.append({"label": "T++", "arch": "transformer", "size": size, "steps": steps,
                         "final": _frontier_loss(steps * per) * math.exp(0.03 * rng.standard_normal())})
    write_curve_sweep(tmp_path, runs)
    config = AnalysisConfig(bootstrap=300, workers=1)
    points = select_points(load_runs(tmp_path), config, Caveats())
    env = envelopes(points, Caveats())["T++"]
    assert isinstance(env, Envelope), env

    table = points.runs
    c, loss = table[points.flops_col].to_numpy(float), table["val_loss"].to_numpy(float)
    draws = points.counts[:, table["unit_code"].to_numpy()].astype(int)     # (resamples, runs)
    assert draws.max() >= 2   # some unit drawn more than once: the weights matter
    truth = np.array([_pareto_slope(c, loss, d) for d in draws])
    presence = np.array([_pareto_slope(c, loss, (d > 0).astype(int)) for d in draws])
    assert np.allclose(env.slope_samples, truth, rtol=1e-9, atol=1e-12, equal_nan=True)
    # the test can fail: presence-only weights give other slopes in most resamples
    differ = ~np.isclose(presence, truth, rtol=1e-6, equal_nan=True)
    assert differ.mean() > 0.5, differ.mean()
    lo, hi = env.to_json()["intervals"]["slope"]
    assert (lo, hi) == pytest.approx(tuple(np.nanpercentile(truth, [2.5, 97.5])), rel=1e-9)


def test_approach1_leaves_constant_schedule_runs_out(tmp_path):
    """Three cosine runs on L = A C^-b and two constant-schedule runs 0.8x below it: the
    constant runs never cooled down, so they are left out, with a warning that counts them;
    a label with constant runs only is skipped, saying why."""
    runs = []
    for i, size in enumerate(SIZES[:3]):
        runs.append({"label": "T++", "arch": "transformer", "size": size, "steps": 40 * 2 ** i})
    for i, size in enumerate(SIZES[:2]):
        runs.append({"label": "T++", "arch": "transformer", "size": size, "steps": 60 * 2 ** i, "schedule": "constant"})
        runs.append({"label": "const", "arch": "transformer", "size": size, "steps": 70 * 2 ** i,
                     "schedule": "constant"})
    for r in runs:
        c = r["steps"] * _shape(r["size"])[1]
        r["final"] = _frontier_loss(c) * (0.8 if r.get("schedule") == "constant" else 1.0)
    ids = write_curve_sweep(tmp_path, runs)
    found, caveats = _approach1(tmp_path, bootstrap=0)
    got = found["T++"].to_json()
    cosine = sorted(ids[k] for k, r in enumerate(runs) if "schedule" not in r)
    assert got["n_runs"] == 3 and got["runs_on_envelope"] == cosine, got
    assert got["slope"] == pytest.approx(-FRONT_B, abs=1e-9)
    assert any(w.startswith("Approach 1: 4 run(s) with a constant learning-rate schedule left out (T++ 2, const 2)")
               for w in caveats.warnings), caveats.warnings
    assert any("3 run(s) with a cosine learning-rate schedule enter with their final point only" in w
               for w in caveats.warnings), caveats.warnings
    const = found["const"]
    assert const.to_json()["status"] == "skipped" and "2 constant-schedule run(s) left out" in const.reason
