"""model.init: "project" (default) and "reference" (the paper's reference code).

The expected rules are written out here from the reference code's behaviour (every
nn.Linear Xavier normal with gain 1, every nn.Embedding N(0, 1), every RMSNorm eps 1e-5)
and this project's (N(0, 0.02), residual outputs / sqrt(2L), eps 1e-6); the models are
only sampled, never asked what their rule is.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ebt_scaling.harness.contract.errors import ConfigError
from ebt_scaling.harness.contract.model_config import ModelConfig
from ebt_scaling.harness.contract.spec import RunSpec, identity_dict, spec_from_dict, spec_hash
from ebt_scaling.models.architectures import build_model

# Small enough to build in milliseconds, large enough for tight statistics: every matrix
# has thousands of entries except the EBT's d -> 1 energy head.
SHAPE = dict(n_layers=2, d_model=64, n_heads=2, vocab_size=1000, context=8, ffn_hidden=96)
ARCHS = ("transformer", "ebt")
EPS = {"project": 1e-6, "reference": 1e-5}


def _model(arch: str, init: str, seed: int = 0):
    torch.manual_seed(seed)
    options = {"variant": "time_embed", "refine_steps": 3} if arch == "ebt" else None
    return build_model(ModelConfig(arch=arch, init=init, options=options, **SHAPE))


def _reference_std(name: str, shape: torch.Size) -> float:
    """The reference code's std for a parameter: tables N(0, 1), matrices Xavier normal."""
    if name in ("tok_emb.weight", "step_emb.weight"):
        return 1.0
    fan_out, fan_in = shape  # nn.Linear stores (out, in)
    return math.sqrt(2.0 / (fan_in + fan_out))


def _project_std(name: str) -> float:
    depth_scaled = name.endswith(("wo.weight", "w_down.weight"))
    return 0.02 / math.sqrt(2 * SHAPE["n_layers"]) if depth_scaled else 0.02


def _check_normal(name: str, w: torch.Tensor, std: float) -> None:
    """Mean 0 and the given std (within 5 standard errors), and normal, not uniform:
    P(|w| < std) is 0.683 for a normal and 0.577 for a uniform of the same std."""
    w = w.detach().double().flatten()
    n = w.numel()
    assert abs(w.mean().item()) < 5 * std / math.sqrt(n), name
    assert w.std().item() == pytest.approx(std, rel=5 / math.sqrt(2 * n)), name
    if n >= 4000:
        inside = (w.abs() < std).double().mean().item()
        assert inside == pytest.approx(math.erf(1 / math.sqrt(2)), abs=5 * 0.47 / math.sqrt(n)), name


@pytest.mark.parametrize("init", ["project", "reference"])
@pytest.mark.parametrize("arch", ARCHS)
def test_every_rmsnorm_uses_the_schemes_eps(arch, init):
    model = _model(arch, init)
    norms = [m for m in model.modules() if type(m).__name__ == "RMSNorm"]
    assert len(norms) == 2 * SHAPE["n_layers"] + 1  # two per block and the final one
    assert {m.eps for m in norms} == {EPS[init]}
    # The eps is the one the forward pass uses: compare with torch's own RMSNorm on inputs
    # small enough that 1e-5 and 1e-6 give clearly different outputs.
    x = 1e-3 * torch.randn(3, SHAPE["d_model"])
    for m in norms:
        torch.testing.assert_close(m(x), F.rms_norm(x, (SHAPE["d_model"],), m.weight, eps=EPS[init]))


@pytest.mark.parametrize("arch", ARCHS)
def test_reference_init_follows_the_reference_rule(arch):
    model = _model(arch, "reference")
    seen = set()
    for name, p in model.named_parameters():
        seen.add(name)
        if name == "alpha":
            assert p.item() == 500.0  # alpha_init, as the reference's mcmc_step_size
        elif p.dim() == 1:
            assert torch.equal(p, torch.ones_like(p)), name  # RMSNorm gains
        else:
            _check_normal(name, p, _reference_std(name, p.shape))
    expected = {"tok_emb.weight", "blocks.1.attn.wo.weight", "blocks.0.mlp.w_down.weight"}
    expected |= {"candidate_proj.weight", "energy_head.weight", "step_emb.weight", "alpha"} if arch == "ebt" \
        else {"lm_head.weight"}
    assert expected <= seen


@pytest.mark.parametrize("arch", ARCHS)
def test_project_init_is_the_default_and_unchanged(arch):
    assert ModelConfig().init == "project"
    model = _model(arch, "project")
    for name, p in model.named_parameters():
        if p.dim() >= 2:
            _check_normal(name, p, _project_std(name))


def test_init_is_validated_in_one_line():
    with pytest.raises(ConfigError, match=r"^spec: model\.init: must be one of .*; got 'xavier'$") as info:
        spec_from_dict({"model": {"init": "xavier"}})
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match=r"^init: must be one of"):
        ModelConfig(init="xavier")
    with pytest.raises(ConfigError, match=r"^spec: model\.init_std: is not used by init 'reference'"):
        spec_from_dict({"model": {"init": "reference", "init_std": 0.01}})


def test_run_id_omits_init_at_its_default():
    # Run ids of the default specs as they were before model.init existed.
    assert spec_hash(RunSpec()) == "ec053f80b4c1"
    assert spec_hash(RunSpec(model=ModelConfig(arch="ebt"))) == "46de50d622fe"
    assert "init" not in identity_dict(RunSpec())["model"]
    reference = spec_from_dict({"model": {"init": "reference"}})
    assert identity_dict(reference)["model"]["init"] == "reference"
    assert reference.run_id != RunSpec().run_id
    assert spec_from_dict({"model": {"init": "project"}}).run_id == RunSpec().run_id
