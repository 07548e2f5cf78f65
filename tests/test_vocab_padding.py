"""Vocabulary padding (models/layers.py VocabPadding): the vocabulary-sized matmuls run at a
multiple of 64 columns, and no loss, probability or gradient changes. Checked in float64
against the plain unpadded computation written out here."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ebt_scaling.harness.contract.model_config import VOCAB_MULTIPLE, ModelConfig
from ebt_scaling.models.architectures import build_model
from ebt_scaling.models.base import IGNORE_INDEX
from ebt_scaling.models.layers import MASKED_LOGIT, VocabPadding


@pytest.mark.parametrize("vocab, padded", [(50_277, 50_304), (13, 64), (64, 64), (65, 128)])
def test_padded_width_is_the_next_multiple(vocab, padded):
    config = ModelConfig(vocab_size=vocab)
    assert config.padded_vocab_size == padded
    assert padded % VOCAB_MULTIPLE == 0 and padded - vocab < VOCAB_MULTIPLE


def test_padded_logits_softmax_and_gradients_equal_the_unpadded_ones():
    g = torch.Generator().manual_seed(0)
    vocab, d = 13, 8
    x = torch.randn(5, d, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(vocab, d, dtype=torch.float64, generator=g, requires_grad=True)
    targets = torch.randint(0, vocab, (5,), generator=g)
    pad = VocabPadding(vocab, 64).double()

    logits = pad.logits(x, w)
    assert logits.shape == (5, 64)
    assert torch.equal(logits[:, vocab:], torch.full((5, 64 - vocab), MASKED_LOGIT, dtype=torch.float64))
    probs = torch.softmax(logits, -1)
    assert torch.equal(probs[:, vocab:], torch.zeros(5, 64 - vocab, dtype=torch.float64))  # exactly 0

    plain = x @ w.T
    torch.testing.assert_close(torch.softmax(plain, -1), probs[:, :vocab], rtol=1e-15, atol=1e-15)
    loss_padded = F.cross_entropy(logits, targets)
    loss_plain = F.cross_entropy(plain, targets)
    torch.testing.assert_close(loss_padded, loss_plain, rtol=1e-15, atol=1e-15)
    gp = torch.autograd.grad(loss_padded, (x, w))
    gq = torch.autograd.grad(loss_plain, (x, w))
    for a, b in zip(gp, gq):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b, rtol=1e-14, atol=1e-15)


def test_an_aligned_vocabulary_is_not_padded():
    pad = VocabPadding(64, 64)
    w = torch.randn(3, 64)
    assert pad.columns(w) is w and pad.mask is None
    y = torch.randn(2, 64)
    assert pad.pad(y) is y


def test_transformer_loss_and_gradients_equal_an_unpadded_head():
    torch.manual_seed(0)
    config = ModelConfig(arch="transformer", n_layers=2, d_model=16, n_heads=2, vocab_size=29, context=8)
    model = build_model(config).double()
    g = torch.Generator().manual_seed(1)
    inputs = torch.randint(0, 29, (2, 8), generator=g)
    targets = torch.randint(0, 29, (2, 8), generator=g)
    targets[0, -2:] = IGNORE_INDEX
    loss = model.step(inputs, targets).loss

    h = model.tok_emb(inputs)  # the same forward, with the plain (unpadded) output head
    for block in model.blocks:
        h, _ = block(h)
    plain = F.cross_entropy((model.norm(h) @ model.lm_head.weight.T).flatten(0, 1), targets.flatten(),
                            ignore_index=IGNORE_INDEX)
    torch.testing.assert_close(loss, plain, rtol=1e-14, atol=1e-15)
    params = [p for p in model.parameters() if p.requires_grad]
    for a, b in zip(torch.autograd.grad(loss, params, retain_graph=True), torch.autograd.grad(plain, params)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    nll = model.token_nll(inputs, targets)
    torch.testing.assert_close(nll.sum() / (targets != IGNORE_INDEX).sum(), plain, rtol=1e-14, atol=1e-15)


def test_ebt_candidates_outside_the_model_keep_the_true_vocabulary():
    torch.manual_seed(0)
    config = ModelConfig(arch="ebt", n_layers=1, d_model=16, n_heads=2, vocab_size=29, context=6)
    model = build_model(config).eval()
    inputs = torch.randint(0, 29, (2, 6))
    result = model.think(inputs, inputs, schedule=[0, 1], samples=2)
    assert result.logits.shape == (2, 6, 29)
    assert torch.isfinite(result.logits).all()
