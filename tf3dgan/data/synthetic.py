"""Built-in procedural voxel datasets (no download): boxes, chairs, tables, furniture.

Each shape is a union of solid axis-aligned boxes ("parts"). The code draws every
sample's part coordinates at once with a seeded numpy generator, then paints them in
chunks of samples, so 10,000 grids at 16^3 take a fraction of a second.

Axes follow ModelNet ``.raw`` data: axis 0 = x, axis 1 = z (up), axis 2 = y. Furniture
stands on the floor (axis-1 index 0). It is roughly centred in x and y, with a random
shift of up to a quarter of the free space.
"""
from __future__ import annotations

import numpy as np

SHAPE_KINDS = ("boxes", "chairs", "tables", "furniture")
MIN_RES = 8
_CHUNK_VOXELS = 1 << 22  # samples painted per chunk ~ 4M voxels, keeps temporaries small


def make_shapes(kind: str, n: int, res: int, seed: int) -> np.ndarray:
    """Return ``n`` random shapes of kind ``kind`` as a uint8 ``(n, res, res, res)`` array of 0/1.

    Kinds:

    * ``boxes``: one solid axis-aligned box per grid, random size (every side at
      least ``res/4``) and position.
    * ``chairs``: seat slab, back slab (on the low-y side), 4 legs; random proportions.
      Legs are at least 1 voxel thick and stay separate at any ``res >= 16``.
    * ``tables``: top slab and 4 (possibly inset) legs.
    * ``furniture``: each grid is a chair or a table with probability 1/2.

    The result is deterministic given ``(kind, n, res, seed)``.
    """
    if kind not in _GENERATORS:
        raise ValueError(f"unknown synthetic shape kind {kind!r}; choose one of {', '.join(SHAPE_KINDS)}")
    if int(n) != n or n < 0:
        raise ValueError(f"number of shapes must be a non-negative integer, got {n!r}")
    if int(res) != res or res < MIN_RES:
        raise ValueError(f"resolution must be an integer >= {MIN_RES}, got {res!r}")
    rng = np.random.default_rng(seed)
    lo, hi = _GENERATORS[kind](rng, int(n), int(res))
    return _paint(lo, hi, int(res))


# ------------------------------------------------------------------ painting


def _paint(lo: np.ndarray, hi: np.ndarray, res: int) -> np.ndarray:
    """Rasterise boxes ``[lo, hi)`` of shape ``(n, parts, 3)`` into ``(n, res, res, res)`` 0/1."""
    n = lo.shape[0]
    out = np.zeros((n, res, res, res), dtype=bool)
    axis = np.arange(res)
    step = max(1, _CHUNK_VOXELS // res**3)
    for start in range(0, n, step):
        block = out[start:start + step]
        for part in range(lo.shape[1]):
            inside = [(axis >= lo[start:start + step, part, a, None]) & (axis < hi[start:start + step, part, a, None])
                      for a in range(3)]
            block |= inside[0][:, :, None, None] & inside[1][:, None, :, None] & inside[2][:, None, None, :]
    return out.view(np.uint8)


def _boxes(lo_x, hi_x, lo_z, hi_z, lo_y, hi_y) -> tuple[np.ndarray, np.ndarray]:
    """Stack per-sample coordinates (each ``(n,)``) into ``lo, hi`` of shape ``(n, 1, 3)``."""
    lo = np.stack([lo_x, lo_z, lo_y], axis=-1)[:, None, :]
    hi = np.stack([hi_x, hi_z, hi_y], axis=-1)[:, None, :]
    return lo, hi


def _join(*parts: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate several ``(lo, hi)`` part lists along the part axis."""
    return (np.concatenate([p[0] for p in parts], axis=1).astype(np.int64),
            np.concatenate([p[1] for p in parts], axis=1).astype(np.int64))


# ------------------------------------------------------------- random draws


def _size(rng, n: int, res: int, low: float, high: float, minimum: int = 1) -> np.ndarray:
    """Random integer lengths in ``[low*res, high*res]`` (rounded), at least ``minimum``."""
    return np.maximum(minimum, np.rint(rng.uniform(low, high, n) * res)).astype(np.int64)


def _offset(rng, size: np.ndarray, res: int) -> np.ndarray:
    """Start index centring ``size`` in ``res``, shifted by up to a quarter of the slack."""
    slack = res - size
    return np.clip(np.rint(slack / 2 + rng.uniform(-0.25, 0.25, size.shape) * slack), 0, slack).astype(np.int64)


def _legs(x0, width, y0, depth, thick, inset, bottom, top):
    """Four square legs of side ``thick`` at the corners of a footprint, ``inset`` inwards."""
    legs = []
    for x in (x0 + inset, x0 + width - inset - thick):
        for y in (y0 + inset, y0 + depth - inset - thick):
            legs.append(_boxes(x, x + thick, bottom, top, y, y + thick))
    return legs


def _leg_thickness(rng, n, res, width, depth):
    """Leg side: 6-14 % of ``res``, at least 1, and at most a third of the footprint so legs stay apart."""
    return np.clip(_size(rng, n, res, 0.06, 0.14), 1, np.maximum(1, (np.minimum(width, depth) - 1) // 3))


# --------------------------------------------------------------- generators


def _gen_boxes(rng, n: int, res: int):
    """One solid box per grid, every side in ``[ceil(res/4), res]``, anywhere in the grid."""
    min_side = -(-res // 4)
    size = rng.integers(min_side, res + 1, size=(n, 3))
    lo = rng.integers(0, res - size + 1)
    return (lo[:, None, :], (lo + size)[:, None, :])


def _gen_chairs(rng, n: int, res: int):
    """Seat, back and 4 legs; the back stands on the seat along the low-y edge."""
    width, depth = _size(rng, n, res, 0.45, 0.8), _size(rng, n, res, 0.45, 0.8)
    x0, y0 = _offset(rng, width, res), _offset(rng, depth, res)
    seat_top = _size(rng, n, res, 0.35, 0.55, minimum=2)
    seat_thick = np.minimum(_size(rng, n, res, 0.05, 0.1), seat_top - 1)
    height = _size(rng, n, res, 0.8, 1.0)
    back_thick = _size(rng, n, res, 0.06, 0.12)
    leg = _leg_thickness(rng, n, res, width, depth)
    seat_bottom = seat_top - seat_thick
    seat = _boxes(x0, x0 + width, seat_bottom, seat_top, y0, y0 + depth)
    back = _boxes(x0, x0 + width, seat_top, height, y0, y0 + back_thick)
    return _join(seat, back, *_legs(x0, width, y0, depth, leg, 0, np.zeros(n, np.int64), seat_bottom))


def _gen_tables(rng, n: int, res: int):
    """Top slab and 4 legs, the legs set in from the corners by up to 8 % of ``res``."""
    width, depth = _size(rng, n, res, 0.6, 0.95), _size(rng, n, res, 0.45, 0.9)
    x0, y0 = _offset(rng, width, res), _offset(rng, depth, res)
    height = _size(rng, n, res, 0.45, 0.8, minimum=2)
    top_thick = np.minimum(_size(rng, n, res, 0.05, 0.1), height - 1)
    leg = _leg_thickness(rng, n, res, width, depth)
    max_inset = np.maximum(0, (np.minimum(width, depth) - 3 * leg) // 2)
    inset = np.minimum(np.rint(rng.uniform(0, 0.08, n) * res).astype(np.int64), max_inset)
    top_bottom = height - top_thick
    top = _boxes(x0, x0 + width, top_bottom, height, y0, y0 + depth)
    return _join(top, *_legs(x0, width, y0, depth, leg, inset, np.zeros(n, np.int64), top_bottom))


def _gen_furniture(rng, n: int, res: int):
    """Chairs and tables, each grid picked with probability 1/2 (tables get one empty part)."""
    is_chair = rng.random(n) < 0.5
    chair_lo, chair_hi = _gen_chairs(rng, n, res)
    table_lo, table_hi = _gen_tables(rng, n, res)
    empty = np.zeros((n, 1, 3), np.int64)
    table_lo, table_hi = _join((table_lo, table_hi), (empty, empty))
    pick = is_chair[:, None, None]
    return np.where(pick, chair_lo, table_lo), np.where(pick, chair_hi, table_hi)


_GENERATORS = {"boxes": _gen_boxes, "chairs": _gen_chairs, "tables": _gen_tables, "furniture": _gen_furniture}
