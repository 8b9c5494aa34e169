"""The code passes the linter configured in pyproject.toml ([tool.ruff]: pycodestyle E/W and pyflakes F)."""
from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
from _cli import REPO


def test_ruff_finds_nothing():
    try:
        import ruff  # noqa: F401  (installed with the test extra: pip install -e ".[test]")
    except ImportError:
        pytest.fail("ruff is not installed: pip install -e \".[test]\"")
    ruff = shutil.which("ruff") or shutil.which("ruff", path=str(__import__("pathlib").Path(sys.executable).parent))
    cmd = [ruff] if ruff else [sys.executable, "-m", "ruff"]
    proc = subprocess.run([*cmd, "check", "--output-format", "concise", str(REPO)], capture_output=True, text=True,
                          cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
