"""models/cross_entropy.py against torch's F.cross_entropy (value and gradient), in float64,
float32 and bf16, with ignored rows, several chunks, and gradcheck."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ebt_scaling.models import cross_entropy as ce_module
from ebt_scaling.models.cross_entropy import cross_entropy

IGNORE = -100


def _case(rows=37, vocab=11, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = (3 * torch.randn(rows, vocab, generator=g, dtype=torch.float64)).to(dtype).requires_grad_(True)
    targets = torch.randint(0, vocab, (rows,), generator=g)
    targets[::5] = IGNORE
    return logits, targets


@pytest.mark.parametrize("chunk_elements", [1 << 26, 50, 11])  # one chunk, several, one row per chunk
def test_value_and_gradient_equal_torch_cross_entropy(monkeypatch, chunk_elements):
    monkeypatch.setattr(ce_module, "CHUNK_ELEMENTS", chunk_elements)
    logits, targets = _case()
    ours = cross_entropy(logits, targets, IGNORE)
    ref = F.cross_entropy(logits, targets, ignore_index=IGNORE)
    torch.testing.assert_close(ours, ref, rtol=1e-14, atol=1e-15)
    (g_ours,) = torch.autograd.grad(3.0 * ours, logits)
    (g_ref,) = torch.autograd.grad(3.0 * ref, logits)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-13, atol=1e-15)
    assert g_ours[::5].abs().max() == 0  # ignored rows get no gradient


def test_batched_shape_and_bf16_logits(monkeypatch):
    monkeypatch.setattr(ce_module, "CHUNK_ELEMENTS", 64)
    logits, targets = _case(rows=24, vocab=13, dtype=torch.bfloat16)
    ours = cross_entropy(logits.view(4, 6, 13), targets.view(4, 6), IGNORE)
    ref = F.cross_entropy(logits.float(), targets, ignore_index=IGNORE)
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-6)
    (g_ours,) = torch.autograd.grad(ours, logits)
    (g_ref,) = torch.autograd.grad(ref, logits)
    assert g_ours.dtype == torch.bfloat16
    torch.testing.assert_close(g_ours.float(), g_ref.float(), rtol=1e-2, atol=1e-4)


def test_every_target_ignored_is_zero_not_nan():
    logits = torch.randn(3, 5, requires_grad=True)
    loss = cross_entropy(logits, torch.full((3,), IGNORE), IGNORE)
    loss.backward()
    assert loss.item() == 0.0 and logits.grad.abs().max() == 0


def test_gradcheck(monkeypatch):
    monkeypatch.setattr(ce_module, "CHUNK_ELEMENTS", 20)
    logits, targets = _case(rows=7, vocab=6)
    assert torch.autograd.gradcheck(lambda x: cross_entropy(x, targets, IGNORE), (logits,))
