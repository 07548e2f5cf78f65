"""Damaged or odd inputs: a run directory whose files were cut or overwritten is named and
left out (analyze, status, submit, the job) while the rest go on; a sweep.yaml that is
not YAML is a warning; labels that matplotlib or Markdown would
interpret are shown as written; plots in three formats without a global backend switch;
`fit` on columns that cannot identify the law; BLAS threads limited through threadpoolctl.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import SIZES, power_law, write_synthetic_sweep

from ebt_scaling.analysis.load import load_runs
from ebt_scaling.harness.cli.main import main
from ebt_scaling.harness.contract import run_dir as run_dir_module
from ebt_scaling.harness.contract import run_state as run_state_module
from ebt_scaling.harness.contract.run_dir import RunDir, RunFileError
from ebt_scaling.harness.contract.run_state import run_state
from ebt_scaling.harness.dispatch.job import TrainingJob
from ebt_scaling.harness.dispatch.snapshot import SweepSnapshot
from ebt_scaling.harness.dispatch.sweep_ops import DAMAGED, plan_submission

ARCHS = {"T++": {"arch": "transformer", "law": power_law(30.0, 0.05)},
         "EBT": {"arch": "ebt", "law": power_law(40.0, 0.055)}}
RANDOM_BYTES = bytes(np.random.default_rng(0).integers(0, 256, 300, dtype=np.uint8)) + b"\xff\xfe"


def _sweep(root: Path, archs=ARCHS) -> dict[tuple[str, str], Path]:
    """4 sizes x 2 labels of done runs in the trainer's format; (label, size) -> run directory."""
    write_synthetic_sweep(root, archs=archs, sizes=SIZES[:4])
    runs = load_runs(root).runs
    assert (runs["status"] == "done").all()
    return {(r.arch_label, r.size): Path(r.path) for r in runs.itertuples()}


def _analyze(root: Path, out: Path, capsys) -> tuple[str, dict]:
    capsys.readouterr()
    assert main(["analyze", str(root), "--out", str(out), "--bootstrap", "0"]) == 0
    return capsys.readouterr().err, json.loads((out / "fits.json").read_text())


def _status(root: Path, capsys) -> dict[str, dict]:
    capsys.readouterr()
    assert main(["status", str(root), "--json"]) == 0
    return {r["run_id"]: r for r in json.loads(capsys.readouterr().out)["runs"]}


# ---------------------------------------------------------------------------- a cut metrics.jsonl

def test_a_done_run_with_a_cut_metrics_file_is_named_and_left_out(tmp_path, capsys):
    runs = _sweep(tmp_path)
    cut = runs[("EBT", "s48")]
    lines = (cut / "metrics.jsonl").read_text().splitlines(keepends=True)
    (cut / "metrics.jsonl").write_text("".join(lines[:3]))     # result.json still says done

    row = load_runs(tmp_path).runs.set_index("run_id").loc[cut.name]
    assert row["status"] != "done" and "metrics.jsonl" in row["note"]

    err, fits = _analyze(tmp_path, tmp_path / "out", capsys)
    assert fits["runs"]["fitted"] == 7
    assert cut.name in {e["run_id"] for e in fits["runs"]["excluded"]}
    assert any(cut.name in w and "metrics.jsonl" in w for w in fits["warnings"])
    assert cut.name in err and "warning:" in err
    md = (tmp_path / "out" / "report.md").read_text()
    warnings = md.split("## Skipped analyses and warnings")[1]
    assert cut.name in warnings and "metrics.jsonl" in warnings

    status = _status(tmp_path, capsys)
    assert status[cut.name]["state"] != "done" and "metrics.jsonl" in status[cut.name]["detail"]
    assert sum(r["state"] == "done" for r in status.values()) == 7


def test_a_done_run_whose_result_stops_short_of_its_spec_is_named(tmp_path, capsys):
    runs = _sweep(tmp_path)
    short = runs[("T++", "s32")]
    result = json.loads((short / "result.json").read_text())
    total = result["total_steps"]
    result["step"] = total // 2     # says done, half-way through its planned steps
    (short / "result.json").write_text(json.dumps(result))
    row = load_runs(tmp_path).runs.set_index("run_id").loc[short.name]
    assert row["status"] != "done" and f"step {total // 2}" in row["note"] and str(total) in row["note"]
    assert _status(tmp_path, capsys)[short.name]["state"] != "done"


def test_submit_and_the_job_skip_damaged_runs_and_name_the_fix(tmp_path, capsys):
    """Training again cannot mend a damaged run (a resume from the final checkpoint keeps the
    cut rows): `submit` skips it even with --retry-failed, and a job given one anyway goes on
    with its other runs."""
    runs = _sweep(tmp_path)
    cut, unreadable, good = runs[("EBT", "s48")], runs[("T++", "s32")], runs[("T++", "s48")]
    lines = (cut / "metrics.jsonl").read_text().splitlines(keepends=True)
    (cut / "metrics.jsonl").write_text("".join(lines[:3]))     # result.json still says done
    (unreadable / "result.json").write_bytes(RANDOM_BYTES)

    state, detail = run_state(cut)
    assert state == "failed" and "metrics.jsonl" in detail and f"delete {cut}" in detail
    for retry in (False, True):
        todo, skipped, _ = plan_submission(SweepSnapshot.read(tmp_path).runs, retry_failed=retry)
        assert todo == [] and sorted(skipped[DAMAGED]) == sorted([cut.name, unreadable.name])
        assert len(skipped["done"]) == 6
    assert main(["submit", str(tmp_path), "--cluster", "debug", "--retry-failed"]) == 0
    assert "damaged" in capsys.readouterr().out

    job = TrainingJob([(str(unreadable), "t1"), (str(cut), "t2"), (str(good), "t3")], "debug", threads=1)
    with pytest.raises(RuntimeError) as failure:
        job()
    message = str(failure.value)
    assert f"{unreadable.name}: failed: " in message and "result.json" in message
    assert f"{cut.name}: failed: damaged: " in message and good.name not in message


def _reference_last_row(text: str) -> dict | None:
    """metrics.jsonl's last row by its rule, written out: the last line that ends in a newline."""
    complete = text[:text.rfind("\n") + 1]
    return json.loads(complete.splitlines()[-1]) if complete else None


def _row_text(step: int, pad: int = 0) -> str:
    return json.dumps({"step": step, "train_loss": 1.0 / step, "tokens": 512 * step, "note": "x" * pad}) + "\n"


LAST_ROW_FILES = {
    "one row": _row_text(1),
    "one row, torn": _row_text(1) + '{"step": 2, "tra',
    "torn first and only line": '{"step": 1, "tra',
    "empty": "",
    "rows": "".join(_row_text(s) for s in range(1, 40)),
    "rows, torn": "".join(_row_text(s) for s in range(1, 40)) + '{"step": 40, "train_lo',
    "a torn line longer than the buffer": _row_text(1) + _row_text(2, pad=9000)[:-40],
    "a row longer than the buffer": _row_text(1) + _row_text(2, pad=9000),
    "larger than the buffer": "".join(_row_text(s, pad=s % 50) for s in range(1, 3000)),
}


@pytest.mark.parametrize("tail_bytes", [1, 7, 64, run_dir_module.METRICS_TAIL_BYTES])
def test_the_last_metrics_row_read_from_the_end_is_the_last_row(tmp_path, monkeypatch, tail_bytes):
    """last_metrics_row reads backwards in blocks: every block size, on small, torn and long files."""
    monkeypatch.setattr(run_dir_module, "METRICS_TAIL_BYTES", tail_bytes)
    run = RunDir(tmp_path)
    assert run.last_metrics_row() is None  # no file
    for case, text in LAST_ROW_FILES.items():
        run.metrics_path.write_text(text)
        expected = _reference_last_row(text)
        assert run.last_metrics_row() == expected == (run.metrics() or [None])[-1], case
    assert len(LAST_ROW_FILES["larger than the buffer"]) > 20 * run_dir_module.METRICS_TAIL_BYTES


@pytest.mark.parametrize("last", ["", "   ", "42", '{"step": "7"}', '{"step": 7, "val_loss": "abc"}', "{not json"])
def test_a_damaged_last_metrics_line_is_refused_like_metrics_refuses_it(tmp_path, last):
    run = RunDir(tmp_path)
    run.metrics_path.write_text(_row_text(1) + _row_text(2) + last + "\n" + '{"step": 4, "tor')
    with pytest.raises(RunFileError, match="metrics.jsonl: line 3"):
        run.metrics()
    with pytest.raises(RunFileError, match="metrics.jsonl: its last line"):
        run.last_metrics_row()
    run.metrics_path.write_bytes(_row_text(1).encode() + b"\xff\xfe\n")
    with pytest.raises(RunFileError, match="not UTF-8"):
        run.last_metrics_row()


def test_submit_judges_a_done_run_by_its_last_metrics_row_without_reading_it_whole(tmp_path, monkeypatch):
    """`submit` over a finished sweep must not parse every metrics.jsonl and spec.yaml again
    (thousands of runs, thousands of rows each): a done run is checked against its last row,
    and the spec `submit` loaded already."""
    runs = _sweep(tmp_path)
    early_junk = runs[("T++", "s32")]
    lines = (early_junk / "metrics.jsonl").read_text().splitlines(keepends=True)
    (early_junk / "metrics.jsonl").write_text("".join(["not a row\n", *lines[1:]]))
    cut = runs[("EBT", "s48")]
    (cut / "metrics.jsonl").write_text("".join((cut / "metrics.jsonl").read_text().splitlines(True)[:3]))
    sweep = SweepSnapshot.read(tmp_path).runs

    def whole_file_read(*args, **kwargs):
        raise AssertionError("read whole")
    monkeypatch.setattr(RunDir, "metrics", whole_file_read)
    monkeypatch.setattr(run_state_module, "load_spec", whole_file_read)
    todo, skipped, _ = plan_submission(sweep, retry_failed=True)
    assert todo == [] and skipped[DAMAGED] == [cut.name]  # the last row still tells a cut file
    assert early_junk.name in skipped["done"] and len(skipped["done"]) == 7
    assert run_state(early_junk, total_steps=json.loads((early_junk / "result.json").read_text())["total_steps"]) \
        == ("done", "")


def _unfinished_with_a_checkpoint(run: Path) -> None:
    """A run stopped part-way, as a preemption leaves it: checkpoints, no result.json."""
    (run / "result.json").unlink()
    (run / "checkpoints").mkdir(exist_ok=True)
    (run / "checkpoints" / "step_00000004.pt").write_bytes(b"checkpoint")


@pytest.mark.parametrize("marker", [None, "failed.json"])
def test_an_unfinished_run_with_damaged_metrics_is_damaged_everywhere(tmp_path, capsys, marker):
    """status calls it failed; submit and the job must agree instead of resuming it (the
    trainer rereads metrics.jsonl at every start and would fail each time, --retry-failed too)."""
    runs = _sweep(tmp_path)
    bad, resumable = runs[("EBT", "s32")], runs[("T++", "s32")]
    for run in (bad, resumable):
        _unfinished_with_a_checkpoint(run)
    _append_metrics("42")(bad)
    if marker:  # what the resume that failed on it left
        (bad / marker).write_text(json.dumps({"error": "the resume failed"}))

    state, detail = run_state(bad)
    assert state == "failed" and "metrics.jsonl: line 2" in detail and "delete the run directory" in detail
    assert run_state(resumable)[0] == "preempted"
    status = _status(tmp_path, capsys)[bad.name]
    assert (status["state"], status["detail"]) == (state, detail)
    for retry in (False, True):
        todo, skipped, _ = plan_submission(SweepSnapshot.read(tmp_path).runs, retry_failed=retry)
        assert [r.run_id for r in todo] == [resumable.name] and skipped[DAMAGED] == [bad.name]

    (bad / "failed.json").unlink(missing_ok=True)
    with pytest.raises(RuntimeError, match=f"{bad.name}: failed: .*metrics.jsonl"):
        TrainingJob([(str(bad), "t1")], "debug", threads=1)()
    assert not (bad / "failed.json").exists()  # turned away before training, not failed in it


def test_a_done_run_whose_spec_no_longer_validates_is_not_called_deletable(tmp_path):
    """Checks tightened since the run trained (here: lr .inf) leave its result intact: the
    detail says so, and no fix text tells the user to delete the run."""
    runs = _sweep(tmp_path)
    run = runs[("T++", "s48")]
    result_before = (run / "result.json").read_bytes()
    spec = (run / "spec.yaml").read_text()
    assert re.search(r"(?m)^  lr: ", spec)
    (run / "spec.yaml").write_text(re.sub(r"(?m)^  lr: .*$", "  lr: .inf", spec))

    state, detail = run_state(run)
    assert state == "failed" and detail.startswith("spec.yaml no longer validates: ") and "train.lr" in detail
    assert "delete the run directory" not in detail and f"delete {run}" not in detail
    with pytest.raises(RuntimeError, match=f"{run.name}: failed: spec.yaml no longer validates"):
        TrainingJob([(str(run), "t1")], "debug", threads=1)()
    assert (run / "result.json").read_bytes() == result_before and not (run / "failed.json").exists()


# ---------------------------------------------------------------------------- unexpected content

def _replace(name: str, content):
    def damage(run: Path) -> None:
        (run / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    return damage


def _edit_result(change):
    def damage(run: Path) -> None:
        result = json.loads((run / "result.json").read_text())
        change(result)
        (run / "result.json").write_text(json.dumps(result))
    return damage


def _append_metrics(line: str):
    def damage(run: Path) -> None:
        rows = (run / "metrics.jsonl").read_text().splitlines()
        (run / "metrics.jsonl").write_text("\n".join([rows[0], line, *rows[1:]]) + "\n")
    return damage


DAMAGES = {
    "result-list": ("result.json", _replace("result.json", "[1]")),
    "result-string": ("result.json", _replace("result.json", '"done"')),
    "result-bytes": ("result.json", _replace("result.json", RANDOM_BYTES)),
    "result-val-loss-text": ("result.json", _edit_result(lambda r: r.update(val_loss="abc"))),
    "metrics-number": ("metrics.jsonl", _append_metrics("42")),
    "metrics-bytes": ("metrics.jsonl", _replace("metrics.jsonl", RANDOM_BYTES)),
    "metrics-val-loss-text": ("metrics.jsonl", _append_metrics('{"step": 1, "val_loss": "abc"}')),
    "spec-bytes": ("spec.yaml", _replace("spec.yaml", RANDOM_BYTES)),
}


@pytest.mark.parametrize("case", list(DAMAGES))
def test_unexpected_file_content_names_the_run_and_the_rest_go_on(tmp_path, capsys, case):
    filename, damage = DAMAGES[case]
    runs = _sweep(tmp_path)
    bad = runs[("EBT", "s64")]
    damage(bad)

    table = load_runs(tmp_path).runs.set_index("run_id")
    assert table.loc[bad.name, "status"] == "failed" and filename in table.loc[bad.name, "note"]
    assert (table.drop(bad.name)["status"] == "done").all()

    status = _status(tmp_path, capsys)
    assert set(status) == {p.name for p in runs.values()}
    assert status[bad.name]["state"] == "failed" and filename in status[bad.name]["detail"]
    assert all(r["state"] == "done" for k, r in status.items() if k != bad.name)
    assert main(["status", str(tmp_path)]) == 0
    assert bad.name in capsys.readouterr().out

    if case in ("result-list", "metrics-number", "spec-bytes"):   # the command end to end on a few
        err, fits = _analyze(tmp_path, tmp_path / "out", capsys)
        assert fits["runs"]["fitted"] == 7 and (tmp_path / "out" / "report.md").exists()
        assert any(bad.name in w and filename in w for w in fits["warnings"]) and bad.name in err


SWEEP_FILES = {"bytes": RANDOM_BYTES, "list": b"[1, 2]\n", "syntax": b"name: [unclosed\n"}


@pytest.mark.parametrize("case", list(SWEEP_FILES))
def test_a_sweep_yaml_that_is_not_a_yaml_mapping_is_a_warning_naming_it(tmp_path, capsys, case):
    _sweep(tmp_path)
    (tmp_path / "sweep.yaml").write_bytes(SWEEP_FILES[case])
    data = load_runs(tmp_path)
    assert data.meta == {} and (data.runs["status"] == "done").all()
    (warning,) = data.damage_warnings
    assert str(tmp_path / "sweep.yaml") in warning and "\n" not in warning
    if case == "bytes":
        err, fits = _analyze(tmp_path, tmp_path / "out", capsys)
        assert fits["runs"]["fitted"] == 8 and "sweep.yaml" in err
        assert any("sweep.yaml" in w for w in fits["warnings"])


def test_spec_yaml_is_read_with_the_alias_bound(tmp_path):
    """Every YAML file goes through parse_yaml: an alias bomb in a run's spec is refused by name."""
    runs = _sweep(tmp_path)
    bombed = runs[("EBT", "s32")]
    bomb = '  l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n' + "".join(
        f"  l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, 8))    # 9^7 values expanded
    (bombed / "spec.yaml").write_text((bombed / "spec.yaml").read_text() + "bomb:\n" + bomb)
    table = load_runs(tmp_path).runs.set_index("run_id")
    note = table.loc[bombed.name, "note"]
    assert table.loc[bombed.name, "status"] == "failed" and "spec.yaml" in note and "alias" in note


def test_a_torn_last_metrics_line_still_reads_as_an_unfinished_write(tmp_path):
    """What a kill mid-append leaves (no newline after the last line) is not damage."""
    runs = _sweep(tmp_path)
    run = runs[("T++", "s48")]
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 99999, "train_lo')
    assert load_runs(tmp_path).runs.set_index("run_id").loc[run.name, "status"] == "done"


# ---------------------------------------------------------------------------- labels and plots

def test_labels_with_dollar_signs_and_html_are_shown_as_written(tmp_path, capsys):
    odd = {"T++ $5": ARCHS["T++"], "<b>EBT</b> $^$": ARCHS["EBT"]}   # "$^$": not valid mathtext
    _sweep(tmp_path, odd)
    out = tmp_path / "out"
    _analyze(tmp_path, out, capsys)
    md = (out / "report.md").read_text()
    page = (out / "report.html").read_text()
    assert "<b>" not in md and "<b>" not in page
    assert "&lt;b&gt;EBT&lt;/b&gt; $^$" in page
    for name in ("loss_vs_flops", "flop_multiplier", "loss_vs_params"):
        assert (out / f"{name}.png").read_bytes()[:4] == b"\x89PNG" and f"({name}.png)" in md
        assert (out / f"{name}.pdf").read_bytes()[:5] == b"%PDF-"
        assert b"<svg" in (out / f"{name}.svg").read_bytes()[:2000]


def test_importing_and_plotting_leave_the_matplotlib_backend_alone(tmp_path):
    script = (
        "import matplotlib\n"
        "matplotlib.use('svg')\n"
        "import ebt_scaling.analysis.plots, ebt_scaling.analysis.report\n"
        "from ebt_scaling.analysis.evaluations import plot_thinking\n"
        "e = {'steps': [1, 2], 'ppl': [3.0, 2.5], 'ppl_langevin': [3.1, 2.6], 'sigma': 0.1, 'trained_steps': 1,\n"
        "     'bon': {'1': 3.0, '4': 2.4}, 'shift': 1.0, 'gain': 0.1}\n"
        "t = {'ppl_trained': 2.8}\n"
        f"plot_thinking([{{'thinking': {{'tasks': {{'x$^$y': t}}}}}}], [{{'thinking': {{'tasks': {{'x$^$y': e}}}}}}],"
        f" {str(tmp_path / 'thinking.png')!r})\n"
        "print(matplotlib.get_backend())\n")
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "svg"
    assert (tmp_path / "thinking.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "thinking.pdf").read_bytes()[:5] == b"%PDF-" and (tmp_path / "thinking.svg").exists()


# ---------------------------------------------------------------------------- fit

def _csv(path: Path, n, d, loss) -> Path:
    path.write_text("N,D,L\n" + "".join(f"{a},{b},{c}\n" for a, b, c in zip(n, d, loss)))
    return path


def _grid():
    n, d = np.meshgrid(np.geomspace(1e6, 1e8, 4), np.geomspace(1e8, 1e10, 4))
    return n.ravel(), d.ravel()


def test_fit_on_a_constant_loss_column_is_a_one_line_error(tmp_path, capsys):
    n, d = _grid()
    csv = _csv(tmp_path / "flat.csv", n, d, [3.0] * n.size)
    assert main(["fit", str(csv), "--params-col", "N", "--tokens-col", "D", "--loss-col", "L"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--loss-col" in err and "'L'" in err


@pytest.mark.parametrize("constant", ["N", "D", "both"])
def test_fit_on_constant_parameters_or_tokens_is_a_one_line_error(tmp_path, capsys, constant):
    n, d = _grid()
    if constant in ("N", "both"):
        n = np.full_like(n, 1e7)
    if constant in ("D", "both"):
        d = np.full_like(d, 1e9)
    loss = 1.8 + 400 / n ** 0.34 + 2000 / d ** 0.28 + np.linspace(0, 0.01, n.size)
    csv = _csv(tmp_path / "flat.csv", n, d, loss)
    assert main(["fit", str(csv), "--params-col", "N", "--tokens-col", "D", "--loss-col", "L"]) == 2
    err = capsys.readouterr().err.strip()
    flag = "--tokens-col" if constant == "D" else "--params-col"
    assert len(err.splitlines()) == 1 and flag in err


# ---------------------------------------------------------------------------- BLAS threads

def test_blas_threads_limits_every_blas_pool_and_restores_it():
    from threadpoolctl import threadpool_info

    from ebt_scaling.analysis.fits import blas_threads

    before = {p["filepath"]: p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"}
    assert before, "numpy/scipy load a BLAS"
    with blas_threads(1):
        assert all(p["num_threads"] == 1 for p in threadpool_info() if p["user_api"] == "blas")
    assert {p["filepath"]: p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"} == before
