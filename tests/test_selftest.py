"""`ebt-scaling selftest`: the whole command on the CPU at its quickest, and how a failing
check is reported (a FAIL row, the other checks still run, exit status 1)."""
from __future__ import annotations

import json

import pytest

from ebt_scaling.harness.cli.main import main
from ebt_scaling.harness.contract.architecture import ARCHITECTURES
from ebt_scaling.harness.benchmarks import selftest


def table_rows(out: str) -> dict[str, tuple[str, str, float]]:
    """check -> (status, figures, seconds) from the printed markdown table."""
    rows = {}
    for line in out.splitlines():
        if not line.startswith("| ") or line.startswith("| check |"):
            continue
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        assert len(cells) == 4, line
        rows[cells[0]] = (cells[1], cells[2], float(cells[3]))
    return rows


def expected_checks() -> list[str]:
    names = []
    for a in ARCHITECTURES.entries():  # every registered architecture, no hardcoded names
        names += [f"train eager: {a.name}", f"train compiled: {a.name}", f"resume: {a.name}",
                  f"data parallel: {a.name}", f"bench eager: {a.name} stand-in"]  # --quick: bench eager only
    return names


def test_quick_selftest_on_the_cpu_runs_every_check_and_passes(capsys):
    code = main(["selftest", "--device", "cpu", "--quick"])
    out = capsys.readouterr().out
    rows = table_rows(out)
    assert sorted(rows) == sorted(expected_checks())
    assert out.splitlines()[0].startswith("selftest on cpu")
    assert "total " in out.splitlines()[-1]
    failed = []
    for check, (status, figures, seconds) in rows.items():
        assert seconds >= 0 and figures
        arch = ARCHITECTURES.get(check.split(": ")[1].split()[0])
        # Compiling is only promised by architectures whose registry entry says `compiles`;
        # for the others a compile failure is a FAIL row naming the exception (not a crash).
        if status == "FAIL" and "compiled" in check and not arch.compiles:
            assert "Error" in figures or "failed" in figures, figures
            failed.append(check)
            continue
        assert status == "PASS", f"{check}: {status} {figures}"
    assert code == (1 if failed else 0)
    assert "bit-exact" in rows[f"resume: {ARCHITECTURES.entries()[0].name}"][1]
    assert "gloo, world 1" in rows[f"data parallel: {ARCHITECTURES.entries()[0].name}"][1]
    assert "stand-in shape on cpu" in rows[f"bench eager: {ARCHITECTURES.entries()[0].name} stand-in"][1]


def test_a_check_that_raises_is_a_fail_row_the_rest_run_and_the_exit_status_is_1(monkeypatch, capsys):
    def broken(*args):
        raise RuntimeError("injected failure\nwith a second line that the table leaves out")

    monkeypatch.setattr(selftest, "check_resume", broken)
    code = main(["selftest", "--device", "cpu", "--quick", "--checks", "resume", "data-parallel", "--json"])
    assert code == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False
    by_name = {r["check"]: r for r in report["checks"]}
    for a in ARCHITECTURES.entries():
        assert by_name[f"resume: {a.name}"]["status"] == "FAIL"
        assert by_name[f"resume: {a.name}"]["figures"] == "RuntimeError: injected failure"
        assert by_name[f"data parallel: {a.name}"]["status"] == "PASS"  # ran after the failures


def test_status_rows_table_and_exit_code():
    def ok():
        return selftest.PASS, "fine", {}

    def wrong():
        raise selftest.CheckFailed("loss 3.2 vs 3.5")

    def skipped():
        return selftest.SKIP, "nothing to compare", {}

    rows = selftest.run_checks([selftest.Check("a", ok), selftest.Check("b", wrong), selftest.Check("c", skipped)])
    assert [r.status for r in rows] == ["PASS", "FAIL", "SKIP"]
    report = selftest.Report("cpu", "test CPU", "x", {"precision": "bf16", "quick": True}, rows, 1.0, 300.0)
    assert report.exit_code() == 1
    table = selftest.format_report(report)
    assert "| b | FAIL | loss 3.2 vs 3.5 |" in table
    assert "1 PASS, 1 FAIL, 1 SKIP" in table and "budget 300 s" in table
    assert selftest.Report("cpu", "", "", {"precision": "fp32"}, [rows[0], rows[2]], 1.0).exit_code() == 0


@pytest.mark.parametrize("argv, message", [
    (["--threads", "0"], "--threads: must be >= 1"),
    (["--device", "cuda:0"], "--device:"),
    (["--device", "tpu"], "--device:"),
    (["--device", "cpu", "--checks", "train", "speed"], "--checks: unknown group(s) speed"),
])
def test_bad_flags_are_one_line_errors(argv, message, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["selftest", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and message in err


def test_selftest_refuses_to_run_under_torchrun(monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["selftest", "--device", "cpu"]) == 2
    assert "one process" in capsys.readouterr().err


def test_bit_exact_or_within_the_devices_own_run_to_run_spread():
    import torch

    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)

    def never():
        pytest.fail("the spread is measured only on CUDA, only when not bit-exact")

    assert selftest._judge(cpu, True, 0.0, never) == ("PASS", "bit-exact")
    assert selftest._judge(cpu, False, 1e-7, never)[0] == "FAIL"  # the CPU is deterministic
    assert selftest._judge(cuda, False, 1e-6, lambda: 2e-6)[0] == "PASS"  # nondeterministic kernels
    assert selftest._judge(cuda, False, 1e-2, lambda: 2e-6)[0] == "FAIL"  # far beyond them
    assert selftest._judge(cuda, False, 1e-6, lambda: 0.0)[0] == "FAIL"  # identical runs agree: resume differs


def test_bench_rows_stand_beside_the_reference_figures(monkeypatch):
    import types

    import torch

    def fake_bench(config, *, compile, **kwargs):
        return types.SimpleNamespace(step_ms=100.0, tokens_per_s=81_920.0, peak_memory_bytes=5 * 2**30,
                                     compiled=False, as_dict=dict,  # compilation always fails here
                                     notes=["torch.compile failed, ran eager: RuntimeError: no"])

    monkeypatch.setattr(selftest, "bench_model", fake_bench)
    settings = selftest.default_settings(torch.device("cpu"), quick=True)
    anchors = selftest.BenchShape(selftest.named_shape("xxs", 50_277, 256, 32), "xxs")
    for a in ARCHITECTURES.entries():
        status, figures, details = selftest.check_bench(a, settings, anchors, compiled=False)
        reference = selftest.REFERENCE.get((a.name, "xxs"))
        assert status == "PASS" and "100.0 ms/step" in figures
        if reference:
            assert f"speed-up {reference[0] / 100:.2f}x" in figures and details["speedup"] == reference[0] / 100
        status, figures, _ = selftest.check_bench(a, settings, anchors, compiled=True)
        assert status == "FAIL" and figures.startswith("torch.compile failed")  # eager figures: not compiled ones
