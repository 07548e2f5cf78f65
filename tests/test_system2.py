"""The EBT's System 2 against small dense re-implementations of the reference code's
behaviour (alexiglad/EBT, docs/ebt.md), written here and sharing nothing with
models/ebt.py but the weights:

* validation: the earlier landscapes once, the last one 1 + (most extra steps) times, the
  trained Langevin noise before every step, the trained step size;
* the replay buffer: a FIFO list of (sequence, final candidate) records; a training forward
  appends min(int(B x fraction), held) distinct records, which continue their own chains on
  their own sequences; only the fresh rows are stored afterwards; training only;
* the random step size: one factor per position, drawn once per forward or once per step;
* the step counts of the reference S2 preset (2 or 3 steps in training, 3 at validation).

Energies come from the dense-mask reference of tests/test_ebt_attention.py; everything runs
in float64. The vocabulary is 64 wide, so the model's padded candidates are exactly V wide
and the model's random draws and the dense loops' draws have the same shapes.
"""
from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from test_ebt_attention import reference_energy, tiny_ebt

from ebt_scaling.models import ebt as ebt_module
from ebt_scaling.models.base import IGNORE_INDEX

V = 64  # a multiple of 64: no vocabulary padding
CONTEXT = 6
ALPHA = 6.0
SIGMA = 0.7
# The reference S2 preset in this project's terms: 1 base step, 1 or 2 extra steps.
S2_STEPS = dict(steps=1, random_extra_steps=(1, 2))


def s2_model(variant: str = "time_embed", **options):
    return tiny_ebt(variant, vocab=V, context=CONTEXT, alpha=ALPHA, **options)


def random_batch(rows: int, seed: int, seq: int = CONTEXT) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    inputs = torch.randint(0, V, (rows, seq), generator=g)
    targets = torch.randint(0, V, (rows, seq), generator=g)
    targets[0, -1] = IGNORE_INDEX
    return inputs, targets


# --------------------------------------------------------------------------- dense reference
def dense_token_nll(y: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(B, S) next-token NLL of logits y, 0 where the target is ignored."""
    logp = torch.log_softmax(y, dim=-1)
    nll = -logp.gather(-1, targets.clamp(min=0)[..., None]).squeeze(-1)
    return torch.where(targets == IGNORE_INDEX, torch.zeros_like(nll), nll)


def dense_chain(model, inputs, targets, y0, landscapes, sigma=0.0, noises=None, alphas=None):
    """The reference refinement loop from y0: before each step detach and add sigma x N(0,1)
    (drawn here, in order, unless `noises` are given), p = softmax, y = p - alpha dE/dp with
    the dense energy of that step's landscape. Returns (final y, per-step (B, S) NLL)."""
    y, nlls = y0, []
    for k, landscape in enumerate(landscapes):
        y = y.detach()
        if sigma > 0:
            y = y + sigma * (noises[k] if noises is not None else torch.randn(y.shape, dtype=y.dtype))
        with torch.enable_grad():
            p = torch.softmax(y, dim=-1).requires_grad_(True)
            (grad,) = torch.autograd.grad(reference_energy(model, inputs, p, landscape).sum(), p)
        alpha = model.alpha.detach() * (1.0 if alphas is None else alphas[k])
        y = (p - alpha * grad).detach()
        nlls.append(dense_token_nll(y, targets))
    return y, nlls


def masked_mean(nll: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    keep = targets != IGNORE_INDEX
    return nll[keep].sum() / keep.sum()


def reference_validation_landscapes(refine_steps: int, most_extra: int) -> list[int]:
    """The reference validates deterministically: every earlier landscape once, the last one
    repeated (most extra steps + 1) times."""
    return list(range(refine_steps - 1)) + [refine_steps - 1] * (most_extra + 1)


def count_descents(model) -> list[torch.Tensor]:
    """Wrap the model's refinement step; returns the list of the y each call started from."""
    starts, original = [], model._descend

    def recording(y, *args, **kwargs):
        starts.append(y.detach().clone())
        return original(y, *args, **kwargs)

    model._descend = recording
    return starts


# --------------------------------------------------------------------------- 1. validation
@pytest.mark.parametrize("variant, refine_steps", [("time_embed", 2), ("default", 1)])
def test_validation_takes_the_most_steps_with_the_trained_noise(variant, refine_steps):
    """token_nll (validation) = the reference's deterministic forward under the same seed.
    Fails on the old protocol (refine_steps steps, no noise), on validating without the
    Langevin noise or with only the base steps, on extra steps spread over landscapes other
    than the last, and on a random step size at validation (it would shift the draws and
    change alpha)."""
    model = s2_model(variant, steps=refine_steps, random_extra_steps=(1, 2), langevin_sigma=SIGMA,
                     alpha_random_scale=2.0).eval()
    b = 3
    inputs, targets = random_batch(b, seed=1)

    def dense(landscapes, sigma):
        torch.manual_seed(7)
        y0 = torch.randn(b, CONTEXT, V, dtype=torch.float64)
        return dense_chain(model, inputs, targets, y0, landscapes, sigma=sigma)[1][-1]

    reference = dense(reference_validation_landscapes(refine_steps, 2), SIGMA)
    starts = count_descents(model)
    torch.manual_seed(7)
    got = model.token_nll(inputs, targets)
    assert len(starts) == refine_steps + 2
    torch.testing.assert_close(got, reference, rtol=1e-9, atol=1e-10)

    # the protocols it replaces give other numbers (so this test fails on the old code)
    old = {"base steps, no noise": dense(list(range(refine_steps)), 0.0),
           "most steps, no noise": dense(reference_validation_landscapes(refine_steps, 2), 0.0),
           "base steps, noise": dense(list(range(refine_steps)), SIGMA)}
    for name, nll in old.items():
        assert (nll - reference).abs().max() > 1e-3, name

    # a deterministic (eval) training-style forward takes the same steps, noise and alpha
    starts.clear()
    torch.manual_seed(7)
    with torch.no_grad():
        out = model.step(inputs, targets)
    assert len(starts) == refine_steps + 2
    torch.testing.assert_close(out.metrics["ce"], masked_mean(reference, targets), rtol=1e-9, atol=1e-10)


# --------------------------------------------------------------------------- 2. replay buffer
@dataclass
class Record:
    inputs: torch.Tensor
    targets: torch.Tensor
    logits: torch.Tensor

    def same_sequence(self, inputs: torch.Tensor, targets: torch.Tensor) -> bool:
        return torch.equal(self.inputs, inputs) and torch.equal(self.targets, targets)


class DenseReplayBuffer:
    """The reference's causal replay buffer: a FIFO list of at most `size` records."""

    def __init__(self, size: int, fraction: float):
        self.size, self.fraction, self.records = size, fraction, []

    def sample_size(self, fresh_rows: int) -> int:
        return min(int(fresh_rows * self.fraction), len(self.records))

    def update(self, inputs, targets, final_logits, fresh_rows: int) -> None:
        for i in range(fresh_rows):  # the fresh rows only
            self.records.append(Record(inputs[i].clone(), targets[i].clone(), final_logits[i].clone()))
            if len(self.records) > self.size:
                self.records.pop(0)


class Observer:
    """What one training forward of the model fed its refinement: the combined inputs (at
    the token embedding), the targets scored, the first step's start candidates, the
    Langevin noise of every step and the number of steps."""

    def __init__(self, model, monkeypatch):
        self.inputs = self.targets = None
        self.starts = count_descents(model)
        self.noises = []
        model.tok_emb.register_forward_hook(lambda module, args, out: setattr(self, "inputs", args[0].clone()))
        real_cross_entropy, real_randn_like = ebt_module.cross_entropy, torch.randn_like

        def scored(logits, targets, *args):
            if self.targets is None:  # the loss's call; a later one may score the fresh rows only (the logged ce)
                self.targets = targets.clone()
            return real_cross_entropy(logits, targets, *args)

        def noise(like, *args, **kwargs):
            drawn = real_randn_like(like, *args, **kwargs)
            self.noises.append(drawn.clone())
            return drawn

        monkeypatch.setattr(ebt_module, "cross_entropy", scored)
        monkeypatch.setattr(torch, "randn_like", noise)

    def clear(self) -> None:
        self.inputs = self.targets = None
        self.starts.clear()
        self.noises.clear()


def model_records(model) -> list[Record]:
    held = min(model.replay_count, model.config.options.replay_buffer_size)
    return [Record(model.replay_inputs[i], model.replay_targets[i], model.replay_logits[i]) for i in range(held)]


def assert_same_records(model, dense: DenseReplayBuffer) -> None:
    """The model's buffer holds the dense buffer's records (slot order may differ)."""
    ours = model_records(model)
    assert len(ours) == len(dense.records)
    for record in dense.records:
        match = [r for r in ours if r.same_sequence(record.inputs, record.targets)]
        assert len(match) == 1, "a record of the reference buffer is missing"
        torch.testing.assert_close(match[0].logits, record.logits, rtol=1e-9, atol=1e-10)


def test_replay_buffer_matches_the_reference_buffer(monkeypatch):
    """Several training steps (with weight updates) against the dense FIFO buffer: forward
    sizes, which sequences are replayed, their starts, the loss over the combined batch,
    and the stored records. Fails on the old buffer (wait until full, overwrite the starts
    of current rows: wrong row count, current sequences with foreign candidates), on storing
    the replayed rows too, on replaying the current batch's tokens or targets, on starting
    replayed chains from noise, and on evicting other than the oldest records."""
    size, fraction = 3, 0.5
    model = s2_model(**S2_STEPS, langevin_sigma=SIGMA, truncate_unroll=True, replay_buffer_size=size,
                     replay_fraction=fraction)
    model.train()
    dense = DenseReplayBuffer(size, fraction)
    seen = Observer(model, monkeypatch)
    # 2: none on the first step; 8: more asked for (4) than held (2); 1: int(0.5) = 0 replayed
    torch.manual_seed(3)
    for step, rows in enumerate((2, 8, 1, 3, 4)):
        fresh_inputs, fresh_targets = random_batch(rows, seed=100 + step)
        seen.clear()
        out = model.step(fresh_inputs, fresh_targets)

        n = dense.sample_size(rows)
        assert seen.inputs.shape[0] == seen.targets.shape[0] == rows + n, (step, rows, n)
        assert torch.equal(seen.inputs[:rows], fresh_inputs) and torch.equal(seen.targets[:rows], fresh_targets)
        # replayed rows: distinct held records, with their own inputs AND targets, starting
        # from their stored final candidates (before this step's noise)
        picked = []
        for j in range(rows, rows + n):
            match = [i for i, r in enumerate(dense.records) if r.same_sequence(seen.inputs[j], seen.targets[j])]
            assert len(match) == 1, f"step {step}: replayed row {j} is not a held record's sequence"
            picked.append(match[0])
        assert len(set(picked)) == n  # without replacement
        start = seen.starts[0]
        for j, i in zip(range(rows, rows + n), picked):
            torch.testing.assert_close(start[j], dense.records[i].logits, rtol=1e-9, atol=1e-10)

        # the loss over the combined batch: the dense chain from fresh noise + stored candidates
        inputs = torch.cat([fresh_inputs] + [dense.records[i].inputs[None] for i in picked])
        targets = torch.cat([fresh_targets] + [dense.records[i].targets[None] for i in picked])
        y0 = torch.cat([start[:rows]] + [dense.records[i].logits[None] for i in picked])
        steps = len(seen.starts)
        assert len(seen.noises) == steps
        final, nlls = dense_chain(model, inputs, targets, y0, [0] * steps, sigma=SIGMA, noises=seen.noises)
        torch.testing.assert_close(out.loss, masked_mean(nlls[-1], targets), rtol=1e-9, atol=1e-10)
        # the logged ce is the fresh rows' only (replayed chains start converged and would flatter it)
        torch.testing.assert_close(out.metrics["ce"], masked_mean(nlls[-1][:rows], targets[:rows]),
                                   rtol=1e-9, atol=1e-10)

        dense.update(inputs, targets, final, fresh_rows=rows)
        assert_same_records(model, dense)

        out.loss.backward()  # the weights move between steps, as in training
        with torch.no_grad():
            for p in model.parameters():
                if p.grad is not None:
                    p -= 1e-2 * p.grad
                    p.grad = None


def test_replayed_records_are_drawn_without_replacement(monkeypatch):
    """replay_fraction 1 with as many rows as records held: the reference's random.sample
    replays every held record exactly once per forward. Fails on drawing with replacement
    (all four distinct by chance with probability 4!/4^4 per forward, 1e-5 over five)."""
    model = s2_model(steps=1, replay_buffer_size=4, replay_fraction=1.0)
    model.train()
    seen = Observer(model, monkeypatch)
    torch.manual_seed(10)

    def sequences(inputs, targets) -> list[tuple]:
        return sorted((tuple(i.tolist()), tuple(t.tolist())) for i, t in zip(inputs, targets))

    held = []
    for step in range(6):
        seen.clear()
        model.step(*random_batch(4, seed=400 + step))
        assert sequences(seen.inputs[4:], seen.targets[4:]) == held
        held = sequences(model.replay_inputs, model.replay_targets)  # the four fresh rows


def replay_model_with_records(**options):
    model = s2_model(**S2_STEPS, langevin_sigma=SIGMA, replay_buffer_size=3, replay_fraction=0.5, **options)
    model.train()
    torch.manual_seed(4)
    for seed in (11, 12):
        model.step(*random_batch(2, seed=seed))
    assert model.replay_count == 4
    return model


def rows_fed(model, inputs, targets) -> int:
    rows = []
    handle = model.tok_emb.register_forward_hook(lambda module, args, out: rows.append(args[0].shape[0]))
    model.step(inputs, targets)
    handle.remove()
    return rows[0]


def test_validation_neither_replays_nor_stores():
    """Fails on a buffer used outside training (replayed rows at validation, or validation
    sequences stored)."""
    model = replay_model_with_records()
    before = [t.clone() for t in (model.replay_inputs, model.replay_targets, model.replay_logits)]
    inputs, targets = random_batch(2, seed=13)
    model.eval()
    with torch.no_grad():
        assert rows_fed(model, inputs, targets) == 2
        rows = []
        handle = model.tok_emb.register_forward_hook(lambda module, args, out: rows.append(args[0].shape[0]))
        model.token_nll(inputs, targets)
        handle.remove()
    assert rows == [2]
    assert model.replay_count == 4
    for old, new in zip(before, (model.replay_inputs, model.replay_targets, model.replay_logits)):
        assert torch.equal(old, new)
    model.train()  # and back in training it replays again
    assert rows_fed(model, inputs, targets) == 3


def test_replay_buffer_round_trips_and_an_old_checkpoint_starts_empty():
    """process_state -> load_process_state gives the same records and the same next training
    step; a checkpoint of the earlier buffer format ({"replay", "replay_count"}: candidates
    without sequences) loads with a warning and an empty buffer. Fails when the sequences
    are not checkpointed, or when old candidates are kept and replayed with foreign tokens."""
    model = replay_model_with_records()
    restored = s2_model(**S2_STEPS, langevin_sigma=SIGMA, replay_buffer_size=3, replay_fraction=0.5, seed=9)
    restored.load_state_dict(model.state_dict())
    restored.load_process_state(model.process_state())
    restored.train()
    assert restored.replay_count == model.replay_count
    for name in ("replay_inputs", "replay_targets", "replay_logits"):
        assert torch.equal(getattr(restored, name), getattr(model, name)), name
    inputs, targets = random_batch(2, seed=14)
    torch.manual_seed(5)
    loss = model.step(inputs, targets).loss
    torch.manual_seed(5)
    assert torch.equal(restored.step(inputs, targets).loss, loss)

    old_format = {"replay": torch.randn(3, CONTEXT, V, dtype=torch.float64), "replay_count": torch.tensor(7)}
    with pytest.warns(RuntimeWarning, match="earlier buffer format"):
        restored.load_process_state(old_format)
    assert model_records(restored) == []
    assert rows_fed(restored, inputs, targets) == 2  # nothing replayed


# --------------------------------------------------------------------------- 3. random alpha
def alphas_used(model) -> list[torch.Tensor]:
    """The step size each refinement step of the model actually used."""
    used, original = [], model._refine

    def recording(y, kvs, proj, alpha):
        used.append(torch.as_tensor(alpha).detach().clone())
        return original(y, kvs, proj, alpha)

    model._refine = recording
    return used


@pytest.mark.parametrize("draw", ["forward", "step"])
def test_random_step_size_is_drawn_per_forward_or_per_step(draw):
    """alpha_random_scale 2: every step uses alpha x U[1/2, 2] per position (B, S, 1); "forward"
    (the reference) keeps one draw for all steps of a forward, "step" draws anew before each
    step; validation uses the trained alpha. Fails on the option being ignored (one mode for
    both), on one factor per row or per batch, on other bounds, and on randomising alpha at
    validation."""
    b, forwards, steps = 4, 10, 3
    model = s2_model(steps=1, random_extra_steps=(2, 2), alpha_random_scale=2.0, alpha_random_draw=draw)
    model.train()
    used = alphas_used(model)
    torch.manual_seed(6)
    per_forward = []
    for seed in range(forwards):
        used.clear()
        model.step(*random_batch(b, seed=200 + seed))
        assert len(used) == steps
        per_forward.append(torch.stack([a.expand(b, CONTEXT, 1) for a in used]))
        for a in used:
            assert a.shape == (b, CONTEXT, 1)
    alpha = model.alpha.detach()
    draws = torch.stack(per_forward) / alpha  # (forwards, steps, B, S, 1) factors
    for factors in draws:
        same_over_steps = all(torch.equal(factors[0], f) for f in factors[1:])
        assert same_over_steps == (draw == "forward")
        assert factors[0].flatten().unique().numel() == b * CONTEXT  # one factor per position
    assert not torch.equal(draws[0, 0], draws[1, 0])  # a new draw for every forward
    distinct = draws[:, 0] if draw == "forward" else draws
    assert distinct.min() >= 0.5 - 1e-12 and distinct.max() <= 2.0 + 1e-12
    assert distinct.min() < 0.55 and distinct.max() > 1.95  # the whole range [alpha/2, 2 alpha]
    assert abs(distinct.mean().item() - 1.25) < 0.1  # uniform on it

    model.eval()
    used.clear()
    with torch.no_grad():
        model.step(*random_batch(b, seed=300))
        model.token_nll(*random_batch(b, seed=301))
    assert len(used) == 2 * steps
    assert all(a.numel() == 1 and torch.equal(a, alpha) for a in used)


# --------------------------------------------------------------------------- 4. step counts
def test_reference_s2_preset_takes_two_or_three_steps_and_validates_with_three():
    """The reference S2 script (1 step, randomize_mcmc_num_steps 2, minimum 2) repeats its
    landscape r ~ U{2..3} times in training and 3 times at validation. Fails on [2, 2] extra
    steps (always 3), on an exclusive upper bound (always 2) and on base-only validation."""
    reference_training = set(range(max(2, 1), 2 + 1 + 1))  # U{max(min, 1) .. R + 1}
    model = s2_model(**S2_STEPS)
    model.train()
    starts = count_descents(model)
    inputs, targets = random_batch(2, seed=21)
    torch.manual_seed(8)
    counts = []
    for _ in range(20):
        starts.clear()
        model.step(inputs, targets)
        counts.append(len(starts))
    assert set(counts) == reference_training, counts
    model.eval()
    with torch.no_grad():
        for validate in (lambda: model.step(inputs, targets), lambda: model.token_nll(inputs, targets)):
            starts.clear()
            validate()
            assert len(starts) == 3
