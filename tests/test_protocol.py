"""`protocol: reference`: a preset that fills the reference code's setup into a run spec (or
a sweep's base), the protocol label derived from a spec, the report's protocol sentence, and
the System 2 example of the presets (issue 14)."""
from __future__ import annotations

import re
import types
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import plan_of, small_sweep

from ebt_scaling.analysis.load import load_runs
from ebt_scaling.analysis.report import _protocol_sentence
from ebt_scaling.harness.contract.errors import ConfigError
from ebt_scaling.harness.contract.protocol import items_for, protocol_of
from ebt_scaling.harness.contract.run_dir import atomic_write_text
from ebt_scaling.harness.contract.spec import spec_from_dict, spec_to_yaml
from ebt_scaling.sweeps.generate import make_plan
from ebt_scaling.sweeps.sweep_spec import arch_options, dump_sweep, load_sweep, preset_path, sweep_from_dict

# The reference code's values, written out here from its training scripts and optimizer
# (not read from the code under test): Xavier init, AdamW decaying everything but alpha,
# 10k warmup steps, one random alpha per forward, one absolute LR floor for every group.
REFERENCE = {"model.init": "reference", "train.decay_norms_and_embeddings": True, "train.warmup_steps": 10_000}
REFERENCE_EBT = {**REFERENCE, "model.options.alpha_random_draw": "forward", "model.options.alpha_lr_floor": "shared"}
PROJECT_EBT = {"model.init": "project", "train.decay_norms_and_embeddings": False, "train.warmup_steps": None,
               "model.options.alpha_random_draw": "step", "model.options.alpha_lr_floor": "scaled"}
LONG = {"tokens": 32 * 256 * 20_000}  # 20k steps of the default batch: room for 10k warmup steps


def value(spec, key: str):
    for part in key.split("."):
        spec = getattr(spec, part)
    return spec


def spec(arch: str = "ebt", protocol: str | None = None, **sections) -> object:
    data = {"model": {"arch": arch, **sections.pop("model", {})}, "train": {**LONG, **sections.pop("train", {})},
            **sections}
    if protocol is not None:
        data["protocol"] = protocol
    return spec_from_dict(data)


def by_hand(values: dict) -> dict:
    """A spec mapping that writes `values` ({dotted key: value}) out."""
    out: dict = {}
    for key, v in values.items():
        node = out
        *parents, name = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[name] = v
    return out


# --------------------------------------------------------------------------- the preset


@pytest.mark.parametrize("arch,expected", [("ebt", REFERENCE_EBT), ("transformer", REFERENCE)])
def test_reference_fills_every_item(arch, expected):
    s = spec(arch, "reference")
    assert {k: value(s, k) for k in expected} == expected
    if arch == "transformer":
        assert not hasattr(s.model.options, "alpha_random_draw")  # no EBT option reaches a Transformer++


@pytest.mark.parametrize("key", sorted(REFERENCE_EBT))
def test_explicit_keys_win(key):
    """Every item given explicitly (at the project's value) keeps that value; the others are filled."""
    data = by_hand({key: PROJECT_EBT[key]})
    s = spec("ebt", "reference", model=data.get("model", {}), train=data.get("train", {}))
    assert value(s, key) == PROJECT_EBT[key]
    assert all(value(s, other) == REFERENCE_EBT[other] for other in REFERENCE_EBT if other != key)


@pytest.mark.parametrize("arch,fields", [("ebt", REFERENCE_EBT), ("transformer", REFERENCE)])
def test_preset_is_the_same_run_as_writing_the_fields(arch, fields):
    written = by_hand(fields)
    preset = spec(arch, "reference")
    assert preset == spec(arch, model=written["model"], train=written["train"])
    assert preset.run_id == spec(arch, model=written["model"], train=written["train"]).run_id
    assert preset.run_id != spec(arch).run_id
    assert "protocol" not in yaml.safe_load(spec_to_yaml(preset))  # never stored
    assert spec_from_dict(yaml.safe_load(spec_to_yaml(preset))).run_id == preset.run_id


@pytest.mark.parametrize("arch", ["ebt", "transformer"])
def test_project_fills_nothing(arch):
    assert spec(arch, "project") == spec(arch)
    assert spec(arch, "project").run_id == spec(arch).run_id
    assert spec_from_dict({"protocol": "project"}).run_id == spec_from_dict({}).run_id


def test_explicit_warmup_fraction_suppresses_the_preset_warmup_steps():
    s = spec("ebt", "reference", train={"warmup_fraction": 0.1})
    assert (s.train.warmup_steps, s.train.warmup_fraction) == (None, 0.1)
    assert s.model.init == "reference"  # the rest of the preset still applies


def test_legacy_options_key_still_gets_the_preset():
    """model.ebt (the old place of the options) moves to model.options before the preset fills."""
    with pytest.warns(FutureWarning):
        s = spec("ebt", "reference", model={"ebt": {"refine_steps": 3}})
    assert (s.model.options.refine_steps, s.model.options.alpha_random_draw) == (3, "forward")


def test_short_run_under_the_preset_is_one_line_naming_the_warmup():
    with pytest.raises(ConfigError) as err:
        spec_from_dict({"protocol": "reference", "train": {"tokens": 32 * 256 * 100}}, "run.yaml")
    assert "\n" not in str(err.value) and str(err.value).startswith("run.yaml: train.warmup_steps:")


@pytest.mark.parametrize("bad", ["paper", "Reference", None, 1])
def test_unknown_protocol_is_one_line(bad):
    with pytest.raises(ConfigError) as err:
        spec_from_dict({"protocol": bad}, "run.yaml")
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("run.yaml: protocol: must be one of project, reference")
    with pytest.raises(ConfigError, match=r"^test: base\.protocol: must be one of project, reference"):
        sweep_from_dict(small_sweep(base={"protocol": bad}), "test")


# --------------------------------------------------------------------------- the sweep path


def _long_sweep(**base) -> dict:
    data = small_sweep(tokens={"rule": "fixed", "tokens": 8 * 64 * 10_240})  # 10,240 steps per run
    data["seeds"] = [0]
    data["base"] = {**data["base"], **base}
    return data


def test_base_protocol_reaches_every_run():
    data = _long_sweep(protocol="reference")
    data["architectures"].append({"label": "EBT-own", "arch": "ebt", "options": {"alpha_lr_floor": "scaled"}})
    runs = plan_of(data).runs
    assert len(runs) == 6
    for r in runs:
        expected = REFERENCE if r.arch == "transformer" else REFERENCE_EBT
        if r.arch_label == "EBT-own":  # the entry's own option wins over the preset
            expected = {**expected, "model.options.alpha_lr_floor": "scaled"}
        assert {k: value(r.spec, k) for k in expected} == expected, r.arch_label
        if r.arch == "transformer":
            assert not hasattr(r.spec.model.options, "alpha_random_draw")


def test_sweep_preset_gives_the_run_ids_of_the_fields_written_out():
    written = by_hand(REFERENCE)
    by_hand_sweep = _long_sweep(model={**small_sweep()["base"]["model"], "init": "reference"},
                                train={**small_sweep()["base"]["train"], **written["train"]})
    for entry in by_hand_sweep["architectures"]:
        if entry["arch"] == "ebt":
            entry["options"] = {"alpha_random_draw": "forward", "alpha_lr_floor": "shared"}
    preset = plan_of(_long_sweep(protocol="reference"))
    assert [r.run_id for r in preset.runs] == [r.run_id for r in plan_of(by_hand_sweep).runs]
    assert [r.pair_id for r in preset.runs] == [r.pair_id for r in plan_of(by_hand_sweep).runs]
    assert dump_sweep(preset.sweep)["base"]["protocol"] == "reference"  # sweep.yaml keeps the preset's name
    plain = plan_of(_long_sweep())
    assert all(protocol_of(r.spec) == "project" for r in plain.runs)
    assert all(protocol_of(r.spec) == "reference" for r in preset.runs)


def test_reference_with_the_isoflop_warmup_rule_takes_the_rules_warmup():
    """The preset's 10k warmup steps would replace the OLMo rule's fraction: the rule wins, each
    run warming up for N tokens (N: the reference architecture's total parameters) capped at max_fraction."""
    plan = make_plan(load_sweep("isoflop", {"base.protocol": "reference"}))
    cap = plan.sweep.hparams.warmup.max_fraction
    assert {r.arch for r in plan.runs} == {"transformer", "ebt"}
    for r in plan.runs:
        assert r.spec.train.warmup_steps is None, r.run_id
        assert r.spec.train.warmup_fraction == pytest.approx(min(cap, r.achieved_params / r.tokens), rel=1e-12)
        assert (r.spec.model.init, r.spec.train.decay_norms_and_embeddings) == ("reference", True)  # the rest applies


@pytest.mark.parametrize("rule,expected", [({"rule": "fraction", "fraction": 0.1}, lambda steps: 0.1),
                                           ({"rule": "tokens", "tokens": 8 * 64 * 1_000, "max_fraction": 0.5},
                                            lambda steps: 1_000 / steps)])
def test_reference_with_a_sweep_warmup_rule(rule, expected):
    data = _long_sweep(protocol="reference")
    data["hparams"] = {"warmup": rule}
    for r in plan_of(data).runs:
        assert (r.spec.train.warmup_steps, r.spec.train.warmup_fraction) == (None, pytest.approx(expected(r.steps)))
        if r.arch == "ebt":
            assert r.spec.model.options.alpha_lr_floor == "shared"


def test_warmup_steps_and_a_warmup_rule_together_are_one_line():
    data = _long_sweep(train={**small_sweep()["base"]["train"], "warmup_steps": 100})
    data["hparams"] = {"warmup": {"rule": "olmo"}}
    with pytest.raises(ConfigError, match=r"^test: base\.train\.warmup_steps: gives the warmup, and so does "
                                          r"hparams\.warmup \(rule olmo\); remove one of the two$"):
        plan_of(data)


def test_sweep_too_short_for_the_preset_warmup_names_the_run_and_the_base_key():
    data = small_sweep(base={**small_sweep()["base"], "protocol": "reference"})  # 128 steps per run
    with pytest.raises(ConfigError) as err:
        plan_of(data)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith("test: base.train.warmup_steps: 10000 is not below the run's 128 steps")
    assert "run T++ at size L1-d32, axis value L1-d32" in msg


def test_unknown_arch_under_the_preset_is_named_under_its_own_key():
    assert {item.key for item in items_for("nope")} == set(REFERENCE)  # only the items of every run
    for arch in ("nope", ["ebt"]):
        with pytest.raises(ConfigError, match=r"^run\.yaml: model\.arch: "):
            spec_from_dict({"protocol": "reference", "model": {"arch": arch}}, "run.yaml")
    data = small_sweep(base={**small_sweep()["base"], "protocol": "reference"})
    data["architectures"][1]["arch"] = "nope"
    with pytest.raises(ConfigError, match=r"^test: architectures\[1\]\.arch: unknown architecture 'nope'"):
        plan_of(data)


# --------------------------------------------------------------------------- the derived label


def test_protocol_label():
    assert protocol_of(spec("ebt")) == "project"
    assert protocol_of(spec("transformer")) == "project"
    assert protocol_of(spec("ebt", "reference")) == "reference"
    assert protocol_of(spec("transformer", "reference")) == "reference"
    assert protocol_of(spec("ebt", "reference", train={"warmup_steps": 50})) == \
        "custom: reference except train.warmup_steps=50"
    assert protocol_of(spec("ebt", "reference", train={"warmup_fraction": 0.1})) == \
        "custom: reference except train.warmup_steps by train.warmup_fraction"
    assert protocol_of(spec("ebt", model={"init": "reference"})) == "custom: project except model.init=reference"
    assert protocol_of(spec("ebt", model={"options": {"alpha_random_draw": "forward", "alpha_lr_floor": "shared"}},
                            train={"decay_norms_and_embeddings": True})) == \
        "custom: reference except model.init=project, train.warmup_steps by train.warmup_fraction"
    # System 2 options are the experiment, not the protocol
    assert protocol_of(spec("ebt", model={"options": {"langevin_sigma": 3.0}})) == "project"


def test_load_adds_the_protocol_column(tmp_path):
    specs = {"a": spec("ebt", "reference", train={"warmup_steps": 50}), "b": spec("transformer")}
    for s in specs.values():
        atomic_write_text(tmp_path / "runs" / s.run_id / "spec.yaml", spec_to_yaml(s))
    runs = load_runs(tmp_path).runs.set_index("run_id")
    assert runs.loc[specs["a"].run_id, "protocol"] == "custom: reference except train.warmup_steps=50"
    assert runs.loc[specs["a"].run_id, "model_init"] == "reference"
    assert runs.loc[specs["b"].run_id, "protocol"] == "project"


def test_report_sentence_names_each_labels_protocol():
    points = pd.DataFrame({"arch_label": ["T++", "T++", "EBT-S2", "EBT-S1"],
                           "protocol": ["reference", "reference", "custom: reference except train.warmup_steps=50",
                                        None]})
    sentence = _protocol_sentence(types.SimpleNamespace(points=points, labels=["T++", "EBT-S2", "EBT-S1"]))
    assert sentence.startswith("Protocol: T++ reference; EBT-S2 custom: reference except train.warmup_steps=50; "
                               "EBT-S1 unknown.")
    for item in ("model.init=reference", "train.decay_norms_and_embeddings=true", "train.warmup_steps=10000",
                 "model.options.alpha_random_draw=forward", "model.options.alpha_lr_floor=shared"):
        assert item in sentence
    old = types.SimpleNamespace(points=pd.DataFrame({"arch_label": ["T++"]}), labels=["T++"])
    assert _protocol_sentence(old).startswith("Protocol: T++ unknown.")  # analyses of runs without the column


# --------------------------------------------------------------------------- the S2 example of the presets


def uncommented_s2(preset: str) -> dict:
    """The preset's data with its commented EBT-S2 entry uncommented (the text a user edits)."""
    lines = Path(preset_path(preset)).read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("  # - {label: EBT-S2"))
    out = lines[:start]
    i = start
    while i < len(lines) and (i == start or lines[i].startswith("  #     ")):
        out.append(lines[i].replace("# ", "", 1))
        i += 1
    return yaml.safe_load("\n".join(out + lines[i:]))


@pytest.mark.parametrize("preset", ["paper_nlp", "tune"])
def test_uncommented_s2_example_is_the_reference_s2(preset):
    sweep = sweep_from_dict(uncommented_s2(preset), preset)
    index = [a.label for a in sweep.architectures].index("EBT-S2")
    options = arch_options(sweep, index)
    lo, hi = options.random_extra_steps
    # the reference S2 script: each step repeated U{2..3} times, one landscape; validation 3 steps
    assert {options.refine_steps + extra for extra in range(lo, hi + 1)} == {2, 3}
    assert options.validation_steps == 3
    assert (options.alpha_init, options.learn_alpha, options.alpha_random_scale, options.langevin_sigma,
            options.replay_buffer_size, options.truncate_unroll) == (5.0, False, 2.0, 3.0, 192, True)
    assert re.search(r"#\s+truncate_unroll: true}}", Path(preset_path(preset)).read_text())  # still commented


def test_an_architecture_lists_its_own_reference_options():
    """The preset's EBT items are the EBT entry's ``reference_options``; an entry naming a
    field its options lack is refused when it is made."""
    import dataclasses

    from ebt_scaling.harness.contract.architecture import ARCHITECTURES

    assert {item.key for item in items_for("ebt")} == set(REFERENCE_EBT)
    assert dict(ARCHITECTURES.get("ebt").reference_options) == {"alpha_random_draw": "forward",
                                                                "alpha_lr_floor": "shared"}
    with pytest.raises(ValueError, match="reference_options names \\['nope'\\]"):
        dataclasses.replace(ARCHITECTURES.get("ebt"), reference_options={"nope": 1})
