"""What the TensorFlow and the JAX trainers share (no TensorFlow or JAX imported here).

Their settings (precisions, D rules, metric names, argument checks), their optimizers, and the
checkpoint layout: the keys under which ``state_arrays`` stores the models' weights and the
optimizers' variables.  Both trainers take the keys from :func:`checkpoint_variables`, which is
what makes a checkpoint written on one backend load on the other.
"""
from __future__ import annotations

import keras
import numpy as np

from tf3dgan.choices import D_RULES, PRECISIONS  # noqa: F401  (re-exported)
from tf3dgan.errors import CheckpointError
from tf3dgan.models import losses

METRICS = ("d_loss", "g_loss", "val_loss", "d_trained", "ratio", "d_accuracy", "loss_scale")


def check_settings(loss: str, d_rule: str | None, precision: str, batch_size: int, n: int):
    """Validate a trainer's arguments; returns ``(objective, d_rule)`` (the objective's default rule
    when ``d_rule`` is None)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    objective = losses.get_objective(loss)
    d_rule = d_rule or objective.default_d_rule
    if d_rule not in D_RULES:
        raise ValueError(f"d-rule must be one of {', '.join(D_RULES)}, got {d_rule!r}")
    if not 1 <= batch_size <= n:
        raise ValueError(f"batch size {batch_size} must be between 1 and the dataset size {n}")
    return objective, d_rule


def adam(lr: float, float16: bool):
    """The seeds' Adam (β1 = 0.5), wrapped in a dynamic loss scaler for ``mixed_float16``."""
    opt = keras.optimizers.Adam(learning_rate=lr, beta_1=0.5)
    return keras.optimizers.LossScaleOptimizer(opt) if float16 else opt


def checkpoint_variables(generator, discriminator, opt_g, opt_d) -> list:
    """``(key, variable)`` for the models' weights (``g/NNN``, ``d/NNN``, in ``model.weights``
    order) and the optimizers' variables.  Adam's own variables are keyed the same with or
    without loss scaling (``opt_g/NNN``); the loss scaler's extra variables go under
    ``opt_g_scale/NNN`` (optional on load), so a run can resume in another precision."""
    groups = {"g": generator.weights, "d": discriminator.weights}
    for name, opt in (("opt_g", opt_g), ("opt_d", opt_d)):
        inner = getattr(opt, "inner_optimizer", opt)
        groups[name] = inner.variables
        groups[f"{name}_scale"] = [v for v in opt.variables if not any(v is w for w in inner.variables)]
    return [(f"{group}/{i:03d}", v) for group, variables in groups.items() for i, v in enumerate(variables)]


def checkpoint_entry(arrays: dict, key: str, shape: tuple, source: str):
    """``arrays[key]`` as a NumPy array, checked against the run's ``shape``; ``None`` for a
    missing loss-scaler entry (saved without loss scaling: keep the initial scale).  A missing
    or mis-shaped entry is a CheckpointError naming ``source``."""
    if key not in arrays:
        if key.split("/")[0].endswith("_scale"):
            return None
        raise CheckpointError(f"{source}: has no entry {key!r} (saved by a different model, loss or precision?)")
    value = np.asarray(arrays[key])
    if tuple(value.shape) != tuple(shape):
        raise CheckpointError(f"{source}: entry {key!r} has shape {value.shape}, the run expects "
                              f"{tuple(shape)} (different architecture, width or dataset size?)")
    return value
