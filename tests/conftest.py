"""Shared fixtures: one data cache per test session (the Shakespeare download and BPE
training happen once), and tiny run specs that train in seconds on 2 CPU cores."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from ebt_scaling.harness.contract.spec import spec_from_dict, spec_to_yaml


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models gain nothing from intra-op threads, and on a shared 2-core machine
    OpenMP oversubscription stalls them by 10x or more: run every test on one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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


def comparable(rows: list[dict]) -> list[dict]:
    """metrics.jsonl rows without their timing fields (which differ between two runs)."""
    return [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in rows]
