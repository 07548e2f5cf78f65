"""Optimizer groups and their learning rates: each group's own peak and floor (EBT's alpha
under EBTOptions.alpha_lr_floor), the absolute train.warmup_steps, weight-decay membership.

References are independent of the schedule code: torch.optim.lr_scheduler replayed on a
real AdamW, and the schedule as it was before groups had floors, copied below."""
from __future__ import annotations

import math

import pytest
import torch
from conftest import plan_of, small_sweep, stop_after

from ebt_scaling.harness.contract.errors import ConfigError
from ebt_scaling.harness.contract.run_dir import RunDir
from ebt_scaling.harness.contract.spec import TrainSpec, identity_dict, spec_from_dict
from ebt_scaling.harness.training import trainer
from ebt_scaling.harness.training.schedule import first_lr_difference, lr_at
from ebt_scaling.models.architectures import build_model
from ebt_scaling.sweeps.cooldown import branch_schedule

MULTIPLIER = 1500.0  # EBTOptions.alpha_lr_multiplier's default


def torch_warmup_then_cosine(train: TrainSpec, total: int, warmup: int, scales: list[float],
                             eta_min: float | None) -> list[list[float]]:
    """Per-step LRs of an AdamW with one group per lr scale: LambdaLR's linear warmup
    ((s + 1) / warmup of the peak), then CosineAnnealingLR down to eta_min, one absolute floor
    for every group (the reference's scheduler); eta_min None: LambdaLR's cosine to each
    group's own peak x min_lr_ratio instead. Each step really steps the optimizer."""
    params = [torch.nn.Parameter(torch.ones(2)) for _ in scales]
    opt = torch.optim.AdamW([{"params": [p], "lr": train.lr * s} for p, s in zip(params, scales)], lr=train.lr)
    span, m = total - warmup - 1, train.min_lr_ratio

    def factor(s: int) -> float:
        if s < warmup:
            return (s + 1) / warmup
        return m + (1 - m) * 0.5 * (1 + math.cos(math.pi * (s - warmup) / span))

    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, factor if eta_min is None else lambda s: (s + 1) / warmup)
    out = []
    for s in range(total):
        if s == warmup and eta_min is not None:
            for g in opt.param_groups:
                g["lr"] = g["initial_lr"]  # the cosine starts at the peak
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=span, eta_min=eta_min)
        out.append([g["lr"] for g in opt.param_groups])
        for p in params:
            p.grad = torch.ones_like(p)
        opt.step()
        scheduler.step()
    return out


def schedule_before_group_floors(step: int, total_steps: int, train: TrainSpec) -> float:
    """lr_at as it was before groups had their own floors (the trainer multiplied it by lr_scale)."""
    peak, floor = train.lr, train.lr * train.min_lr_ratio
    warmup = int(train.warmup_fraction * total_steps)
    if step < warmup:
        return peak * (step + 1) / warmup
    if train.schedule == "constant":
        return peak
    if train.schedule == "cosine":
        progress = (step - warmup) / max(1, total_steps - warmup - 1)
        return floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * min(1.0, progress)))
    decay_start = total_steps - max(1, int(train.decay_fraction * total_steps))
    if step < decay_start:
        return peak
    progress = (step - decay_start + 1) / (total_steps - decay_start)
    return peak + (floor - peak) * min(1.0, progress)


def test_shared_floor_is_the_reference_scheduler_for_every_group():
    train = TrainSpec(lr=1.2e-3, warmup_steps=10, min_lr_ratio=0.1)
    total = 60
    ref = torch_warmup_then_cosine(train, total, 10, [1.0, MULTIPLIER], eta_min=train.lr * 0.1)
    mine = [[lr_at(s, total, train), lr_at(s, total, train, MULTIPLIER, 1.0)] for s in range(total)]
    assert mine == [pytest.approx(r, rel=1e-9) for r in ref]
    # alpha goes from 1500x peak at the end of warmup to the shared floor, peak / 10
    assert mine[10][1] == pytest.approx(MULTIPLIER * train.lr) and mine[-1][1] == pytest.approx(train.lr / 10)


def test_scaled_floor_keeps_alpha_at_its_multiple_of_the_shared_lr():
    train = TrainSpec(lr=1.2e-3, warmup_steps=10, min_lr_ratio=0.1)
    total = 60
    ref = torch_warmup_then_cosine(train, total, 10, [1.0, MULTIPLIER], eta_min=None)
    mine = [[lr_at(s, total, train), lr_at(s, total, train, MULTIPLIER, MULTIPLIER)] for s in range(total)]
    assert mine == [pytest.approx(r, rel=1e-9) for r in ref]
    assert all(a == pytest.approx(MULTIPLIER * b, rel=1e-12) for b, a in mine)
    assert mine[-1][1] == pytest.approx(150 * train.lr)


@pytest.mark.parametrize("schedule", ["cosine", "wsd", "constant"])
def test_groups_whose_floor_scales_with_their_peak_keep_their_learning_rates_bit_for_bit(schedule):
    for total, fraction in ((1, 0.0), (7, 0.3), (100, 0.05), (333, 0.11)):
        train = TrainSpec(lr=3e-4, schedule=schedule, warmup_fraction=fraction, min_lr_ratio=0.07)
        for scale in (1.0, MULTIPLIER, 0.37):
            for s in range(total):
                before = schedule_before_group_floors(s, total, train) * scale
                assert lr_at(s, total, train, scale, scale) == before
                assert lr_at(s, total, train, scale) == before


def test_shared_floor_under_wsd_and_constant():
    # wsd: hold the group's peak, then decay linearly to the shared floor; constant: the peak.
    train = TrainSpec(lr=1.0, schedule="wsd", warmup_steps=4, decay_fraction=0.5, min_lr_ratio=0.1)
    lrs = [lr_at(s, 20, train, 10.0, 1.0) for s in range(20)]
    assert lrs[:4] == pytest.approx([2.5, 5.0, 7.5, 10.0]) and lrs[4:10] == [10.0] * 6
    assert lrs[10:] == pytest.approx([10 + (0.1 - 10) * (k + 1) / 10 for k in range(10)])
    constant = TrainSpec(lr=1.0, schedule="constant", warmup_steps=4)
    assert [lr_at(s, 20, constant, 10.0, 1.0) for s in range(4, 20)] == [10.0] * 16


def test_warmup_steps_replaces_the_fraction():
    train = TrainSpec(lr=2.0, schedule="constant", warmup_steps=7)
    assert [lr_at(s, 1000, train) for s in range(9)] == pytest.approx([2 * (s + 1) / 7 for s in range(7)] + [2, 2])
    none = TrainSpec(lr=2.0, schedule="constant", warmup_steps=0)
    assert lr_at(0, 1000, none) == 2.0
    # its default leaves run ids as they were
    assert "warmup_steps" not in identity_dict(TrainSpec())


def test_cooldown_branches_keep_an_absolute_warmup_and_check_alpha_floor():
    parent = TrainSpec(tokens=100 * 256, batch_size=8, schedule="wsd", warmup_steps=10, decay_fraction=0.2)
    branch = branch_schedule(parent, 100, 256, 0.5)
    assert branch.train.warmup_steps == 10 and branch.steps == 50
    assert first_lr_difference(branch.branch_step, branch.steps, branch.train, 100, parent) is None
    # min_lr_ratio 1: the shared schedule is flat after warmup, yet a group with the shared
    # floor still decays, so runs of different lengths differ there
    flat = TrainSpec(lr=1.0, warmup_steps=2, min_lr_ratio=1.0)
    assert [lr_at(s, 10, flat) for s in range(2, 10)] == [1.0] * 8
    assert first_lr_difference(10, 10, flat, 20, flat) == 3


def test_tuning_scales_an_absolute_warmup():
    data = small_sweep(tune={"warmup": [0.5, 1, 2], "equal_trials": False})
    data["base"]["train"]["warmup_steps"] = 10  # of 128 steps
    plan = plan_of(data)
    assert {r.spec.train.warmup_steps for r in plan.runs} == {5, 10, 20}
    assert {r.spec.train.warmup_fraction for r in plan.runs} == {TrainSpec.warmup_fraction}


@pytest.mark.parametrize("train, message", [
    ({"warmup_steps": -1}, "spec: train.warmup_steps: must be a whole number >= 0 or null, got -1"),
    ({"warmup_steps": 10, "warmup_fraction": 0.1},
     "spec: train.warmup_steps: replaces warmup_fraction, which is set too (0.1); give one of the two"),
    ({"warmup_steps": 10000, "tokens": 32 * 8 * 107},
     "spec: train.warmup_steps: 10000 is not below the run's 107 steps; lower it or use warmup_fraction"),
])
def test_warmup_steps_errors_are_one_line(tiny_spec, train, message):
    with pytest.raises(ConfigError) as err:
        tiny_spec(train=train)
    assert str(err.value) == message


def test_alpha_lr_floor_error_names_the_choices():
    with pytest.raises(ConfigError) as err:
        spec_from_dict({"model": {"arch": "ebt", "options": {"alpha_lr_floor": "absolute"}}})
    assert str(err.value) == "spec: model.options.alpha_lr_floor: must be one of 'scaled', 'shared'; got 'absolute'"


def test_decaying_norms_and_embeddings_decays_everything_but_alpha(tiny_spec):
    spec = tiny_spec("ebt", train={"decay_norms_and_embeddings": True, "weight_decay": 0.01})
    model = build_model(spec.model)
    groups = trainer.build_optimizer(model, spec.train, torch.device("cpu")).param_groups
    assert [(len(g["params"]), g["weight_decay"]) for g in groups] == [(len(list(model.parameters())) - 1, 0.01),
                                                                        (1, 0.0)]
    assert groups[1]["params"][0] is model.alpha
    assert {id(p) for p in groups[0]["params"]} == {id(p) for p in model.parameters() if p is not model.alpha}
    tpp = tiny_spec("transformer", train={"decay_norms_and_embeddings": True, "weight_decay": 0.01})
    model = build_model(tpp.model)
    groups = trainer.build_optimizer(model, tpp.train, torch.device("cpu")).param_groups
    assert len(groups) == 1 and groups[0]["weight_decay"] == 0.01
    assert {id(p) for p in groups[0]["params"]} == {id(p) for p in model.parameters()}


def test_alpha_is_never_decayed_by_default_either(tiny_spec):
    model = build_model(tiny_spec("ebt").model)
    groups = trainer.build_optimizer(model, TrainSpec(), torch.device("cpu")).param_groups
    decayed = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    assert id(model.alpha) not in decayed and decayed  # matrices are decayed, alpha is not


@pytest.mark.parametrize("floor", ["shared", "scaled"])
def test_a_training_run_steps_alpha_with_its_own_floor(tiny_spec, tmp_path, monkeypatch, floor):
    """6 optimizer steps of a tiny EBT: the LRs its AdamW steps with, read in a step hook."""
    seen, build = [], trainer.build_optimizer

    def recording(model, train, device):
        optimizer = build(model, train, device)
        optimizer.register_step_pre_hook(lambda opt, args, kwargs: seen.append([g["lr"] for g in opt.param_groups]))
        assert optimizer.param_groups[-1]["params"] == [model.alpha]
        return optimizer

    monkeypatch.setattr(trainer, "build_optimizer", recording)
    # warmup: 2 steps either way (int(0.4 x 6)); the fraction keeps the default path's spec
    warmup = {"warmup_steps": 2} if floor == "shared" else {"warmup_fraction": 0.4}
    spec = tiny_spec("ebt", model={"options": {"refine_steps": 1, "alpha_lr_floor": floor}},
                     train={"tokens": 32 * 8 * 6, **warmup}, eval={"points": 1, "batches": 1})
    assert trainer.train_run(spec, tmp_path / "run", quiet=True)["status"] == "done"
    scales = [1.0, 1.0, MULTIPLIER]  # matrices (decayed), norms and embeddings, alpha
    ref = torch_warmup_then_cosine(spec.train, 6, 2, scales, eta_min=spec.train.lr * 0.1 if floor == "shared" else None)
    assert seen == [pytest.approx(r, rel=1e-9) for r in ref]
    if floor == "scaled":  # the default: exactly the LRs of before
        assert seen == [[schedule_before_group_floors(s, 6, spec.train) * k for k in scales] for s in range(6)]


def test_a_checkpoint_from_before_group_floors_resumes_with_the_scaled_floor(tiny_spec, tmp_path, monkeypatch):
    """An optimizer checkpoint written before param groups had floor_scale (its groups lack the
    key, and AdamW.load_state_dict keeps the saved groups) resumes with the LRs of then: every
    group's schedule the shared one x lr_scale, whatever alpha_lr_floor the spec now says."""
    spec = tiny_spec("ebt", model={"options": {"refine_steps": 1, "alpha_lr_floor": "shared"}},
                     train={"tokens": 32 * 8 * 6, "warmup_fraction": 0.4}, eval={"points": 1, "batches": 1})
    first = trainer.train_run(spec, tmp_path / "run", quiet=True, stop_requested=stop_after(3))
    assert first == {"status": "preempted", "step": 3}
    (path,) = RunDir(tmp_path / "run").checkpoints()
    state = torch.load(path, weights_only=True)
    for group in state["optimizer"]["param_groups"]:
        del group["floor_scale"]
    torch.save(state, path)

    seen, build = [], trainer.build_optimizer

    def recording(model, train, device):
        optimizer = build(model, train, device)

        def hook(opt, args, kwargs):
            assert all("floor_scale" not in g for g in opt.param_groups)  # the old checkpoint's groups
            seen.append([g["lr"] for g in opt.param_groups])

        optimizer.register_step_pre_hook(hook)
        return optimizer

    monkeypatch.setattr(trainer, "build_optimizer", recording)
    assert trainer.train_run(spec, tmp_path / "run", quiet=True)["status"] == "done"
    scales = [1.0, 1.0, MULTIPLIER]  # matrices (decayed), norms and embeddings, alpha
    assert seen == [[schedule_before_group_floors(s, 6, spec.train) * k for k in scales] for s in range(3, 6)]
    shared = torch_warmup_then_cosine(spec.train, 6, 2, scales, eta_min=spec.train.lr * 0.1)
    assert seen[0][2] != pytest.approx(shared[3][2])  # the spec's own floor would have given other LRs
