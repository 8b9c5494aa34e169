"""README's quickstart is what a new user types: its two commands must be the ones that work."""
from __future__ import annotations

import re
import shlex

import pytest
from _cli import REPO, tool


def quickstart_commands() -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = re.search(r"## Quickstart\s+```bash\n(.*?)```", text, re.S).group(1)
    return [line for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_the_quickstart_installs_then_trains_and_installs_the_test_extra_then_lints_then_tests():
    train, tests = quickstart_commands()
    install, run = train.split(" && ", 1)
    assert install == "pip install -e ."
    argv = shlex.split(run)
    assert argv[:2] == ["python", "tools/train.py"]
    from tools.train import build_parser
    build_parser().parse_args(argv[2:])                      # every flag of the quickstart exists
    # ruff (pyproject.toml's [tool.ruff]) runs before the tests, so a lint error fails CI in seconds
    assert tests.split(" && ") == ['pip install -e ".[test]"', "ruff check .", "python -m pytest -q"]


def test_ci_runs_the_readme_test_command_exactly():
    _, tests = quickstart_commands()
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert tests in ci, "the .ci/run script must call README's test command as written"


@pytest.mark.slow
def test_the_quickstart_recipe_gives_varied_samples(tmp_path):
    # The quickstart's own flags, shortened (16³ procedural chairs, 128 of them, 20 epochs instead of 32³, 256, 30):
    # 32 samples (seed 0) must differ from each other, mean pairwise IoU below 0.5 (the procedural chairs: 0.15; the
    # quickstart before the stabilisers: 0.85, one shape over and over).
    import numpy as np

    from tf3dgan.metrics.distances import iou_distances
    from tf3dgan.outputs import sampling
    from tf3dgan.training import runs

    train, _ = quickstart_commands()
    argv = shlex.split(train.split(" && ", 1)[1])[2:]
    argv[argv.index("-d") + 1] = "synthetic:chairs:res=16:n=128"
    argv[argv.index("-e") + 1] = "20"
    argv[argv.index("-n") + 1] = "quick"
    proc = tool("train", *argv, "--out", tmp_path, "--no-progress", timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    g, _ = runs.load_generator(tmp_path / "quick")
    grids = sampling.generate(g, sampling.latents(32, g.spec.latent_dim, 0)) > runs.run_threshold(tmp_path / "quick")
    assert grids.reshape(32, -1).any(axis=1).all()                    # no empty sample
    d = iou_distances(grids)
    mean_iou = 1.0 - d[np.triu_indices(32, 1)].mean()
    assert mean_iou < 0.5, mean_iou
