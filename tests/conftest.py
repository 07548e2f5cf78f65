"""Shared fixtures: one data cache per test session (the Shakespeare download and BPE
training happen once), tiny run specs that train in seconds on 2 CPU cores, and synthetic
sweep directories whose final losses follow known laws (the analysis tests)."""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from ebt_scaling.harness.contract.run_dir import atomic_write_json, atomic_write_text
from ebt_scaling.harness.contract.spec import spec_from_dict, spec_to_yaml
from ebt_scaling.models.flops import param_counts, training_step_flops


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models gain nothing from intra-op threads, and on a shared 2-core machine
    OpenMP oversubscription stalls them by 10x or more: run every test on one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _no_user_throughput_file(tmp_path_factory, monkeypatch):
    """`plan` and `status` read the user's bench throughput file by default
    ($EBT_SCALING_THROUGHPUT, else ~/.cache/ebt-scaling/throughput.json): point every test at
    a file that does not exist, so a developer's own measurements never change a result."""
    monkeypatch.setenv("EBT_SCALING_THROUGHPUT", str(tmp_path_factory.getbasetemp() / "no-throughput.json"))


@pytest.fixture(scope="session")
def data_cache(tmp_path_factory):
    path = os.environ.get("EBT_SCALING_TEST_DATA") or str(tmp_path_factory.mktemp("data-cache"))
    return path


@pytest.fixture
def tiny_spec(data_cache):
    """A factory of tiny run specs on the embedded Shakespeare data."""

    def make(arch: str = "transformer", **overrides):
        base = {
            "model": {"arch": arch, "n_layers": 1, "d_model": 32, "n_heads": 2, "vocab_size": 512, "context": 32},
            "data": {"cache_dir": data_cache},
            "train": {"tokens": 32 * 8 * 24, "batch_size": 8, "lr": 3e-3},
            "eval": {"points": 3, "batches": 2, "batch_size": 8},
            "checkpoint_every": 5,
            "log_every": 1,
            "device": "cpu",
        }
        for key, value in overrides.items():
            if isinstance(value, dict):
                base[key] = {**base.get(key, {}), **value}
            else:
                base[key] = value
        return spec_from_dict(base)

    return make


def make_sweep(root: Path, specs) -> dict[str, Path]:
    """A sweep directory as `ebt-scaling plan --write` makes it: runs/<run_id>/spec.yaml."""
    out = {}
    for spec in specs:
        path = root / "runs" / spec.run_id
        path.mkdir(parents=True, exist_ok=True)
        (path / "spec.yaml").write_text(spec_to_yaml(spec))
        out[spec.run_id] = path
    return out


def stop_after(steps: int):
    """A stop_requested() that turns true at the `steps`-th optimizer step (it is asked once per step)."""
    calls = {"n": 0}

    def requested() -> bool:
        calls["n"] += 1
        return calls["n"] >= steps

    return requested


def comparable(rows: list[dict]) -> list[dict]:
    """metrics.jsonl rows without their timing fields (which differ between two runs)."""
    return [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in rows]


# ---------------------------------------------------------------------------- synthetic sweeps

# Shapes of the synthetic sweeps: (name, n_layers, d_model, n_heads); vocabulary 256.
SIZES = [("s32", 2, 32, 2), ("s48", 2, 48, 2), ("s64", 2, 64, 2), ("s96", 2, 96, 2), ("s128", 2, 128, 2),
         ("s192", 2, 192, 2), ("s256", 2, 256, 2)]
VOCAB, CONTEXT, BATCH = 256, 16, 4


def power_law(A: float, b: float):
    """L = A * C^-b (final loss as a function of training FLOPs only)."""
    return lambda C, N, D: A * C ** (-b)


def chinchilla_law(E: float, A: float, B: float, alpha: float, beta: float):
    """L = E + A / N^alpha + B / D^beta."""
    return lambda C, N, D: E + A / N ** alpha + B / D ** beta


def chinchilla_n_opt(law_params: dict, C) -> np.ndarray:
    """The true compute-optimal N of chinchilla_law under C = 6 N D."""
    E, A, B, al, be = (law_params[k] for k in ("E", "A", "B", "alpha", "beta"))
    G = (al * A / (be * B)) ** (1.0 / (al + be))
    return G * (np.asarray(C, dtype=float) / 6.0) ** (be / (al + be))


def interior_budgets(law_params: dict, sizes, n: int) -> list[float]:
    """n log-spaced budgets whose true optimum (chinchilla_n_opt) lies between the 3rd and the
    5th of ``sizes``: every budget has an interior isoFLOP minimum."""
    ns = [param_counts(spec_from_dict({"model": {"n_layers": s[1], "d_model": s[2], "n_heads": s[3],
                                                 "vocab_size": VOCAB}}).model)["total"] for s in sizes]
    grid = np.geomspace(1e8, 1e16, 4001)
    n_opt = chinchilla_n_opt(law_params, grid)
    return list(np.geomspace(grid[np.argmin(abs(np.log(n_opt / ns[2])))],
                             grid[np.argmin(abs(np.log(n_opt / ns[4])))], n))


def _model(a: dict, size: tuple) -> dict:
    model = {"arch": a["arch"], "n_layers": size[1], "d_model": size[2], "n_heads": size[3], "vocab_size": VOCAB,
             "context": CONTEXT}
    if a.get("options"):
        model["options"] = dict(a["options"])
    return model


def _spec(model: dict, seed: int, tokens: int, tags: dict):
    return spec_from_dict({
        "model": model,
        "train": {"tokens": int(tokens), "batch_size": BATCH, "lr": 1e-3},
        "eval": {"points": 4},
        "device": "cpu", "seed": seed,
        "tags": {k: str(v) for k, v in tags.items()},
    })


def write_synthetic_sweep(root, *, archs: dict, sizes=SIZES[:4], seeds=(0,), mode: str = "parameters",
                          tokens: int = 65536, budgets=None, noise: float = 0.0, eval_points: int = 6,
                          rng_seed: int = 0, special: dict | None = None, name: str = "synthetic") -> Path:
    """Write ROOT/runs/<run_id>/{spec.yaml, metrics.jsonl, result.json} and ROOT/sweep.yaml.

    archs: label -> {"arch": "transformer" | "ebt", "law": f(C, N, D) -> final loss, "options": {EBT options}}
    (labels of the same architecture need different options: the run id ignores labels).
    mode "parameters": every size trained on `tokens` tokens; FLOPs (both conventions) are
    the analytic ones of the model. mode "isoflop": every (budget, size) trained for
    D = budget / (6 N) tokens, FLOPs = 6 N D (both conventions), budget tags set.
    The final val loss is law(C_full, N, D) times exp(noise * z); the curve's eval points
    are at log-spaced fractions of training, with the law at (f C, N, f D) in isoflop mode
    and L_final * f^-0.08 in parameters mode.
    special: {(label, size_name, seed[, budget]): "diverged" | "partial" | "pending" | "failed"}.
    """
    root = Path(root)
    rng = np.random.default_rng(rng_seed)
    special = special or {}
    points = [(None, s) for s in sizes] if mode == "parameters" else [(b, s) for b in budgets for s in sizes]
    first_arch = next(iter(archs.values()))["arch"]
    atomic_write_text(root / "sweep.yaml", json.dumps({
        "name": name, "param_count": "total", "pairing": "tokens" if mode == "parameters" else "flops",
        "axis": {"name": "parameters" if mode == "parameters" else "isoflop"}, "flops": {"convention": "full"},
        "seeds": list(seeds), "architectures": [{"label": lb, "arch": a["arch"]} for lb, a in archs.items()],
        "first": first_arch}))
    for budget, size in points:
        for seed in seeds:
            key = f"{size[0]}|{seed}|{budget}"
            pair_id = hashlib.sha256(key.encode()).hexdigest()[:12]
            z = rng.normal()
            for label, a in archs.items():
                tags = {"sweep": name, "pair_id": pair_id, "arch_label": label, "size": size[0],
                        "axis": "parameters" if mode == "parameters" else "isoflop",
                        "axis_value": size[0] if budget is None else f"{budget:.4g}",
                        "pairing": "tokens" if mode == "parameters" else "flops"}
                if budget is not None:
                    tags["budget"] = f"{budget:.6g}"
                model = _model(a, size)
                cfg = spec_from_dict({"model": model}).model
                N = param_counts(cfg)["total"]
                if budget is None:
                    D = tokens
                    steps = max(1, D // (BATCH * CONTEXT))
                    per = {c: training_step_flops(cfg, BATCH, CONTEXT, c) for c in ("full", "paper")}
                    C = {c: per[c] * steps for c in per}
                else:
                    D = budget / (6.0 * N)
                    C = {"full": 6.0 * N * D, "paper": 6.0 * N * D}
                spec = _spec(model, seed, max(1, int(round(D))), tags)
                if budget is not None:   # a done run's last row is at its spec's total steps, as the trainer logs
                    steps = spec.total_steps
                run = root / "runs" / spec.run_id
                assert not run.exists(), f"{label} {size[0]} seed {seed}: the run of another label (add ebt options)"
                atomic_write_text(run / "spec.yaml", spec_to_yaml(spec))
                status = special.get((label, size[0], seed, budget)) or special.get((label, size[0], seed))
                if status == "pending":
                    continue
                fracs = np.geomspace(1.0 / 32, 1.0, eval_points)
                factor = math.exp(noise * (z + 0.5 * rng.normal()))
                final = a["law"](C["full"], N, D) * factor
                rows = []
                for f in fracs:
                    if budget is None:
                        loss = final * f ** -0.08
                    else:
                        loss = a["law"](f * C["full"], N, f * D) * factor
                    step = max(1, int(round(f * steps)))
                    rows.append({"step": step, "tokens": f * D, "flops_full": f * C["full"],
                                 "flops_paper": f * C["paper"], "train_loss": loss * 1.01, "lr": 1e-3,
                                 "grad_norm": 1.0, "val_loss": loss, "val_ppl": math.exp(loss)})
                if status in ("diverged", "partial"):
                    rows = rows[: max(1, len(rows) // 2)]
                run.joinpath("metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
                if status == "partial":
                    continue
                if status == "failed":
                    atomic_write_json(run / "failed.json", {"error": "RuntimeError: CUDA out of memory"})
                    continue
                result = {"status": "diverged" if status == "diverged" else "done", "run_id": spec.run_id,
                          "arch": a["arch"], "step": rows[-1]["step"], "total_steps": spec.total_steps,
                          "final": rows[-1], "val_loss": rows[-1]["val_loss"], "val_ppl": rows[-1]["val_ppl"],
                          "params": param_counts(cfg),
                          "note": f"non-finite loss or gradient in step {rows[-1]['step'] + 1}; weights of step "
                                  f"{rows[-1]['step']} kept" if status == "diverged" else ""}
                atomic_write_json(run / "result.json", result)
    return root


def write_curve_sweep(root, runs: list[dict], *, name: str = "curves", eval_points: int = 8,
                      start_loss: float = 300.0) -> list[str]:
    """Write runs one by one, each with its own steps and final loss, in the trainer's format
    (ROOT/runs/<run_id>/{spec.yaml, metrics.jsonl, result.json}, ROOT/sweep.yaml); the run ids in order.

    runs: dicts {"label", "arch", "size" (a SIZES entry), "steps", "final" (final val loss),
    optional "seed" (0), "schedule" ("cosine"), "cooldown_of" (index of an earlier entry: a
    WSD cooldown branch, tagged with its parent's run id and sharing its sweep point)}.
    The eval points sit at log-spaced steps; FLOPs are step x the model's FLOPs per step (both
    conventions, as the trainer records them). The curve is L(f) = final f^-0.1 + (start_loss
    - final) e^(-f / 0.01) at the fraction f of training: a high-loss start (an EBT's loss starts
    near 300 nats), then intermediate points above what a run cooled down at that compute reaches.
    """
    root = Path(root)
    atomic_write_text(root / "sweep.yaml", json.dumps({
        "name": name, "param_count": "total", "pairing": "tokens", "axis": {"name": "tokens"},
        "flops": {"convention": "full"}, "seeds": sorted({r.get("seed", 0) for r in runs}),
        "architectures": [{"label": lb, "arch": a} for lb, a in {r["label"]: r["arch"] for r in runs}.items()]}))
    ids: list[str] = []
    for r in runs:
        parent = runs[r["cooldown_of"]] if "cooldown_of" in r else r
        point = f"{parent['size'][0]}-{parent['steps']}"
        tags = {"sweep": name, "pair_id": point, "arch_label": r["label"], "size": r["size"][0], "axis": "tokens",
                "axis_value": point, "pairing": "tokens"}
        if "cooldown_of" in r:
            tags.update(cooldown_of=ids[r["cooldown_of"]], cooldown_fraction=f"{r['steps'] / parent['steps']:g}")
        model = _model({"arch": r["arch"]}, r["size"])
        spec = _spec(model, r.get("seed", 0), r["steps"] * BATCH * CONTEXT, tags)
        spec = dataclasses.replace(spec, train=dataclasses.replace(spec.train, schedule=r.get("schedule", "cosine")))
        assert spec.total_steps == r["steps"]
        run = root / "runs" / spec.run_id
        assert not run.exists(), f"{r}: the run of another entry"
        atomic_write_text(run / "spec.yaml", spec_to_yaml(spec))
        per = {c: training_step_flops(spec.model, BATCH, CONTEXT, c) for c in ("full", "paper")}
        rows = []
        for step in np.unique(np.round(np.geomspace(1, r["steps"], eval_points)).astype(int)):
            f = step / r["steps"]
            loss = r["final"] * f ** -0.1 + (start_loss - r["final"]) * math.exp(-f / 0.01)
            rows.append({"step": int(step), "tokens": int(step) * BATCH * CONTEXT,
                         "flops_full": step * per["full"], "flops_paper": step * per["paper"],
                         "train_loss": loss * 1.01, "lr": 1e-3, "grad_norm": 1.0, "val_loss": loss,
                         "val_ppl": math.exp(loss)})
        run.joinpath("metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
        atomic_write_json(run / "result.json", {
            "status": "done", "run_id": spec.run_id, "arch": r["arch"], "step": rows[-1]["step"],
            "total_steps": spec.total_steps, "final": rows[-1], "val_loss": rows[-1]["val_loss"],
            "val_ppl": rows[-1]["val_ppl"], "params": param_counts(spec.model), "note": ""})
        ids.append(spec.run_id)
    return ids


def small_sweep(**overrides) -> dict:
    """A small valid sweep file (as data): two sizes, both architectures; top-level keys overridden per test."""
    data = {
        "name": "t",
        "base": {"model": {"vocab_size": 1024, "context": 64}, "train": {"batch_size": 8}},
        "seeds": [0, 1],
        "architectures": [{"label": "T++", "arch": "transformer"}, {"label": "EBT", "arch": "ebt"}],
        "axis": {"name": "parameters", "values": [{"n_layers": 1, "d_model": 32, "n_heads": 2},
                                                  {"n_layers": 2, "d_model": 64, "n_heads": 2}]},
        "tokens": {"rule": "fixed", "tokens": 65536},
    }
    data.update(overrides)
    return data


def plan_of(data: dict):
    """The plan of a sweep given as data (a copy: planning must not mutate the test's dict)."""
    from ebt_scaling.sweeps.generate import make_plan
    from ebt_scaling.sweeps.sweep_spec import sweep_from_dict

    return make_plan(sweep_from_dict(copy.deepcopy(data), "test"))
