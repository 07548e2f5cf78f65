"""The import layering of pyproject.toml's import-linter contract holds, and the contract
layer stays torch-free."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("harness", "models", "sweeps", "analysis")


def test_import_linter_layers_contract(tmp_path):
    # The editable install maps ebt_scaling.* through an import hook that import-linter's
    # graph builder cannot walk, so it reads the same folders through a plain package tree.
    package = tmp_path / "ebt_scaling"
    package.mkdir()
    for folder in FOLDERS:
        (package / folder).symlink_to(ROOT / folder)
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    lint = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    proc = subprocess.run([sys.executable, "-c", lint, str(ROOT / "pyproject.toml")],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "1 kept, 0 broken" in proc.stdout


def test_the_contract_layer_never_imports_torch():
    code = ("import sys; import ebt_scaling.harness.contract.spec as s; s.RunSpec(); "
            "import ebt_scaling.harness.contract.run_state; print('torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "False"
