"""Plain-NumPy transcriptions of the stabilisers' definitions (tf3dgan.training.augment, algorithm.average_generator,
networks.MinibatchStd), shared by tests/test_stabilisers.py and the JAX worker."""
from __future__ import annotations

import numpy as np


def augment(x: np.ndarray, u: np.ndarray, ops: tuple[str, ...]) -> np.ndarray:
    """``x`` (B, R, R, R, 1), one grid at a time with loops and slices: translation by floor(u·(2k+1)) − k on each
    axis (k = R/8, zeros shifted in); with u[3] < ½ the mirror image across axis 0 about the grid's centre of mass
    there (of its positive part), rounded; a cube of side R/2 around floor(u[4..6]·R) set to 0."""
    x = np.array(x, np.float32)
    r = x.shape[1]
    out = np.empty_like(x)
    for n in range(x.shape[0]):
        g = x[n]
        if "translation" in ops:
            k = max(1, r // 8)
            for axis in range(3):
                s = int(np.floor(u[n, axis] * (2 * k + 1))) - k
                moved = np.zeros_like(g)
                src, dst = [slice(None)] * 4, [slice(None)] * 4
                src[axis] = slice(max(0, -s), r - max(0, s))
                dst[axis] = slice(max(0, s), r - max(0, -s))
                moved[tuple(dst)] = g[tuple(src)]
                g = moved
        if "mirror" in ops and u[n, 3] < 0.5:
            mass = np.maximum(g, 0).sum(axis=(1, 2, 3))
            c = (mass * np.arange(r)).sum() / max(mass.sum(), 1e-6)
            s = int(np.round(2 * c - (r - 1)))
            flipped, moved = g[::-1], np.zeros_like(g)
            for i in range(r):
                if 0 <= i - s < r:
                    moved[i] = flipped[i - s]
            g = moved
        if "cutout" in ops:
            centre = [int(np.floor(u[n, 4 + a] * r)) for a in range(3)]
            near = [np.abs(np.arange(r) - centre[a]) < r // 4 for a in range(3)]
            g = g.copy()
            g[np.ix_(*near)] = 0
        out[n] = g
    return out


def moving_average(snapshots: list[list[np.ndarray]], beta: float, trained: list[bool] | None = None):
    """G's EMA after each step: ``snapshots[0]`` G's variables at the start, ``snapshots[t]`` after step t;
    ema ← d·ema + (1 − d)·w with d = min(β, (1 + n)/(10 + n)), n the updates averaged so far; a step without G's
    update (``trained[t-1]`` false) leaves it."""
    ema = [np.array(w, np.float64) for w in snapshots[0]]
    n, out = 0, []
    for t, weights in enumerate(snapshots[1:]):
        if trained is None or trained[t]:
            d = min(beta, (1 + n) / (10 + n))
            ema = [d * e + (1 - d) * np.asarray(w, np.float64) for e, w in zip(ema, weights)]
            n += 1
        out.append([e.copy() for e in ema])
    return out


def minibatch_std(x: np.ndarray, group: int) -> np.ndarray:
    """``x`` (B, ...) with one channel appended: for grid i, the mean over features and positions of the standard
    deviation (population, +1e-8 under the root) over the grids j ≡ i (mod B/group)."""
    b = x.shape[0]
    m = b // group
    stat = np.empty(b)
    for i in range(b):
        members = x[[j for j in range(b) if j % m == i % m]].astype(np.float64)
        stat[i] = np.sqrt(members.var(axis=0) + 1e-8).mean()
    extra = np.broadcast_to(stat.reshape((b,) + (1,) * (x.ndim - 1)), x.shape[:-1] + (1,))
    return np.concatenate([x, extra], axis=-1)
