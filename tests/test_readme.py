"""README's quickstart is what a new user types: its two commands must be the ones that work."""
from __future__ import annotations

import re
import shlex

from _cli import REPO


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
