"""Scaling-law fits: power laws, saturating law, Chinchilla Approach 3, bootstraps,
crossover / FLOP multiplier, and the `fit` command."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ebt_scaling.analysis.approach3 import default_grid, fit_approach3, predict_loss
from ebt_scaling.analysis.bootstrap import bootstrap_approach3, draw_units, percentile_interval, unit_counts
from ebt_scaling.analysis.comparison import SlopeComparison, scaling_rates
from ebt_scaling.analysis.fits import (
    PowerLawFit,
    SaturatingFit,
    find_crossover,
    fit_power_law,
    fit_saturating,
    flop_multiplier,
    power_law_crossover_compute,
    scaling_rate_advantage,
    weighted_loglog_fits,
)
from ebt_scaling.analysis.laws.law import LabelPoints
from ebt_scaling.analysis.laws.power import POWER_LAW, PowerLaws
from ebt_scaling.analysis.pipeline import AnalysisConfig
from ebt_scaling.harness.cli.main import main

CHINCHILLA_CSV = Path(__file__).parent / "data" / "chinchilla_svg_extracted.csv"
EPOCH = {"E": 1.817, "A": 482.0, "B": 2085.4, "alpha": 0.3478, "beta": 0.3659}
TRUTH = {"E": 1.8, "A": 420.0, "B": 1500.0, "alpha": 0.34, "beta": 0.30}
TRUTH_THETA = np.array([math.log(TRUTH["A"]), math.log(TRUTH["B"]), math.log(TRUTH["E"]),
                        TRUTH["alpha"], TRUTH["beta"]])


def synthetic_nd(n_sizes=10, n_tokens=25):
    N = np.repeat(np.geomspace(2e7, 2e10, n_sizes), n_tokens)
    D = N * np.tile(np.geomspace(2.0, 200.0, n_tokens), n_sizes)
    return N, D


def rel(a, b):
    return abs(a / b - 1.0)


@pytest.fixture(scope="module")
def chinchilla():
    frame = pd.read_csv(CHINCHILLA_CSV)
    frame = frame.sort_values("loss", kind="stable").iloc[:-5]   # Epoch: drop the 5 highest-loss runs
    N = frame["Model Size"].to_numpy(float)
    D = frame["Training FLOP"].to_numpy(float) / (6 * N)
    return N, D, frame["loss"].to_numpy(float)


# ---------------------------------------------------------------------------- power law

def test_power_law_exact_slope():
    x = np.geomspace(1e16, 1e21, 12)
    fit = fit_power_law(x, 25.0 * x ** -0.071)
    assert fit.slope == pytest.approx(-0.071, rel=1e-12)
    assert fit.prefactor == pytest.approx(25.0, rel=1e-9)
    assert fit.r2 == pytest.approx(1.0, abs=1e-12)
    assert fit.inverse(fit.predict(3e18)) == pytest.approx(3e18, rel=1e-9)


def test_weighted_fits_equal_refits_on_repeated_rows():
    rng = np.random.default_rng(3)
    x = np.geomspace(1e16, 1e20, 15)
    y = 30 * x ** -0.05 * np.exp(rng.normal(0, 0.02, 15))
    W = rng.integers(0, 4, size=(5, 15))
    W[:, :2] = 1                                            # at least two distinct x
    slopes, intercepts = weighted_loglog_fits(np.log(x), np.log(y), W)
    for r in range(5):
        ref = fit_power_law(np.repeat(x, W[r]), np.repeat(y, W[r]))
        assert slopes[r] == pytest.approx(ref.slope, rel=1e-10)
        assert intercepts[r] == pytest.approx(ref.intercept, rel=1e-10)


def test_scaling_rate_advantage_sign():
    assert scaling_rate_advantage(-0.06, -0.05) == pytest.approx(0.2)    # steeper EBT: positive
    assert scaling_rate_advantage(-0.04, -0.05) == pytest.approx(-0.2)   # shallower: negative
    assert scaling_rate_advantage(-0.05, -0.05) == 0.0


# ---------------------------------------------------------------------------- saturating law

def test_saturating_fit_recovers_parameters():
    C = np.geomspace(1e15, 1e21, 30)
    fit = fit_saturating(C, 1.7 + 3e3 * C ** -0.2)
    assert fit.E == pytest.approx(1.7, rel=1e-6)
    assert fit.A == pytest.approx(3e3, rel=1e-4)
    assert fit.alpha == pytest.approx(0.2, rel=1e-6)
    noisy = (1.7 + 3e3 * C ** -0.2) * np.exp(np.random.default_rng(0).normal(0, 0.003, C.size))
    fit = fit_saturating(C, noisy)
    assert fit.E == pytest.approx(1.7, rel=0.03)
    assert fit.alpha == pytest.approx(0.2, rel=0.1)


def test_saturating_fit_of_pure_power_law_puts_E_at_zero():
    C = np.geomspace(1e15, 1e21, 20)
    fit = fit_saturating(C, 20 * C ** -0.05)
    assert fit.e_at_zero
    assert fit.alpha == pytest.approx(0.05, rel=1e-6)


# ---------------------------------------------------------------------------- Approach 3

def test_approach3_recovers_synthetic_parameters():
    N, D = synthetic_nd()
    fit = fit_approach3(N, D, predict_loss(TRUTH_THETA, N, D))
    assert fit.n_starts == 4500 == len(default_grid())
    for key, value in TRUTH.items():
        assert rel(fit.params()[key], value) < 1e-3, key
    assert fit.a_exponent == pytest.approx(0.30 / 0.64, rel=1e-3)
    N_opt, D_opt = fit.compute_optimal(1e22)
    assert 6 * N_opt * D_opt == pytest.approx(1e22, rel=1e-9)


def test_approach3_reproduces_epoch_refit_of_chinchilla(chinchilla):
    N, D, L = chinchilla
    # Epoch's published numbers come from the Huber likelihood with a fitted scale.
    nll = fit_approach3(N, D, L, objective="huber_nll")
    for key, tol in {"E": 1e-3, "A": 5e-3, "B": 5e-3, "alpha": 1e-3, "beta": 1e-3}.items():
        assert rel(nll.params()[key], EPOCH[key]) < tol, (key, nll.params()[key])
    # Plain Huber (delta 1e-3): same E and exponents; B moves along the flat (B, beta) ridge.
    hub = fit_approach3(N, D, L)
    for key, tol in {"E": 2e-3, "A": 0.015, "B": 0.03, "alpha": 3e-3, "beta": 5e-3}.items():
        assert rel(hub.params()[key], EPOCH[key]) < tol, (key, hub.params()[key])
    assert hub.loss_value == pytest.approx(1.0182740, rel=1e-6)   # the full-grid optimum


@pytest.mark.slow
def test_approach3_screened_starts_find_the_full_grid_optimum(chinchilla):
    N, D, L = chinchilla
    screened = fit_approach3(N, D, L)
    full = fit_approach3(N, D, L, top_k=None)
    assert screened.loss_value <= full.loss_value * (1 + 1e-9)
    for key, value in full.params().items():
        assert rel(screened.params()[key], value) < 1e-5, key


def test_bootstrap_approach3_is_seeded_and_brackets_the_estimate():
    N, D = synthetic_nd(6, 10)
    L = predict_loss(TRUTH_THETA, N, D) * np.exp(np.random.default_rng(5).normal(0, 0.01, N.size))
    point = fit_approach3(N, D, L, starts=TRUTH_THETA[None], top_k=None)
    b1 = bootstrap_approach3(N, D, L, n_resamples=40, seed=7, point=point)
    b2 = bootstrap_approach3(N, D, L, n_resamples=40, seed=7, point=point)
    assert b1.n_failed == 0
    np.testing.assert_array_equal(b1.samples["alpha"], b2.samples["alpha"])
    for key in ("E", "A", "B", "alpha", "beta", "a"):
        lo, hi = b1.intervals[key]
        assert lo < b1.estimate[key] < hi, key


@pytest.mark.slow
def test_approach3_bootstrap_coverage():
    N, D = synthetic_nd(6, 10)
    L0 = predict_loss(TRUTH_THETA, N, D)
    rng = np.random.default_rng(11)
    hits = dict.fromkeys(TRUTH, 0)
    n_sets = 100
    for i in range(n_sets):
        L = L0 * np.exp(rng.normal(0, 0.01, L0.size))
        point = fit_approach3(N, D, L, starts=TRUTH_THETA[None], top_k=None)
        boot = bootstrap_approach3(N, D, L, n_resamples=100, seed=i, point=point)
        for key, value in TRUTH.items():
            lo, hi = boot.interval(key)
            hits[key] += lo <= value <= hi
    for key, count in hits.items():
        assert 0.88 <= count / n_sets <= 0.995, (key, count)


# ---------------------------------------------------------------------------- paired bootstraps

def paired_frame(rng, n_units=20, seeds=2, slopes=(-0.05, -0.056), noise=0.01):
    compute = np.repeat(np.geomspace(1e16, 1e20, n_units), seeds)
    unit = np.repeat(np.arange(n_units), seeds)
    frames = []
    for arch, a, b in (("tpp", math.log(30), slopes[0]), ("ebt", math.log(34), slopes[1])):
        loss = np.exp(a + b * np.log(compute) + rng.normal(0, noise, compute.size))
        frames.append(pd.DataFrame({"arch": arch, "unit": unit, "compute": compute, "loss": loss}))
    return pd.concat(frames, ignore_index=True)


def analysis_power_laws(frame, n_resamples, seed) -> tuple[dict[str, PowerLaws], SlopeComparison]:
    """The analysis' paired bootstrap of the two architectures' power laws vs compute: one
    draw of the units (as analysis/points.py draws), each label's power law refitted on it
    (laws/power.py), and their scaling rates compared (comparison.py)."""
    codes, uniques = pd.factorize(frame["unit"])
    runs = frame.rename(columns={"loss": "val_loss"}).assign(unit_code=codes)
    counts = unit_counts(draw_units(np.random.default_rng(seed), len(uniques), n_resamples), len(uniques))
    config = AnalysisConfig(bootstrap=n_resamples, seed=seed)
    power = {arch: POWER_LAW.fit(LabelPoints(arch, runs[runs.arch == arch], {"flops": "compute"}, counts,
                                             config)).finish([])
             for arch in ("tpp", "ebt")}
    return power, scaling_rates("tpp", "ebt", power, config.ci)["flops"]


def test_power_law_bootstrap_coverage():
    """~95% of percentile intervals over 200 noisy data sets contain the true slopes."""
    rng = np.random.default_rng(2024)
    true = {"slope_tpp": -0.05, "slope_ebt": -0.056, "slope_diff": -0.006}
    hits = dict.fromkeys(true, 0)
    n_sets = 200
    for i in range(n_sets):
        f = paired_frame(rng)
        power, rates = analysis_power_laws(f, n_resamples=1000, seed=i)
        intervals = {"slope_tpp": power["tpp"].fitted("flops").intervals()["slope"],
                     "slope_ebt": power["ebt"].fitted("flops").intervals()["slope"],
                     "slope_diff": rates.to_json()["intervals"]["slope_diff"]}
        for key, value in true.items():
            lo, hi = intervals[key]
            hits[key] += lo <= value <= hi
    for key, count in hits.items():
        assert 0.88 <= count / n_sets <= 0.99, (key, count / n_sets)


def test_power_law_bootstrap_resamples_pairs_jointly_and_matches_refits():
    """The analysis' closed-form bootstrap equals refitting every resample's rows (an
    independent np.polyfit in log-log), on units drawn as bootstrap.draw_units documents."""
    f = paired_frame(np.random.default_rng(1), n_units=12, seeds=3)
    power, rates = analysis_power_laws(f, n_resamples=200, seed=9)
    t_fit, e_fit = power["tpp"].fitted("flops"), power["ebt"].fitted("flops")
    ours = {"slope_tpp": t_fit.slopes, "slope_ebt": e_fit.slopes, "slope_diff": e_fit.slopes - t_fit.slopes,
            "slope_ratio": e_fit.slopes / t_fit.slopes}
    ours_intervals = {"slope_tpp": t_fit.intervals()["slope"], "slope_ebt": e_fit.intervals()["slope"],
                      **{k: rates.to_json()["intervals"][k] for k in ("slope_diff", "slope_ratio")}}

    refits = {k: np.full(200, np.nan) for k in ours}
    n_failed = 0
    drawn = np.random.default_rng(9).integers(0, 12, size=(200, 12))
    for r, units in enumerate(drawn):
        df = f.iloc[np.concatenate([np.flatnonzero(f.unit.to_numpy() == u) for u in units])]
        t, e = df[df.arch == "tpp"], df[df.arch == "ebt"]
        # pairing: every drawn unit brings all its seeds of both architectures
        assert (t.groupby("unit").size() == e.groupby("unit").size()).all()
        assert (t.groupby("unit").size() % 3 == 0).all()
        b_t = np.polyfit(np.log(t.compute), np.log(t.loss), 1)[0]
        b_e = np.polyfit(np.log(e.compute), np.log(e.loss), 1)[0]
        n_failed += not (np.isfinite(b_t) and np.isfinite(b_e))
        refits["slope_tpp"][r], refits["slope_ebt"][r] = b_t, b_e
        refits["slope_diff"][r], refits["slope_ratio"][r] = b_e - b_t, b_e / b_t
    assert n_failed == 0 and t_fit.to_json()["n_failed"] == e_fit.to_json()["n_failed"] == 0
    for key in ("slope_tpp", "slope_ebt", "slope_diff", "slope_ratio"):
        np.testing.assert_allclose(refits[key], ours[key], rtol=1e-9)
        assert list(percentile_interval(refits[key])) == pytest.approx(ours_intervals[key], rel=1e-9)
    assert set(rates.to_json()["intervals"]) == {"slope_diff", "slope_ratio", "advantage"}


def test_percentile_interval_with_infinite_samples():
    assert percentile_interval(np.arange(101.0), 0.9) == pytest.approx((5.0, 95.0))
    lo, hi = percentile_interval(np.r_[np.ones(90), np.full(10, np.inf)], 0.95)
    assert lo == 1.0 and hi == math.inf


# ---------------------------------------------------------------------------- crossover, multiplier

def test_crossover_of_power_laws_at_known_compute():
    c_star = 3e21
    tpp = PowerLawFit(slope=-0.05, intercept=math.log(30.0), r2=1.0, n=10)
    # EBT: steeper and higher, through the T++ curve at c_star
    ebt = PowerLawFit(slope=-0.06, intercept=math.log(30.0) + 0.01 * math.log(c_star), r2=1.0, n=10)
    out = find_crossover(tpp, ebt, c_min=1e15, budget=1e27, labels=("T++", "EBT"))
    assert out.status == "crossover"
    assert out.compute == pytest.approx(c_star, rel=1e-9)
    assert (out.better_below, out.better_above) == ("T++", "EBT")
    assert power_law_crossover_compute(tpp.intercept, tpp.slope, ebt.intercept, ebt.slope) == pytest.approx(c_star)
    # FLOP multiplier: > 1 below the crossing, exactly 1 at it, < 1 above
    m = flop_multiplier(tpp, ebt, [1e18, c_star, 1e24])
    assert m[0] > 1 and m[1] == pytest.approx(1.0, rel=1e-9) and m[2] < 1


def test_crossover_of_saturating_curves_at_known_compute():
    c_star, E1, A1, a1, E2, a2 = 1e20, 1.9, 2e3, 0.2, 1.6, 0.15
    A2 = (E1 + A1 * c_star ** -a1 - E2) * c_star ** a2      # makes L2(c_star) = L1(c_star)
    tpp = SaturatingFit(E1, math.log(A1), a1, 0.0, 0, False)
    ebt = SaturatingFit(E2, math.log(A2), a2, 0.0, 0, False)
    out = find_crossover(tpp, ebt, c_min=1e15, budget=1e27)
    assert out.status == "crossover"
    assert out.compute == pytest.approx(c_star, rel=1e-8)
    assert out.better_above == "EBT"


def test_no_crossover_cases():
    tpp = PowerLawFit(slope=-0.05, intercept=math.log(30.0), r2=1.0, n=10)
    parallel = PowerLawFit(slope=-0.05, intercept=math.log(33.0), r2=1.0, n=10)
    out = find_crossover(tpp, parallel)
    assert out.status == "parallel" and out.compute is None and out.better_above == "Transformer++"
    assert out.compute_or_inf == math.inf
    diverging = PowerLawFit(slope=-0.045, intercept=math.log(33.0), r2=1.0, n=10)
    out = find_crossover(tpp, diverging, budget=1e27)
    assert out.status == "none_below_budget" and out.gap_trend == "widening" and "1e+27" in out.message
    slowly_converging = PowerLawFit(slope=-0.0505, intercept=math.log(33.0), r2=1.0, n=10)
    out = find_crossover(tpp, slowly_converging, budget=1e27)
    assert out.status == "none_below_budget" and out.gap_trend == "narrowing" and out.meets_at > 1e27
    assert np.isinf(power_law_crossover_compute(tpp.intercept, tpp.slope, slowly_converging.intercept,
                                                slowly_converging.slope, budget=1e27))
    # a saturating EBT whose floor is above the T++ loss never reaches it: infinite multiplier
    sat = SaturatingFit(2.5, math.log(3e4), 0.2, 0.0, 0, False)
    assert np.isinf(flop_multiplier(tpp, sat, [1e26]))[0]
    assert find_crossover(tpp, sat).status == "none_below_budget"


def test_crossover_message_names_the_lower_curve_on_each_side():
    # a saturating EBT dips below T++ and comes back above it: two crossings
    tpp = PowerLawFit(slope=-0.05, intercept=math.log(30.0), r2=1.0, n=10)
    sat = SaturatingFit(2.0, math.log(3e3), 0.2, 0.0, 0, False)
    out = find_crossover(tpp, sat, c_min=1e10, budget=1e27, labels=("T++", "EBT"))
    assert len(out.crossings) == 2 and out.better_below == "T++" and out.better_above == "T++"
    assert "T++ is lower below it, EBT above" in out.message and "T++ is lower at 1e+27" in out.message
    one = find_crossover(tpp, PowerLawFit(slope=-0.06, intercept=math.log(30.0 * 1e20 ** 0.01), r2=1.0, n=10),
                         budget=1e27, labels=("T++", "EBT"))
    assert len(one.crossings) == 1 and "T++ is lower below it, EBT above" in one.message


# ---------------------------------------------------------------------------- CLI

def test_fit_cli_json(tmp_path, capsys):
    N, D = synthetic_nd(5, 8)
    frame = pd.DataFrame({"params": N, "flops": 6 * N * D, "tokens": D,
                          "val_loss": predict_loss(TRUTH_THETA, N, D)})
    frame.to_csv(tmp_path / "runs.csv", index=False)
    code = main(["fit", str(tmp_path / "runs.csv"), "--params-col", "params", "--flops-col", "flops",
                 "--loss-col", "val_loss", "--bootstrap", "20", "--seed", "3", "--top-k", "64", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    for key, value in TRUTH.items():
        assert rel(out[key], value) < 1e-3, key
    assert set(out["intervals"]) >= {"E", "A", "B", "alpha", "beta"}
    lo, hi = out["intervals"]["alpha"]
    assert lo - 1e-6 <= out["alpha"] <= hi + 1e-6
    assert out["n_points"] == 40 and out["bootstrap"]["n_resamples"] == 20


def test_fit_cli_json_failed_fit_is_strict_json_and_non_zero(tmp_path, capsys, monkeypatch):
    from ebt_scaling.analysis import approach3

    N, D = synthetic_nd(5, 8)
    pd.DataFrame({"params": N, "tokens": D, "val_loss": predict_loss(TRUTH_THETA, N, D)}).to_csv(
        tmp_path / "runs.csv", index=False)
    monkeypatch.setattr(approach3, "fit_approach3", lambda *a, **k: approach3.Approach3Fit(
        math.nan, math.nan, math.nan, math.nan, math.nan, loss_value=math.inf, n_points=len(a[0])))
    code = main(["fit", str(tmp_path / "runs.csv"), "--params-col", "params", "--tokens-col", "tokens",
                 "--loss-col", "val_loss", "--json"])
    captured = capsys.readouterr()
    assert code != 0
    out = json.loads(captured.out, parse_constant=lambda c: pytest.fail(f"invalid JSON constant {c}"))
    assert out["E"] is None and out["a"] is None and out["objective_value"] is None
    assert len(captured.err.strip().splitlines()) == 1 and "failed" in captured.err


def test_fit_cli_bad_column(tmp_path, capsys):
    path = tmp_path / "runs.csv"
    pd.DataFrame({"params": [1e8, 2e8], "tokens": [1e9, 2e9], "loss": [3.0, 2.9]}).to_csv(path, index=False)
    code = main(["fit", str(path), "--params-col", "params", "--tokens-col", "tokens", "--loss-col", "val_loss"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "--loss-col" in err and "'val_loss'" in err and "'loss'" in err and "'params'" in err
    code = main(["fit", str(path), "--params-col", "params", "--loss-col", "loss"])
    assert code == 2 and "--tokens-col" in capsys.readouterr().err
