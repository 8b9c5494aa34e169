"""How close generated shapes are to a reference set (and how varied they are).

Closeness alone is easy to fake: one centred blob or the thresholded data mean reaches a
high nearest-neighbour IoU.  So the scores here pair it with diversity — *coverage*, the
share of reference shapes that are the nearest neighbour of at least one sample (a single
repeated shape covers one), and the spread of sample volumes.
"""
from __future__ import annotations

import numpy as np


def binarize(grids: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """``(N, D, H, W[, 1])`` grids → ``(N, D·H·W)`` bool occupancy."""
    grids = np.asarray(grids)
    return (grids.reshape(len(grids), -1) > threshold)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU between every row of ``a`` ``(N, V)`` and every row of ``b`` ``(M, V)`` (bool) → ``(N, M)``."""
    a32, b32 = a.astype(np.float32), b.astype(np.float32)
    inter = a32 @ b32.T
    union = a32.sum(1)[:, None] + b32.sum(1)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def sample_quality(samples: np.ndarray, reference: np.ndarray, threshold: float = 0.5) -> dict:
    """Scores of generated ``samples`` against ``reference`` grids (both ``(N, D, H, W)``).

    ``nearest_iou``: mean over samples of the IoU with the closest reference shape;
    ``matching_iou``: mean over *reference* shapes of the IoU with the closest sample (the
    IoU form of the "minimum matching distance" of Achlioptas et al. 2018: a generator
    must produce something close to every reference shape to score high, so one shape
    repeated — however good — scores low);
    ``close_share``: share of samples whose nearest IoU exceeds 0.5;
    ``coverage``: share of reference shapes that are some sample's nearest neighbour;
    ``distinct``: number of different nearest neighbours; ``volume_cv``: coefficient of
    variation of the sample volumes (0 for identical shapes); ``empty_share``: share of
    samples with no occupied voxel.
    """
    s, r = binarize(samples, threshold), binarize(reference, 0.5)
    iou = iou_matrix(s, r)
    nearest = iou.max(axis=1)
    owners = np.unique(iou.argmax(axis=1))
    volumes = s.sum(axis=1).astype(np.float64)
    return {
        "nearest_iou": float(nearest.mean()),
        "matching_iou": float(iou.max(axis=0).mean()),
        "close_share": float((nearest > 0.5).mean()),
        "coverage": float(len(owners) / len(r)),
        "distinct": int(len(owners)),
        "volume_cv": float(volumes.std() / volumes.mean()) if volumes.mean() > 0 else 0.0,
        "empty_share": float((volumes == 0).mean()),
    }
