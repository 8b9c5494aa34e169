"""Differentiable augmentation of voxel grids (``--augment``), in ``keras.ops`` for both backends.

DiffAugment (Zhao et al. 2020) for 3D: every grid D sees in training — real and generated, in D's phase and
in G's — is transformed by the same random operations, so D cannot overfit the 875 training chairs and G's
gradient flows through the transformation.  Each grid gets its own draw (the step's ``uniforms``, 8 numbers in
[0, 1) per grid, drawn before the D phase like every random number of the step):

``translation``
    a shift by an integer in [-R/8, R/8] along each axis, zeros shifted in (DiffAugment's 1/8 of the side).
``mirror``
    with probability ½, the mirror image across the grid's first axis about the grid's own centre of mass on
    that axis (rounded to a voxel), so a bilaterally symmetric shape maps to itself: ModelNet's aligned chairs
    are symmetric across that axis (a chair against its mirror image about its own centre: IoU 0.82 on the
    32³ training chairs; across the other two axes 0.14 and 0.26).  About the grid's centre instead, the
    image would also move the shape (the chairs are not centred on that axis), which D could not tell from
    a shifted chair.
``cutout``
    a cube of side R/2 centred at a random voxel set to zero (DiffAugment's ratio ½).

Shifts are products with one-hot matrices (``einsum``), so the result is exact and differentiable in the
grid's values, with no gather.
"""
from __future__ import annotations

from keras import ops

from tf3dgan.choices import AUGMENTS  # noqa: F401  (re-exported)

#: random numbers per grid: 3 shifts, the mirror coin, 3 cutout centre coordinates, one spare
DRAWS = 8
_EQUATIONS = {1: "bij,bjklc->biklc", 2: "bij,bkjlc->bkilc", 3: "bij,bkljc->bklic"}


def _shift(x, shift, axis: int):
    """``x`` (B, R, R, R, C) moved by ``shift[b]`` voxels (int, per grid) along ``axis`` (1..3), zeros shifted in."""
    r = x.shape[axis]
    i = ops.arange(r, dtype="int32")
    onehot = ops.equal(ops.expand_dims(i, 0)[:, :, None] - ops.reshape(shift, (-1, 1, 1)), i[None, None, :])
    return ops.einsum(_EQUATIONS[axis], ops.cast(onehot, x.dtype), x)


def augment(x, u, ops_: tuple[str, ...]):
    """``x`` (B, R, R, R, 1) grids transformed by ``ops_`` (a subset of ``AUGMENTS``, applied in that order)
    with the random numbers ``u`` (B, ``DRAWS``) in [0, 1)."""
    if not ops_:
        return x
    r = x.shape[1]
    u = ops.cast(u, "float32")
    if "translation" in ops_:
        k = max(1, r // 8)
        for axis in (1, 2, 3):
            shift = ops.cast(ops.floor(u[:, axis - 1] * (2 * k + 1)), "int32") - k
            x = _shift(x, shift, axis)
    if "mirror" in ops_:
        mass = ops.sum(ops.relu(ops.cast(x, "float32")), axis=(2, 3, 4))   # (B, R) along axis 1 (a linear G can go below 0)
        where = ops.arange(r, dtype="float32")
        centre = ops.sum(mass * where, axis=1) / ops.maximum(ops.sum(mass, axis=1), 1e-6)
        # flipping moves voxel i to R-1-i; shifting by round(2c - (R-1)) puts the centre c back in place
        back = ops.cast(ops.round(ops.stop_gradient(2.0 * centre - (r - 1))), "int32")
        mirrored = _shift(ops.flip(x, axis=1), back, 1)
        flip = ops.reshape(u[:, 3] < 0.5, (-1, 1, 1, 1, 1))
        x = ops.where(flip, mirrored, x)
    if "cutout" in ops_:
        half = r // 4   # side r/2
        where = ops.arange(r, dtype="int32")
        inside = None
        for axis in (1, 2, 3):
            centre = ops.cast(ops.floor(u[:, 3 + axis] * r), "int32")
            near = ops.abs(where[None, :] - centre[:, None]) < half                       # (B, R)
            shape = [-1, 1, 1, 1, 1]
            shape[axis] = r
            near = ops.reshape(near, shape)
            inside = near if inside is None else ops.logical_and(inside, near)
        x = x * ops.cast(ops.logical_not(inside), x.dtype)
    return x

