"""Prepare data: ModelNet download (:mod:`.modelnet`), mesh → voxels (:mod:`.voxelize`, checked against binvox by
:mod:`.voxel_check`), binvox I/O (:mod:`.binvox`), procedural shapes (:mod:`.synthetic`) and the in-memory datasets
the trainer and the tools read (:mod:`.datasets`, whose main names are re-exported here)."""
from tf3dgan.data.datasets import (
                                   SYNTHETIC_PREFIX,
                                   VoxelDataset,
                                   as_batch,
                                   binarize,
                                   check_finite,
                                   load_dataset,
                                   pack,
                                   pool,
                                   pool_factor,
                                   split_npz_key,
                                   unpack,
                                   voxel_files,
)

__all__ = ["SYNTHETIC_PREFIX", "VoxelDataset", "as_batch", "binarize", "check_finite", "load_dataset", "pack", "pool",
           "pool_factor", "split_npz_key", "unpack", "voxel_files"]
