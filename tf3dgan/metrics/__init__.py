"""Shape-quality metrics: how close generated voxel shapes are to a reference set, and how varied.

* :mod:`.distances` — 1 − IoU of grids, surface points, Chamfer distance;
* :mod:`.sets` — MMD, COV, 1-NNA (from distance matrices) and the occupancy JSD;
* :mod:`.registry` — the named metrics and :func:`evaluate_sets`, the one call of the tools;
* :mod:`.matching` — the quick nearest-IoU scores of the learning test (:func:`sample_quality`).

FID/KID (:mod:`.features`, :mod:`.classifier`) are imported only when asked for.
"""
from tf3dgan.metrics.distances import VoxelBits, as_bits, chamfer_distances, iou_distances, surface_point_sets, surface_points
from tf3dgan.metrics.matching import binarize, iou_matrix, sample_quality
from tf3dgan.metrics.registry import (
                       ALL,
                       DEFAULT,
                       KEY_INFO,
                       describe,
                       evaluate_sets,
                       is_valid_metric,
                       list_metrics,
                       metric_keys,
                       register_metric,
)
from tf3dgan.metrics.sets import coverage, jsd, jsd_counts, mmd, nearest_references, nna, occupancy

__all__ = [
    "binarize", "iou_matrix", "sample_quality",
    "VoxelBits", "as_bits", "iou_distances", "surface_points", "surface_point_sets", "chamfer_distances",
    "mmd", "coverage", "nearest_references", "nna", "occupancy", "jsd", "jsd_counts",
    "ALL", "DEFAULT", "KEY_INFO", "evaluate_sets", "describe", "list_metrics", "is_valid_metric", "metric_keys",
    "register_metric",
]
