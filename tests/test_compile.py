"""torch.compile of each architecture's hot path (compile_hot_path) against the eager model,
in float64: the EBT refinement step (dE/dx through torch.func inside the compiled region,
its backward derived by AOTAutograd) and the Transformer++ forward. Compiling costs tens of
seconds on two CPU cores, so the models are one layer deep."""
from __future__ import annotations

import copy

import pytest
import torch
from conftest import stop_after

from ebt_scaling.harness.contract.model_config import ModelConfig
from ebt_scaling.models.architectures import build_model
from ebt_scaling.models.base import IGNORE_INDEX
from ebt_scaling.models.ebt_options import EBTOptions


def _batch(vocab: int, b: int = 2, s: int = 6):
    g = torch.Generator().manual_seed(1)
    inputs = torch.randint(0, vocab, (b, s), generator=g)
    targets = torch.randint(0, vocab, (b, s), generator=g)
    targets[0, -2:] = IGNORE_INDEX
    return inputs, targets


def _loss_and_grads(model, inputs, targets):
    loss = model.step(inputs, targets).loss
    params = [p for p in model.parameters() if p.requires_grad]
    return loss.detach(), [g.detach() for g in torch.autograd.grad(loss, params)]


def _graphs_compiled() -> int:
    return sum(torch._dynamo.utils.counters["stats"].values())


@pytest.mark.parametrize("arch", ["ebt", "transformer"])
def test_compiled_training_step_equals_eager(arch):
    torch.manual_seed(0)
    options = EBTOptions(alpha_init=7.0) if arch == "ebt" else None  # time_embed, K = 2
    config = ModelConfig(arch=arch, n_layers=1, d_model=16, n_heads=2, vocab_size=29, context=6, init_std=0.3,
                         options=options)
    model = build_model(config).double().train()
    inputs, targets = _batch(config.vocab_size)
    if arch == "ebt":  # the same initial candidates in both runs
        y0 = torch.randn(2, 6, 29, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
        model._initial_candidates = lambda batch, seq, ref: y0.clone()
    eager_loss, eager_grads = _loss_and_grads(model, inputs, targets)
    torch.manual_seed(5)  # evaluation draws its own initial candidates
    eager_nll = model.eval().token_nll(inputs, targets).detach()

    torch._dynamo.reset()
    before = _graphs_compiled()
    model.compile_hot_path()
    compiled_loss, compiled_grads = _loss_and_grads(model.train(), inputs, targets)
    assert _graphs_compiled() > before  # it really compiled

    torch.testing.assert_close(compiled_loss, eager_loss, rtol=1e-12, atol=1e-13)
    for a, b in zip(compiled_grads, eager_grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    if arch == "ebt":  # the second-order path runs through the compiled backward
        names = [n for n, p in model.named_parameters() if p.requires_grad]
        assert compiled_grads[names.index("alpha")].abs() > 0
    torch.manual_seed(5)
    torch.testing.assert_close(model.eval().token_nll(inputs, targets), eager_nll, rtol=1e-12, atol=1e-13)


def test_a_compiled_run_resumes_exactly_and_tracks_the_eager_run(tiny_spec, tmp_path):
    """The trainer's path with `compile: true`: training, validation (EBT thinking under
    no_grad), checkpoints and an exact resume, all through the compiled hot path."""
    from ebt_scaling.harness.training.trainer import train_run

    spec = tiny_spec("ebt", compile=True, train={"tokens": 32 * 8 * 12})
    eager = train_run(tiny_spec("ebt", compile=False, train={"tokens": 32 * 8 * 12}), tmp_path / "eager", quiet=True)
    whole = train_run(spec, tmp_path / "whole", quiet=True)
    train_run(spec, tmp_path / "resumed", quiet=True, stop_requested=stop_after(5))
    resumed = train_run(spec, tmp_path / "resumed", quiet=True)
    assert resumed["val_loss"] == whole["val_loss"] and resumed["step"] == whole["step"]
    assert abs(whole["val_loss"] - eager["val_loss"]) < 1e-3 * eager["val_loss"]


def test_compiled_training_with_a_replay_buffer_equals_eager_as_the_batch_grows():
    """System 2 training of the default variant with a replay buffer: the first step has
    nothing to replay (B rows), later ones append B/2 replayed rows (B + B/2), so the compiled
    hot path sees two batch sizes. Four SGD steps, compiled against eager, from the same
    weights and the same random draws (all of them outside the compiled regions)."""
    torch.manual_seed(0)
    options = EBTOptions(variant="default", alpha_init=7.0, replay_buffer_size=8, alpha_random_scale=2.0,
                         langevin_sigma=0.5)
    config = ModelConfig(arch="ebt", n_layers=1, d_model=16, n_heads=2, vocab_size=29, context=6, init_std=0.3,
                         options=options)
    eager = build_model(config).double().train()
    compiled = copy.deepcopy(eager)
    torch._dynamo.reset()
    compiled.compile_hot_path()
    rows, seq, data = 4, config.context, torch.Generator().manual_seed(1)

    def sgd_step(model, inputs, targets, step):
        torch.manual_seed(10 + step)  # initial candidates, replay picks, noise, random alpha
        out = model.step(inputs, targets)
        params = [p for p in model.parameters() if p.requires_grad]
        grads = torch.autograd.grad(out.loss, params)
        with torch.no_grad():
            for p, g in zip(params, grads):
                p -= 0.01 * g
        return out.loss.detach(), grads, int(out.metrics["tokens"])

    graphs = []
    for step in range(4):
        inputs, targets = (torch.randint(0, config.vocab_size, (rows, seq), generator=data) for _ in range(2))
        eager_loss, eager_grads, tokens = sgd_step(eager, inputs, targets, step)
        compiled_loss, compiled_grads, compiled_tokens = sgd_step(compiled, inputs, targets, step)
        graphs.append(torch._dynamo.utils.counters["stats"]["unique_graphs"])
        # rows trained on: B, then B + B/2 (the reference's replayed half), every target a token
        assert tokens == compiled_tokens == (rows if step == 0 else rows + rows // 2) * seq
        torch.testing.assert_close(compiled_loss, eager_loss, rtol=1e-10, atol=1e-12)
        for a, b in zip(compiled_grads, eager_grads):
            torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)
    assert graphs[0] > 0 and graphs[1] - graphs[0] <= 1 and graphs[1:] == [graphs[1]] * 3  # no graph per step
