"""The EBT against an independent dense-mask reference, and its second-order gradients.

The model never builds the paper's (2S [+1]) x (2S [+1]) attention: it runs the real stream
through fused causal SDPA (once per batch for the ``default`` variant), computes only keys and
values in the last layer, and scores candidates against the context with an S x S matrix plus
a per-row self score. The reference below does none of that: it concatenates
[step token?; real tokens; candidates] into one sequence, writes the mask out entry by entry
from the paper's rule, computes RoPE angles itself in float64 and runs plain masked softmax
attention over the whole thing, recomputing everything for every refinement step. Only the
weights are shared. Everything runs in float64 so agreement is checked to ~1e-10.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ebt_scaling.harness.contract.model_config import ModelConfig
from ebt_scaling.models.architectures import build_model
from ebt_scaling.models.base import IGNORE_INDEX
from ebt_scaling.models.ebt_options import EBTOptions

VARIANTS = ("time_embed", "default")



# --------------------------------------------------------------------------- reference
def exact_rope_tables(model) -> None:
    """Give the model float64-exact RoPE tables. The model builds them in float64 but stores
    float32 copies (enough for fp32/bf16 training); a 1e-10 comparison needs exact ones. The
    test's own reference computes its angles independently below."""
    rot = model.rotary
    n, half = rot.cos.shape
    dh = 2 * half
    inv_freq = 1.0 / (model.config.rope_theta ** (torch.arange(0, dh, 2, dtype=torch.float64) / dh))
    angles = torch.arange(n, dtype=torch.float64)[:, None] * inv_freq[None, :]
    rot.cos = angles.cos()
    rot.sin = angles.sin()


def _rms(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * weight


def _rope(x: torch.Tensor, positions: torch.Tensor, theta: float) -> torch.Tensor:
    """Rotate-half RoPE of x (B, H, T, Dh) at explicit integer positions (T,)."""
    dh = x.shape[-1]
    inv_freq = 1.0 / (theta ** (torch.arange(0, dh, 2, dtype=torch.float64) / dh))
    ang = positions.to(torch.float64)[:, None] * inv_freq[None, :]
    cos, sin = ang.cos(), ang.sin()
    x1, x2 = x[..., : dh // 2], x[..., dh // 2:]
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


def paper_mask(seq: int, step_token: bool) -> torch.Tensor:
    """allowed[query, key] for the sequence [step?; real 0..S-1; candidate 0..S-1]."""
    off = 1 if step_token else 0
    n = off + 2 * seq
    allowed = torch.zeros(n, n, dtype=torch.bool)
    if step_token:
        allowed[0, 0] = True  # the step token sees itself only
    for i in range(seq):
        r = off + i
        if step_token:
            allowed[r, 0] = True
        for j in range(i + 1):  # real token i: causal over real tokens
            allowed[r, off + j] = True
        c = off + seq + i
        if step_token:
            allowed[c, 0] = True
        for j in range(i + 1):  # candidate i (predicts token i+1): real tokens 0..i ...
            allowed[c, off + j] = True
        allowed[c, c] = True  # ... and itself, never other candidates
    return allowed


def paper_positions(seq: int, step_token: bool) -> torch.Tensor:
    """Real tokens 0..S-1, candidates 1..S; everything shifted by one after a step token."""
    off = 1 if step_token else 0
    pos = ([0] if step_token else []) + [off + i for i in range(seq)] + [off + 1 + i for i in range(seq)]
    return torch.tensor(pos)


def reference_energy(model, inputs: torch.Tensor, probs: torch.Tensor, step: int) -> torch.Tensor:
    """Energies (B, S) by dense masked attention over the full sequence."""
    cfg = model.config
    b, s = inputs.shape
    h, dh, d = cfg.n_heads, cfg.head_dim, cfg.d_model
    step_token = cfg.options.variant == "time_embed"
    parts = []
    if step_token:
        idx = min(step, cfg.options.refine_steps - 1)
        parts.append(model.step_emb.weight[idx].expand(b, 1, d))
    parts.append(model.tok_emb.weight[inputs])
    parts.append(probs @ model.candidate_proj.weight.T)
    x = torch.cat(parts, dim=1)
    t = x.shape[1]
    allowed = paper_mask(s, step_token)
    pos = paper_positions(s, step_token)

    def heads(z):
        return z.view(b, t, h, dh).transpose(1, 2)

    for blk in model.blocks:
        a = blk.attn
        z = _rms(x, blk.attn_norm.weight)
        q = _rope(heads(z @ a.wq.weight.T), pos, cfg.rope_theta)
        k = _rope(heads(z @ a.wk.weight.T), pos, cfg.rope_theta)
        v = heads(z @ a.wv.weight.T)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(dh)
        scores = scores.masked_fill(~allowed, float("-inf"))
        att = torch.softmax(scores, dim=-1) @ v
        x = x + att.transpose(1, 2).reshape(b, t, d) @ a.wo.weight.T
        z = _rms(x, blk.mlp_norm.weight)
        m = blk.mlp
        x = x + (F.silu(z @ m.w_gate.weight.T) * (z @ m.w_up.weight.T)) @ m.w_down.weight.T
    cand = x[:, t - s:]
    return (_rms(cand, model.norm.weight) @ model.energy_head.weight.T).squeeze(-1)


def reference_loss(model, inputs, targets, y0, last_only: bool = False) -> torch.Tensor:
    """The S1 training loss: K detached steps in probability space, mean CE after each step
    (or, for truncated unrolling, the CE after the last step only)."""
    alpha = model.alpha.clamp(min=model.config.options.alpha_min)
    y, losses = y0, []
    for k in range(model.config.options.refine_steps):
        p = torch.softmax(y.detach(), dim=-1).requires_grad_(True)
        energy = reference_energy(model, inputs, p, k)
        (g,) = torch.autograd.grad(energy.sum(), p, create_graph=True)
        y = p - alpha * g
        logp = torch.log_softmax(y, dim=-1)
        nll = -logp.gather(-1, targets.clamp(min=0)[..., None]).squeeze(-1)
        keep = targets != IGNORE_INDEX
        losses.append(nll[keep].sum() / keep.sum())
    return losses[-1] if last_only else torch.stack(losses).mean()


# --------------------------------------------------------------------------- fixtures
def tiny_ebt(variant: str, *, vocab=13, d_model=16, heads=2, layers=2, context=8, steps=2, alpha=500.0,
             init_std=0.3, seed=0, **ebt_options):
    """A float64 EBT with sharp (non-uniform) attention: large init, random norm gains."""
    torch.manual_seed(seed)
    ebt = EBTOptions(variant=variant, refine_steps=steps, alpha_init=alpha, **ebt_options)
    cfg = ModelConfig(arch="ebt", n_layers=layers, d_model=d_model, n_heads=heads, vocab_size=vocab,
                      context=context, init_std=init_std, options=ebt)
    model = build_model(cfg).double()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:  # RMSNorm gains
                p.uniform_(0.5, 1.5)
    exact_rope_tables(model)
    return model


def _batch(vocab, b, s, seed=1, pad=True):
    g = torch.Generator().manual_seed(seed)
    inputs = torch.randint(0, vocab, (b, s), generator=g)
    targets = torch.randint(0, vocab, (b, s), generator=g)
    if pad:
        targets[0, -2:] = IGNORE_INDEX
    return inputs, targets


def _param_grads(model, loss) -> dict[str, torch.Tensor]:
    """d loss / d parameter for every trainable parameter (zeros where unused)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, [p for _, p in named], retain_graph=True, allow_unused=True)
    return {n: torch.zeros_like(p) if g is None else g for (n, p), g in zip(named, grads)}


# --------------------------------------------------------------------------- tests
def test_mask_and_positions_follow_the_paper():
    # Spot checks of the reference itself, written from the paper's rule (S = 3, step token).
    m = paper_mask(3, True)  # order: step, r0, r1, r2, c0, c1, c2
    assert m[0].tolist() == [True] + [False] * 6
    assert m[2].tolist() == [True, True, True, False, False, False, False]
    assert m[5].tolist() == [True, True, True, False, False, True, False]  # c1: step, r0, r1, itself
    assert paper_positions(3, True).tolist() == [0, 1, 2, 3, 2, 3, 4]
    assert paper_positions(3, False).tolist() == [0, 1, 2, 1, 2, 3]


@pytest.mark.parametrize("variant", VARIANTS)
def test_energy_and_gradients_match_dense_reference(variant):
    model = tiny_ebt(variant)
    b, s, v = 2, 6, model.config.vocab_size
    inputs, _ = _batch(v, b, s)
    torch.manual_seed(2)
    probs = torch.softmax(3 * torch.randn(b, s, v, dtype=torch.float64), -1)
    for step in range(model.config.options.refine_steps):
        p_model = probs.clone().requires_grad_(True)
        kvs = model.real_stream(model.tok_emb(inputs), step)
        e_model = model.energy(p_model, kvs)
        p_ref = probs.clone().requires_grad_(True)
        e_ref = reference_energy(model, inputs, p_ref, step)
        assert e_model.shape == (b, s)
        assert e_ref.std() > 1e-3  # the check is not vacuous
        torch.testing.assert_close(e_model, e_ref, rtol=1e-10, atol=1e-10)

        # dE/dp (the inner gradient the refinement step uses)
        (g_model,) = torch.autograd.grad(e_model.sum(), p_model, retain_graph=True)
        (g_ref,) = torch.autograd.grad(e_ref.sum(), p_ref, retain_graph=True)
        torch.testing.assert_close(g_model, g_ref, rtol=1e-10, atol=1e-10)

        # parameter gradients of a random projection of the energies
        w = torch.randn(b, s, dtype=torch.float64)
        gm = _param_grads(model, (e_model * w).sum())
        gr = _param_grads(model, (e_ref * w).sum())
        for name in gm:
            torch.testing.assert_close(gm[name], gr[name], rtol=1e-9, atol=1e-10, msg=lambda m, n=name: f"{n}: {m}")
        assert gm["candidate_proj.weight"].abs().max() > 0


@pytest.mark.parametrize("variant", VARIANTS)
def test_training_loss_and_parameter_gradients_match_reference(variant):
    """The whole S1 training step (inner create_graph gradient included) against the
    reference loop, which recomputes the full dense sequence at every step."""
    model = tiny_ebt(variant, alpha=7.0)
    b, s, v = 2, 6, model.config.vocab_size
    inputs, targets = _batch(v, b, s)
    y0 = torch.randn(b, s, v, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    model._initial_candidates = lambda batch, seq, ref: y0.clone()
    model.train()
    out = model.step(inputs, targets)
    ref = reference_loss(model, inputs, targets, y0)
    torch.testing.assert_close(out.loss, ref, rtol=1e-10, atol=1e-12)
    gm = _param_grads(model, out.loss)
    gr = _param_grads(model, ref)
    for name in gm:
        torch.testing.assert_close(gm[name], gr[name], rtol=1e-8, atol=1e-11, msg=lambda m, n=name: f"{n}: {m}")
    # second-order path is live: alpha and the energy head only reach the loss through dE/dp
    assert gm["alpha"].abs() > 0 and gm["energy_head.weight"].abs().max() > 0


@pytest.mark.parametrize("variant", VARIANTS)
def test_truncated_unroll_matches_reference_last_step(variant):
    """truncate_unroll: loss and parameter gradients are those of the last step's CE alone
    (the earlier steps run without a graph, the real stream of time_embed without grad)."""
    model = tiny_ebt(variant, alpha=7.0, steps=3, truncate_unroll=True)
    b, s, v = 2, 6, model.config.vocab_size
    inputs, targets = _batch(v, b, s)
    y0 = torch.randn(b, s, v, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    model._initial_candidates = lambda batch, seq, ref: y0.clone()
    model.train()
    out = model.step(inputs, targets)
    ref = reference_loss(model, inputs, targets, y0, last_only=True)
    torch.testing.assert_close(out.loss, ref, rtol=1e-10, atol=1e-12)
    gm = _param_grads(model, out.loss)
    gr = _param_grads(model, ref)
    for name in gm:
        torch.testing.assert_close(gm[name], gr[name], rtol=1e-8, atol=1e-11, msg=lambda m, n=name: f"{n}: {m}")
    if variant == "time_embed":  # only the last step's token embedding gets a gradient
        assert gm["step_emb.weight"][:2].abs().max() == 0 and gm["step_emb.weight"][2].abs().max() > 0


@pytest.mark.parametrize("variant", VARIANTS)
def test_energy_gradgradcheck_wrt_candidate(variant):
    model = tiny_ebt(variant, vocab=5, d_model=8, heads=2, layers=2, context=4)
    inputs, _ = _batch(5, 2, 3)
    with torch.no_grad():
        kvs = model.real_stream(model.tok_emb(inputs), 1)
    p = torch.softmax(torch.randn(2, 3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(4)), -1)
    p.requires_grad_(True)
    assert torch.autograd.gradgradcheck(lambda q: model.energy(q, kvs), (p,), eps=1e-6, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("variant", VARIANTS)
def test_training_loss_gradcheck_wrt_parameters(variant):
    """Finite differences of the full training loss (with its inner create_graph gradient)
    against autograd, w.r.t. alpha, one attention matrix and the candidate projection.

    One refinement step: S1 detaches the candidate between steps on purpose, so with K > 1
    autograd's gradient is (by design) not the total derivative that finite differences see."""
    model = tiny_ebt(variant, vocab=5, d_model=8, heads=2, layers=2, context=4, alpha=3.0, steps=1)
    model.train()
    inputs, targets = _batch(5, 2, 3)
    names = ["alpha", "blocks.0.attn.wq.weight", "candidate_proj.weight"]
    base = dict(model.named_parameters())
    leaves = tuple(base[n].detach().clone().requires_grad_(True) for n in names)

    wrapper = _StepLoss(model)

    def loss_fn(*tensors):
        torch.manual_seed(123)  # the same random initial candidates in every evaluation
        overrides = {"model." + n: t for n, t in zip(names, tensors)}
        return torch.func.functional_call(wrapper, overrides, (inputs, targets), strict=False)

    assert torch.autograd.gradcheck(loss_fn, leaves, eps=1e-6, atol=1e-6, rtol=1e-4)


class _StepLoss(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, inputs, targets):
        return self.model.step(inputs, targets).loss
