"""`ebt-scaling plan --extend DIR`: a sweep directory planned by `plan --write`, whose runs get
synthetic results with their loss minimum where the test puts it. The extension must add
exactly what an independent plan predicts (the same sweep with more points, budgets or
factors), say why in one line each, leave every existing run id and spec file as it was, and
add nothing when run again without new results."""
from __future__ import annotations

import json
import math
from pathlib import Path

import yaml

from ebt_scaling.harness.cli.main import main
from ebt_scaling.harness.contract.run_dir import atomic_write_json
from ebt_scaling.harness.contract.spec import load_spec
from ebt_scaling.sweeps.generate import make_plan
from ebt_scaling.sweeps.sweep_spec import sweep_from_dict

ISOFLOP = {
    "name": "extend-iso",
    "base": {"model": {"vocab_size": 256, "context": 16}, "train": {"batch_size": 4}, "device": "cpu"},
    "architectures": [{"label": "T++", "arch": "transformer"}, {"label": "EBT-S1", "arch": "ebt"}],
    "pairing": "flops",
    "axis": {"name": "isoflop", "values": [1e12, 1e13], "points": 5, "spread": 2.0},
    "shape": {"rule": "aspect", "aspect": 16, "head_dim": 16, "tolerance": 0.1},
    "throughput": {"mfu": 0.1},
}


def _write_sweep(tmp_path: Path, data: dict) -> Path:
    """`plan --write` of the sweep into tmp_path/sweep."""
    path = tmp_path / f"{data['name']}.yaml"
    path.write_text(yaml.safe_dump(data))
    out = tmp_path / "sweep"
    assert main(["plan", str(path), "--write", str(out)]) == 0
    return out


def _runs(out: Path) -> dict[str, dict]:
    """plan.json's runs by id."""
    return {r["run_id"]: r for r in json.loads((out / "plan.json").read_text())["runs"]}


def _specs(out: Path) -> dict[str, str]:
    return {p.parent.name: p.read_text() for p in (out / "runs").glob("*/spec.yaml")}


def _finish(run_dir: Path, loss: float) -> None:
    """The files a finished run leaves: its metrics and result.json (done, final held-out loss)."""
    spec = load_spec(run_dir / "spec.yaml")
    row = {"step": spec.total_steps, "tokens": spec.total_steps * spec.tokens_per_step, "train_loss": loss,
           "val_loss": loss, "val_ppl": math.exp(loss)}
    (run_dir / "metrics.jsonl").write_text(json.dumps(row) + "\n")
    atomic_write_json(run_dir / "result.json", {"status": "done", "run_id": run_dir.name, "step": row["step"],
                                                "total_steps": spec.total_steps, "final": row, "val_loss": loss,
                                                "val_ppl": row["val_ppl"]})


def _extend(out: Path, capsys) -> list[str]:
    capsys.readouterr()
    assert main(["plan", "--extend", str(out)]) == 0
    return capsys.readouterr().out.splitlines()


def _reference(data: dict, **axis) -> list:
    """The runs of the same sweep planned afresh with other axis settings (the independent answer)."""
    return [r.row() for r in make_plan(sweep_from_dict({**data, "axis": {**data["axis"], **axis}})).runs]


def test_extend_isoflop_adds_sizes_beyond_edge_minima_and_a_budget(tmp_path, capsys):
    out = _write_sweep(tmp_path, ISOFLOP)
    planned = _runs(out)
    # every size's loss is a parabola in log N around n_star: T++ wants more than the largest size at
    # 1e12 and sits inside at 1e13; EBT-S1 sits inside at 1e12 and wants less than the smallest at 1e13
    by_budget: dict[str, list[float]] = {}
    for r in planned.values():
        by_budget.setdefault(r["axis_value"], []).append(r["achieved_params"])
    n_star = {("T++", "1e+12"): 4 * max(by_budget["1e+12"]), ("T++", "1e+13"): sorted(by_budget["1e+13"])[4],
              ("EBT-S1", "1e+12"): sorted(by_budget["1e+12"])[4], ("EBT-S1", "1e+13"): min(by_budget["1e+13"]) / 4}

    def loss(r: dict) -> float:
        return 3.0 + 0.1 * math.log(r["achieved_params"] / n_star[r["arch_label"], r["axis_value"]]) ** 2

    for run_id, r in planned.items():
        _finish(out / "runs" / run_id, loss(r))
    specs = _specs(out)

    lines = _extend(out, capsys)
    after = _runs(out)
    new = {i: r for i, r in after.items() if i not in planned}
    # existing runs: same ids, same spec files (byte for byte), results untouched
    assert set(planned) <= set(after)
    assert {i: t for i, t in _specs(out).items() if i in specs} == specs
    assert all((out / "runs" / i / "result.json").exists() for i in planned)
    # the expected sizes: the same sweep with 7 points per budget has one more size at each end
    wide = _reference(ISOFLOP, points=7)
    by_n = {(r["axis_value"], r["achieved_params"]): r["size"] for r in wide}
    above = by_n["1e+12", max(n for b, n in by_n if b == "1e+12")]
    below = by_n["1e+13", min(n for b, n in by_n if b == "1e+13")]
    # and the budget: the same sweep over three budgets 1e12, 1e13, 1e14
    third = [r for r in _reference(ISOFLOP, values=[1e12, 1e13, 1e14]) if r["axis_value"] == "1e+14"]
    expected = ({(r["run_id"]) for r in third}
                | {r["run_id"] for r in wide if (r["axis_value"], r["size"]) in {("1e+12", above), ("1e+13", below)}})
    assert set(new) == expected and len(new) == 2 + 2 + 10
    added = [line for line in lines if line.startswith("added ")]
    assert len(added) == 3, lines
    assert any(line.startswith(f"added size {above} at budget 1e+12 ") and "T++" in line and "largest" in line
               for line in added)
    assert any(line.startswith(f"added size {below} at budget 1e+13 ") and "EBT-S1" in line and "smallest" in line
               for line in added)
    assert any(line.startswith("added budget 1e+14 ") and "interior minimum" in line for line in added)
    sweep = yaml.safe_load((out / "sweep.yaml").read_text())
    assert sweep["axis"]["values"] == [1e12, 1e13, 1e14]
    assert sweep["axis"]["extra_sizes"] == [{"budget": 1e12, "offsets": [3.0]}, {"budget": 1e13, "offsets": [-3.0]}]
    assert all((out / "runs" / i / "spec.yaml").exists() for i in new)

    # nothing new finished: nothing to add, nothing rewritten
    written = {p: p.stat().st_mtime_ns for p in (out / "sweep.yaml", out / "plan.json")}
    lines = _extend(out, capsys)
    assert not [line for line in lines if line.startswith("added ")] and lines[-1].startswith("nothing to add")
    assert {p: p.stat().st_mtime_ns for p in written} == written and set(_runs(out)) == set(after)

    # the new T++ size at 1e12 finishes and is still too small: the next offset, nothing else
    for run_id, r in new.items():
        if r["axis_value"] == "1e+12":
            _finish(out / "runs" / run_id, loss(r))
    lines = _extend(out, capsys)
    wider = _reference(ISOFLOP, points=9)
    top = max((r for r in wider if r["axis_value"] == "1e+12"), key=lambda r: r["achieved_params"])
    latest = set(_runs(out)) - set(after)
    assert latest == {r["run_id"] for r in wider if (r["axis_value"], r["size"]) == ("1e+12", top["size"])}
    assert [line for line in lines if line.startswith("added ")] == [
        next(line for line in lines if line.startswith(f"added size {top['size']} at budget 1e+12 (optimum x 2^+4, "
                                                        "2 runs): the loss minimum of T++"))]
    assert set(after) <= set(_runs(out))


def test_extend_tuned_sweep_adds_trials_beyond_edges_and_winners_at_full_tokens(tmp_path, capsys):
    data = {"name": "extend-tune", "base": ISOFLOP["base"],
            "architectures": [{"label": "T++", "arch": "transformer"}],
            "axis": {"name": "parameters", "values": [{"n_layers": 1, "d_model": 16, "n_heads": 1},
                                                      {"n_layers": 2, "d_model": 32, "n_heads": 2}]},
            "tune": {"lr": [0.5, 1, 2, 4], "token_fraction": 0.5}, "throughput": {"mfu": 0.1}}
    out = _write_sweep(tmp_path, data)
    planned = _runs(out)
    # the small size wants an LR factor beyond the grid (loss falls with the factor); the large one 2
    best = {"L1-d16": 16.0, "L2-d32": 2.0}
    for run_id, r in planned.items():
        if r["tags"]["tune_stage"] == "trial":
            factor = float(r["tags"]["tune_lr"])
            _finish(out / "runs" / run_id, 3.0 + 0.1 * math.log(factor / best[r["size"]]) ** 2)
    specs = _specs(out)

    lines = _extend(out, capsys)
    after = _runs(out)
    new = [r for i, r in after.items() if i not in planned]
    assert set(planned) <= set(after) and {i: t for i, t in _specs(out).items() if i in specs} == specs
    # the independent answer: the run at factor 1 times the factor, on the trial's or the full tokens
    untuned = {r["size"]: r for r in planned.values() if r["tags"]["tune_stage"] == "planned"}
    got = {(r["size"], r["tags"]["tune_stage"], r["tags"]["tune_lr"]): r for r in new}
    assert set(got) == {("L1-d16", "trial", "8"), ("L2-d32", "final", "2")}
    small, large = got["L1-d16", "trial", "8"], got["L2-d32", "final", "2"]
    assert math.isclose(small["lr"], 8 * untuned["L1-d16"]["lr"]) and small["tokens"] < untuned["L1-d16"]["tokens"]
    assert math.isclose(large["lr"], 2 * untuned["L2-d32"]["lr"]) and large["tokens"] == untuned["L2-d32"]["tokens"]
    added = [line for line in lines if line.startswith("added ")]
    assert len(added) == 2, lines
    assert any("lr x8" in line and "largest tried" in line for line in added)
    assert any("lr x2 at full tokens" in line and "winner" in line for line in added)
    # a parameters axis has no budgets: nothing is said about sizes or budgets
    assert not [line for line in lines if "budget" in line or "size" in line.split(":")[0]]
    extra = yaml.safe_load((out / "sweep.yaml").read_text())["tune"]["extra"]
    assert sorted((e["size"], e["factors"]["lr"], e["full_tokens"]) for e in extra) == [("L1-d16", 8.0, False),
                                                                                       ("L2-d32", 2.0, True)]

    lines = _extend(out, capsys)
    assert lines[-1].startswith("nothing to add") and set(_runs(out)) == set(after)


def test_extend_says_when_an_edge_cannot_be_extended(tmp_path, capsys):
    """At 1e11 the smallest planned size is the smallest shape there is: no size below it."""
    data = {**ISOFLOP, "axis": {**ISOFLOP["axis"], "values": [1e11, 1e12, 1e13]}}
    out = _write_sweep(tmp_path, data)
    planned = _runs(out)
    for run_id, r in planned.items():  # every minimum below the grid
        _finish(out / "runs" / run_id, 3.0 + 0.1 * math.log(r["achieved_params"] / 1e3) ** 2)
    for _ in range(2):
        lines = _extend(out, capsys)
        assert [line for line in lines if "1e+11" in line] == [next(
            line for line in lines if line.startswith("not added a size beyond the smallest at budget 1e+11: the "
                                                      "shape rule gives no new shape"))]
    assert not any(r["axis_value"] == "1e+11" for i, r in _runs(out).items() if i not in planned)
    # --extend extends the directory's own sweep: no SWEEP, --write, --set or --json with it
    assert main(["plan", "--extend", str(out), "--write", str(tmp_path / "x")]) == 2
    assert "--write: does not go with --extend" in capsys.readouterr().err
    assert main(["plan"]) == 2 and "sweep: missing" in capsys.readouterr().err
