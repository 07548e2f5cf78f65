"""WSD cooldown branches: a branch started from its parent's checkpoint ends bitwise where
the same branch trained from scratch ends; the planner's branches share their parent's
learning rates up to the branch step; the analysis keeps branches out of per-axis fits."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import SIZES, comparable, plan_of, small_sweep, stop_after, write_curve_sweep

from ebt_scaling.analysis.load import load_runs
from ebt_scaling.analysis.pipeline import AnalysisConfig
from ebt_scaling.analysis.points import select_points
from ebt_scaling.analysis.result import Caveats
from ebt_scaling.harness.contract.errors import ConfigError
from ebt_scaling.harness.contract.run_dir import RunDir
from ebt_scaling.harness.contract.spec import spec_to_yaml
from ebt_scaling.harness.training.schedule import lr_at
from ebt_scaling.harness.training.trainer import train_run

# Parent: 24 steps, warmup 2 steps (0.1 x 24), WSD decay over the last 4 (0.2 x 24): decay
# from step 20. Branch: 12 steps, the same 2 warmup steps (2 / 12 of 12), decay over the last
# 2 (int(0.2 x 12)): from step 10, inside the parent's stable phase (steps 2..19).
PARENT_STEPS, BRANCH_STEPS, BRANCH_STEP = 24, 12, 10
WSD = {"schedule": "wsd", "warmup_fraction": 0.1, "decay_fraction": 0.2}


def _final_weights(run_dir) -> dict[str, torch.Tensor]:
    newest = RunDir(run_dir).checkpoints()[0]
    return torch.load(newest, map_location="cpu", weights_only=False)["model"]


@pytest.mark.parametrize("arch", ["transformer", "ebt"])
def test_a_branch_from_the_parent_checkpoint_equals_the_branch_from_scratch(tiny_spec, tmp_path, arch):
    tokens_per_step = 8 * 32
    parent = tiny_spec(arch, train={**WSD, "tokens": PARENT_STEPS * tokens_per_step},
                       tags={"keep_steps": str(BRANCH_STEP)})
    branch = tiny_spec(arch, train={**WSD, "tokens": BRANCH_STEPS * tokens_per_step, "warmup_fraction": 2 / 12},
                       tags={"cooldown_of": parent.run_id, "branch_step": str(BRANCH_STEP)})
    # The two schedules agree before the branch step and differ at it (so the test can fail).
    lrs = [[lr_at(s, spec.total_steps, spec.train) for s in range(BRANCH_STEP + 1)] for spec in (parent, branch)]
    assert lrs[0][:BRANCH_STEP] == lrs[1][:BRANCH_STEP] and lrs[0][BRANCH_STEP] > lrs[1][BRANCH_STEP]

    sweep = tmp_path / "sweep" / "runs"
    assert train_run(parent, sweep / parent.run_id, quiet=True)["status"] == "done"
    kept = sorted(p.name for p in RunDir(sweep / parent.run_id).checkpoints())
    # checkpoint_every 5: steps 5..24 were saved; the newest two rotate, step 10 is kept
    assert kept == ["step_00000010.pt", "step_00000020.pt", "step_00000024.pt"]

    # The branch, preempted one step after its start and resumed from its own checkpoint.
    path = sweep / branch.run_id
    assert train_run(branch, path, quiet=True, stop_requested=stop_after(1))["status"] == "preempted"
    from_parent = train_run(branch, path, quiet=True)
    log = RunDir(path).log_path.read_text()
    assert f"starting from its checkpoint at step {BRANCH_STEP}" in log and "resuming from step_00000011.pt" in log

    alone = tmp_path / "alone" / "runs" / branch.run_id   # no parent beside it: trains from scratch
    from_scratch = train_run(branch, alone, quiet=True)
    assert "training from scratch" in RunDir(alone).log_path.read_text()

    assert from_parent["val_loss"] == from_scratch["val_loss"]
    mine, reference = _final_weights(path), _final_weights(alone)
    assert mine.keys() == reference.keys() and all(torch.equal(mine[k], reference[k]) for k in mine)
    rows, ref_rows = comparable(RunDir(path).metrics()), comparable(RunDir(alone).metrics())
    parent_rows = comparable(RunDir(sweep / parent.run_id).metrics())
    # Its curve: the parent's rows up to the branch step, then its own (as trained alone).
    assert [r for r in rows if r["step"] <= BRANCH_STEP] == [r for r in parent_rows if r["step"] <= BRANCH_STEP]
    assert [r for r in rows if r["step"] > BRANCH_STEP] == [r for r in ref_rows if r["step"] > BRANCH_STEP]


def test_a_branch_whose_parent_differs_trains_from_scratch(tiny_spec, tmp_path):
    tokens_per_step = 8 * 32
    parent = tiny_spec(train={**WSD, "tokens": PARENT_STEPS * tokens_per_step}, tags={"keep_steps": "10"})
    other = tiny_spec(train={**WSD, "tokens": BRANCH_STEPS * tokens_per_step, "warmup_fraction": 2 / 12, "lr": 1e-3},
                      tags={"cooldown_of": parent.run_id, "branch_step": "10"})
    runs = tmp_path / "runs"
    parent_dir = runs / parent.run_id
    parent_dir.mkdir(parents=True)
    (parent_dir / "spec.yaml").write_text(spec_to_yaml(parent))
    (parent_dir / "checkpoints").mkdir()
    (parent_dir / "checkpoints" / "step_00000010.pt").write_bytes(b"never read")
    assert train_run(other, runs / other.run_id, quiet=True)["status"] == "done"
    log = RunDir(runs / other.run_id).log_path.read_text()
    assert "differs from this one in more than train.tokens" in log and "training from scratch" in log


# ------------------------------------------------------------------------------ planning
def _sweep(**overrides) -> dict:
    """conftest's small sweep, one seed, on a WSD schedule with tokens from a rule."""
    wsd = {"batch_size": 8, "schedule": "wsd", "warmup_fraction": 0.03, "decay_fraction": 0.2}
    return small_sweep(**{"name": "cd", "base": {"model": {"vocab_size": 1024, "context": 64}, "train": wsd},
                          "seeds": [0], "tokens": {"rule": "tokens_per_param", "tokens_per_param": 2}, **overrides})


def test_planned_branches_share_the_parent_learning_rate_until_their_decay():
    fractions = [0.3, 0.5, 0.75]
    plain = plan_of(_sweep())
    plan = plan_of(_sweep(cooldown={"fractions": fractions}))
    # Existing runs keep their ids and order; the branches come after them.
    assert [r.run_id for r in plan.runs[:len(plain.runs)]] == [r.run_id for r in plain.runs]
    parents = {r.run_id: r for r in plan.runs[:len(plain.runs)]}
    branches = plan.runs[len(plain.runs):]
    assert len(branches) == len(parents) * len(fractions)
    assert len({r.run_id for r in plan.runs}) == len(plan.runs)
    for b in branches:
        p = parents[b.spec.tags["cooldown_of"]]
        steps, total = b.spec.total_steps, p.spec.total_steps
        fraction = float(b.spec.tags["cooldown_fraction"])
        assert abs(steps - fraction * total) <= 0.5 and b.tokens == steps * p.spec.tokens_per_step
        at = int(b.spec.tags["branch_step"])
        mine = [lr_at(s, steps, b.spec.train) for s in range(steps)]
        theirs = [lr_at(s, total, p.spec.train) for s in range(total)]
        peak = p.spec.train.lr
        # Equal before the branch step; there the branch decays while the parent holds its peak.
        assert mine[:at] == theirs[:at] and mine[at] < peak == theirs[at] and peak in mine
        assert str(at) in p.spec.tags["keep_steps"].split(",")
        assert {k: b.spec.tags[k] for k in ("axis_value", "size", "arch_label")} == \
            {k: p.spec.tags[k] for k in ("axis_value", "size", "arch_label")}
        # Only the cooldown is trained: GPU-hours of (steps - branch step) of the parent's steps.
        assert b.gpu_hours == pytest.approx(p.gpu_hours * (steps - at) / total)
        assert b.flops["full"] == pytest.approx(p.flops["full"] * steps / total)
    # A pair's branches at one fraction share a pair id.
    pair_sizes = {}
    for b in branches:
        pair_sizes[b.pair_id] = pair_sizes.get(b.pair_id, 0) + 1
    assert set(pair_sizes.values()) == {2}
    assert any("GPU-hours count only its cooldown steps" in w for w in plan.warnings)


def test_a_branch_that_cannot_be_exact_is_skipped_with_a_warning():
    # 0.01 of the runs: fewer steps than the parents' warmup.
    plan = plan_of(_sweep(cooldown={"fractions": [0.01, 0.5]}))
    assert all(r.spec.tags.get("cooldown_fraction") != "0.01" for r in plan.runs)
    assert any(w.startswith("cooldown: fraction 0.01 skipped for 4 run(s)") for w in plan.warnings)


def test_cooldown_needs_a_wsd_schedule():
    data = _sweep(cooldown={"fractions": [0.5]})
    data["base"]["train"]["schedule"] = "cosine"
    with pytest.raises(ConfigError) as err:
        plan_of(data)
    message = str(err.value)
    assert "\n" not in message and "cooldown: needs base.train.schedule: wsd" in message


def _branched(plan) -> dict[str, set[str]]:
    """Each parent's branch fractions, by the parent's tune_stage and factors."""
    by_id = {r.run_id: r for r in plan.runs}
    out: dict[str, set[str]] = {}
    for r in plan.runs:
        if "cooldown_of" in r.spec.tags:
            t = by_id[r.spec.tags["cooldown_of"]].spec.tags
            key = f"{t['tune_stage']} lr={t['tune_lr']} tokens={t.get('tune_tokens', '1')}"
            out.setdefault(key, set()).add(r.spec.tags["cooldown_fraction"])
    return out


def test_a_tuned_sweep_branches_its_planned_runs_and_winners_not_its_trials():
    # Trials on full tokens: the trial at factor 1 is the planned run, the only one branched per cell.
    plan = plan_of(_sweep(cooldown={"fractions": [0.5]}, tune={"lr": [0.5, 1, 2]}))
    assert _branched(plan) == {"trial lr=1 tokens=1": {"0.5"}}
    assert sum("cooldown_of" in r.spec.tags for r in plan.runs) == 4   # 2 labels x 2 sizes
    assert any(w.startswith("cooldown: 8 tuning trial(s) not branched") for w in plan.warnings), plan.warnings
    # Trials on half the tokens: the planned run kept at full tokens and a full-token winner
    # (tune_stage final) are branched; the reduced-token trials (factor 1 included) are not.
    first = plan.runs[0]
    extra = [{"label": "T++", "axis_value": first.axis_value, "size": first.size_name, "factors": {"lr": 2},
              "full_tokens": True}]
    plan = plan_of(_sweep(cooldown={"fractions": [0.5]},
                        tune={"lr": [0.5, 1, 2], "token_fraction": 0.5, "extra": extra}))
    assert _branched(plan) == {"planned lr=1 tokens=1": {"0.5"}, "final lr=2 tokens=1": {"0.5"}}
    assert sum("cooldown_of" in r.spec.tags for r in plan.runs) == 5
    assert any(w.startswith("cooldown: 12 tuning trial(s) not branched") for w in plan.warnings), plan.warnings


# ------------------------------------------------------------------------------ analysis
def test_branches_stay_out_of_per_axis_fits_and_join_approach_3(tmp_path):
    runs = [{"label": "T++", "arch": "transformer", "size": SIZES[i], "steps": 40, "final": 4.0 - 0.3 * i,
             "schedule": "wsd"} for i in range(3)]
    runs += [{"label": "T++", "arch": "transformer", "size": SIZES[i], "steps": 20, "final": 4.2 - 0.3 * i,
              "schedule": "wsd", "cooldown_of": i} for i in range(3)]
    ids = write_curve_sweep(tmp_path, runs)
    data = load_runs(tmp_path)
    by_id = data.runs.set_index("run_id")
    assert all(by_id.loc[ids[3 + i], "unit"] != by_id.loc[ids[i], "unit"] for i in range(3))
    points = select_points(data, AnalysisConfig(bootstrap=0), Caveats())
    assert sorted(points.runs["run_id"]) == sorted(ids[:3])
    assert sorted(points.branches["run_id"]) == sorted(ids[3:])
    code = dict(zip(points.runs["run_id"], points.runs["unit_code"]))
    # A branch is drawn with its parent.
    assert [code[ids[i]] for i in range(3)] == list(points.branches.set_index("run_id").loc[ids[3:], "unit_code"])
    label = points.of("T++")
    assert len(label.runs) == 3 and len(label.with_branches) == 6
    assert np.unique(label.with_branches["tokens"]).size == 2


def test_a_branch_enters_only_with_its_fitted_parent(tmp_path):
    """A finished branch whose parent is unfinished has no unit to be drawn with: it is listed
    as excluded, and every unit of the bootstrap holds a fitted run."""
    runs = [{"label": "T++", "arch": "transformer", "size": SIZES[i], "steps": 40, "final": 4.0 - 0.3 * i,
             "schedule": "wsd"} for i in range(3)]
    runs += [{"label": "T++", "arch": "transformer", "size": SIZES[i], "steps": 20, "final": 4.2 - 0.3 * i,
              "schedule": "wsd", "cooldown_of": i} for i in range(3)]
    ids = write_curve_sweep(tmp_path, runs)
    (tmp_path / "runs" / ids[0] / "result.json").unlink()   # the first parent: unfinished (partial)
    points = select_points(load_runs(tmp_path), AnalysisConfig(bootstrap=50), Caveats())
    assert sorted(points.runs["run_id"]) == sorted(ids[1:3])
    assert sorted(points.branches["run_id"]) == sorted(ids[4:])
    orphan = [e for e in points.excluded if e["run_id"] == ids[3]]
    assert len(orphan) == 1 and "parent not finished" in orphan[0]["note"], points.excluded
    assert points.n_units == 2 and points.counts.shape == (50, 2)
    assert set(points.branches["unit_code"]) <= set(points.runs["unit_code"]) == {0, 1}
