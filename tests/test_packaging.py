"""The installed distribution must carry every package folder of the repository."""
from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOP_LEVEL = {"harness", "models", "sweeps", "analysis"}


def test_every_package_folder_is_listed_in_pyproject():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    on_disk = {
        "ebt_scaling." + ".".join(init.parent.relative_to(ROOT).parts)
        for top in TOP_LEVEL for init in (ROOT / top).rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    assert on_disk - listed == set(), "add these to [tool.setuptools] packages"
    assert {f"ebt_scaling.{t}" for t in TOP_LEVEL} <= set(config["package-dir"])
