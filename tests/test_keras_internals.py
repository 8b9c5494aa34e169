"""tf3dgan.training.backends.keras_internals: the Keras internals the JAX backend's CPU convolutions need are
where it reaches for them.  When a Keras release moves one, this fails and names it (instead of the JAX trainer
failing deep inside a trace)."""
from __future__ import annotations

import importlib.util

import pytest

from tf3dgan.training.backends import keras_internals

pytestmark = pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")


def test_the_keras_internals_the_jax_backend_uses_are_there():
    assert keras_internals.check() == []
    nn = keras_internals.jax_nn()
    assert callable(nn.conv) and callable(nn.conv_transpose)
    assert keras_internals.standardize_data_format("channels_last") == "channels_last"
    # Keras' padding for a stride-2 'same' transposed convolution of a 4-wide input with a 4-tap kernel
    pads = keras_internals.conv_transpose_padding_for_jax((1, 4, 4, 4, 1), (4, 4, 4, 1, 1), 2, "same", None, 1)
    assert [tuple(p) for p in pads] == [(2, 2)] * 3


def test_a_moved_internal_is_named_with_the_keras_version(monkeypatch):
    import keras

    monkeypatch.setattr(keras_internals, "NEEDED", keras_internals.NEEDED + (
        ("keras.src.backend.jax.nn", "no_such_function", ("x",)),
        ("keras.src.backend.jax.nn", "conv", ("x", "y")),
    ))
    problems = keras_internals.check()
    assert len(problems) == 2
    assert problems[0].startswith(f"keras {keras.__version__}: keras.src.backend.jax.nn.no_such_function is gone")
    assert "conv takes" in problems[1] and "('x', 'y')" in problems[1]
