"""Set-to-set scores of generated shapes against reference shapes, from distance matrices.

Each score is a pure function of distance matrices, so one implementation serves the IoU
distance and the Chamfer distance alike (:mod:`tf3dgan.metrics.distances`).  ``d_sr`` is
``(n_samples, n_reference)``, ``d_ss`` ``(n_samples, n_samples)``, ``d_rr``
``(n_reference, n_reference)``.  Distances may be +inf (Chamfer distance to an empty shape);
NaN is refused.

* :func:`mmd` — minimum matching distance (Achlioptas et al. 2018): the mean over reference
  shapes of the distance to the nearest sample.  Lower is better; it rewards matching every
  reference shape, but a set of blurry "average" shapes can still score well, so read it with
  COV and 1-NNA.
* :func:`coverage` — COV: the share of reference shapes that are the nearest reference of at
  least one sample.  Higher is better; a single shape repeated covers 1/|R|.
* :func:`nna` — 1-NNA (Lopez-Paz & Oquab 2017, as in PointFlow): the leave-one-out accuracy of
  the 1-nearest-neighbour classifier telling samples from references in S ∪ R.  0.5 is ideal
  (with |S| = |R|), 1.0 means the sets are separable (also: memorised copies of part of the
  reference push it *below* 0.5).
* :func:`jsd` — Jensen–Shannon divergence between the marginal occupancy distributions of the
  two sets (Achlioptas et al. 2018, on the voxel grid itself), in bits: 0 (same) to 1.

Ties.  Distances count as tied when exactly equal.  COV: a sample covers its nearest reference;
ties go to the lowest reference index (``np.argmin``, as PointFlow), except that a sample
equally far from every reference (more than one of them) covers none: nothing says which one it
resembles (an empty sample: IoU distance 1 or Chamfer +inf to all; for IoU also a sample sharing
no voxel with any reference).  1-NNA: a point whose nearest distance is shared by ``k_same``
points of its own set and ``k_other`` of the other counts as ``k_same / (k_same + k_other)``
correct — the expected accuracy of breaking ties at random (so identical sets score about 0.5,
and copies of one shape, all at distance 0 from each other, are classified correctly).
"""
from __future__ import annotations

import numpy as np


def _matrix(d, name: str) -> np.ndarray:
    d = np.asarray(d, np.float64)
    if d.ndim != 2:
        raise ValueError(f"{name} must be a matrix, got shape {d.shape}")
    if np.isnan(d).any():
        raise ValueError(f"{name} holds NaN distances (use +inf for 'no match')")
    return d


def mmd(d_sr) -> float:
    """Mean over reference shapes (columns) of the distance to the nearest sample (rows)."""
    d = _matrix(d_sr, "d_sr")
    if d.size == 0:
        raise ValueError("mmd needs at least one sample and one reference shape")
    return float(d.min(axis=0).mean())


def nearest_references(d_sr) -> np.ndarray:
    """Per sample, the index of its nearest reference (lowest index on ties), or -1 when it is
    equally far from every reference (and there is more than one)."""
    d = _matrix(d_sr, "d_sr")
    nearest = d.argmin(axis=1)
    if d.shape[1] > 1:
        flat = d.min(axis=1) == d.max(axis=1)
        nearest[flat] = -1
    return nearest


def coverage(d_sr) -> float:
    """Share of reference shapes that are the nearest reference of at least one sample (see the ties rule)."""
    d = _matrix(d_sr, "d_sr")
    if d.shape[1] == 0:
        raise ValueError("coverage needs at least one reference shape")
    nearest = nearest_references(d)
    return float(len(np.unique(nearest[nearest >= 0])) / d.shape[1])


def nna(d_ss, d_rr, d_sr, *, per_set: bool = False):
    """Leave-one-out 1-nearest-neighbour accuracy of telling samples from references.

    Every shape of S ∪ R is classified by the set of its nearest other shape (ties: see the
    module docstring).  Returns the accuracy over all ``n + m`` shapes; ``per_set=True``:
    ``(accuracy, accuracy on samples, accuracy on references)``.
    """
    d_ss, d_rr, d_sr = _matrix(d_ss, "d_ss"), _matrix(d_rr, "d_rr"), _matrix(d_sr, "d_sr")
    n, m = d_sr.shape
    if d_ss.shape != (n, n) or d_rr.shape != (m, m):
        raise ValueError(f"d_ss {d_ss.shape}, d_rr {d_rr.shape} and d_sr {d_sr.shape} do not fit together")
    if n + m < 2:
        raise ValueError("1-NNA needs at least two shapes")
    full = np.block([[d_ss, d_sr], [d_sr.T, d_rr]])
    others = ~np.eye(n + m, dtype=bool)
    nearest = np.where(others, full, np.inf).min(axis=1)
    tied = others & (full == nearest[:, None])
    label = np.arange(n + m) >= n
    same = (tied & (label[None, :] == label[:, None])).sum(axis=1)
    correct = same / tied.sum(axis=1)
    if per_set:
        return float(correct.mean()), float(correct[:n].mean()), float(correct[n:].mean())
    return float(correct.mean())


def occupancy(shapes) -> np.ndarray:
    """Per voxel, the number of shapes of the set occupying it → int64 ``(D³,)`` (shape sets as in
    :mod:`tf3dgan.metrics.distances`)."""
    from tf3dgan.metrics.distances import as_bits
    bits = as_bits(shapes)
    counts = np.zeros(bits.voxels, np.int64)
    step = max(1, (64 << 20) // bits.voxels)
    for i in range(0, len(bits), step):
        counts += bits.block(i, i + step, np.uint8).sum(axis=0, dtype=np.int64)
    return counts


def jsd_counts(p, q) -> float:
    """Jensen–Shannon divergence (base 2, in [0, 1]) between the distributions proportional to the
    non-negative counts ``p`` and ``q``.  Both all zero: 0; only one: 1."""
    p, q = np.asarray(p, np.float64), np.asarray(q, np.float64)
    sp, sq = p.sum(), q.sum()
    if sp == 0 or sq == 0:
        return 0.0 if sp == sq else 1.0
    p, q = p / sp, q / sq
    m = (p + q) / 2

    def kl(x):
        nz = x > 0
        return float(np.sum(x[nz] * np.log2(x[nz] / m[nz])))

    return float(min(1.0, max(0.0, 0.5 * kl(p) + 0.5 * kl(q))))


def jsd(samples, reference) -> float:
    """JSD (bits) between the marginal occupancy distributions of two shape sets of the same side:
    per voxel the number of shapes occupying it, normalised over the voxels (Achlioptas et al.
    2018 count point clouds per cell of a 28³ grid; here the cells are the voxels)."""
    p, q = occupancy(samples), occupancy(reference)
    if p.shape != q.shape:
        raise ValueError(f"grids of {p.size} and {q.size} voxels cannot be compared")
    return jsd_counts(p, q)
