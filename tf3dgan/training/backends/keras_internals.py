"""The Keras internals the JAX backend needs, in one place.

The CPU convolution rewrite (:mod:`.jax_convolutions`) swaps Keras' JAX ``conv`` and ``conv_transpose``
while the step is traced, and computes transposed-convolution padding as Keras does.  Those live in
``keras.src`` (not Keras' public API) and may move in a Keras release: every access goes through this
module, and :func:`check` (run by the test suite, ``tests/test_keras_internals.py``) fails loudly, naming
what moved and the Keras version, when they do.
"""
from __future__ import annotations

import inspect

#: what the rewrite needs: (module, name, the parameters it calls it with)
NEEDED = (
    ("keras.src.backend.jax.nn", "conv", ("inputs", "kernel", "strides", "padding", "data_format", "dilation_rate")),
    ("keras.src.backend.jax.nn", "conv_transpose",
     ("inputs", "kernel", "strides", "padding", "output_padding", "data_format", "dilation_rate")),
    ("keras.src.backend", "standardize_data_format", ("data_format",)),
    ("keras.src.backend.common.backend_utils", "compute_conv_transpose_padding_args_for_jax",
     ("input_shape", "kernel_shape", "strides", "padding", "output_padding", "dilation_rate")),
)


def jax_nn():
    """Keras' JAX ``nn`` module (whose ``conv``/``conv_transpose`` the Keras layers call under JAX)."""
    from keras.src.backend.jax import nn

    return nn


def standardize_data_format(data_format):
    from keras.src.backend import standardize_data_format as standardize

    return standardize(data_format)


def conv_transpose_padding_for_jax(*args, **kwargs):
    from keras.src.backend.common.backend_utils import compute_conv_transpose_padding_args_for_jax

    return compute_conv_transpose_padding_args_for_jax(*args, **kwargs)


def check() -> list[str]:
    """What of :data:`NEEDED` is missing or has other parameters in the installed Keras (empty: all there)."""
    import importlib

    import keras

    problems = []
    for module, name, params in NEEDED:
        try:
            fn = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as e:
            problems.append(f"keras {keras.__version__}: {module}.{name} is gone ({type(e).__name__}: {e})")
            continue
        have = tuple(inspect.signature(fn).parameters)
        if have[:len(params)] != params:
            problems.append(f"keras {keras.__version__}: {module}.{name} takes {have}, the rewrite calls it with "
                            f"{params}")
    return problems
