"""Seed-to-seed spread (analysis/seeds.py) on a synthetic sweep whose seed noise is known."""
from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import SIZES, power_law, write_synthetic_sweep

from ebt_scaling.analysis.pipeline import AnalysisConfig, analyze
from ebt_scaling.analysis.load import load_runs


def test_pooled_seed_spread_recovers_the_known_noise(tmp_path):
    # write_synthetic_sweep multiplies each run's loss by exp(noise (z + 0.5 z_run)): z is shared by the
    # runs of a point and seed (both labels), z_run is each run's own; across seeds both vary, so the
    # log-loss spread between seeds of one label is noise * sqrt(1 + 0.25)
    noise = 0.02
    archs = {"T++": {"arch": "transformer", "law": power_law(60.0, 0.05)},
             "EBT": {"arch": "ebt", "law": power_law(80.0, 0.06)}}
    write_synthetic_sweep(tmp_path, archs=archs, sizes=SIZES[:5], seeds=tuple(range(12)), noise=noise)
    an = analyze(load_runs(tmp_path), AnalysisConfig(bootstrap=200, workers=1))
    truth = noise * math.sqrt(1.25)
    for lb in ("T++", "EBT"):
        s = an.seeds.spreads[lb]
        assert s.n_points == 5 and s.n_runs == 60
        # 55 degrees of freedom: the pooled sd is within ~3 standard errors (se ≈ sd / sqrt(2 dof))
        assert s.sd_log_loss == pytest.approx(truth, rel=3 / math.sqrt(2 * 55)), (lb, truth, s.sd_log_loss)
    interval = an.seeds.intervals["EBT"]
    assert interval[0] < 0.2 < interval[1]  # the true advantage 0.06 / 0.05 - 1 is inside
    assert any(h.startswith("Seed-to-seed spread") and "bootstrap interval" in h for h in an.result["headline"])


def test_no_repeated_seeds_no_seed_section(tmp_path):
    archs = {"T++": {"arch": "transformer", "law": power_law(60.0, 0.05)},
             "EBT": {"arch": "ebt", "law": power_law(80.0, 0.06)}}
    write_synthetic_sweep(tmp_path, archs=archs, sizes=SIZES[:4])
    an = analyze(load_runs(tmp_path), AnalysisConfig(bootstrap=0, workers=1))
    assert an.seeds is None and an.result["seed_noise"] is None
    assert not any(h.startswith("Seed-to-seed") for h in an.result["headline"])
    assert np.isfinite(an.comparisons["EBT"].rates["flops"].candidate)
