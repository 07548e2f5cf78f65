"""GPU-hours in `plan` and `status`: the throughput file `bench --save` writes, the
nearest-size rule, the documented per-architecture defaults, explicit throughput.mfu, and
one-line errors for a malformed file."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml
from conftest import make_sweep, small_sweep

from ebt_scaling.harness.cli.main import main
from ebt_scaling.harness.contract.architecture import ARCHITECTURES
from ebt_scaling.harness.contract.run_dir import RunDir
from ebt_scaling.harness.dispatch.status import sweep_status, totals
from ebt_scaling.models.flops import training_step_flops
from ebt_scaling.sweeps.throughput import ENV_VAR, Rates, default_throughput_path, load_throughput_file

TINY_BENCH = ["--layers", "1", "--d-model", "16", "--heads", "2", "--vocab", "32", "--batch", "2", "--ctx", "8",
              "--warmup", "0", "--iters", "1", "--device", "cpu"]
DEFAULT_HINT = "documented default; run `ebt-scaling bench --save` on your GPU"


def sweep_data(**overrides) -> dict:
    """conftest's small sweep with one seed and a larger second size (its GPU-hours are not tiny)."""
    return small_sweep(**{"seeds": [0], "axis": {"name": "parameters", "values": [
        {"n_layers": 1, "d_model": 32, "n_heads": 2}, {"n_layers": 4, "d_model": 256, "n_heads": 4}]}, **overrides})


def write_yaml(data: dict, folder: Path, name: str = "s.yaml") -> str:
    path = Path(folder) / name
    path.write_text(yaml.safe_dump(data))
    return str(path)


def entry(arch: str, n_layers: int, d_model: int, achieved: float, *, device: str = "NVIDIA H100 80GB HBM3",
          device_type: str = "cuda", precision: str = "bf16", date: str = "2026-11-30T12:00:00+00:00",
          peak: float | None = 989e12) -> dict:
    """A throughput-file entry as `bench --save` writes it (flops / step time = achieved)."""
    batch, ctx = 32, 256
    flops = 1e12
    step_s = flops / achieved
    return {"arch": arch, "label": arch, "size": f"L{n_layers}-d{d_model}",
            "shape": {"n_layers": n_layers, "d_model": d_model, "n_heads": max(1, d_model // 64), "vocab": 50277,
                      "ctx": ctx, "batch": batch},
            "precision": precision, "compiled": False, "device": device, "device_type": device_type,
            "torch_version": "2.11.0", "date": date, "step_ms": step_s * 1e3, "tokens_per_s": batch * ctx / step_s,
            "flops_per_step": flops, "achieved_flops_per_s": achieved,
            "mfu": None if peak is None else achieved / peak, "peak_flops_per_s": peak}


def write_file(path: Path, entries: list[dict]) -> Path:
    path.write_text(json.dumps({"format": "ebt-scaling throughput", "version": 1, "entries": entries}))
    return path


def plan_json(capsys, *argv) -> dict:
    assert main(["plan", *map(str, argv), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


# ------------------------------------------------------------------------------ bench --save -> plan
def test_bench_save_writes_a_file_plan_reads(tmp_path, capsys):
    path = tmp_path / "tp.json"
    assert main(["bench", *TINY_BENCH, "--save", str(path)]) == 0
    assert "saved 2 entries" in capsys.readouterr().err
    saved = {e["arch"]: e for e in json.loads(path.read_text())["entries"]}
    assert set(saved) == {"transformer", "ebt"}
    for e in saved.values():
        assert e["shape"] == {"n_layers": 1, "d_model": 16, "n_heads": 2, "vocab": 32, "ctx": 8, "batch": 2}
        assert e["precision"] == "fp32" and e["compiled"] is False and e["device_type"] == "cpu"
        assert e["torch_version"] and e["date"] and e["size"] == "L1-d16" and e["mfu"] is None  # CPU: no peak
        assert e["tokens_per_s"] == pytest.approx(2 * 8 / (e["step_ms"] / 1e3))

    out = plan_json(capsys, write_yaml(sweep_data(), tmp_path), "--throughput", path)
    assert out["throughput"]["file"] == str(path)
    for run in out["runs"]:
        e = saved[run["arch"]]
        achieved = e["flops_per_step"] / (e["step_ms"] / 1e3)  # from the saved figures, not the stored rate
        assert run["gpu_hours_source"] == "measured"
        assert run["gpu_hours"] == pytest.approx(run["flops"]["full"] / achieved / 3600, rel=1e-9)
    assert "FLOP/s measured (bench file" in out["totals"]["by_arch"]["EBT"]["gpu_hours_source"]

    # saving again merges: the same arch + shape + precision + device is replaced, a new shape added
    assert main(["bench", *TINY_BENCH, "--arch", "transformer", "--save", str(path)]) == 0
    assert main(["bench", *TINY_BENCH[:3], "32", *TINY_BENCH[4:], "--arch", "ebt", "--save", str(path)]) == 0
    capsys.readouterr()
    entries = json.loads(path.read_text())["entries"]
    assert sorted((e["arch"], e["shape"]["d_model"]) for e in entries) == [("ebt", 16), ("ebt", 32),
                                                                          ("transformer", 16)]


def test_bench_save_default_path_and_refuses_a_malformed_file(tmp_path, monkeypatch, capsys):
    target = tmp_path / "cache" / "tp.json"
    monkeypatch.setenv(ENV_VAR, str(target))
    assert main(["bench", *TINY_BENCH, "--arch", "transformer", "--save"]) == 0
    assert str(target) in capsys.readouterr().err and len(load_throughput_file(target).entries) == 1
    # plan reads the same default file without a flag
    out = plan_json(capsys, write_yaml(sweep_data(), tmp_path))
    assert out["throughput"]["file"] == str(target)
    assert {r["arch"]: r["gpu_hours_source"] for r in out["runs"]} == {"transformer": "measured", "ebt": "default"}
    assert f"no ebt entry for {load_throughput_file(target).entries[0].device}" in \
           out["totals"]["by_arch"]["EBT"]["gpu_hours_source"]
    target.write_text("{not json")
    assert main(["bench", *TINY_BENCH, "--save"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(target) in err and "invalid JSON" in err
    assert target.read_text() == "{not json"  # left alone


def test_default_path_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "x.json"))
    assert default_throughput_path() == tmp_path / "x.json"
    monkeypatch.delenv(ENV_VAR)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_throughput_path() == tmp_path / "xdg" / "ebt-scaling" / "throughput.json"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_throughput_path() == Path.home() / ".cache" / "ebt-scaling" / "throughput.json"


# ------------------------------------------------------------------------------ which entry
def test_nearest_size_same_device_and_precision(tmp_path):
    path = write_file(tmp_path / "tp.json", [
        entry("transformer", 2, 128, 10e12),
        entry("transformer", 6, 384, 40e12),
        entry("transformer", 12, 768, 70e12),
        entry("transformer", 6, 384, 33e12, precision="fp32"),
        entry("ebt", 6, 384, 30e12),
        entry("ebt", 6, 384, 99e12, device="NVIDIA A100-SXM4-80GB", date="2026-10-01T00:00:00+00:00"),
        entry("ebt", 6, 384, 1e9, device="x86_64 CPU", device_type="cpu", peak=None,
              date="2026-12-31T00:00:00+00:00"),  # newer, but a GPU's figures win by default
    ])
    rates = Rates(load_throughput_file(path))
    assert rates.device == "NVIDIA H100 80GB HBM3"  # the newest GPU
    # nearest in log(n_layers * d_model^2): e.g. L4-d256 (262k) is nearer L6-d384 (885k) than L2-d128 (33k)
    for (n_layers, d_model), want in {(1, 64): 10e12, (2, 128): 10e12, (4, 256): 40e12, (6, 512): 40e12,
                                      (8, 768): 70e12, (48, 4096): 70e12}.items():
        assert rates.rate("transformer", n_layers, d_model, "bf16").flops_per_s == want, (n_layers, d_model)
    assert rates.rate("transformer", 6, 384, "fp32").flops_per_s == 33e12  # the run's precision first
    assert rates.rate("ebt", 24, 2048, "fp32").flops_per_s == 30e12  # else any precision
    assert Rates(load_throughput_file(path), device="a100").rate("ebt", 6, 384).flops_per_s == 99e12
    assert Rates(load_throughput_file(path), device="CPU").rate("ebt", 6, 384).flops_per_s == 1e9
    # the boundary between two entries lies at the geometric mean of their sizes
    low, high = 2 * 128 ** 2, 6 * 384 ** 2
    mid = math.sqrt(low * high)
    assert rates.rate("transformer", 1, int(math.sqrt(mid * 0.9))).flops_per_s == 10e12
    assert rates.rate("transformer", 1, int(math.sqrt(mid * 1.1))).flops_per_s == 40e12


def test_plan_uses_the_nearest_entry_and_says_which(tmp_path, capsys):
    path = write_file(tmp_path / "tp.json", [entry("transformer", 1, 32, 20e12), entry("transformer", 4, 256, 50e12),
                                             entry("ebt", 2, 64, 3e12)])
    sweep = write_yaml(sweep_data(base={"model": {"vocab_size": 1024, "context": 64}, "train": {"batch_size": 8},
                                        "precision": "bf16"}), tmp_path)
    out = plan_json(capsys, sweep, "--throughput", path)
    by = {(r["arch"], r["d_model"]): r for r in out["runs"]}
    for (arch, d_model), rate in {("transformer", 32): 20e12, ("transformer", 256): 50e12, ("ebt", 32): 3e12,
                                  ("ebt", 256): 3e12}.items():
        run = by[arch, d_model]
        assert run["gpu_hours"] == pytest.approx(run["flops"]["full"] / rate / 3600)
    assert main(["plan", sweep, "--throughput", str(path)]) == 0
    text = capsys.readouterr().out
    assert "EBT: 0.3% MFU measured (bench file " in text and "NVIDIA H100 80GB HBM3, L2-d64, bf16, 2026-11-30)" in text
    assert "T++: measured (bench file" in text and "2% MFU (NVIDIA H100 80GB HBM3, L1-d32" in text
    assert main(["plan", sweep, "--throughput", str(path), "--throughput-device", "A100"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--throughput-device: no entry" in err and "NVIDIA H100 80GB HBM3" in err


# ------------------------------------------------------------------------------ defaults
def test_documented_defaults_without_a_file(tmp_path, capsys):
    assert ARCHITECTURES.get("transformer").default_mfu == 0.20 and ARCHITECTURES.get("ebt").default_mfu == 0.05
    out = plan_json(capsys, write_yaml(sweep_data(), tmp_path))
    assert out["throughput"]["file"] is None
    for run in out["runs"]:
        mfu = {"transformer": 0.20, "ebt": 0.05}[run["arch"]]
        assert run["gpu_hours_source"] == "default"
        assert run["gpu_hours"] == pytest.approx(run["flops"]["full"] / (989e12 * mfu) / 3600)
    assert out["totals"]["by_arch"]["EBT"]["gpu_hours_source"] == f"EBT: 5% MFU of 989 TFLOP/s ({DEFAULT_HINT})"
    assert main(["plan", write_yaml(sweep_data(), tmp_path)]) == 0
    text = capsys.readouterr().out
    assert f"T++: 20% MFU of 989 TFLOP/s ({DEFAULT_HINT})" in text.splitlines()[3]
    assert f"GPU-hours {out['totals']['by_arch']['EBT']['gpu_hours']:,.4g}  at 5% MFU of 989 TFLOP/s" in text
    assert main(["plan", "tiny", "--throughput", str(tmp_path / "missing.json")]) == 2
    assert "--throughput: " in capsys.readouterr().err


# ------------------------------------------------------------------------------ malformed files
GOOD_ENTRY = entry("ebt", 6, 384, 30e12)
BAD_FILES = [
    ("not-json", "{oops", "line 1: invalid JSON"),
    ("wrong-format", json.dumps({"format": "other", "version": 1, "entries": []}), ": format: must be"),
    ("newer-version", json.dumps({"format": "ebt-scaling throughput", "version": 9, "entries": []}),
     ": version: must be 1, got 9; this file was written by a newer ebt-scaling"),
    ("entries-not-list", json.dumps({"format": "ebt-scaling throughput", "version": 1, "entries": {}}),
     ": entries: must be a list"),
    ("missing-field", {k: v for k, v in GOOD_ENTRY.items() if k != "achieved_flops_per_s"},
     ": entries[0].achieved_flops_per_s: missing required key"),
    ("negative-step", {**GOOD_ENTRY, "step_ms": -1}, ": entries[0].step_ms: must be a number > 0"),
    ("bad-shape", {**GOOD_ENTRY, "shape": {**GOOD_ENTRY["shape"], "d_model": "wide"}},
     ": entries[0].shape.d_model: expected an integer"),
    ("bad-date", {**GOOD_ENTRY, "date": "yesterday"}, ": entries[0].date: must be an ISO 8601 date"),
    ("unknown-field", {**GOOD_ENTRY, "speed": 1}, ": entries[0].speed: unknown key"),
]


@pytest.mark.parametrize("text,expect", [c[1:] for c in BAD_FILES], ids=[c[0] for c in BAD_FILES])
def test_malformed_throughput_file_is_one_line_error(tmp_path, capsys, text, expect):
    path = tmp_path / "tp.json"
    if isinstance(text, dict):
        text = json.dumps({"format": "ebt-scaling throughput", "version": 1, "entries": [text]})
    path.write_text(text)
    for command in (["plan", "tiny", "--throughput", str(path)], ["status", str(tmp_path), "--throughput", str(path)]):
        assert main(command) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and err.startswith(f"ebt-scaling {command[0]}: error: {path}") and expect in err, err


# ------------------------------------------------------------------------------ sweep files' throughput
def test_old_sweep_files_load_and_an_explicit_mfu_overrides(tmp_path, capsys):
    path = write_file(tmp_path / "tp.json", [entry("ebt", 1, 32, 30e12), entry("transformer", 1, 32, 50e12)])
    old = sweep_data(throughput={"peak_tflops": 989.0, "mfu": 0.4, "device": "H100 SXM (dense bf16 peak)"})
    out = plan_json(capsys, write_yaml(old, tmp_path), "--throughput", path)
    assert all(r["gpu_hours_source"] == "sweep" and r["gpu_hours"] == pytest.approx(
        r["flops"]["full"] / (989e12 * 0.4) / 3600) for r in out["runs"])
    assert out["totals"]["by_arch"]["EBT"]["gpu_hours_source"] == \
        "EBT: 40% MFU of 989 TFLOP/s (sweep file throughput.mfu)"
    assert any("throughput.mfu 0.4 applies to EBT too" in w for w in out["warnings"])
    # a mapping sets the architectures it names; the others are measured (or default)
    per_arch = sweep_data(throughput={"mfu": {"ebt": 0.1}, "peak_tflops": 500})
    out = plan_json(capsys, write_yaml(per_arch, tmp_path), "--throughput", path)
    for r in out["runs"]:
        rate = 500e12 * 0.1 if r["arch"] == "ebt" else 50e12
        assert r["gpu_hours"] == pytest.approx(r["flops"]["full"] / rate / 3600)
    assert not out["warnings"]
    # --set overrides still work, and a resolved sweep.yaml (mfu: null) loads back
    assert plan_json(capsys, "tiny", "--set", "throughput.mfu=0.3")["runs"][0]["gpu_hours_source"] == "sweep"
    assert main(["plan", "tiny", "--write", str(tmp_path / "w")]) == 0
    assert yaml.safe_load((tmp_path / "w" / "sweep.yaml").read_text())["throughput"]["mfu"] is None
    assert main(["plan", str(tmp_path / "w" / "sweep.yaml")]) == 0


@pytest.mark.parametrize("mfu,expect", [
    ({"ebbt": 0.1}, "throughput.mfu.ebbt: unknown architecture 'ebbt'"),
    ({"ebt": 1.5}, "throughput.mfu.ebt: must be in (0, 1]"),
    ({"ebt": "fast"}, "throughput.mfu.ebt: expected a number"),
    ("fast", "throughput.mfu: expected"),
])
def test_bad_sweep_mfu_is_one_line_error(tmp_path, capsys, mfu, expect):
    path = write_yaml(sweep_data(throughput={"mfu": mfu}), tmp_path)
    assert main(["plan", path]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and path in err and expect in err, err


# ------------------------------------------------------------------------------ status
def test_status_gpu_hours_left_per_architecture(tiny_spec, tmp_path, capsys):
    spec, ebt = tiny_spec("transformer"), tiny_spec("ebt")
    paths = make_sweep(tmp_path / "sweep", [spec, ebt])
    run = RunDir(paths[spec.run_id])
    for step in range(1, 4):
        run.append_metrics({"step": step, "tokens": step * spec.tokens_per_step, "train_loss": 5.0,
                            "tokens_per_s": 256.0})
    tp = write_file(tmp_path / "tp.json", [entry("transformer", 1, 32, 1e9, device="x86_64 CPU", device_type="cpu",
                                                 peak=None, precision="fp32")])
    rows = {r.run_id: r for r in sweep_status(tmp_path / "sweep", rates=Rates(load_throughput_file(tp)))}
    m = spec.model
    left = training_step_flops(m, spec.train.batch_size, m.context, "full") * (spec.total_steps - 3)
    assert rows[spec.run_id].gpu_hours_left == pytest.approx(left / 1e9 / 3600)
    m = ebt.model
    left = training_step_flops(m, ebt.train.batch_size, m.context, "full") * ebt.total_steps
    assert rows[ebt.run_id].gpu_hours_left == pytest.approx(left / (989e12 * 0.05) / 3600)
    total = totals(list(rows.values()))
    assert total["gpu_hours_left"] == pytest.approx(sum(r.gpu_hours_left for r in rows.values()))

    assert main(["status", str(tmp_path / "sweep"), "--throughput", str(tp)]) == 0
    text = capsys.readouterr().out
    assert "GPU-hours left transformer: " in text and "G FLOP/s measured (bench file " in text
    assert f"GPU-hours left ebt: {rows[ebt.run_id].gpu_hours_left:,.4g} at 5% MFU of 989 TFLOP/s (documented " \
           f"default; no ebt entry for x86_64 CPU in {tp}; run `ebt-scaling bench --save` on your GPU)" in text
    assert main(["status", str(tmp_path / "sweep"), "--json"]) == 0  # no file: the defaults
    report = json.loads(capsys.readouterr().out)
    assert {r["gpu_hours_source"] for r in report["runs"]} == {"default"}
    assert report["totals"]["gpu_hours_left_by_arch"]["transformer"]["source"] == \
        f"transformer: 20% MFU of 989 TFLOP/s ({DEFAULT_HINT})"
