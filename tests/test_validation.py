"""Input the CLI must refuse in one line, before writing anything (the probe faults of issue 13):
untyped tags, YAML alias bombs, non-finite numbers, seeds no RNG takes, binary files, output
paths that cannot be directories, path-like sweep names, a range axis too long to plan, and two
processes training one run directory at once."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import make_sweep
from test_sweep_errors import GOOD, assert_one_line_error, edit

from ebt_scaling.harness.cli.main import main
from ebt_scaling.harness.contract.errors import ConfigError
from ebt_scaling.harness.contract.run_dir import RunDir, atomic_write_json
from ebt_scaling.harness.contract.spec import spec_from_dict, spec_to_yaml
from ebt_scaling.harness.dispatch import run_files as leases

BILLION_LAUGHS = """\
a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
"""
BINARY = bytes(range(256)) * 4  # no UTF-8 text: a tokenizer, an image or a checkpoint given by mistake


def one_line(capsys, code: int, command: str, *needles: str) -> str:
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert code == 2, (captured.out, err)
    assert "\n" not in err and "Traceback" not in captured.out + err, err
    assert err.startswith(f"ebt-scaling {command}: error: "), err
    for needle in needles:
        assert needle in err, err
    return err


def timed_cli(*argv: str, timeout_s: float = 60.0) -> tuple[int, str, float]:
    """Run the CLI in a child process (memory capped at 2 GiB, killed after `timeout_s`):
    (exit status, stderr, seconds main() took, measured after the imports)."""
    code = ("import resource, sys, time\n"
            "resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))\n"
            "from ebt_scaling.harness.cli.main import main\n"
            "start = time.perf_counter()\n"
            "rc = main(sys.argv[1:])\n"
            "print(f'ELAPSED {time.perf_counter() - start}')\n"
            "sys.exit(rc)\n")
    try:
        done = subprocess.run([sys.executable, "-c", code, *map(str, argv)], capture_output=True, text=True,
                              timeout=timeout_s)
    except subprocess.TimeoutExpired:
        pytest.fail(f"ebt-scaling {' '.join(map(str, argv))} still ran after {timeout_s:.0f} s")
    elapsed = float(done.stdout.rsplit("ELAPSED ", 1)[1])
    return done.returncode, done.stderr.strip(), elapsed


def write_sweep(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(text)
    return path


# ---- 1. tags --------------------------------------------------------------------------------------
@pytest.mark.parametrize("tags, key", [
    ("{1: a}", "base.tags: keys must be strings"),
    ("{group: [1, 2]}", "base.tags.group: must be a string"),
    ("{group: {x: 1}}", "base.tags.group: must be a string"),
    ("{group: null}", "base.tags.group: must be a string"),
])
def test_tags_are_typed_and_plan_writes_nothing(tmp_path, capsys, tags, key):
    path = write_sweep(tmp_path, edit("  train: {batch_size: 8}\n", f"  train: {{batch_size: 8}}\n  tags: {tags}\n"))
    out = tmp_path / "plan-out"
    code = main(["plan", str(path), "--write", str(out)])
    assert_one_line_error(capsys, code, f"{path}: {key}")
    assert not out.exists()


def test_scalar_tag_values_are_kept_as_strings():
    spec = spec_from_dict({"tags": {"group": 3, "cool": True, "lr": 0.5, "name": "x"}})
    assert spec.tags == {"group": "3", "cool": "true", "lr": "0.5", "name": "x"}


def test_plan_write_is_all_or_nothing(tmp_path, monkeypatch, capsys):
    """Everything plan --write writes is made before the first file is written: a failure
    while making the last file (plan.json) leaves the directory as it was."""
    from ebt_scaling.sweeps import plan_table

    def broken(plan):
        raise ConfigError("plan.json: cannot be made (test)")

    monkeypatch.setattr(plan_table, "plan_json", broken)
    out = tmp_path / "plan-out"
    code = main(["plan", str(write_sweep(tmp_path, GOOD)), "--write", str(out)])
    one_line(capsys, code, "plan", "plan.json")
    assert not out.exists() or not any(out.rglob("*.yaml"))


# ---- 2. YAML alias bombs -------------------------------------------------------------------------
def test_yaml_alias_bomb_is_refused_fast_in_one_line(tmp_path):
    bomb = "  tags:\n" + "".join(f"    {line}\n" for line in BILLION_LAUGHS.splitlines())
    path = write_sweep(tmp_path, edit("  train: {batch_size: 8}\n", "  train: {batch_size: 8}\n" + bomb))
    out = tmp_path / "plan-out"
    code, err, elapsed = timed_cli("plan", path, "--write", out)
    assert code == 2 and "\n" not in err and str(path) in err and "alias" in err, err
    assert elapsed < 2.0 and not out.exists()


def test_small_anchors_still_work_and_recursive_aliases_are_refused(tmp_path, capsys):
    from ebt_scaling.harness.contract.typed_config import load_yaml

    shared = tmp_path / "shared.yaml"
    shared.write_text("a: &opts {refine_steps: 3}\nb: *opts\n")
    assert load_yaml(shared) == {"a": {"refine_steps": 3}, "b": {"refine_steps": 3}}
    loop = tmp_path / "loop.yaml"
    loop.write_text("a: &a [1, *a]\n")
    with pytest.raises(ConfigError, match="alias"):
        load_yaml(loop)
    code = main(["plan", str(write_sweep(tmp_path, GOOD)), "--set", "base.tags=" + "{x: &x [1, *x]}"])
    one_line(capsys, code, "plan", "alias")


def test_values_are_counted_whenever_a_document_may_hold_too_many():
    """parse_yaml skips the count of a short text without an alias (a spec.yaml): at most a few
    values a character, so far below MAX_YAML_NODES; a long one is counted, alias or not."""
    from ebt_scaling.harness.contract.typed_config import MAX_YAML_NODES, parse_yaml

    assert parse_yaml("[?]", "dense") == [{None: None}]  # the densest text: 4 values in 3 characters
    assert len(parse_yaml("[" + "0," * (MAX_YAML_NODES // 16) + "]", "short")) == MAX_YAML_NODES // 16
    with pytest.raises(ConfigError, match="more than"):
        parse_yaml("[" + "0," * MAX_YAML_NODES + "]", "long")


# ---- 3. non-finite and out-of-range values ---------------------------------------------------------
@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan, "inf", "nan", "1e999"])
def test_non_finite_floats_are_refused(value):
    with pytest.raises(ConfigError, match=r"^spec: train\.lr: expected a finite number"):
        spec_from_dict({"train": {"lr": value}})


def test_non_finite_lr_and_peak_tflops_are_refused_by_the_cli(tmp_path, capsys, tiny_spec):
    spec = tmp_path / "spec.yaml"
    spec.write_text(spec_to_yaml(tiny_spec()).replace("lr: 0.003", "lr: .inf"))
    out = tmp_path / "run"
    one_line(capsys, main(["train", str(spec), "--out", str(out)]), "train", "train.lr: expected a finite number")
    assert not out.exists()
    path = write_sweep(tmp_path, GOOD + "throughput: {peak_tflops: .inf}\n")
    code = main(["plan", str(path), "--write", str(tmp_path / "plan-out")])
    assert_one_line_error(capsys, code, f"{path}: throughput.peak_tflops: expected a finite number")
    code = main(["plan", str(write_sweep(tmp_path, GOOD)), "--set", "base.train.lr=.nan"])
    one_line(capsys, code, "plan", "base.train.lr: expected a finite number")
    tiny = ["--layers", "1", "--d-model", "16", "--heads", "2", "--vocab", "32", "--ctx", "8", "--batch", "2",
            "--warmup", "0", "--iters", "1", "--device", "cpu"]  # fast to time, should a bad value get through
    for value in ("inf", "nan", "0"):
        one_line(capsys, main(["bench", *tiny, "--peak-tflops", value]), "bench",
                 f"--peak-tflops: must be a positive finite number, got {float(value)}")


def strict_json(text: str):
    """json.loads refusing NaN and Infinity, as strict JSON readers do."""
    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_atomic_write_json_writes_strict_json_with_null_for_non_finite(tmp_path):
    path = tmp_path / "result.json"
    atomic_write_json(path, {"loss": float("nan"), "ppl": float("inf"), "low": -math.inf, "ok": [1.5, 2]})
    assert strict_json(path.read_text()) == {"loss": None, "ppl": None, "low": None, "ok": [1.5, 2]}


def test_a_diverged_run_leaves_strict_json(tiny_spec, tmp_path):
    from ebt_scaling.harness.training.trainer import train_run

    spec = tiny_spec(train={"lr": 1e30, "grad_clip": 0.0, "warmup_fraction": 0.0})
    result = train_run(spec, tmp_path / "run", quiet=True)
    assert result["status"] == "diverged"
    on_disk = strict_json((tmp_path / "run" / "result.json").read_text())
    assert on_disk["status"] == "diverged"


@pytest.mark.parametrize("seed", [2 ** 32, 2 ** 64, -1])
def test_seeds_outside_what_every_rng_takes_are_refused_at_plan_time(tmp_path, capsys, seed):
    with pytest.raises(ConfigError, match=r"^spec: seed: must be in \[0, 2\^32\)"):
        spec_from_dict({"seed": seed})
    path = write_sweep(tmp_path, edit("seeds: [0]", f"seeds: [0, {seed}]"))
    out = tmp_path / "plan-out"
    code = main(["plan", str(path), "--write", str(out)])
    assert_one_line_error(capsys, code, f"{path}: seeds[1]: must be")
    assert not out.exists()
    path = write_sweep(tmp_path, GOOD + f"repeat: {{at: [4xs], seeds: [{seed}]}}\n")
    code = main(["plan", str(path), "--write", str(out)])
    assert_one_line_error(capsys, code, f"{path}: repeat.seeds[0]: must be")


# ---- 4. binary files, output paths ---------------------------------------------------------------
def test_binary_yaml_is_one_line_naming_the_file(tmp_path, capsys):
    path = tmp_path / "blob.yaml"
    path.write_bytes(BINARY)
    one_line(capsys, main(["plan", str(path)]), "plan", str(path), "UTF-8")
    one_line(capsys, main(["train", str(path), "--out", str(tmp_path / "run")]), "train", str(path))
    assert not (tmp_path / "run").exists()
    printable_but_not_yaml = tmp_path / "ctl.yaml"
    printable_but_not_yaml.write_bytes(b"a: \x07\x1b[31m\n")
    one_line(capsys, main(["plan", str(printable_but_not_yaml)]), "plan", str(printable_but_not_yaml))


def unwritable_places(tmp_path: Path) -> list[Path]:
    """Directories that cannot be made even by root: below a regular file (ENOTDIR), and
    below /sys (sysfs refuses new entries to everyone, EACCES/EPERM)."""
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    places = [a_file / "out"]
    if Path("/sys/kernel").is_dir():
        places.append(Path("/sys/ebt-scaling-test-out"))
    return places


def test_train_out_must_be_a_writable_directory(tiny_spec, tmp_path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text(spec_to_yaml(tiny_spec()))
    a_file = tmp_path / "a-file"
    for out in unwritable_places(tmp_path):
        one_line(capsys, main(["train", str(spec), "--out", str(out)]), "train", "--out", str(out))
        assert not out.exists()
    one_line(capsys, main(["train", str(spec), "--out", str(a_file)]), "train", "--out", "not a directory")
    assert a_file.read_text() == "x"


def test_plan_write_must_be_a_writable_directory(tmp_path, capsys):
    path = write_sweep(tmp_path, GOOD)
    for out in unwritable_places(tmp_path):
        one_line(capsys, main(["plan", str(path), "--write", str(out)]), "plan", "--write", str(out))
    one_line(capsys, main(["plan", str(path), "--write", str(tmp_path / "a-file")]), "plan", "--write")


def test_analyze_out_must_be_a_writable_directory(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    (sweep / "runs").mkdir(parents=True)
    for out in unwritable_places(tmp_path):
        one_line(capsys, main(["analyze", str(sweep), "--out", str(out)]), "analyze", "--out", str(out))
    one_line(capsys, main(["analyze", str(sweep), "--out", str(tmp_path / "a-file")]), "analyze", "--out",
             "not a directory")


def test_run_out_must_be_a_writable_directory(tmp_path, capsys):
    for out in unwritable_places(tmp_path):
        one_line(capsys, main(["run", "tiny", "--out", str(out)]), "run", "--out", str(out))


# ---- 5. names that are paths -----------------------------------------------------------------------
@pytest.mark.parametrize("name", ["..", ".", "a/b", "-rf", ".hidden"])
def test_sweep_names_cannot_be_paths(tmp_path, capsys, name):
    path = write_sweep(tmp_path, edit("name: bad", f"name: {json.dumps(name)}"))
    code = main(["plan", str(path), "--write", str(tmp_path / "plan-out")])
    assert_one_line_error(capsys, code, f"{path}: name: must be")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        code = main(["run", str(path)])
    finally:
        os.chdir(cwd)
    one_line(capsys, code, "run", "name: must be")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep.yaml"]  # nothing planned, here or in runs/


# ---- 6. smaller risks --------------------------------------------------------------------------------
def test_a_huge_range_axis_is_refused_before_it_is_expanded(tmp_path):
    path = write_sweep(tmp_path, edit("""axis:
  name: parameters
  values: [{n_layers: 1, d_model: 32, n_heads: 2}, 4xs]
tokens: {rule: fixed, tokens: 65536}
""", """axis:
  name: data
  size: 4xs
  values: {start: 1.0e+6, stop: 1.0e+9, num: 1000000}
"""))
    code, err, elapsed = timed_cli("plan", path, timeout_s=60)
    assert code == 2 and "\n" not in err and "axis.values.num" in err and "10000" in err, err
    assert elapsed < 2.0


def test_plans_above_the_run_limit_are_refused(tmp_path, capsys, monkeypatch):
    from ebt_scaling.sweeps import sweep_spec

    monkeypatch.setattr(sweep_spec, "MAX_RUNS", 3)  # GOOD plans 2 sizes x 2 architectures = 4 runs
    code = main(["plan", str(write_sweep(tmp_path, GOOD))])
    one_line(capsys, code, "plan", "more than 3 runs")


def cli_process(*argv) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ebt_scaling.harness.cli", *map(str, argv)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_until(condition, timeout_s: float = 120.0, what: str = "") -> None:
    deadline = time.time() + timeout_s
    while not condition():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_two_trains_on_one_run_dir_never_both_train(tiny_spec, tmp_path):
    # Long enough (5000 steps) that the first job is still training when it is interrupted.
    spec = tiny_spec(train={"tokens": 32 * 8 * 5000}, checkpoint_every=10_000)
    path = tmp_path / "spec.yaml"
    path.write_text(spec_to_yaml(spec))
    run = RunDir(tmp_path / "run")
    first = cli_process("train", path, "--out", run.path, "--quiet")
    try:
        wait_until(lambda: run.metrics() or first.poll() is not None, what="the first train's first step")
        assert first.poll() is None, first.communicate()
        second = cli_process("train", path, "--out", run.path, "--quiet")
        out, err = second.communicate(timeout=120)
        assert second.returncode == 2, (out, err)
        err = err.strip()
        assert "\n" not in err and "--out" in err and f"pid {first.pid}" in err, err
        holder = leases.read_lease(run.path)
        assert holder is not None and holder["pid"] == first.pid
    finally:
        first.send_signal(signal.SIGTERM)  # the trainer checkpoints at the end of its step and stops
        first.communicate(timeout=120)
    assert first.returncode == 0 and leases.read_lease(run.path) is None
    steps = [r["step"] for r in run.metrics()]
    assert steps == sorted(set(steps))  # no row twice


def test_a_second_submit_wait_waits_for_the_runs_the_first_one_started(tiny_spec, tmp_path):
    """A second `submit --wait` finds the run held by the first submission's live job: it must
    wait until that job ends (here: interrupted), not return at once."""
    # Long enough (5000 steps) that the first job is still training when it is interrupted.
    spec = tiny_spec(train={"tokens": 32 * 8 * 5000}, checkpoint_every=10_000)
    (run_path,) = make_sweep(tmp_path / "sweep", [spec]).values()
    run = RunDir(run_path)
    first = cli_process("submit", tmp_path / "sweep", "--cluster", "debug")
    try:
        wait_until(lambda: run.metrics() or first.poll() is not None, what="the first submit's first step")
        assert first.poll() is None, first.communicate()
        second = cli_process("submit", tmp_path / "sweep", "--cluster", "debug", "--wait", "--poll", "0.2")
        lines = []
        for line in second.stdout:  # up to the line saying it waits (or the end: the fault)
            lines.append(line)
            if line.startswith("waiting for 1 run(s)"):
                break
        assert lines and lines[-1].startswith("waiting for 1 run(s)"), "".join(lines) + second.stderr.read()
        time.sleep(1.0)
        assert second.poll() is None  # still waiting while the first job trains
    finally:
        first.send_signal(signal.SIGINT)  # the debug job stops the run, keeping its checkpoints
        first.communicate(timeout=120)
    out, err = second.communicate(timeout=120)
    assert "submitted 0 run(s); skipped 1 held by a live job" in out and "not finished" in out, (out, err)
    assert leases.read_lease(run_path) is None
