"""Checkpoint keys: every array of a checkpoint named by where its variable sits in the model.

A model weight is ``<g|d>/blocks.<i>.<layer kind>/<variable>``, e.g. ``g/blocks.0.dense/kernel`` or
``d/blocks.4.batch_normalization/moving_mean`` (the layer's place in the network's chain of blocks, what kind
of layer it is, and the variable's own name: the same in every process, unlike Keras' generated layer names
``dense_2``).  An optimizer variable is ``<opt_g|opt_d>/<the weight's key after the model prefix>/<slot>``
(e.g. ``opt_g/blocks.0.dense/kernel/momentum``) or ``<opt_g|opt_d>/<name>`` (``iteration``,
``learning_rate``); G's moving average (``--g-ema``) is ``g_ema/<the weight's key after the model prefix>``;
a loss scaler's own variables are ``<opt_g|opt_d>_scale/<name>`` (optional on load, so a
run can resume in another precision).  Two same-shaped vectors that swapped places therefore cannot load
silently: each array goes to the variable its key names.

Checkpoints written before (tf3dgan ≤ 0.1.0 at commit 039c6e8) keyed the same variables by position
(``g/000`` in ``model.weights`` order, ``opt_g/000`` in the optimizer's); :func:`upgrade` renames such a set of
arrays to the keys above, so they load unchanged.
"""
from __future__ import annotations

import re

import numpy as np

from tf3dgan.errors import CheckpointError

MODEL_GROUPS = ("g", "d")
_POSITIONAL = re.compile(r"^(g|d|opt_g|opt_d|opt_g_scale|opt_d_scale)/\d{3}$")


def _snake(name: str) -> str:
    """``Conv3DTranspose`` -> ``conv3d_transpose``, ``BatchNormalization`` -> ``batch_normalization``."""
    return re.sub(r"(?<=[A-Za-z0-9])(?=[A-Z][a-z])", "_", name).lower()


def model_keys(model, prefix: str) -> list[tuple[str, object, str]]:
    """``(key, variable, positional key)`` for every weight of ``model``, in ``model.weights`` order."""
    where = {}
    for i, layer in enumerate(getattr(model, "blocks", None) or model.layers):
        kind = _snake(type(layer).__name__)
        for w in layer.weights:
            key = f"{prefix}/blocks.{i}.{kind}/{w.name}"
            if key in where.values():
                raise ValueError(f"two variables of {model.name} would be saved as {key!r}")
            where[id(w)] = key
    out = []
    for j, w in enumerate(model.weights):
        if id(w) not in where:
            raise ValueError(f"{model.name}'s variable {w.path} is not in one of its blocks")
        out.append((where[id(w)], w, f"{prefix}/{j:03d}"))
    return out


def optimizer_keys(opt, model, prefix: str, model_prefix: str) -> list[tuple[str, object, str]]:
    """``(key, variable, positional key)`` for ``opt``'s variables (``opt`` built on ``model``'s trainable
    variables); a ``LossScaleOptimizer``'s inner Adam under ``prefix``, its own variables under ``prefix_scale``."""
    names = {}   # Keras names a slot "<weight path with _ for />_<slot>"
    for key, w, _ in model_keys(model, model_prefix):
        names[w.path.replace("/", "_") + "_"] = key[len(model_prefix) + 1:]
    inner = getattr(opt, "inner_optimizer", opt)
    out = []
    for group, variables in ((prefix, inner.variables),
                             (f"{prefix}_scale", [v for v in opt.variables if not any(v is w for w in inner.variables)])):
        for j, v in enumerate(variables):
            match = max((p for p in names if v.name.startswith(p)), key=len, default=None)
            key = f"{group}/{names[match]}/{v.name[len(match):]}" if match else f"{group}/{v.name}"
            out.append((key, v, f"{group}/{j:03d}"))
    return out


def checkpoint_variables(generator, discriminator, opt_g, opt_d, g_ema=None) -> list[tuple[str, object, str]]:
    """``(key, variable, positional key)`` for the models' weights and both optimizers' variables, then G's
    moving average (``g_ema``, a generator like G, keys ``g_ema/...``) when there is one."""
    out = model_keys(generator, "g") + model_keys(discriminator, "d")
    out += optimizer_keys(opt_g, generator, "opt_g", "g") + optimizer_keys(opt_d, discriminator, "opt_d", "d")
    if g_ema is not None:
        out += model_keys(g_ema, "g_ema")
    keys = [k for k, _, _ in out]
    if len(set(keys)) != len(keys):
        raise ValueError(f"checkpoint keys are not unique: {sorted(k for k in set(keys) if keys.count(k) > 1)}")
    return out


def is_positional(arrays) -> bool:
    """Whether ``arrays`` (a checkpoint's) use the positional keys of checkpoints written before path keys
    (and none of the path keys)."""
    return (any(_POSITIONAL.match(k) for k in arrays)
            and not any(k.startswith(tuple(f"{g}/blocks." for g in MODEL_GROUPS)) for k in arrays))


def upgrade(arrays: dict, entries) -> dict:
    """``arrays`` with positional keys renamed to path keys (``entries``: :func:`checkpoint_variables` or
    :func:`model_keys` output of the models being loaded); arrays already keyed by path pass unchanged."""
    if not is_positional(arrays):
        return arrays
    rename = {old: key for key, _, old in entries}
    return {rename.get(k, k): v for k, v in arrays.items()}


def entry(arrays: dict, key: str, variable, source: str, optional: bool = False):
    """``arrays[key]`` as a NumPy array, checked against ``variable``'s shape; ``None`` when missing and
    ``optional``.  A missing or mis-shaped entry is one CheckpointError line naming ``source``, the key and
    the model's variable."""
    path = getattr(variable, "path", None) or key
    if key not in arrays:
        if optional:
            return None
        raise CheckpointError(f"{source}: has no entry {key!r} for the model's {path} (saved by a different model, "
                              "loss or precision?)")
    value = np.asarray(arrays[key])
    shape = tuple(variable.shape)
    if tuple(value.shape) != shape:
        raise CheckpointError(f"{source}: entry {key!r} has shape {value.shape}, the model's {path} has {shape} "
                              "(different architecture, width or dataset size?)")
    return value


def load_model_weights(model, prefix: str, arrays: dict, source: str) -> None:
    """Assign a checkpoint's weights of one model (``prefix`` ``g`` or ``d``; path or positional keys) to ``model``.
    A missing or mis-shaped weight, or a checkpoint holding weights the model lacks, is a CheckpointError."""
    entries = model_keys(model, prefix)
    arrays = upgrade(arrays, entries)
    values = [(w, entry(arrays, key, w, source)) for key, w, _ in entries]
    extra = sorted(set(k for k in arrays if k.startswith(f"{prefix}/")) - {k for k, _, _ in entries})
    if extra:
        raise CheckpointError(f"{source}: holds {len(extra)} weight(s) its model does not have (e.g. {extra[0]!r})")
    for w, value in values:
        w.assign(value)


def manifest(entries) -> dict:
    """What a checkpoint holds, for its metadata: key -> ``{"path", "shape", "dtype"}`` of each variable."""
    return {key: {"path": getattr(v, "path", None), "shape": list(v.shape), "dtype": str(np.dtype(v.dtype))}
            for key, v, _ in entries}
