"""The sweep analysis (`ebt-scaling analyze`): loading, fits, intervals, crossover,
isoFLOP minima, the report and the command, on synthetic sweep directories whose losses
follow known laws (conftest.write_synthetic_sweep).
"""
from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path

import pytest
from conftest import SIZES, chinchilla_law, chinchilla_n_opt, interior_budgets, power_law, write_synthetic_sweep

# ---------------------------------------------------------------------------- helpers of the tests
from ebt_scaling.analysis.pipeline import AnalysisConfig, analyze  # noqa: E402
from ebt_scaling.analysis.load import load_runs  # noqa: E402
from ebt_scaling.harness.cli.main import main  # noqa: E402
from ebt_scaling.harness.contract.run_dir import atomic_write_json
from ebt_scaling.harness.contract.spec import load_spec
from ebt_scaling.models.architectures import build_model

T_A, T_B = 30.0, 0.05                      # Transformer++: L = 30 C^-0.05
E1_B, CROSS = 0.06, 1e20                   # EBT-S1: steeper, meets T++ at 1e20 FLOPs
E1_A = T_A * CROSS ** (E1_B - T_B)
E2_A, E2_B = 45.0, 0.045                   # EBT-S2: worse and shallower: never catches up
THREE_ARCHS = {"T++": {"arch": "transformer", "law": power_law(T_A, T_B)},
               "EBT-S1": {"arch": "ebt", "law": power_law(E1_A, E1_B)},
               "EBT-S2": {"arch": "ebt", "law": power_law(E2_A, E2_B),
                          "options": {"langevin_sigma": 3.0, "truncate_unroll": True}}}
SPECIAL = {("EBT-S1", "s32", 1): "diverged", ("T++", "s48", 1): "partial", ("EBT-S2", "s64", 1): "pending",
           ("EBT-S2", "s96", 1): "failed"}


def _analyze_cli(sweep: Path, out: Path, *extra: str) -> dict:
    assert main(["analyze", str(sweep), "--out", str(out), *extra]) == 0
    return json.loads((out / "fits.json").read_text())


def _run_id(sweep: Path, label: str, size: str, seed: int) -> str:
    runs = load_runs(sweep).runs
    row = runs[(runs["arch_label"] == label) & (runs["size"] == size) & (runs["seed"] == seed)]
    assert len(row) == 1
    return row["run_id"].iloc[0]


@pytest.fixture(scope="module")
def main_sweep(tmp_path_factory):
    """6 sizes x 2 seeds x 3 labels with known FLOP power laws (0.2% noise), four runs not done;
    analysed once with the command (200 resamples)."""
    root = tmp_path_factory.mktemp("sweep")
    write_synthetic_sweep(root, archs=THREE_ARCHS, sizes=SIZES[:6], seeds=(0, 1), noise=0.002, special=SPECIAL)
    out = root / "analysis"
    t0 = time.perf_counter()
    fits = _analyze_cli(root, out, "--bootstrap", "200", "--seed", "3")
    return root, out, fits, time.perf_counter() - t0


# ---------------------------------------------------------------------------- loading

def test_load_keeps_every_run_with_its_status(main_sweep):
    root = main_sweep[0]
    data = load_runs(root)
    assert len(data.runs) == 6 * 2 * 3
    status = {(r.arch_label, r.size, r.seed): r.status for r in data.runs.itertuples()}
    assert status[("EBT-S1", "s32", 1)] == "diverged"
    assert status[("T++", "s48", 1)] == "partial"
    assert status[("EBT-S2", "s64", 1)] == "pending"
    assert status[("EBT-S2", "s96", 1)] == "failed"
    assert (data.runs["status"] == "done").sum() == 36 - 4
    done = data.done
    assert (done["params_total"] > 0).all() and (done["flops_full"] > done["flops_paper"] * 0).all()
    # matched units: a size's runs share one unit across labels and seeds
    assert done.groupby("unit")["arch_label"].nunique().max() == 3
    assert done.groupby("unit")["seed"].nunique().max() == 2
    # curves: one row per eval point of every run (6 per finished run)
    assert len(data.curves[data.curves["run_id"].isin(done["run_id"])]) == 6 * len(done)
    failed = data.runs[data.runs["status"] == "failed"].iloc[0]
    assert "out of memory" in failed["note"]


def test_load_lists_runs_of_plan_json_without_directory(tmp_path):
    write_synthetic_sweep(tmp_path, archs=dict(list(THREE_ARCHS.items())[:2]), sizes=SIZES[:2])
    atomic_write_json(tmp_path / "plan.json", {"runs": [{"run_id": "feedfeedfeed", "arch_label": "T++",
                                                         "arch": "transformer", "pair_id": "p", "seed": 0,
                                                         "tags": {}}]})
    runs = load_runs(tmp_path).runs
    assert runs.set_index("run_id").loc["feedfeedfeed", "status"] == "missing"


def _rewrite_metrics(run: Path, change) -> None:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    (run / "metrics.jsonl").write_text("".join(json.dumps(change(r)) + "\n" for r in rows))


def test_a_convention_a_run_did_not_record_is_computed_from_its_spec(tmp_path):
    """A run from before the paper convention existed (metrics without flops_paper) gets it as
    step x FLOPs per step, the trainer's own formula, and enters a paper-convention fit."""
    write_synthetic_sweep(tmp_path, archs=dict(list(THREE_ARCHS.items())[:2]), sizes=SIZES[:4])
    old = _run_id(tmp_path, "EBT-S1", "s64", 0)
    _rewrite_metrics(tmp_path / "runs" / old, lambda r: {k: v for k, v in r.items() if k != "flops_paper"})
    data = load_runs(tmp_path)
    assert data.flop_warnings == []
    run = data.runs.set_index("run_id").loc[old]
    spec = load_spec(tmp_path / "runs" / old / "spec.yaml")
    # The paper's 20 K N per token, N counted on the built model: independent of models/flops.py.
    n = build_model(spec.model).param_counts()["non_embedding"]
    per_step = 20 * spec.model.options.refine_steps * n * spec.train.batch_size * spec.model.context
    assert run["flops_paper"] == run["step"] * per_step > 0
    curve = data.curves[data.curves["run_id"] == old]
    assert (curve["flops_paper"] == curve["step"] * per_step).all()
    fits = _analyze_cli(tmp_path, tmp_path / "out", "--convention", "paper", "--bootstrap", "20")
    assert old not in {e["run_id"] for e in fits["runs"]["excluded"]}
    assert fits["labels"]["EBT-S1"]["n_points"] == 4


def test_recorded_flops_that_disagree_with_the_spec_are_a_warning(tmp_path, capsys):
    write_synthetic_sweep(tmp_path, archs=dict(list(THREE_ARCHS.items())[:2]), sizes=SIZES[:4])
    tampered = _run_id(tmp_path, "T++", "s48", 0)
    _rewrite_metrics(tmp_path / "runs" / tampered, lambda r: {**r, "flops_full": r["flops_full"] * 1.01})
    (warning,) = load_runs(tmp_path).flop_warnings
    assert warning.startswith("flops_full: 1 run(s) recorded FLOPs that differ") and tampered in warning
    assert "by up to 0.01 relative" in warning
    fits = _analyze_cli(tmp_path, tmp_path / "out", "--bootstrap", "20")
    assert warning in fits["warnings"]
    assert f"warning: {warning}" in (tmp_path / "out" / "report.md").read_text()
    assert f"warning: {warning}" in capsys.readouterr().err


# ---------------------------------------------------------------------------- fits

def test_analyze_recovers_slopes_advantage_and_crossover(main_sweep):
    fits = main_sweep[2]
    pl = fits["power_laws"]
    for label, slope in (("T++", -T_B), ("EBT-S1", -E1_B), ("EBT-S2", -E2_B)):
        fit = pl[label]["flops"]
        assert fit["slope"] == pytest.approx(slope, abs=0.0015), label
        lo, hi = fit["intervals"]["slope"]
        assert lo <= fit["slope"] <= hi and lo <= slope + 0.001 and hi >= slope - 0.001
    assert fits["reference"] == "T++" and fits["candidates"] == ["EBT-S1", "EBT-S2"]
    comp = fits["comparisons"]["EBT-S1"]
    adv = comp["axes"]["flops"]["advantage"]
    assert adv == pytest.approx(E1_B / T_B - 1, abs=0.04)
    lo, hi = comp["axes"]["flops"]["intervals"]["advantage"]
    assert lo < E1_B / T_B - 1 < hi and lo > 0.05
    cross = comp["crossover"]["power_law"]
    assert cross["status"] == "crossover"
    assert CROSS / 10 < cross["compute"] < CROSS * 10
    lo, hi = cross["interval"]
    assert lo < CROSS < hi
    assert cross["fraction_crossing"] > 0.9
    # EBT-S2 is worse and shallower: no crossover below the budget, and the statement says so
    comp2 = fits["comparisons"]["EBT-S2"]
    assert comp2["axes"]["flops"]["advantage"] < 0
    c2 = comp2["crossover"]["power_law"]
    assert c2["status"] == "none_below_budget" and c2["compute"] is None
    assert c2["fraction_crossing"] < 0.05 and c2["interval"][1] == "inf"
    assert any(h.startswith("Crossover (power laws): none below 1e+27") for h in fits["headline"])
    assert any(h.startswith("Crossover (power laws): EBT-S1 overtakes T++ at ") for h in fits["headline"])
    # the FLOP multiplier: > 1 in the measured range, 1 at the crossover
    mult = {round(math.log10(r["compute"]), 6): r for r in comp["multiplier"]}
    largest = next(r for r in comp["multiplier"] if r["largest_reference_run"])
    truth = (E1_A / T_A) ** (1 / E1_B) * largest["compute"] ** (T_B / E1_B - 1)
    assert largest["power_law"] == pytest.approx(truth, rel=0.25)
    assert largest["power_law_interval"][0] < truth < largest["power_law_interval"][1] * 1.05
    assert mult[27.0]["power_law"] < 1 < mult[15.0]["power_law"]


def test_two_labels_intervals_match_refits_of_each_resample(tmp_path):
    """One joint draw of units for every label: the intervals equal those of power laws
    refitted (np.polyfit in log-log) on each resample's runs of both labels, with units drawn
    as bootstrap.draw_units documents and coded in order of first appearance, T++ first."""
    import numpy as np
    import pandas as pd

    from ebt_scaling.analysis.bootstrap import percentile_interval

    write_synthetic_sweep(tmp_path, archs=dict(list(THREE_ARCHS.items())[:2]), sizes=SIZES[:5], noise=0.003)
    data = load_runs(tmp_path)
    an = analyze(data, AnalysisConfig(bootstrap=300, seed=5, workers=1))
    pts = an.points
    r, c = pts[pts["arch_label"] == "T++"], pts[pts["arch_label"] == "EBT-S1"]
    c_min = float(pts["flops_full"].min())
    codes, units = pd.factorize(pd.concat([r["unit"], c["unit"]]).astype(str))
    code_r, code_c = codes[:len(r)], codes[len(r):]
    lx_r, ly_r = np.log(r["flops_full"].to_numpy(float)), np.log(r["val_loss"].to_numpy(float))
    lx_c, ly_c = np.log(c["flops_full"].to_numpy(float)), np.log(c["val_loss"].to_numpy(float))
    refits = {"slope_T++": [], "advantage": [], "crossover": []}
    for drawn in np.random.default_rng(5).integers(0, len(units), size=(300, len(units))):
        rows_r = np.concatenate([np.flatnonzero(code_r == u) for u in drawn])
        rows_c = np.concatenate([np.flatnonzero(code_c == u) for u in drawn])
        b_r, a_r = np.polyfit(lx_r[rows_r], ly_r[rows_r], 1)
        b_c, a_c = np.polyfit(lx_c[rows_c], ly_c[rows_c], 1)
        log_meet = (a_r - a_c) / (b_c - b_r)   # where the two lines meet; inf when not in (c_min, budget]
        refits["slope_T++"].append(b_r)
        refits["advantage"].append(b_c / b_r - 1)
        refits["crossover"].append(math.exp(log_meet) if math.log(c_min) < log_meet <= math.log(1e27) else math.inf)
    expected = {k: percentile_interval(v) for k, v in refits.items()}
    ours = an.result["comparisons"]["EBT-S1"]
    assert ours["axes"]["flops"]["intervals"]["advantage"] == pytest.approx(list(expected["advantage"]))
    assert an.result["power_laws"]["T++"]["flops"]["intervals"]["slope"] == pytest.approx(
        list(expected["slope_T++"]))
    lo, hi = expected["crossover"]
    ours_iv = ours["crossover"]["power_law"]["interval"]
    assert ours_iv[0] == pytest.approx(lo) and (ours_iv[1] == hi or ours_iv[1] == pytest.approx(hi))


def test_comparison_fits_both_labels_on_shared_units_only(tmp_path):
    """A diverged EBT run drops its T++ partner from the comparison (not from T++'s own table)."""
    from ebt_scaling.analysis.fits import fit_power_law

    write_synthetic_sweep(tmp_path, archs=dict(list(THREE_ARCHS.items())[:2]), sizes=SIZES[:5], noise=0.01,
                          special={("EBT-S1", "s96", 0): "diverged"})
    an = analyze(load_runs(tmp_path), AnalysisConfig(bootstrap=100, seed=1, workers=1))
    res, pts = an.result, an.points
    partner = _run_id(tmp_path, "T++", "s96", 0)
    t_all = pts[pts["arch_label"] == "T++"]
    t_shared = t_all[t_all["run_id"] != partner]
    paired = fit_power_law(t_shared["flops_full"].to_numpy(float), t_shared["val_loss"].to_numpy(float)).slope
    own = res["power_laws"]["T++"]["flops"]
    assert own["n"] == 5 and own["slope"] != pytest.approx(paired, rel=1e-6)   # per-label table: every run
    comp = res["comparisons"]["EBT-S1"]
    flops = comp["axes"]["flops"]
    assert flops["slope_reference"] == pytest.approx(paired, rel=1e-9)
    assert flops["slope_candidate"] == pytest.approx(res["power_laws"]["EBT-S1"]["flops"]["slope"], rel=1e-9)
    assert flops["slope_diff"] == pytest.approx(flops["slope_candidate"] - paired, rel=1e-9)
    assert comp["pairs"]["n_shared"] == 4 and len(comp["pairs"]["dropped"]) == 1
    assert partner in comp["pairs"]["dropped"][0]
    assert any(partner in w and "unmatched" in w for w in res["warnings"])
    # the crossover and multiplier come from the same paired fits
    c_min = float(t_shared["flops_full"].min())
    assert comp["crossover"]["c_min"] == pytest.approx(min(c_min, float(pts.loc[pts["arch_label"] == "EBT-S1",
                                                                                  "flops_full"].min())))


def test_isoflop_approach2_finds_the_known_optimum(tmp_path):
    """isoFLOP runs of L = E + A/N^a + B/D^b with C = 6ND: the minima follow N* = G (C/6)^(b/(a+b))."""
    law = {"E": 1.8, "A": 400.0, "B": 1200.0, "alpha": 0.34, "beta": 0.30}
    sizes = SIZES  # 7 sizes, 31k .. 1.05M parameters
    budgets = interior_budgets(law, sizes, 4)   # interior minima
    write_synthetic_sweep(tmp_path, mode="isoflop", budgets=budgets, sizes=sizes,
                          archs={"T++": {"arch": "transformer", "law": chinchilla_law(**law)}})
    an = analyze(load_runs(tmp_path), AnalysisConfig(bootstrap=50, workers=1))
    a2 = an.result["approach2"]["T++"]
    assert a2["status"] == "ok" and a2["mode"].startswith("isoflop runs")
    truth = law["beta"] / (law["alpha"] + law["beta"])
    assert a2["exponent"] == pytest.approx(truth, abs=0.03)
    for rec in a2["budgets"]:
        assert "dropped" not in rec
        assert rec["n_opt"] == pytest.approx(float(chinchilla_n_opt(law, rec["compute"])), rel=0.12)
        # resamples with an edge minimum are dropped: the interval says it is conditional, and how many
        k = round(rec["n_opt_edge_fraction"] * 50)
        assert rec["n_opt_interval_note"].startswith(f"conditional on an interior minimum; {k} of 50 resamples")
    assert a2["interval_note"].startswith("conditional on interior minima") and "of 50 resamples" in a2["interval_note"]
    from ebt_scaling.analysis.report import build_report

    build_report(an, tmp_path / "analysis", tmp_path)
    md = (tmp_path / "analysis" / "report.md").read_text()
    assert all(f"interval {rec['n_opt_interval_note']}" in md for rec in a2["budgets"])
    assert f"interval {a2['interval_note']}" in md
    # the runs vary N and D: Approach 3 runs and recovers the noise-free law's exponents
    a3 = an.result["approach3"]["T++"]
    assert a3["status"] == "ok"
    assert a3["alpha"] == pytest.approx(law["alpha"], abs=0.02) and a3["beta"] == pytest.approx(law["beta"], abs=0.02)
    assert "intervals" in a3
    # and the plot of the isoFLOP curves is drawn
    from ebt_scaling.analysis.plots import plot_isoflop
    from ebt_scaling.analysis.figures import render

    assert render(plot_isoflop(an), ("png",))["png"][:8] == b"\x89PNG\r\n\x1a\n"


def test_approach2_needs_budget_tags_not_training_curves(main_sweep):
    """Without budget tags there is no Approach 2: a curve's intermediate points are not cooled down."""
    fits = main_sweep[2]
    a2 = fits["approach2"]["T++"]
    assert a2["status"] == "skipped" and "not cooled down" in a2["reason"]
    assert any(s["what"] == "Approach 3" and "distinct D" in s["reason"] for s in fits["skipped"])


def test_small_sweeps_fit_with_warnings_or_skip_with_reasons(tmp_path):
    two, one = tmp_path / "two", tmp_path / "one"
    archs = dict(list(THREE_ARCHS.items())[:2])
    write_synthetic_sweep(two, archs=archs, sizes=SIZES[:2])
    write_synthetic_sweep(one, archs=archs, sizes=SIZES[:1])
    fits = _analyze_cli(two, two / "out", "--bootstrap", "50")
    assert fits["power_laws"]["T++"]["flops"]["status"] == "ok"
    assert "2 distinct" in fits["power_laws"]["T++"]["flops"]["warning"]
    assert fits["saturating"]["T++"]["status"] == "skipped"
    assert any("2 distinct values only" in w for w in fits["warnings"])
    fits = _analyze_cli(one, one / "out", "--bootstrap", "50")
    assert fits["power_laws"]["T++"]["flops"]["status"] == "skipped"
    assert "1 distinct" in fits["power_laws"]["T++"]["flops"]["reason"]
    assert fits["comparisons"]["EBT-S1"]["crossover"]["status"] == "skipped"
    assert (one / "out" / "report.html").exists()


# ---------------------------------------------------------------------------- outputs

def test_report_lists_failures_embeds_images_and_has_no_external_refs(main_sweep):
    root, out, fits, _ = main_sweep
    md = (out / "report.md").read_text()
    page = (out / "report.html").read_text()
    diverged = _run_id(root, "EBT-S1", "s32", 1)
    partial = _run_id(root, "T++", "s48", 1)
    failed = _run_id(root, "EBT-S2", "s96", 1)
    section = md.split("## Runs not fitted")[1].split("## All runs")[0]
    for run_id, status in ((diverged, "diverged"), (partial, "partial"), (failed, "failed")):
        line = next(line for line in section.splitlines() if run_id in line)
        assert status in line
        assert run_id in page
    assert "non-finite loss" in section and "unfinished" in section and "out of memory" in section
    excluded = {e["run_id"]: e["status"] for e in fits["runs"]["excluded"]}
    assert excluded[diverged] == "diverged" and excluded[partial] == "partial"
    # images embedded, nothing fetched from elsewhere
    images = re.findall(r'<img [^>]*src="([^"]+)"', page)
    assert len(images) >= 4 and all(src.startswith("data:image/png;base64,") for src in images)
    text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", page)
    assert all(src.startswith("data:image/png;base64,") for src in re.findall(r'src="([^"]*)"', page))
    assert not re.search(r"(https?:)?//[a-z]", text) and "href=" not in text
    assert "<link" not in text and "<script" not in text and "@import" not in text and "url(" not in text
    for name in ("loss_vs_flops.png", "flop_multiplier.png", "loss_vs_params.png", "envelope.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG" and f"({name})" in md
    # headline numbers beside the paper's, and which loss / convention
    assert "+2.92%" in md and "FLOP convention: full" in md and "negative log-likelihood" in md
    assert fits["flop_convention"] == "full" and fits["config"]["bootstrap"] == 200


def test_rerun_gives_identical_fits_json(main_sweep, tmp_path):
    root, out, _, _ = main_sweep
    first = (out / "fits.json").read_bytes()
    _analyze_cli(root, tmp_path / "again", "--bootstrap", "200", "--seed", "3")
    assert (tmp_path / "again" / "fits.json").read_bytes() == first


def test_serial_and_parallel_refits_agree(tmp_path):
    write_synthetic_sweep(tmp_path, archs=dict(list(THREE_ARCHS.items())[:2]), sizes=SIZES[:5], noise=0.003)
    data = load_runs(tmp_path)
    one = analyze(data, AnalysisConfig(bootstrap=60, workers=1)).result
    two = analyze(data, AnalysisConfig(bootstrap=60, workers=2)).result
    assert json.dumps(one["saturating"], sort_keys=True) == json.dumps(two["saturating"], sort_keys=True)
    assert json.dumps(one["comparisons"], sort_keys=True, default=str) == \
        json.dumps(two["comparisons"], sort_keys=True, default=str)


def test_paper_convention_without_bootstrap(main_sweep, tmp_path, capsys):
    root = main_sweep[0]
    out = tmp_path / "paper"
    assert main(["analyze", str(root), "--out", str(out), "--convention", "paper", "--bootstrap", "0"]) == 0
    assert f"report: {out / 'report.md'}" in capsys.readouterr().out
    fits = json.loads((out / "fits.json").read_text())
    data = load_runs(root).done
    t = data[data["arch_label"] == "T++"]
    assert fits["config"]["flops_column"] == "flops_paper"
    assert fits["labels"]["T++"]["flops_range"] == pytest.approx([t["flops_paper"].min(), t["flops_paper"].max()])
    assert "FLOP convention: paper" in (out / "report.md").read_text()
    assert fits["bootstrap"]["n_resamples"] == 0 and "intervals" not in fits["power_laws"]["T++"]["flops"]


def test_evaluations_appear_in_the_report(tmp_path):
    write_synthetic_sweep(tmp_path, archs=dict(list(THREE_ARCHS.items())[:2]), sizes=SIZES[:3])
    """result.json evaluations (the format of harness/evaluation/run_evals.py) become a Table-3-style
    table and the thinking plot of analysis/evaluations.py, embedded in the report."""
    for run in (tmp_path / "runs").iterdir():
        result = json.loads((run / "result.json").read_text())
        ppl = 30.0 if result["arch"] == "transformer" else 33.0
        evaluations = {"tasks": {"pretrain": {"ppl": ppl, "nll": math.log(ppl)}}}
        if result["arch"] == "ebt":
            evaluations["thinking"] = {"trained_steps": 2, "max_steps": 4, "sigma": 3.0, "tasks": {"pretrain": {
                "steps": [1, 2, 3, 4], "ppl": [40.0, 33.0, 32.0, 31.5], "ppl_langevin": [41.0, 34.0, 33.0, 32.5],
                "sigma": 3.0, "bon": {"1": 33.0, "2": 32.4}, "trained_steps": 2, "shift": 1.0, "gain": 0.05,
                "best_ppl": 31.5}}}
            evaluations["energy_auroc"] = 0.7
        else:
            evaluations["thinking"] = {"tasks": {"pretrain": {"ppl_trained": ppl}}}
        result["evaluations"] = evaluations
        atomic_write_json(run / "result.json", result)
    out = tmp_path / "out"
    _analyze_cli(tmp_path, out, "--bootstrap", "20")
    md = (out / "report.md").read_text()
    section = md.split("## Downstream evaluations")[1].split("\n## ")[0]
    assert "| Pretraining (held-out) | 30 | 33 | +10% |" in section and "| 31.36 | 33.43 |" in section
    assert "(thinking_EBT_S1.png)" in section and (out / "thinking_EBT_S1.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "report.html").read_text().count("data:image/png;base64,") >= 4


def test_cli_errors_are_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["analyze", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no run directories found" in err
    assert main(["analyze", str(tmp_path / "absent")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no such directory" in err


def test_config_errors_name_the_flag(tmp_path, capsys):
    write_synthetic_sweep(tmp_path, archs=dict(list(THREE_ARCHS.items())[:2]), sizes=SIZES[:2])
    for flags, expected in ((["--bootstrap", "-1"], "--bootstrap: must be >= 0 (got -1)"),
                            (["--ci", "1.5"], "--ci: must be in (0, 1) (got 1.5)"),
                            (["--convention", "nominal"], "--convention: must be one of paper, full (got 'nominal')"),
                            (["--params", "all"], "--params: must be one of 'total', 'non_embedding'"),
                            (["--reference", "GPT"], "--reference: label 'GPT' is not in the sweep; choose one of "
                                                     "EBT-S1, T++")):
        assert main(["analyze", str(tmp_path), "--out", str(tmp_path / "out"), *flags]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and expected in err, err
