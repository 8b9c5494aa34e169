"""Distances between voxel shapes: 1 − IoU of the grids, and Chamfer distance of surface points.

Shape sets are accepted as

* grids ``(N, D, D, D)`` or ``(N, D, D, D, 1)``: bool/int voxels are occupied when nonzero, float
  voxels when > 0.5 (the rule of :func:`tf3dgan.data.datasets.binarize`, so generator outputs in [0, 1]
  can be passed as they are);
* packed bits: a 2-D uint8 array ``(N, D³/8)`` of ``np.packbits`` rows (``VoxelDataset.packed``,
  the layout of ``shared/data/voxels/*.npz``);
* a :class:`tf3dgan.data.datasets.VoxelDataset`.

Conventions (the set metrics of :mod:`tf3dgan.metrics.sets` rely on them):

* IoU distance: two empty grids have IoU 1 (distance 0: they are the same shape); an empty and
  a non-empty grid have IoU 0 (distance 1, as two shapes sharing no voxel).
* Surface points of an empty grid are all NaN; the Chamfer distance between an empty and a
  non-empty shape is +inf, between two empty shapes 0.  So an empty shape is never the
  nearest neighbour of a non-empty one.
"""
from __future__ import annotations

import contextlib
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

IOU_BLOCK_BYTES = 128 << 20      # float32 bytes of one block of grids in the IoU products
EXACT_FLOAT32_VOXELS = 1 << 24   # float32 sums of 0/1 products are exact up to 2^24 voxels per grid
DEFAULT_POINTS = 2048


class VoxelBits:
    """A set of 0/1 grids held as packed bits (``np.packbits`` rows), unpacked a block at a time."""

    def __init__(self, shapes):
        if hasattr(shapes, "packed") and hasattr(shapes, "dim"):      # a VoxelDataset
            self.packed, self.dim = np.asarray(shapes.packed, np.uint8), int(shapes.dim)
        else:
            shapes = np.asarray(shapes)
            if shapes.ndim == 2 and shapes.dtype == np.uint8:
                dim = round((shapes.shape[1] * 8) ** (1 / 3))
                if dim ** 3 != shapes.shape[1] * 8:
                    raise ValueError(f"packed rows of {shapes.shape[1]} bytes are not cubic grids")
                self.packed, self.dim = shapes, dim
            else:
                if shapes.ndim == 5 and shapes.shape[-1] == 1:
                    shapes = shapes[..., 0]
                if shapes.ndim != 4 or not shapes.shape[1] == shapes.shape[2] == shapes.shape[3]:
                    raise ValueError(f"expected grids (N, D, D, D) or packed bits (N, D³/8) uint8, "
                                     f"got shape {shapes.shape} {shapes.dtype}")
                from tf3dgan.data.datasets import pack
                self.dim = int(shapes.shape[1])
                self.packed = pack(shapes) if len(shapes) else np.zeros((0, self.dim ** 3 // 8), np.uint8)
        self.voxels = self.dim ** 3
        self.volumes = _popcount(self.packed)

    def __len__(self) -> int:
        return len(self.packed)

    def block(self, start: int, stop: int, dtype=np.float32) -> np.ndarray:
        """Rows ``start:stop`` unpacked to ``(n, D³)`` 0/1 of ``dtype``."""
        return np.unpackbits(self.packed[start:stop], axis=1, count=self.voxels).astype(dtype)

    def grids(self, idx=None) -> np.ndarray:
        """uint8 ``(n, D, D, D)`` 0/1 grids of rows ``idx`` (None: all)."""
        rows = self.packed if idx is None else np.atleast_2d(self.packed[idx])
        return np.unpackbits(rows, axis=1, count=self.voxels).reshape(-1, self.dim, self.dim, self.dim)

    def subset(self, idx) -> "VoxelBits":
        out = object.__new__(VoxelBits)
        out.packed, out.dim, out.voxels, out.volumes = self.packed[idx], self.dim, self.voxels, self.volumes[idx]
        return out


_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], np.int64)


def _popcount(packed: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(packed).sum(axis=1, dtype=np.int64)
    return _POPCOUNT[packed].sum(axis=1)


def as_bits(shapes) -> VoxelBits:
    """``shapes`` (grids, packed bits, a VoxelDataset or a :class:`VoxelBits`) as :class:`VoxelBits`."""
    return shapes if isinstance(shapes, VoxelBits) else VoxelBits(shapes)


def accelerator_present() -> bool:
    """True when Keras is already loaded (nothing is imported for this) and its backend sees a GPU/TPU."""
    import sys

    if "keras" not in sys.modules:
        return False
    import keras

    try:
        if keras.backend.backend() == "jax":
            import jax
            return jax.default_backend() != "cpu"
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf
            return bool(tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU"))
    except Exception:  # any failure here means no accelerator we can use
        return False
    return False


def _block_product(device: str):
    """``(xa, xb) -> xa @ xb.T`` as a NumPy array: on the accelerator through ``keras.ops`` (``device="keras"``,
    or ``"auto"`` when :func:`accelerator_present`), else NumPy."""
    if device not in ("auto", "numpy", "keras"):
        raise ValueError(f"device must be 'auto', 'numpy' or 'keras', got {device!r}")
    if device == "numpy" or (device == "auto" and not accelerator_present()):
        return lambda xa, xb: xa @ xb.T
    from keras import ops

    return lambda xa, xb: np.asarray(ops.convert_to_numpy(ops.matmul(ops.convert_to_tensor(xa),
                                                                      ops.transpose(ops.convert_to_tensor(xb)))),
                                     np.float64)


def iou_distances(a, b=None, *, chunk: int | None = None, device: str = "auto") -> np.ndarray:
    """1 − IoU between every grid of ``a`` and every grid of ``b`` (``b=None``: ``a`` with itself).

    ``a``, ``b``: shape sets of the same side (see the module docstring).  Returns float64
    ``(len(a), len(b))``.  Intersections are matrix products of float32 0/1 blocks (exact: the
    counts stay below 2^24; float64 above that many voxels per grid), ``chunk`` grids per block
    (default: 128 MiB of float32 per block, 128 grids at 64³: 974 × 974 at 64³ peaked at 0.6 GB
    of memory).  Against itself only the upper triangle of blocks is computed.
    Two empty grids: distance 0; empty vs non-empty: 1.  ``device``: the block products on an accelerator
    through ``keras.ops`` (``"keras"``; ``"auto"``, the default, when Keras is loaded and sees a GPU/TPU),
    else NumPy (``"numpy"``).
    """
    product = _block_product(device)
    A = as_bits(a)
    B = A if b is None else as_bits(b)
    if A.voxels != B.voxels:
        raise ValueError(f"grids of side {A.dim} and {B.dim} cannot be compared")
    dtype = np.float32 if A.voxels <= EXACT_FLOAT32_VOXELS else np.float64
    if chunk is None:
        chunk = max(1, IOU_BLOCK_BYTES // (A.voxels * np.dtype(dtype).itemsize))
    chunk = max(1, int(chunk))
    inter = np.empty((len(A), len(B)), np.float64)
    same = B is A
    b_blocks = [B.block(0, len(B), dtype)] if (len(B) <= chunk and not same) else None
    for i in range(0, len(A), chunk):
        xa = A.block(i, i + chunk, dtype)
        for jb, j in enumerate(range(i if same else 0, len(B), chunk)):
            if same and j == i:
                xb = xa
            elif b_blocks is not None:
                xb = b_blocks[jb]
            else:
                xb = B.block(j, j + chunk, dtype)
            block = product(xa, xb)
            inter[i:i + len(xa), j:j + len(xb)] = block
            if same and j != i:
                inter[j:j + len(xb), i:i + len(xa)] = block.T
    union = A.volumes[:, None].astype(np.float64) + B.volumes[None, :] - inter
    iou = np.divide(inter, union, out=np.ones_like(inter), where=union > 0)
    return 1.0 - iou


# ------------------------------------------------------------------ surface points


def surface_points(grid, n: int = DEFAULT_POINTS, seed=0) -> np.ndarray:
    """``n`` points sampled uniformly (by area) on the surface of one 0/1 grid ``(D, D, D)``.

    The surface is skimage's marching cubes (Lewiner) of the grid padded by one empty voxel,
    at level 0.5.  Triangles are drawn with probability proportional to their area and a point
    uniformly inside each (``np.random.default_rng(seed)``: the points are a function of the
    grid, ``n`` and ``seed``, so the same shape always gets the same points).  The points are
    then centred on the centre of the surface's bounding box and scaled so that the surface
    vertex farthest from it lies on the unit sphere (all points are inside it; the per-shape
    unit-sphere normalisation of PointFlow).  So translated or scaled copies of a shape give
    (nearly) the same points.  Returns float64 ``(n, 3)`` in the grid's axis order; an empty
    grid gives ``n`` rows of NaN.
    """
    from tf3dgan.data.datasets import binarize
    grid = binarize(grid)
    if grid.ndim == 4 and grid.shape[-1] == 1:
        grid = grid[..., 0]
    if grid.ndim != 3:
        raise ValueError(f"expected one grid (D, D, D), got shape {grid.shape}")
    if not grid.any():
        return np.full((n, 3), np.nan)
    from skimage.measure import marching_cubes
    verts, faces, _, _ = marching_cubes(np.pad(grid, 1).astype(np.float32), level=0.5)
    verts = verts.astype(np.float64)
    tri = verts[faces]                                              # (F, 3 corners, 3)
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    rng = np.random.default_rng(seed)
    cum = np.cumsum(area)
    pick = np.minimum(np.searchsorted(cum, rng.random(n) * cum[-1], side="right"), len(cum) - 1)
    u, v = rng.random((2, n))
    su = np.sqrt(u)                                                 # uniform in the triangle
    w0, w1, w2 = 1 - su, su * (1 - v), su * v
    t = tri[pick]
    points = w0[:, None] * t[:, 0] + w1[:, None] * t[:, 1] + w2[:, None] * t[:, 2]
    centre = (verts.min(axis=0) + verts.max(axis=0)) / 2
    radius = np.sqrt(((verts - centre) ** 2).sum(axis=1).max())
    return (points - centre) / radius


def surface_point_sets(shapes, n: int = DEFAULT_POINTS, seed=0) -> np.ndarray:
    """:func:`surface_points` of every grid of a shape set → float64 ``(N, n, 3)`` (NaN rows for empty grids)."""
    bits = as_bits(shapes)
    out = np.empty((len(bits), n, 3))
    for i in range(len(bits)):
        out[i] = surface_points(bits.grids(i)[0], n, seed)
    return out


# ------------------------------------------------------------------ Chamfer distance


def _clouds(points) -> list[np.ndarray | None]:
    """Point clouds as float64 ``(n_i, 3)`` arrays; None for an empty shape (no or NaN points)."""
    out = []
    for p in points:
        p = np.asarray(p, np.float64)
        if p.ndim != 2 or p.shape[1] != 3:
            raise ValueError(f"a point cloud must be (n, 3), got shape {p.shape}")
        if len(p) == 0 or np.isnan(p).all():
            out.append(None)
        elif not np.isfinite(p).all():
            raise ValueError("a point cloud holds NaN or infinite coordinates (only an empty shape may be all NaN)")
        else:
            out.append(p)
    return out


def _augmented(p: np.ndarray, left: bool) -> np.ndarray:
    """float32 rows whose products give squared distances: [-2p, |p|², 1] · [q, 1, |q|²] = |p − q|²."""
    p32 = p.astype(np.float32)
    sq = (p32 * p32).sum(axis=1, keepdims=True)
    one = np.ones_like(sq)
    return np.hstack([-2 * p32, sq, one]) if left else np.hstack([p32, one, sq])


GEMM_BLOCK_ENTRIES = 1 << 17      # float32 entries of one distance block (512 KiB: stays in the L2 cache)


def _single_thread_blas():
    """BLAS limited to one thread: its threads only slow these small products down (by 100× on a
    busy machine); parallelism comes from ``workers`` instead."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:          # a dependency of scikit-learn; without it, BLAS keeps its threads
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def default_workers() -> int:
    """The CPU cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def chamfer_distances(points_a, points_b=None, *, workers: int | None = None, method: str = "gemm") -> np.ndarray:
    """Chamfer distance between every cloud of ``points_a`` and every cloud of ``points_b``.

    CD(a, b) = mean over a of the squared distance to the nearest point of b + mean over b of
    the squared distance to the nearest point of a (the form of Achlioptas et al. 2018 and
    PointFlow).  ``points_*``: ``(N, n, 3)`` arrays or sequences of ``(n_i, 3)`` clouds
    (:func:`surface_point_sets`); ``points_b=None``: ``points_a`` with itself (symmetric, only
    the upper triangle is computed, the diagonal is 0).  A cloud that is empty or all NaN is an
    empty shape: CD to a non-empty shape +inf, to another empty shape 0.  Returns float64 ``(N, M)``.

    ``method``: ``"gemm"`` (default) — exhaustive nearest neighbours from squared distances
    ``|p|² + |q|² − 2 p·q`` computed as float32 matrix products in cache-sized blocks, both
    directions from each block (absolute error about 1e-7 on the unit-sphere scale of
    :func:`surface_points`, so CD of a shape with itself is about 1e-7, not exactly 0);
    ``"kdtree"`` — exact float64 nearest neighbours by ``scipy.spatial.cKDTree`` (one tree per
    cloud).  Measured on 2 CPU cores at 2,048 points per cloud (CPU time per pair, one thread):
    "gemm" 1.9 ms, "kdtree" 4.9 ms, one unblocked 2048 × 2048 float32 distance matrix per pair 27 ms.
    ``workers``: threads over the rows (NumPy and cKDTree release the GIL; default: every core
    this process may use, see :func:`default_workers`).
    """
    if method not in ("gemm", "kdtree"):
        raise ValueError(f"method must be 'gemm' or 'kdtree', got {method!r}")
    workers = default_workers() if workers is None else int(workers)
    A = _clouds(points_a)
    same = points_b is None
    B = A if same else _clouds(points_b)
    out = np.zeros((len(A), len(B)))
    if method == "kdtree":
        from scipy.spatial import cKDTree
        trees_a = [None if p is None else cKDTree(p) for p in A]
        trees_b = trees_a if same else [None if p is None else cKDTree(p) for p in B]

        def directed(i, j):
            ab, _ = trees_b[j].query(A[i])
            ba, _ = trees_a[i].query(B[j])
            return float(np.mean(ab * ab) + np.mean(ba * ba))
    else:
        left = [None if p is None else _augmented(p, True) for p in A]
        right_b = [None if p is None else np.ascontiguousarray(_augmented(p, False).T) for p in B]

        def directed(i, j):
            a, bt = left[i], right_b[j]
            rows = max(16, GEMM_BLOCK_ENTRIES // bt.shape[1])
            to_b = np.empty(len(a), np.float32)
            to_a = np.full(bt.shape[1], np.inf, np.float32)
            for r in range(0, len(a), rows):
                d = a[r:r + rows] @ bt
                d.min(axis=1, out=to_b[r:r + rows])
                np.minimum(to_a, d.min(axis=0), out=to_a)
            return float(np.maximum(to_b, 0).mean(dtype=np.float64) + np.maximum(to_a, 0).mean(dtype=np.float64))

    def row(i):
        for j in range(i + 1 if same else 0, len(B)):
            if A[i] is None or B[j] is None:
                d = 0.0 if A[i] is None and B[j] is None else np.inf
            else:
                d = directed(i, j)
            out[i, j] = d
            if same:
                out[j, i] = d

    with _single_thread_blas() if method == "gemm" else contextlib.nullcontext():
        if workers > 1 and len(A) > 1:
            with ThreadPoolExecutor(workers) as pool:     # rows write disjoint cells
                list(pool.map(row, range(len(A))))
        else:
            for i in range(len(A)):
                row(i)
    return out
