"""Fixtures shared by several test modules."""
from __future__ import annotations

import os

import pytest
from _cli import TINY, tool


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """The folder holding run ``g``: tools/train.py on the tiny boxes config, 4 epochs, checkpoints
    at 2 and 4 (and latest).  Read it, or copy it before changing anything in it."""
    out = tmp_path_factory.mktemp("runs")
    proc = tool("train", "-n", "g", *TINY, "-e", "4", "-save", "2", "--out", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.fixture(scope="session", autouse=True)
def _pooled_data_cache(tmp_path_factory):
    """Pooled datasets (``--resolution`` below the data's) are cached here, not in the user's ~/.cache."""
    if "TF3DGAN_CACHE" not in os.environ:
        os.environ["TF3DGAN_CACHE"] = str(tmp_path_factory.mktemp("tf3dgan-cache"))
    yield
