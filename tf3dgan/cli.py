"""Shared plumbing of the command-line tools: quiet TensorFlow start-up and one-line errors."""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from typing import Callable

from tf3dgan.errors import Tf3dganError


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` with each flag's default, said once and only where it means something.

    argparse's own formatter appends ``(default: ...)`` to every flag: ``(default: True)`` for a
    ``--no-X`` switch (whose *destination* defaults to True), ``(default: False)`` for an on/off
    switch, and a second default after a help text that already states one in ``[default: ...]``.
    This one leaves those out and shows the default only for flags that take a value."""

    def _get_help_string(self, action):
        text = action.help or ""
        if (action.nargs == 0                      # store_true / store_false / count switches
                or "[default" in text or "(default" in text
                or action.default is None or action.default is argparse.SUPPRESS
                or action.default == ""):
            return text
        return super()._get_help_string(action)


def explicit_flags(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> set[str]:
    """The destinations of the flags given on the command line (not left at their defaults)."""
    import copy

    bare = copy.deepcopy(parser)
    for action in bare._actions:
        action.default = argparse.SUPPRESS
    return set(vars(bare.parse_args(argv)))


def quiet_tensorflow() -> None:
    """Hide TensorFlow's C++ info/warning chatter (errors still show)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def import_tensorflow_quietly(required: bool = True) -> None:
    """Import TensorFlow and initialise its devices with the process's stderr captured.

    TensorFlow 2.21 prints absl start-up lines (oneDNN, CUDA stubs, cuInit) that ignore
    ``TF_CPP_MIN_LOG_LEVEL``; they are swallowed here unless the import fails, in which
    case they are replayed.  Set ``TF3DGAN_VERBOSE=1`` to see them anyway.  With
    ``required=False`` (the JAX backend, where TensorFlow only writes TensorBoard logs) a
    missing TensorFlow is not an error.
    """
    quiet_tensorflow()
    if os.environ.get("TF3DGAN_VERBOSE") or "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import keras  # noqa: F401  (Keras picks its backend on import)
            try:
                import tensorflow as tf
            except ImportError:
                if required:
                    raise
                return
            if not required:   # TensorFlow only writes logs here: keep it off the GPUs that JAX trains on
                tf.config.set_visible_devices([], "GPU")
            tf.config.list_physical_devices()
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode("utf-8", "replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def keras_backend() -> str:
    """The Keras backend this process will use (``KERAS_BACKEND``, default ``tensorflow``), without importing Keras."""
    return os.environ.get("KERAS_BACKEND", "tensorflow")


def run_tool(action: Callable[[], object], needs_tensorflow: bool = True) -> int:
    """Run a tool's ``action()`` (flags already parsed); a ``Tf3dganError`` becomes
    ``error: <message>`` on stderr and exit status 2."""
    try:
        if needs_tensorflow:
            import_tensorflow_quietly(required=keras_backend() == "tensorflow")
        action()
    except Tf3dganError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
