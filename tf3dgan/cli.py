"""Shared plumbing of the command-line tools: quiet TensorFlow start-up and one-line errors."""
from __future__ import annotations

import os
import sys
from typing import Callable

from .errors import Tf3dganError


def quiet_tensorflow() -> None:
    """Hide TensorFlow's C++ info/warning start-up chatter (errors still show)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def run_tool(main: Callable[[list[str] | None], object], argv: list[str] | None = None) -> int:
    """Run a tool's ``main``; a ``Tf3dganError`` becomes ``error: <message>`` and exit status 2."""
    quiet_tensorflow()
    try:
        main(argv)
    except Tf3dganError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
