"""Tuning trials: the planner's expansion (sweeps/tuning.py) and the analysis's tuned
selection (analysis/tuning.py), on a planned sweep whose runs are given synthetic results
with a known LR optimum per size."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from ebt_scaling.analysis.pipeline import AnalysisConfig, analyze
from ebt_scaling.analysis.load import load_runs
from ebt_scaling.harness.contract.errors import ConfigError
from ebt_scaling.harness.contract.run_dir import atomic_write_json
from ebt_scaling.harness.contract.spec import spec_hash
from ebt_scaling.sweeps.generate import make_plan
from ebt_scaling.sweeps.plan_table import write_plan
from ebt_scaling.sweeps.sweep_spec import sweep_from_dict

SIZES = [{"name": "a", "n_layers": 1, "d_model": 32, "n_heads": 2},
         {"name": "b", "n_layers": 1, "d_model": 64, "n_heads": 2},
         {"name": "c", "n_layers": 2, "d_model": 96, "n_heads": 2}]
BASE_LR = 1e-3


def _sweep(tune: dict | None, **extra):
    data = {"name": "tuned", "base": {"model": {"vocab_size": 256, "context": 16},
                                      "train": {"batch_size": 4, "lr": BASE_LR}, "device": "cpu"},
            "architectures": [{"label": "T++", "arch": "transformer"}, {"label": "EBT", "arch": "ebt"}],
            "axis": {"name": "parameters", "values": SIZES}, "tokens": {"rule": "fixed", "tokens": 4096}, **extra}
    if tune is not None:
        data["tune"] = tune
    return sweep_from_dict(data, "test")


def test_trials_multiply_the_rules_values_and_keep_the_planned_run():
    plain = {r.run_id: r for r in make_plan(_sweep(None)).runs}
    plan = make_plan(_sweep({"lr": [0.5, 1, 2], "alpha_init": [0.5, 1, 2]}))
    by_label = {}
    for r in plan.runs:
        by_label.setdefault((r.arch_label, r.size_name), []).append(r)
    # EBT: 3 x 3 trials; T++ has no alpha, so equal trials extend its LR grid to 9 values at ratio 2
    ebt = by_label["EBT", "a"]
    assert len(ebt) == 9
    assert sorted({round(r.lr / BASE_LR, 6) for r in ebt}) == [0.5, 1, 2]
    assert sorted({r.spec.model.options.alpha_init for r in ebt}) == [250.0, 500.0, 1000.0]
    tpp = by_label["T++", "a"]
    assert sorted(round(r.lr / BASE_LR, 6) for r in tpp) == [2.0 ** k for k in range(-4, 5)]
    # the trial at factor 1 is the planned run itself: same spec, same run id
    for r in plan.runs:
        if all(float(v) == 1.0 for k, v in r.spec.tags.items() if k.startswith("tune_") and k != "tune_stage"):
            assert r.run_id in plain and r.run_id == spec_hash(r.spec)
    assert any("LR grid extended" in w for w in plan.warnings)


def test_reduced_token_trials_keep_the_planned_run_at_full_tokens():
    plan = make_plan(_sweep({"lr": [0.5, 1, 2], "token_fraction": 0.5, "at": ["a"], "equal_trials": False}))
    runs = [r for r in plan.runs if r.size_name == "a" and r.arch_label == "T++"]
    stages = sorted(r.spec.tags["tune_stage"] for r in runs)
    assert stages == ["planned", "trial", "trial", "trial"]
    full = next(r for r in runs if r.spec.tags["tune_stage"] == "planned")
    assert all(r.tokens == full.tokens // 2 for r in runs if r is not full)
    assert all("trial" not in r.spec.tags for r in plan.runs if r.size_name != "a")


@pytest.mark.parametrize("tune, key", [
    ({"lr": [1, 1]}, "tune.lr[1]"),
    ({"lr": [0]}, "tune.lr[0]"),
    ({}, "tune"),
    ({"lr": [0.5, 1], "at": ["zz"]}, "tune.at[0]"),
    ({"alpha_init": [0.5, 2]}, "tune.equal_trials"),
])
def test_bad_tune_blocks_are_one_line_errors_naming_the_key(tune, key):
    with pytest.raises(ConfigError) as err:
        make_plan(_sweep(tune))
    assert key in str(err.value) and "\n" not in str(err.value)


def test_bad_repeat_blocks_are_named():
    with pytest.raises(ConfigError) as err:
        make_plan(_sweep(None, repeat={"at": ["a"], "seeds": [0]}))
    assert "repeat.seeds[0]" in str(err.value) and "\n" not in str(err.value)
    plan = make_plan(_sweep(None, repeat={"at": ["zz"], "seeds": [1]}))   # e.g. a preset whose axis was overridden
    assert any(w.startswith("repeat.at[0]: 'zz' is not an axis value") for w in plan.warnings)
    assert {r.seed for r in plan.runs} == {0}


def test_repeat_adds_seeds_at_the_named_values_only():
    runs = make_plan(_sweep(None, repeat={"at": ["b"], "seeds": [3, 4]})).runs
    assert sorted({(r.size_name, r.seed) for r in runs}) == [("a", 0), ("b", 0), ("b", 3), ("b", 4), ("c", 0)]


# ---------------------------------------------------------------------------- synthetic results

def _true_best_lr(n: float) -> float:
    """The known optimum: lr*(N) = 0.08 N^-0.5, put on the grid below."""
    return 0.08 * n ** -0.5


def _write_results(sweep_dir: Path, runs, loss_of) -> None:
    for r in runs:
        run = sweep_dir / "runs" / r.run_id
        loss = loss_of(r)
        rows = [{"step": r.steps, "tokens": r.tokens, "flops_full": r.flops["full"], "flops_paper": r.flops["paper"],
                 "train_loss": loss, "lr": r.lr, "grad_norm": 1.0, "val_loss": loss, "val_ppl": math.exp(loss)}]
        run.joinpath("metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in rows))
        atomic_write_json(run / "result.json", {"status": "done", "run_id": r.run_id, "step": r.steps,
                                                "total_steps": r.steps, "final": rows[-1], "val_loss": loss,
                                                "val_ppl": math.exp(loss)})


def test_tuned_selection_finds_the_known_lr_optimum_and_flags_edges(tmp_path):
    factors = [0.25, 0.5, 1, 2, 4]
    sweep = _sweep({"lr": factors}, hparams={"lr": {"rule": "constant", "value": BASE_LR}})
    plan = make_plan(sweep)
    write_plan(plan, tmp_path)
    n_of = {r.size_name: r.params["total"] for r in plan.runs}
    # the grid factor nearest the true optimum in log: the known best trial of each cell
    best_factor = {s: min(factors, key=lambda f: abs(math.log(f * BASE_LR / _true_best_lr(n))))
                   for s, n in n_of.items()}

    def loss_of(r):
        n = r.params["total"]
        penalty = 0.05 * math.log(r.lr / _true_best_lr(n)) ** 2
        arch = 0.1 if r.arch_label == "EBT" else 0.0
        return 3.0 * n ** -0.1 + penalty + arch
    _write_results(tmp_path, plan.runs, loss_of)

    data = load_runs(tmp_path)
    an = analyze(data, AnalysisConfig(bootstrap=0, workers=1))
    cells = {(c.label, c.size): c for c in an.tuning.tuning.cells}
    assert len(cells) == 6
    for (label, size), c in cells.items():
        assert c.best_factors["lr"] == pytest.approx(best_factor[size]), (label, size, c.best_factors)
        side = {factors[0]: "low", factors[-1]: "high"}.get(best_factor[size])
        assert c.edges == ({"lr": side} if side else {}), (label, size)
    # the tuned answer fits the best trials only; the untuned one the runs at factor 1
    assert set(an.points["run_id"]) == {c.tuned_run_id for c in cells.values()}
    assert set(an.tuning.untuned.points["run_id"]) == {c.untuned_run_id for c in cells.values()}
    # LR(N): the least-squares line through the selected grid LRs (an independent fit here)
    for label in ("T++", "EBT"):
        n_label = {r.size_name: r.params["total"] for r in plan.runs if r.arch_label == label}
        sizes = sorted(n_label, key=n_label.get)
        x = np.log([n_label[s] for s in sizes])
        y = np.log([best_factor[s] * BASE_LR for s in sizes])
        slope, intercept = np.polyfit(x, y, 1)
        rule = an.tuning.tuning.lr_rules[label]
        assert rule.exponent == pytest.approx(slope, rel=1e-9)
        assert rule.coefficient == pytest.approx(math.exp(intercept), rel=1e-9)
    result = an.result
    assert "same number of grid trials per cell" in result["tuning"]["budget_rule"]
    assert any("scaling-rate advantage tuned" in h and "vs untuned" in h for h in result["headline"])
    from ebt_scaling.analysis.report import build_report
    files = build_report(an, tmp_path / "analysis", tmp_path)["files"]
    report = (tmp_path / "analysis" / "report.md").read_text()
    assert "tuning.png" in files and "## Tuning" in report and "LR(N) rule" in report
    csv = (tmp_path / "analysis" / "runs.csv").read_text()
    assert csv.count("\n") == len(plan.runs) + 1   # every trial is in runs.csv, not only the selected ones


def test_reduced_token_trials_answer_through_their_full_token_winner(tmp_path):
    from ebt_scaling.analysis.tuning import find_tuning

    sweep = _sweep({"lr": [0.5, 1, 2], "token_fraction": 0.5, "equal_trials": False})
    plan = make_plan(sweep)
    write_plan(plan, tmp_path)
    # T++ is best at factor 1 (its planned run answers), EBT at factor 2 (no full-token winner yet)
    best = {"T++": 1.0, "EBT": 2.0}
    _write_results(tmp_path, plan.runs, lambda r: 3.0 + abs(math.log(r.lr / (BASE_LR * best[r.arch_label]))))
    tuning = find_tuning(load_runs(tmp_path).runs)
    for c in tuning.cells:
        assert c.best_factors == {"lr": best[c.label]}
        planned = next(r.run_id for r in plan.runs if (r.arch_label, r.size_name) == (c.label, c.size)
                       and r.spec.tags["tune_stage"] == "planned")
        assert c.untuned_run_id == planned
        assert c.tuned_run_id == (planned if c.label == "T++" else None), c


def test_budget_rule_counts_grid_trials_and_names_extended_ones(tmp_path):
    """Trials `plan --extend` adds (tune.extra) are counted apart from the grid's."""
    from ebt_scaling.analysis.tuning import find_tuning

    extra = [{"label": "EBT", "axis_value": "a", "size": "a", "factors": {"lr": 4.0}}]
    plan = make_plan(_sweep({"lr": [0.5, 1, 2], "equal_trials": False, "extra": extra}))
    write_plan(plan, tmp_path)
    _write_results(tmp_path, plan.runs, lambda r: 3.0 + abs(math.log(r.lr / BASE_LR)))
    tuning = find_tuning(load_runs(tmp_path).runs)
    cell = next(c for c in tuning.cells if (c.label, c.size) == ("EBT", "a"))
    assert (cell.n_trials, cell.n_extra) == (4, 1)
    rule = tuning.budget_rule()
    assert "same number of grid trials per cell (3)" in rule and "added trials" in rule and "EBT 1" in rule


def test_run_takes_a_planned_sweep_directory(tmp_path, capsys):
    """After `plan --extend DIR`, `run DIR` trains what is missing and re-analyses; with every
    run finished it only analyses."""
    from ebt_scaling.harness.cli.main import main

    plan = make_plan(_sweep({"lr": [0.5, 1, 2], "equal_trials": False}))
    write_plan(plan, tmp_path)
    _write_results(tmp_path, plan.runs, lambda r: 3.0 + abs(math.log(r.lr / BASE_LR)) + r.params["total"] ** -0.1)
    assert main(["run", str(tmp_path), "--bootstrap", "0"]) == 0
    out = capsys.readouterr().out
    assert "planned already" in out and "skipped 18 done" in out
    assert (tmp_path / "analysis" / "report.md").exists()
