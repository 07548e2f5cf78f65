"""Sweep files, shape / token / hyperparameter rules, pairing, and `ebt-scaling plan`."""
from __future__ import annotations

import dataclasses
import json
import math
from collections import defaultdict
from pathlib import Path

import pytest
import yaml
from conftest import plan_of, small_sweep

from ebt_scaling.harness.cli.main import main
from ebt_scaling.harness.contract.model_config import ModelConfig
from ebt_scaling.harness.contract.spec import load_spec, spec_hash
from ebt_scaling.models.architectures import PAPER_SIZES
from ebt_scaling.models.flops import flops_per_token, param_counts, training_step_flops
from ebt_scaling.sweeps import rules
from ebt_scaling.sweeps.generate import expand, make_plan
from ebt_scaling.sweeps.sweep_spec import dump_sweep, load_sweep, preset_names, sweep_from_dict
from ebt_scaling.sweeps.shapes import ShapeSolver
from ebt_scaling.sweeps.sweep_spec import ShapeRule

PAPER_V, PAPER_CTX = 50277, 256


sweep = small_sweep  # the tests below read better with the short name


def groups(runs):
    by_pair = defaultdict(list)
    for r in runs:
        by_pair[r.pair_id].append(r)
    return by_pair


def step_flops(run, convention):
    return training_step_flops(run.spec.model, run.batch, run.spec.model.context, convention)


# ------------------------------------------------------------------------------ pairing
def test_tokens_pairing_shares_shape_seed_data_tokens():
    runs = plan_of(sweep()).runs
    assert len(runs) == 2 * 2 * 2  # sizes x seeds x archs
    pairs = groups(runs)
    assert len(pairs) == 4
    for members in pairs.values():
        assert sorted(r.arch for r in members) == ["ebt", "transformer"]
        t, e = members
        for attr in ("n_layers", "d_model", "n_heads", "vocab_size", "context", "ffn_hidden"):
            assert getattr(t.spec.model, attr) == getattr(e.spec.model, attr)
        assert t.spec.seed == e.spec.seed and t.spec.data == e.spec.data
        assert t.spec.train == e.spec.train  # tokens, batch, LR, schedule
        assert t.tokens == e.tokens and t.spec.tags["pair_id"] == e.spec.tags["pair_id"] == t.pair_id
        assert e.flops["full"] > t.flops["full"]  # same tokens: EBT spends more compute


@pytest.mark.parametrize("convention", ["paper", "full"])
def test_flops_pairing_shares_flops_and_ebt_gets_fewer_tokens(convention):
    data = sweep(pairing="flops", flops={"convention": convention}, tokens={"rule": "fixed", "tokens": 10_000_000})
    for members in groups(plan_of(data).runs).values():
        t = next(r for r in members if r.arch == "transformer")
        e = next(r for r in members if r.arch == "ebt")
        assert e.tokens < t.tokens
        assert t.spec.model.d_model == e.spec.model.d_model and t.spec.seed == e.spec.seed
        assert abs(e.flops[convention] - t.flops[convention]) <= step_flops(e, convention) / 2 + 1
        assert t.budget == e.budget == pytest.approx(t.flops[convention])


def test_pair_ids_differ_between_points_and_seeds():
    runs = plan_of(sweep()).runs
    keys = {(r.size_name, r.seed): r.pair_id for r in runs}
    assert len(set(keys.values())) == len(keys) == 4


# ------------------------------------------------------------------------------ token rules
def test_chinchilla_20_tokens_per_param():
    assert rules.chinchilla_tokens(1e6) == 20e6
    data = sweep(tokens={"rule": "tokens_per_param"}, param_count="total")
    runs = plan_of(data).runs
    assert len({r.tokens for r in runs}) == 2  # one per size, shared by the pair
    for r in runs:
        n_ref = param_counts(dataclasses.replace(r.spec.model, arch="transformer", options=None))["total"]  # N of the reference
        assert abs(r.tokens - 20 * n_ref) <= r.batch * r.spec.model.context / 2


def test_compute_optimal_law_and_fixed_steps():
    assert rules.compute_optimal_params(1.2e21, 1 / math.sqrt(120), 0.5) == pytest.approx(math.sqrt(1e19))
    assert rules.compute_for_params(math.sqrt(1e19), 1 / math.sqrt(120), 0.5) == pytest.approx(1.2e21)
    runs = plan_of(sweep(tokens={"rule": "steps", "steps": 7})).runs
    assert {r.steps for r in runs} == {7} and all(r.tokens == 7 * 8 * 64 for r in runs)


# ------------------------------------------------------------------------------ OLMo / paper rules
def test_olmo_formulas_at_108m():
    assert rules.olmo_lr(108e6) == pytest.approx(0.0047)
    assert rules.olmo_batch_tokens(108e6) == pytest.approx(2048 * 160)
    assert rules.olmo_lr(8 * 108e6) == pytest.approx(0.0047 / 2)
    assert rules.olmo_batch_tokens(8 * 108e6) == pytest.approx(2048 * 160 * 4)
    from ebt_scaling.sweeps.rules import BatchRule, WarmupRule
    assert rules.batch_size(BatchRule(rule="olmo", round="multiple_of_8"), 108e6, 2048, 1) == 160
    assert rules.batch_size(BatchRule(rule="olmo", round="pow2"), 108e6, 2048, 1) == 128
    assert rules.olmo_beta2(524_287) == 0.99 and rules.olmo_beta2(524_288) == 0.95
    assert rules.warmup_fraction(WarmupRule(rule="olmo"), 1e6, 4_000_000, 0.05) == 0.25


def test_sweep_file_values_are_typed_as_read_and_the_source_is_no_key():
    """Counts, per-architecture MFUs and tuning grids are typed before the dataclasses are
    built; the file a sweep came from is its source, neither read nor written as a key."""
    data = {**dump_sweep(load_sweep("tiny")), "tokens": {"rule": "fixed", "tokens": "1e6"},
            "throughput": {"mfu": {"ebt": 1}}, "tune": {"lr": [2, 0.5, 1]}}
    sweep = sweep_from_dict(data, "here.yaml")
    assert sweep.tokens.tokens == 1_000_000 and isinstance(sweep.tokens.tokens, int)
    assert sweep.throughput.mfu == {"ebt": 1.0} and isinstance(sweep.throughput.mfu["ebt"], float)
    assert sweep.tune.lr == (0.5, 1.0, 2.0)
    assert sweep.source == "here.yaml" and "source" not in dump_sweep(sweep)
    assert sweep == sweep_from_dict(data, "elsewhere.yaml")


def test_olmo_rules_in_a_plan():
    data = sweep(hparams={"lr": {"rule": "olmo"}, "batch": {"rule": "olmo", "round": "multiple_of_8"},
                          "warmup": {"rule": "olmo"}, "beta2": {"rule": "olmo"}},
                 tokens={"rule": "tokens_per_param"})
    runs = plan_of(data).runs
    for members in groups(runs).values():
        assert len({(r.lr, r.batch, r.spec.train.betas, r.spec.train.warmup_fraction) for r in members}) == 1
    for r in (r for r in runs if r.arch == "transformer"):
        n = r.params["total"]
        assert r.lr == pytest.approx(rules.olmo_lr(n))
        assert r.batch == rules.round_batch(rules.olmo_batch_tokens(n) / 64, "multiple_of_8")
        assert r.spec.train.betas[1] == 0.99  # tiny batches
        assert r.spec.train.warmup_fraction == pytest.approx(min(0.5, n / r.tokens))


def test_ladder_sizes_match_models_sizes():
    data = sweep(base={"model": {"vocab_size": PAPER_V, "context": PAPER_CTX}}, seeds=[0],
                 param_count="non_embedding", axis={"name": "parameters", "values": list(PAPER_SIZES)},
                 hparams={"lr": {"rule": "paper"}, "batch": {"rule": "sqrt_params"}}, tokens={"rule": "steps", "steps": 1})
    runs = plan_of(data).runs
    assert {r.size_name for r in runs} == set(PAPER_SIZES)
    for r in runs:
        named = PAPER_SIZES[r.size_name]
        assert r.shape == (named.n_layers, named.d_model, named.n_heads)
        assert r.lr == named.peak_lr
    batch = {r.size_name: r.batch for r in runs}
    assert batch["xxs"] == 32 and batch["large"] == 256  # batch proportional to sqrt(params)
    small = next(r for r in runs if r.size_name == "small" and r.arch == "transformer")
    assert batch["small"] == round(32 * math.sqrt(small.params["non_embedding"] / 6.18e6))  # 91 (the paper: 90)
    # the paper_nlp preset's table gives the paper's exact batches
    preset = {r.size_name: r.batch for r in expand(load_sweep("paper_nlp"))}
    assert preset == {"xxs": 32, "xs": 46, "small": 90, "medium": 170, "large": 256}


def test_paper_lr_interpolates_between_ladder_sizes():
    lo, hi = PAPER_SIZES["xxs"], PAPER_SIZES["xs"]
    n_lo = param_counts(ModelConfig(n_layers=lo.n_layers, d_model=lo.d_model, n_heads=lo.n_heads))["non_embedding"]
    n_hi = param_counts(ModelConfig(n_layers=hi.n_layers, d_model=hi.d_model, n_heads=hi.n_heads))["non_embedding"]
    mid = rules.paper_lr(None, math.sqrt(n_lo * n_hi))
    assert mid == pytest.approx(math.sqrt(lo.peak_lr * hi.peak_lr))
    assert rules.paper_lr(None, 10.0) == PAPER_SIZES["4xs"].peak_lr  # clamped at the ends


# ------------------------------------------------------------------------------ shape rule
@pytest.mark.parametrize("count", ["total", "non_embedding"])
def test_aspect_rule_hits_targets_within_5_percent(count):
    solver = ShapeSolver(ModelConfig(vocab_size=PAPER_V, context=PAPER_CTX), count, ShapeRule(aspect=64, head_dim=64))
    for target in (2e7, 5e7, 1e8, 3e8, 1e9, 7e9):
        solved = solver.solve(target)
        s = solved.shape
        assert solved.warning is None
        assert abs(solved.achieved / target - 1) <= 0.05
        assert s.d_model % 64 == 0 and s.n_heads == s.d_model // 64
        cfg = ModelConfig(n_layers=s.n_layers, d_model=s.d_model, n_heads=s.n_heads, vocab_size=PAPER_V)
        assert solved.achieved == param_counts(cfg)[count]
        assert 16 <= s.d_model / s.n_layers <= 256  # within aspect_slack (4) of 64


def test_aspect_rule_quadratic_matches_param_counts():
    template = ModelConfig(arch="ebt", vocab_size=777, context=32)
    solver = ShapeSolver(template, "total", ShapeRule(head_dim=8))
    for L in (1, 3, 10):
        a, b, c = solver._quadratic(L)
        for d in (8, 40, 1000):
            cfg = ModelConfig(arch="ebt", n_layers=L, d_model=d, n_heads=1, vocab_size=777)
            assert a * d * d + b * d + c == param_counts(cfg)["total"]


def test_aspect_rule_warns_when_impossible():
    data = sweep(base={"model": {"vocab_size": PAPER_V, "context": PAPER_CTX}},
                 axis={"name": "parameters", "values": [1000, 5e7]})
    plan = plan_of(data)
    assert len(plan.warnings) == 1 and "1000 params" in plan.warnings[0] and "tolerance" in plan.warnings[0]
    small = next(r for r in plan.runs if r.axis_value == "1000")
    assert small.shape == (1, 64, 1) and small.warnings


def test_ladder_rule_picks_nearest_and_warns():
    data = sweep(base={"model": {"vocab_size": PAPER_V, "context": PAPER_CTX}}, param_count="non_embedding",
                 shape={"rule": "ladder"}, axis={"name": "parameters", "values": [6.2e6, 3e7]})
    plan = plan_of(data)
    assert [r.size_name for r in plan.runs[::4]] == ["xxs", "small"]  # 6.20M (-0.0%); 49.6M nearest in log
    assert len(plan.warnings) == 1 and "3e+07" in plan.warnings[0]


# ------------------------------------------------------------------------------ budgets
def test_isoflop_grid_tokens_are_budget_over_flops_per_token():
    sweep_ = load_sweep("isoflop")
    runs = expand(sweep_)
    budgets = sorted({r.budget for r in runs})
    assert len(budgets) == 5 and budgets[0] == pytest.approx(1e17) and budgets[-1] == pytest.approx(1e19)
    for budget in budgets:
        at = [r for r in runs if r.budget == budget]
        t_runs = [r for r in at if r.arch == "transformer" and r.seed == 0]  # the preset repeats seed 1 at 1e17
        assert len(t_runs) == sweep_.axis.points
        params = sorted(r.params["total"] for r in t_runs)
        ratios = [b / a for a, b in zip(params, params[1:])]
        assert all(1.5 < q < 2.7 for q in ratios)  # log-spaced by ~2 around the optimum
        for r in at:
            fpt = flops_per_token(r.spec.model, "full", r.spec.model.context)
            assert r.flops_per_token["full"] == fpt
            assert abs(r.tokens - budget / fpt) <= r.batch * r.spec.model.context / 2
    assert not make_plan(sweep_).warnings


def test_budget_sizes_do_not_depend_on_the_other_budgets():
    # optimum() once warm-started from the previous budget's ratio: at 7.94e17 the 41-budget
    # isoflop grid chose L11-d672 where the budget planned alone chose L10-d640
    from ebt_scaling.sweeps.sweep_spec import axis_values
    base = load_sweep("isoflop")
    long = dataclasses.replace(base, axis=dataclasses.replace(base.axis, values={"start": 1e17, "stop": 1e19, "num": 41}))
    plan = make_plan(long)
    for budget in axis_values(long)[16:21]:
        alone = dataclasses.replace(base, axis=dataclasses.replace(base.axis, values=[budget]))
        assert sorted(r.run_id for r in make_plan(alone).runs) == \
            sorted(r.run_id for r in plan.runs if r.budget == budget), budget


def test_compute_axis_places_the_20_tokens_per_param_optimum():
    data = sweep(base={"model": {"vocab_size": PAPER_V, "context": PAPER_CTX}}, seeds=[0],
                 axis={"name": "compute", "values": {"start": 1e18, "stop": 1e20, "num": 3}},
                 tokens={"rule": "tokens_per_param"})
    runs = [r for r in plan_of(data).runs if r.arch == "transformer"]
    assert len(runs) == 3
    for r in runs:
        assert r.flops["full"] == pytest.approx(r.budget, rel=1e-3)
        assert 14 < r.tokens / r.params["total"] < 28  # 20, up to the discreteness of shapes


# ------------------------------------------------------------------------------ ids
def test_run_ids_stable_across_loads_and_distinct():
    for name in ("tiny", "isoflop", "paper_nlp"):
        a, b = expand(load_sweep(name)), expand(load_sweep(name))
        assert [r.run_id for r in a] == [r.run_id for r in b]
        assert [r.pair_id for r in a] == [r.pair_id for r in b]
        ids = [r.run_id for r in a]
        assert len(set(ids)) == len(ids)
        assert all(r.run_id == spec_hash(r.spec) == r.spec.run_id for r in a)


def test_run_ids_change_with_the_spec_not_the_tags():
    base = {r.run_id for r in plan_of(sweep()).runs}
    renamed = {r.run_id for r in plan_of(sweep(name="other")).runs}
    assert base == renamed  # the sweep name is a tag only
    longer = {r.run_id for r in plan_of(sweep(tokens={"rule": "fixed", "tokens": 131072})).runs}
    assert not base & longer


def test_duplicate_runs_are_planned_once_with_a_warning():
    data = sweep(axis={"name": "parameters", "values": ["4xs", {"n_layers": 2, "d_model": 128, "n_heads": 2}]})
    plan = plan_of(data)
    assert len(plan.runs) == 4 and len({r.run_id for r in plan.runs}) == 4
    assert any("planned once" in w for w in plan.warnings)


def test_tags_label_every_run():
    for r in plan_of(sweep()).runs:
        tags = r.spec.tags
        assert {"sweep", "pair_id", "arch_label", "axis", "axis_value", "size", "seed"} <= set(tags)
        assert all(isinstance(v, str) for v in tags.values())
        assert tags["sweep"] == "t" and tags["arch_label"] == r.arch_label and tags["seed"] == str(r.seed)


def test_system2_options_reach_the_ebt_config():
    data = sweep(architectures=[{"label": "T++", "arch": "transformer"}, {"label": "S1", "arch": "ebt"},
                                {"label": "S2", "arch": "ebt", "options": {"langevin_sigma": 3.0, "truncate_unroll": True,
                                                                       "random_extra_steps": [2, 2]}}])
    runs = plan_of(data).runs
    s2 = [r for r in runs if r.arch_label == "S2"]
    assert s2 and all(r.spec.model.options.is_system2 and r.spec.model.options.langevin_sigma == 3.0 for r in s2)
    assert all(len(m) == 3 for m in groups(runs).values())


# ------------------------------------------------------------------------------ presets / CLI
def test_tiny_preset_has_four_sizes_per_architecture():
    sw = load_sweep("tiny")
    runs = expand(sw)
    by_arch = defaultdict(set)
    for r in runs:
        by_arch[r.arch].add(r.shape)
        assert r.spec.data.source == "shakespeare" and r.spec.model.vocab_size <= 2048
        assert r.spec.model.n_layers <= 2 and 32 <= r.spec.model.d_model <= 128
    assert set(by_arch) == {"transformer", "ebt"} and all(len(s) >= 4 for s in by_arch.values())
    assert sw.pairing == "tokens" and len(runs) >= 8


def test_every_preset_plans():
    assert {"tiny", "paper_nlp", "isoflop", "data_scaling"} <= set(preset_names())
    for name in preset_names():
        sw = load_sweep(name)
        runs = expand(sw)
        assert runs and all(r.gpu_hours > 0 for r in runs), name
    data = expand(load_sweep("data_scaling"))
    assert len({r.shape for r in data}) == 1 and len({r.tokens for r in data}) == 5


def test_plan_json_parses(capsys):
    assert main(["plan", "tiny", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    # 4 sizes x 2 architectures, plus a second seed at the two smallest sizes (repeat)
    assert len(out["runs"]) == 12 and out["totals"]["all"]["runs"] == 12
    assert sorted((r["size"], r["seed"]) for r in out["runs"] if r["seed"] == 1) == \
        [("L1-d32", 1), ("L1-d32", 1), ("L1-d64", 1), ("L1-d64", 1)]
    row = out["runs"][0]
    assert {"run_id", "pair_id", "arch_label", "n_layers", "d_model", "n_heads", "params_total",
            "params_non_embedding", "tokens", "flops", "batch", "lr", "gpu_hours"} <= set(row)
    assert set(row["flops"]) == {"paper", "full"}


def test_plan_prints_table_header_and_warnings(tmp_path, capsys):
    data = sweep(base={"model": {"vocab_size": PAPER_V, "context": PAPER_CTX}}, axis={"name": "parameters",
                                                                                    "values": [1000]})
    assert main(["plan", _write(data, tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "T++: 20% MFU of 989 TFLOP/s (documented default" in out and "totals:" in out
    assert "EBT: 5% MFU of 989 TFLOP/s (documented default" in out
    assert "warning: size target 1000 params" in out


def test_write_materialises_loadable_specs(tmp_path, capsys):
    out = tmp_path / "sweep"
    assert main(["plan", "tiny", "--write", str(out)]) == 0
    runs = expand(load_sweep("tiny"))
    dirs = sorted(p.name for p in (out / "runs").iterdir())
    assert dirs == sorted(r.run_id for r in runs)
    for d in dirs:
        spec = load_spec(out / "runs" / d / "spec.yaml")
        assert spec.run_id == d
    plan = json.loads((out / "plan.json").read_text())
    assert [r["run_id"] for r in plan["runs"]] == [r.run_id for r in runs]
    # the resolved sweep reproduces the same runs
    assert [r.run_id for r in expand(load_sweep(out / "sweep.yaml"))] == [r.run_id for r in runs]
    # a second write leaves identical specs alone
    before = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/spec.yaml")}
    assert main(["plan", "tiny", "--write", str(out)]) == 0
    assert {p: p.stat().st_mtime_ns for p in out.glob("runs/*/spec.yaml")} == before


def test_write_refuses_a_foreign_spec_and_writes_nothing(tmp_path, capsys):
    runs = expand(load_sweep("tiny"))
    out = tmp_path / "w"
    victim = out / "runs" / runs[0].run_id / "spec.yaml"
    victim.parent.mkdir(parents=True)
    other = runs[1].spec
    from ebt_scaling.harness.contract.spec import spec_to_yaml
    victim.write_text(spec_to_yaml(other))
    assert main(["plan", "tiny", "--write", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(victim) in err
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == [
        "runs", f"runs/{runs[0].run_id}", f"runs/{runs[0].run_id}/spec.yaml"]


def test_bench_plan_runs(capsys):
    assert main(["bench-plan", "--runs", "200", "--repeat", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["runs"] == 200 and out["median_s"] > 0


def _write(data: dict, folder: Path) -> str:
    path = Path(folder) / "s.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)
