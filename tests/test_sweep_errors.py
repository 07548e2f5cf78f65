"""Malformed sweep files: `ebt-scaling plan` exits non-zero with ONE line naming the file
and the key, and writes nothing."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from ebt_scaling.harness.cli.main import main

GOOD = """\
name: bad
base:
  model: {vocab_size: 1024, context: 64}
  train: {batch_size: 8}
seeds: [0]
architectures:
  - {label: T++, arch: transformer}
  - {label: EBT, arch: ebt}
axis:
  name: parameters
  values: [{n_layers: 1, d_model: 32, n_heads: 2}, 4xs]
tokens: {rule: fixed, tokens: 65536}
"""

ISO = GOOD.replace("""axis:
  name: parameters
  values: [{n_layers: 1, d_model: 32, n_heads: 2}, 4xs]
tokens: {rule: fixed, tokens: 65536}
""", """axis:
  name: isoflop
  values: [1.0e+15, 1.0e+16]
""")


def edit(old: str, new: str, text: str = GOOD) -> str:
    assert old in text, old
    return text.replace(old, new)


# (id, file text, a substring the one-line error must contain: the key)
CASES = [
    ("unknown-top-key", GOOD + "nmae: x\n", "nmae: unknown key"),
    ("missing-name", edit("name: bad\n", ""), "name: missing required key"),
    ("missing-architectures", edit("""architectures:
  - {label: T++, arch: transformer}
  - {label: EBT, arch: ebt}
""", ""), "architectures: missing required key"),
    ("missing-axis", edit("""axis:
  name: parameters
  values: [{n_layers: 1, d_model: 32, n_heads: 2}, 4xs]
""", ""), "axis: missing required key"),
    ("empty-architectures", edit("""architectures:
  - {label: T++, arch: transformer}
  - {label: EBT, arch: ebt}
""", "architectures: []\n"), "architectures: must list at least one"),
    ("seeds-wrong-type", edit("seeds: [0]", "seeds: zero"), "seeds: expected a list"),
    ("seed-negative", edit("seeds: [0]", "seeds: [-1]"), "seeds[0]: must be in [0, 2^32)"),
    ("seed-duplicate", edit("seeds: [0]", "seeds: [3, 3]"), "seeds[1]: duplicate"),
    ("unknown-axis", edit("name: parameters", "name: girth"), "axis.name: must be one of"),
    ("negative-budget", edit("[1.0e+15, 1.0e+16]", "[1.0e+15, -1.0e+16]", ISO), "axis.values[1]: must be > 0"),
    ("empty-budget-list", edit("[1.0e+15, 1.0e+16]", "[]", ISO), "axis.values: must not be empty"),
    ("budget-not-a-number", edit("[1.0e+15, 1.0e+16]", "[1.0e+15, lots]", ISO), "axis.values[1]: expected a number"),
    ("range-stop-below-start", edit("[1.0e+15, 1.0e+16]", "{start: 1.0e+16, stop: 1.0e+15, num: 3}", ISO),
     "axis.values.stop: must be >= start"),
    ("range-missing-num", edit("[1.0e+15, 1.0e+16]", "{start: 1.0e+15, stop: 1.0e+16}", ISO),
     "axis.values.num: missing required key"),
    ("range-unknown-key", edit("[1.0e+15, 1.0e+16]", "{start: 1.0e+15, stop: 1.0e+16, num: 3, step: 2}", ISO),
     "axis.values.step: unknown key"),
    ("token-rule-ratio", edit("tokens: {rule: fixed, tokens: 65536}", "tokens: {rule: tokens_per_param, tokens_per_param: 0}"),
     "tokens.tokens_per_param: must be > 0"),
    ("isoflop-fixed-tokens", ISO + "tokens: {rule: fixed, tokens: 1000}\n", "tokens.rule:"),
    ("isoflop-zero-points", edit("  values: [1.0e+15, 1.0e+16]\n", "  values: [1.0e+15]\n  points: 0\n", ISO),
     "axis.points: must be >= 1"),
    ("impossible-explicit-shape", edit("{n_layers: 1, d_model: 32, n_heads: 2}", "{n_layers: 1, d_model: 30, n_heads: 4}"),
     "axis.values[0].d_model: must be n_heads (4) x an even head_dim"),
    ("impossible-width", edit("""  name: parameters
  values: [{n_layers: 1, d_model: 32, n_heads: 2}, 4xs]""", """  name: width
  size: 4xs
  values: [128, 100]"""), "axis.values[1]: d_model 100 is not a multiple of shape.head_dim"),
    ("unknown-ladder-size", edit("4xs]", "xxxl]"), "axis.values[1]: unknown size 'xxxl'"),
    ("fixed-size-axis-without-size", edit("""  name: parameters
  values: [{n_layers: 1, d_model: 32, n_heads: 2}, 4xs]""", """  name: data
  values: [1.0e+6]"""), "axis.size: is required for a data sweep"),
    ("size-on-parameters-axis", edit("  name: parameters\n", "  name: parameters\n  size: xxs\n"),
     "axis.size: is only used by"),
    ("unknown-arch", edit("{label: EBT, arch: ebt}", "{label: EBT, arch: rnn}"),
     "architectures[1].arch: unknown architecture 'rnn'; registered: transformer, ebt"),
    ("unknown-ebt-option", edit("{label: EBT, arch: ebt}", "{label: EBT, arch: ebt, options: {stepz: 3}}"),
     "architectures[1].options.stepz: unknown key"),
    ("bad-ebt-value", edit("{label: EBT, arch: ebt}", "{label: EBT, arch: ebt, options: {refine_steps: 0}}"),
     "architectures[1].options.refine_steps: must be an integer >= 1"),
    ("ebt-options-on-transformer", edit("{label: T++, arch: transformer}",
                                        "{label: T++, arch: transformer, options: {refine_steps: 3}}"),
     "architectures[0].options.refine_steps: unknown key"),
    ("legacy-ebt-key-on-transformer", edit("{label: T++, arch: transformer}", "{label: T++, arch: transformer, ebt: {steps: 3}}"),
     "architectures[0].ebt: only applies to arch 'ebt'"),
    ("model-options-in-base", edit("train: {batch_size: 8}", "train: {batch_size: 8}\n  model: {options: {refine_steps: 3}}"),
     "base.model.options: is set by the sweep"),
    ("duplicate-label", edit("{label: EBT, arch: ebt}", "{label: T++, arch: ebt}"), "architectures[1].label: duplicate"),
    ("base-unknown-key", edit("train: {batch_size: 8}", "train: {batch_size: 8, lrr: 0.1}"), "base.train.lrr: unknown key"),
    ("base-bad-value", edit("train: {batch_size: 8}", "train: {batch_size: -8}"), "base.train.batch_size: must be >= 1"),
    ("base-owned-key", edit("model: {vocab_size: 1024, context: 64}", "model: {vocab_size: 1024, context: 64, n_layers: 4}"),
     "base.model.n_layers: is set by the sweep"),
    ("bad-pairing", GOOD + "pairing: compute\n", "pairing: must be one of 'tokens', 'flops'"),
    ("fixed-tokens-missing", edit("tokens: {rule: fixed, tokens: 65536}", "tokens: {rule: fixed}"),
     "tokens.tokens: is required when rule is 'fixed'"),
    ("fractional-tokens", edit("tokens: 65536}", "tokens: 65536.5}"), "tokens.tokens: must be a whole number"),
    ("unknown-lr-rule", GOOD + "hparams: {lr: {rule: magic}}\n", "hparams.lr.rule: must be one of"),
    ("batch-table-not-int", GOOD + "hparams: {batch: {table: {xxs: many}}}\n", "hparams.batch.table.xxs: must be a batch"),
    ("mfu-above-one", GOOD + "throughput: {mfu: 1.5}\n", "throughput.mfu: must be in (0, 1]"),
    ("mfu-not-a-number", GOOD + "throughput: {mfu: {ebt: fast}}\n", "throughput.mfu.ebt: expected a number"),
    ("source-is-no-key", GOOD + "source: elsewhere.yaml\n", "source: unknown key"),
    ("duplicate-factor-as-listed", GOOD + "tune: {lr: [2, 2, 1]}\n", "tune.lr[1]: duplicate factor 2"),
    ("unknown-reference", GOOD + "flops: {reference: EBT-S9}\n", "flops.reference: must be one of the architecture labels"),
    ("odd-head-dim", GOOD + "shape: {head_dim: 7}\n", "shape.head_dim: must be an even integer"),
    ("not-a-mapping", "- name\n- axis\n", "expected a mapping of sweep keys"),
    ("bad-yaml", GOOD + "seeds: [0\n", "line 14 invalid YAML"),
    ("empty-file", "", "expected a mapping of sweep keys"),
]


def tree_digest(root: Path) -> dict[str, str]:
    if not root.exists():
        return {}
    return {p.relative_to(root).as_posix(): (hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir")
            for p in sorted(root.rglob("*"))}


def assert_one_line_error(capsys, code: int, start: str) -> str:
    """Exit status 2 and one line on stderr that begins exactly with `start` (after the
    command's prefix): the file, then the key, then the message."""
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert code == 2
    assert "\n" not in err, err
    assert err.startswith("ebt-scaling plan: error: " + start), err
    assert "Traceback" not in captured.out + captured.err
    return err


def test_at_least_20_malformed_files():
    assert len(CASES) >= 20 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("text,key", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_malformed_sweep_one_line_and_nothing_written(tmp_path, capsys, text, key):
    path = tmp_path / "sweep.yaml"
    path.write_text(text)
    out = tmp_path / "plan-out"
    code = main(["plan", str(path), "--write", str(out)])
    assert_one_line_error(capsys, code, f"{path}: {key}")
    assert not out.exists()


def test_malformed_sweep_leaves_an_existing_plan_dir_unchanged(tmp_path, capsys):
    good = tmp_path / "good.yaml"
    good.write_text(GOOD)
    out = tmp_path / "plan-out"
    assert main(["plan", str(good), "--write", str(out)]) == 0
    before = tree_digest(out)
    assert any(k.endswith("spec.yaml") for k in before)
    bad = tmp_path / "bad.yaml"
    bad.write_text(edit("{label: EBT, arch: ebt}", "{label: EBT, arch: ebt, options: {refine_steps: 0}}"))
    capsys.readouterr()
    code = main(["plan", str(bad), "--write", str(out)])
    assert_one_line_error(capsys, code, f"{bad}: architectures[1].options.refine_steps: must be")
    assert tree_digest(out) == before


def test_unknown_preset_and_missing_file(tmp_path, capsys):
    out = tmp_path / "o"
    code = main(["plan", "tinyy", "--write", str(out)])
    err = assert_one_line_error(capsys, code, "tinyy: no such file or preset")
    assert "tiny" in err.split("presets", 1)[1]  # lists the presets
    missing = tmp_path / "nope.yaml"
    code = main(["plan", str(missing), "--write", str(out)])
    assert_one_line_error(capsys, code, f"{missing}: cannot read")
    assert not out.exists()


def test_bad_cli_overrides(tmp_path, capsys):
    path = tmp_path / "s.yaml"
    path.write_text(GOOD)
    code = main(["plan", str(path), "--set", "throughput.mfu=2"])
    assert_one_line_error(capsys, code, f"{path}: throughput.mfu: must be in (0, 1]")
    code = main(["plan", str(path), "--set", "throughput.mfu"])
    assert_one_line_error(capsys, code, "--set throughput.mfu: expected KEY=VALUE")
    code = main(["bench-plan", "--runs", "0"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--runs" in err and "\n" not in err


def test_legacy_ebt_key_still_reads_with_a_warning(tmp_path):
    from ebt_scaling.sweeps.generate import make_plan
    from ebt_scaling.sweeps.sweep_spec import load_sweep

    path = tmp_path / "s.yaml"
    path.write_text(edit("{label: EBT, arch: ebt}", "{label: EBT, arch: ebt, ebt: {steps: 3}}"))
    with pytest.warns(FutureWarning) as record:
        ebt_runs = [r for r in make_plan(load_sweep(path)).runs if r.spec.model.arch == "ebt"]
    messages = {str(w.message).split(":")[0] for w in record}
    assert messages == {"architectures[1].ebt", "architectures[1].options.steps"}
    assert ebt_runs and all(r.spec.model.options.refine_steps == 3 for r in ebt_runs)


def test_legacy_base_model_ebt_options_become_each_ebt_entrys_defaults(tmp_path):
    from ebt_scaling.sweeps.generate import make_plan
    from ebt_scaling.sweeps.sweep_spec import load_sweep

    path = tmp_path / "s.yaml"
    text = edit("  model: {vocab_size: 1024, context: 64}", "  model: {vocab_size: 1024, context: 64, ebt: {alpha_init: 7.0, steps: 3}}")
    path.write_text(edit("{label: EBT, arch: ebt}", "{label: EBT, arch: ebt, options: {refine_steps: 1}}", text))
    with pytest.warns(FutureWarning) as record:
        runs = make_plan(load_sweep(path)).runs
    assert {str(w.message).split(":")[0] for w in record} == {"base.model.ebt", "architectures[1].options.steps"}
    ebt = [r.spec.model.options for r in runs if r.spec.model.arch == "ebt"]
    assert ebt and all(o.alpha_init == 7.0 and o.refine_steps == 1 for o in ebt)  # the entry's own key wins
