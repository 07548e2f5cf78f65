"""Behaviour of both models: they learn, are deterministic under a seed, reject bad
configs by name, and the EBT's System 2 options and thinking do what they claim.

(The exact-math checks against an independent dense reference live in
tests/test_ebt_attention.py.)
"""
from __future__ import annotations

import json
import math

import pytest
import torch

from ebt_scaling.harness.contract.errors import ConfigError
from ebt_scaling.harness.contract.model_config import ModelConfig
from ebt_scaling.models.architectures import build_model
from ebt_scaling.models.base import IGNORE_INDEX
from ebt_scaling.models.ebt_options import EBTOptions

V, S, B = 64, 16, 8  # overfitting problem: vocab, context, batch



def make_model(arch: str, seed: int = 0, *, vocab=V, context=S, d_model=32, n_heads=2, n_layers=2, **ebt):
    torch.manual_seed(seed)
    cfg = ModelConfig(arch=arch, n_layers=n_layers, d_model=d_model, n_heads=n_heads, vocab_size=vocab,
                      context=context, options=EBTOptions(**ebt) if arch == "ebt" else None)
    return build_model(cfg)


def fixed_batch(vocab=V, batch=B, seq=S, seed=1):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, vocab, (batch, seq + 1), generator=g)
    return tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()


def make_optimizer(model, lr: float) -> torch.optim.AdamW:
    groups = []
    for g in model.optimizer_groups(weight_decay=0.0):
        groups.append({"params": g["params"], "weight_decay": g["weight_decay"], "lr": lr * g["lr_scale"]})
    return torch.optim.AdamW(groups, lr=lr)


def train(model, inputs, targets, steps: int, lr: float, cosine: bool = False) -> list[float]:
    """AdamW (EBT's alpha in its own group with the LR multiplier), grad clip 1.0."""
    model.train()
    opt = make_optimizer(model, lr)
    base = [g["lr"] for g in opt.param_groups]
    losses = []
    for i in range(steps):
        if cosine:
            for g, b in zip(opt.param_groups, base):
                g["lr"] = b * 0.5 * (1 + math.cos(math.pi * i / steps))
        out = model.step(inputs, targets)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(out.loss.detach())
    return losses


# --------------------------------------------------------------------------- learning
def test_transformer_overfits_one_batch():
    model = make_model("transformer")
    inputs, targets = fixed_batch()
    train(model, inputs, targets, steps=120, lr=5e-3, cosine=True)
    model.eval()
    with torch.no_grad():
        nll = model.token_nll(inputs, targets).mean().item()
    assert nll < 0.1 * math.log(V), nll


def test_ebt_overfits_one_batch_and_thinks():
    """S1 EBT (time_embed, K=2, alpha=500 learned): cross-entropy below 10% of the uniform
    guess; energy falls along the refinement steps; twice the trained steps do not hurt."""
    model = make_model("ebt")
    inputs, targets = fixed_batch()
    losses = train(model, inputs, targets, steps=120, lr=5e-3, cosine=True)
    assert losses[0] > math.log(V)  # starts far above the uniform guess (alpha = 500)
    model.eval()
    k = model.config.options.refine_steps
    torch.manual_seed(5)
    result = model.think(inputs, targets, schedule=model.thinking_schedule("final_landscape", 2 * k))
    assert result.nll.shape == (2 * k, B, S) and result.energy.shape == (2 * k + 1, B, S)
    nll = result.nll.mean(dim=(1, 2))  # after each step
    energy = result.energy.mean(dim=(1, 2))  # before each step, and of the final candidate
    assert nll[k - 1] < 0.1 * math.log(V), nll
    assert nll[-1] < 0.1 * math.log(V), nll
    assert nll[-1] <= nll[k - 1] + 0.01, f"more steps raised the loss: {nll.tolist()}"
    drop = (energy[0] - energy[k]).item()
    assert drop > 0.01, energy  # the trained steps lower the energy clearly
    steps_up = energy[1:] - energy[:-1]
    assert (steps_up <= 0.01 * drop).all(), f"energy rose along the steps: {energy.tolist()}"


# --------------------------------------------------------------------------- determinism
@pytest.mark.parametrize("arch", ["transformer", "ebt"])
def test_same_seed_is_bitwise_deterministic(arch):
    inputs, targets = fixed_batch(vocab=32, batch=2, seq=8)

    def run(seed):
        model = make_model(arch, seed, vocab=32, context=8, d_model=16)
        losses = train(model, inputs, targets, steps=3, lr=1e-3)
        return [p.detach().clone() for p in model.parameters()], torch.stack(losses)

    params_a, losses_a = run(0)
    params_b, losses_b = run(0)
    params_c, losses_c = run(1)
    assert torch.equal(losses_a, losses_b)
    assert all(torch.equal(a, b) for a, b in zip(params_a, params_b))
    assert not torch.equal(losses_a, losses_c)
    assert not all(torch.equal(a, c) for a, c in zip(params_a, params_c))


# --------------------------------------------------------------------------- configs
@pytest.mark.parametrize("build, field", [
    (lambda: ModelConfig(d_model=130, n_heads=4), "d_model"),
    (lambda: ModelConfig(d_model=6, n_heads=2), "head_dim"),  # head_dim 3 is odd: no RoPE pairs
    (lambda: ModelConfig(arch="rnn"), "arch"),
    (lambda: ModelConfig(n_layers=0), "n_layers"),
    (lambda: EBTOptions(refine_steps=0), "refine_steps"),
    (lambda: EBTOptions(langevin_sigma=-1.0), "langevin_sigma"),
    (lambda: EBTOptions(variant="bad"), "variant"),
    (lambda: EBTOptions(random_extra_steps=(3, 1)), "random_extra_steps"),
    (lambda: EBTOptions(random_extra_steps=(-1, 2)), "random_extra_steps"),
    (lambda: EBTOptions(random_extra_steps=(1,)), "random_extra_steps"),
    (lambda: EBTOptions(alpha_random_scale=0.5), "alpha_random_scale"),
    (lambda: EBTOptions(replay_fraction=1.5), "replay_fraction"),
    (lambda: ModelConfig(arch="ebt", options={"refine_steps": 0}), r"^options\.refine_steps: must be"),
    (lambda: ModelConfig(arch="rnn"), r"^arch: unknown architecture 'rnn'; registered: transformer, ebt"),
    (lambda: ModelConfig(arch="transformer", options={"refine_steps": 2}), r"^options\.refine_steps: unknown key"),
])
def test_invalid_config_names_the_field(build, field):
    with pytest.raises(ConfigError, match=field):
        build()


def test_unknown_ebt_option_is_rejected():
    with pytest.raises(TypeError):
        EBTOptions(stepz=2)


# --------------------------------------------------------------------------- System 2
def tiny_ebt(seed=0, **ebt):
    return make_model("ebt", seed, vocab=16, context=6, d_model=16, **ebt)


def fixed_start(model, seed=7):
    """Replace the random initial candidates with one fixed tensor (buffer-free models)."""
    y0 = torch.randn(2, 6, 16, generator=torch.Generator().manual_seed(seed))
    model._initial_candidates = lambda batch, seq, ref: y0.clone()
    return y0


def one_training_step(model, inputs, targets):
    before = [p.detach().clone() for p in model.parameters()]
    opt = make_optimizer(model, 1e-3)
    out = model.step(inputs, targets)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    opt.step()
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))
    return out


def test_truncate_unroll_scores_only_the_last_step():
    inputs, targets = fixed_batch(16, 2, 6)
    full, trunc = tiny_ebt(), tiny_ebt(truncate_unroll=True)
    trunc.load_state_dict(full.state_dict())
    fixed_start(full), fixed_start(trunc)
    out_full = full.step(inputs, targets)
    out_trunc = one_training_step(trunc, inputs, targets)
    torch.testing.assert_close(out_trunc.metrics["ce"], out_full.metrics["ce"])  # same last step
    torch.testing.assert_close(out_trunc.loss, out_trunc.metrics["ce"])  # loss = last step only
    assert abs(out_full.loss.item() - out_full.metrics["ce"].item()) > 1e-3  # full: mean of steps


def _count_descents(model):
    calls = []
    original = model._descend

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    model._descend = counting
    return calls


def test_random_extra_steps_run_more_refinement_steps():
    inputs, targets = fixed_batch(16, 2, 6)
    fixed = tiny_ebt(random_extra_steps=(2, 2))
    calls = _count_descents(fixed)
    one_training_step(fixed, inputs, targets)
    assert len(calls) == 2 + 2
    varied = tiny_ebt(random_extra_steps=(0, 2))
    calls = _count_descents(varied)
    counts = []
    for _ in range(8):
        calls.clear()
        one_training_step(varied, inputs, targets)
        counts.append(len(calls))
    assert set(counts) <= {2, 3, 4} and len(set(counts)) > 1, counts
    varied.eval()  # a deterministic forward takes the most extra steps (the reference's validation)
    calls.clear()
    with torch.no_grad():
        varied.step(inputs, targets)
    assert len(calls) == 2 + 2


@pytest.mark.parametrize("option", [{"langevin_sigma": 1.0}, {"alpha_random_scale": 2.0}])
def test_noise_options_make_runs_differ(option):
    """Same weights and initial candidates: with the option two seeds give different losses;
    without it (control) they give identical ones."""
    inputs, targets = fixed_batch(16, 2, 6)

    def two_seeds(model):
        fixed_start(model)
        out = []
        for seed in (1, 2):
            torch.manual_seed(seed)
            out.append(model.step(inputs, targets).loss.detach())
        return out

    noisy = tiny_ebt(**option)
    plain = tiny_ebt()
    a, b = two_seeds(noisy)
    c, d = two_seeds(plain)
    assert torch.equal(c, d)
    assert not torch.allclose(a, b)
    one_training_step(noisy, inputs, targets)


def test_langevin_noise_at_inference_changes_thinking():
    inputs, targets = fixed_batch(16, 2, 6)
    model = tiny_ebt().eval()
    runs = []
    for sigma in (0.0, 0.0, 1.0):
        torch.manual_seed(4)
        runs.append(model.think(inputs, targets, langevin_sigma=sigma).logits)
    assert torch.equal(runs[0], runs[1]) and not torch.allclose(runs[0], runs[2])


def test_best_of_n_keeps_the_lowest_final_energy():
    inputs, targets = fixed_batch(16, 2, 6)
    targets[0, -1] = IGNORE_INDEX
    model = tiny_ebt().eval()
    torch.manual_seed(9)
    singles = [model.think(inputs, targets, schedule=[0, 1, 1], samples=1) for _ in range(4)]
    torch.manual_seed(9)
    best = model.think(inputs, targets, schedule=[0, 1, 1], samples=4)
    # never worse than the first sample (the same draw as samples=1 after the same seed)
    assert (best.energy[-1] <= singles[0].energy[-1]).all()
    # and exactly the per-position minimum over the four samples, with matching NLL/logits
    final = torch.stack([r.energy[-1] for r in singles])  # (N, B, S)
    torch.testing.assert_close(best.energy[-1], final.min(0).values)
    pick = final.argmin(0)
    nll = torch.stack([r.nll[-1] for r in singles]).gather(0, pick[None])[0]
    torch.testing.assert_close(best.nll[-1], nll)
    assert (final.min(0).values < final[0]).any()  # the choice mattered somewhere


# --------------------------------------------------------------------------- bench command
def test_bench_command_smoke(capsys):
    from ebt_scaling.harness.cli.main import main

    rc = main(["bench", "--layers", "1", "--d-model", "16", "--heads", "2", "--vocab", "32", "--batch", "2",
               "--ctx", "8", "--warmup", "1", "--iters", "1", "--device", "cpu", "--json"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    rows = {r["model"]: r for r in report["results"]}
    assert set(rows) == {"Transformer++", "EBT"}
    for r in rows.values():
        assert r["step_ms"] > 0 and r["tokens_per_s"] > 0 and r["flops_per_step"] > 0
        assert r["tokens_per_step"] == 16 and r["mfu"] is None  # CPU: no peak unless given
    assert rows["EBT"]["flops_per_step"] > 2 * rows["Transformer++"]["flops_per_step"]


def test_bench_command_rejects_bad_shapes():
    from ebt_scaling.harness.cli.main import main

    with pytest.raises(SystemExit) as exc:  # argparse: not a named size
        main(["bench", "--size", "huge", "--device", "cpu"])
    assert exc.value.code == 2
    assert main(["bench", "--layers", "2", "--device", "cpu"]) == 2  # --d-model/--n-heads missing: one-line error
    assert main(["bench", "--layers", "1", "--d-model", "30", "--heads", "4", "--device", "cpu"]) == 2
