"""The sweep registries: a learning-rate rule and a sweep axis (context length), registered
from this test module alone, go through `plan`, `submit --cluster debug` (training) and
`analyze` with no project file changed; the sweep file names them as it names the
built-ins (`lr: {rule: ...}`, `axis: {name: ...}`)."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass

import pytest
import yaml

from ebt_scaling.harness.cli.main import main
from ebt_scaling.harness.contract.errors import require
from ebt_scaling.sweeps.axes import AxisPoint, fixed_size
from ebt_scaling.sweeps.sweep_spec import (
    SWEEP_AXES,
    SWEEP_RULES,
    FittedAxis,
    HparamRule,
    SweepAxis,
    positive_integer,
)

# ---------------------------------------------------------------------------- an LR rule of this module


@dataclass(frozen=True)
class InverseSqrtOptions:
    rule: str = "inverse_sqrt_params"
    coefficient: float | None = None

    def __post_init__(self) -> None:
        require(self.coefficient is None or self.coefficient > 0, "coefficient", f"must be > 0, got {self.coefficient}")


INVERSE_SQRT = HparamRule("lr", "inverse_sqrt_params", InverseSqrtOptions,
                          lambda o, n, size_name, non_embedding, default: o.coefficient / math.sqrt(n),
                          required={"coefficient": "the LR of a one-parameter model"})

# ---------------------------------------------------------------------------- a context-length axis


def _context_points(planner, values: list) -> list[AxisPoint]:
    size = fixed_size(planner)
    return [AxisPoint(str(v), size, model_fields=(("context", v),)) for v in values]


CONTEXT = SweepAxis("context", positive_integer, _context_points, fixed_size=True,
                    fitted=FittedAxis("context", "context length", "tokens of context", "context length (tokens)"))


@pytest.fixture
def toys():
    SWEEP_RULES.register(INVERSE_SQRT.name, INVERSE_SQRT)
    SWEEP_AXES.register(CONTEXT.name, CONTEXT)
    yield
    SWEEP_RULES.unregister(INVERSE_SQRT.name)
    SWEEP_AXES.unregister(CONTEXT.name)


def sweep_text(data_cache, lr: str = "{rule: inverse_sqrt_params, coefficient: 0.5}") -> str:
    return f"""\
name: contexts
base:
  model: {{vocab_size: 512, context: 64}}
  data: {{cache_dir: {data_cache}}}
  train: {{batch_size: 4}}
  eval: {{points: 2, batches: 2, batch_size: 4}}
  device: cpu
architectures:
  - {{label: T++, arch: transformer}}
axis:
  name: context
  size: {{n_layers: 1, d_model: 16, n_heads: 2}}
  values: [8, 16, 32]
tokens: {{rule: fixed, tokens: 2048}}
hparams:
  lr: {lr}
"""


def test_an_unregistered_rule_or_axis_is_a_one_line_error(tmp_path, capsys, data_cache):
    path = tmp_path / "sweep.yaml"
    path.write_text(sweep_text(data_cache))
    assert main(["plan", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"{path}: axis.name: must be one of 'parameters', 'data', 'width'" in err
    SWEEP_AXES.register(CONTEXT.name, CONTEXT)
    try:
        assert main(["plan", str(path)]) == 2
    finally:
        SWEEP_AXES.unregister(CONTEXT.name)
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"{path}: hparams.lr.rule: must be one of 'constant', 'paper', 'olmo'; got " in err


@pytest.mark.slow
def test_a_rule_and_an_axis_of_this_module_plan_train_and_analyze(toys, tmp_path, capsys, data_cache):
    path = tmp_path / "sweep.yaml"
    path.write_text(sweep_text(data_cache, lr="{rule: inverse_sqrt_params}"))
    assert main(["plan", str(path)]) == 2   # the rule's own validation, one line naming the key
    assert "hparams.lr.coefficient: is required when rule is 'inverse_sqrt_params'" in capsys.readouterr().err

    path.write_text(sweep_text(data_cache))
    out = tmp_path / "out"
    assert main(["plan", str(path), "--write", str(out)]) == 0
    capsys.readouterr()
    runs = json.loads((out / "plan.json").read_text())["runs"]
    assert [r["axis_value"] for r in runs] == ["8", "16", "32"]
    for r in runs:   # the axis sets the context, the rule the LR, the token rule the rest
        spec = yaml.safe_load((out / "runs" / r["run_id"] / "spec.yaml").read_text())
        assert spec["model"]["context"] == int(r["axis_value"])
        assert r["lr"] == pytest.approx(0.5 / math.sqrt(r["params_total"]))
        assert r["tokens"] == 2048 and r["steps"] == 2048 // (4 * int(r["axis_value"]))
    written = yaml.safe_load((out / "sweep.yaml").read_text())   # the sweep file's format, unchanged
    assert written["hparams"]["lr"] == {"rule": "inverse_sqrt_params", "coefficient": 0.5}
    assert written["axis"]["name"] == "context"

    assert main(["submit", str(out), "--cluster", "debug"]) == 0
    results = [json.loads(p.read_text()) for p in out.glob("runs/*/result.json")]
    assert len(results) == 3 and {r["status"] for r in results} == {"done"}
    assert main(["analyze", str(out), "--bootstrap", "20"]) == 0
    fits = json.loads((out / "analysis" / "fits.json").read_text())
    context_fit = fits["power_laws"]["T++"]["context"]
    assert context_fit["status"] == "ok" and context_fit["n"] == 3   # fitted against the axis' own column
    assert "| T++ | tokens of context | 3 |" in (out / "analysis" / "report.md").read_text()
    assert (out / "analysis" / "loss_vs_context.png").is_file()
