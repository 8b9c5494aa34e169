"""Sampling a trained generator: latent vectors, interpolations, and batched generation.

Latent vectors are standard normal, as in training.  ``latents(count, dim, seed)`` is a pure
function of its arguments, so ``--seed S --count N`` always names the same shapes, and the first
``k`` of ``count`` shapes do not depend on ``count``.
"""
from __future__ import annotations

import numpy as np

INTERPOLATIONS = ("linear", "slerp")


def latents(count: int, latent_dim: int, seed: int = 0) -> np.ndarray:
    """``(count, latent_dim)`` float32 standard-normal vectors drawn from ``seed``."""
    return np.random.default_rng(seed).standard_normal((count, latent_dim)).astype(np.float32)


def interpolate(z0: np.ndarray, z1: np.ndarray, steps: int, mode: str = "linear") -> np.ndarray:
    """``steps`` latent vectors from ``z0`` to ``z1`` inclusive: straight (``linear``, the 3D-GAN paper's
    figure) or along the great circle (``slerp``, which keeps the norm typical of a Gaussian vector)."""
    if steps < 2:
        raise ValueError(f"an interpolation needs at least 2 steps, got {steps}")
    if mode not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}, got {mode!r}")
    z0, z1 = np.asarray(z0, np.float64), np.asarray(z1, np.float64)
    t = np.linspace(0.0, 1.0, steps)[:, None]
    if mode == "linear":
        return ((1 - t) * z0 + t * z1).astype(np.float32)
    cos = np.dot(z0, z1) / (np.linalg.norm(z0) * np.linalg.norm(z1))
    omega = np.arccos(np.clip(cos, -1.0, 1.0))
    if omega < 1e-6:
        return ((1 - t) * z0 + t * z1).astype(np.float32)
    return ((np.sin((1 - t) * omega) * z0 + np.sin(t * omega) * z1) / np.sin(omega)).astype(np.float32)


def generate(generator, z: np.ndarray, batch_size: int = 16) -> np.ndarray:
    """Generator output for ``z`` (inference-mode BatchNorm), in batches, as float32 ``(N, D, H, W)``."""
    import keras

    out = []
    for start in range(0, len(z), batch_size):
        x = generator(keras.ops.convert_to_tensor(z[start:start + batch_size]), training=False)
        out.append(np.asarray(keras.ops.convert_to_numpy(x), dtype=np.float32)[..., 0])
    return np.concatenate(out) if out else np.zeros((0,), np.float32)
