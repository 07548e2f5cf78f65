"""The architecture registry: a third model family, registered from this test module alone,
goes through `flops`, `plan`, `submit --cluster debug` (training) and `analyze` with no
project file changed. Its FLOP functions are checked against torch's FlopCounterMode."""
from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ebt_scaling.harness.cli.main import main
from ebt_scaling.harness.contract.architecture import ARCHITECTURES, Architecture
from ebt_scaling.harness.contract.errors import ConfigError, require
from ebt_scaling.harness.contract.spec import spec_from_dict
from ebt_scaling.models.base import IGNORE_INDEX, LanguageModel, StepOutput


@dataclass(frozen=True)
class GatedBigramOptions:
    gate_scale: float = 1.0

    def __post_init__(self) -> None:
        require(self.gate_scale > 0, "gate_scale", f"must be > 0, got {self.gate_scale}")


class GatedBigram(LanguageModel):
    """Next token from the current token only: embedding, one d x d gated matmul, output head."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.emb = nn.Embedding(config.vocab_size, config.d_model)
        self.mix = nn.Linear(config.d_model, config.d_model, bias=False)
        self.head = nn.Linear(config.d_model, config.vocab_size, bias=False)

    def logits(self, inputs):
        h = self.emb(inputs)
        return self.head(h * torch.sigmoid(self.config.options.gate_scale * self.mix(h)))

    def step(self, inputs, targets):
        loss = F.cross_entropy(self.logits(inputs).flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX)
        return StepOutput(loss, {"ce": loss.detach(), "tokens": (targets != IGNORE_INDEX).sum()})

    def token_nll(self, inputs, targets):
        return F.cross_entropy(self.logits(inputs).transpose(1, 2), targets, ignore_index=IGNORE_INDEX,
                               reduction="none")

    def embedding_parameters(self):
        return [self.emb.weight, self.head.weight]


def _params(config) -> dict[str, int]:
    d, v = config.d_model, config.vocab_size
    return {"total": 2 * v * d + d * d, "non_embedding": d * d}


def _full(config, batch, seq) -> float:
    # forward: d x d mix and d x V head (2 FLOPs per multiply-add); backward twice that
    return 3.0 * batch * seq * (2 * config.d_model ** 2 + 2 * config.d_model * config.vocab_size)


def _paper(config, batch, seq) -> float:
    return 6.0 * _params(config)["non_embedding"] * batch * seq


TOY = Architecture(name="gated_bigram", label="GatedBigram", options=GatedBigramOptions, build=GatedBigram,
                   param_counts=_params, step_flops={"paper": _paper, "full": _full})


@pytest.fixture
def toy():
    ARCHITECTURES.register(TOY.name, TOY)
    yield TOY
    ARCHITECTURES.unregister(TOY.name)


def test_an_architecture_must_give_every_flop_convention():
    with pytest.raises(ValueError, match="lacks the convention"):
        Architecture(name="x", label="X", options=GatedBigramOptions, build=GatedBigram, param_counts=_params,
                     step_flops={"paper": _paper})


def test_unknown_arch_and_bad_options_are_one_line_errors(toy):
    with pytest.raises(ConfigError, match=r"^spec: model\.arch: unknown architecture 'rnn'; registered: .*gated_bigram"):
        spec_from_dict({"model": {"arch": "rnn"}})
    with pytest.raises(ConfigError, match=r"^spec: model\.options\.gate_scale: must be > 0"):
        spec_from_dict({"model": {"arch": "gated_bigram", "options": {"gate_scale": 0}}})


def test_its_flop_functions_equal_flop_counter_mode(toy):
    from ebt_scaling.harness.cli.flops import measure_flops_per_token
    from ebt_scaling.models.architectures import build_model
    from ebt_scaling.models.flops import flops_per_token, param_counts

    config = spec_from_dict({"model": {"arch": "gated_bigram", "n_layers": 1, "d_model": 16, "n_heads": 2,
                                       "vocab_size": 40, "context": 8}}).model
    assert build_model(config).param_counts() == param_counts(config)
    assert measure_flops_per_token(config, 2, 8) == flops_per_token(config, "full")


def test_flops_plan_train_and_analyze_a_third_architecture(toy, data_cache, tmp_path, capsys):
    code = main(["flops", "--n-layers", "1", "--d-model", "16", "--n-heads", "2", "--vocab", "40", "--ctx", "8",
                 "--gated-bigram.gate-scale", "2", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and set(report) == {"transformer", "ebt", "gated_bigram"}
    assert report["gated_bigram"]["flops_per_token"]["paper"] == 6 * 16 * 16

    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(f"""\
name: third
base:
  model: {{vocab_size: 512, context: 32}}
  data: {{cache_dir: {data_cache}}}
  train: {{batch_size: 8, lr: 3.0e-3}}
  eval: {{points: 2, batches: 2, batch_size: 8}}
  device: cpu
architectures:
  - {{label: T++, arch: transformer}}
  - {{label: Bigram, arch: gated_bigram, options: {{gate_scale: 2.0}}}}
axis:
  name: parameters
  values: [{{n_layers: 1, d_model: 16, n_heads: 2}}, {{n_layers: 1, d_model: 32, n_heads: 2}},
           {{n_layers: 1, d_model: 48, n_heads: 2}}]
tokens: {{rule: fixed, tokens: 4096}}
""")
    out = tmp_path / "out"
    assert main(["plan", str(sweep), "--write", str(out)]) == 0
    assert "Bigram" in capsys.readouterr().out
    assert main(["submit", str(out), "--cluster", "debug"]) == 0
    results = [json.loads(p.read_text()) for p in out.glob("runs/*/result.json")]
    assert len(results) == 6 and {r["status"] for r in results} == {"done"}
    assert main(["analyze", str(out), "--bootstrap", "20"]) == 0
    fits = json.loads((out / "analysis" / "fits.json").read_text())
    assert fits["power_laws"]["Bigram"]["flops"]["status"] == "ok"  # fitted, not skipped
    assert fits["power_laws"]["Bigram"]["flops"]["n"] == 3
    assert "slope_diff" in fits["comparisons"]["Bigram"]["axes"]["flops"]  # compared with the T++ reference
    assert fits["reference"] == "T++"
    assert "Bigram" in (out / "analysis" / "report.md").read_text()
