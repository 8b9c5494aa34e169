"""The code passes the linter configured in pyproject.toml ([tool.ruff]: pycodestyle E/W, pyflakes F and
isort-style imports I).  ``.ci/run`` runs ``ruff check .`` before pytest; this test keeps a plain
``python -m pytest`` honest too."""
from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from _cli import REPO


def test_ruff_finds_nothing():
    if importlib.util.find_spec("ruff") is None:
        pytest.fail("ruff is not installed (it comes with the test extra): pip install -e \".[test]\"")
    ruff = shutil.which("ruff") or shutil.which("ruff", path=str(Path(sys.executable).parent))
    cmd = [ruff] if ruff else [sys.executable, "-m", "ruff"]
    proc = subprocess.run([*cmd, "check", "--output-format", "concise", str(REPO)], capture_output=True, text=True,
                          cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
