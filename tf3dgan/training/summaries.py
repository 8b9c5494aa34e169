"""TensorBoard event files for a run's ``logs/`` folder, whatever the Keras backend.

Written with ``tf.summary`` whenever TensorFlow can be imported (it can under the JAX backend
too).  Where TensorFlow is not installed (a JAX-only GPU machine) the run goes on without
TensorBoard logs and says so once; every other output of the run folder is unaffected.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np


class SummaryWriter:
    """Scalars, images and point clouds for TensorBoard under ``logdir``."""

    def __init__(self, logdir: str | os.PathLike):
        self.logdir = Path(logdir)
        try:
            import tensorflow as tf
        except ImportError:
            self._tf = None
            print(f"note: TensorFlow is not installed, so no TensorBoard logs are written to {self.logdir} "
                  "(the run folder's other outputs are)", flush=True)
            return
        self._tf = tf
        self._writer = tf.summary.create_file_writer(str(self.logdir))

    @property
    def enabled(self) -> bool:
        return self._tf is not None

    def scalars(self, step: int, values: dict) -> None:
        """Write ``{tag: value}`` at ``step``."""
        if self._tf is None:
            return
        with self._writer.as_default():
            for tag, value in values.items():
                self._tf.summary.scalar(tag, float(value), step=int(step))

    def scalar_series(self, first_step: int, series: dict) -> None:
        """Write ``{tag: values}`` with ``values[i]`` at step ``first_step + i``."""
        if self._tf is None:
            return
        with self._writer.as_default():
            for tag, values in series.items():
                for i, value in enumerate(np.asarray(values, dtype=np.float64)):
                    self._tf.summary.scalar(tag, value, step=int(first_step) + i)

    def image(self, tag: str, image: np.ndarray, step: int) -> None:
        """An RGB uint8 image ``(H, W, 3)``."""
        if self._tf is None:
            return
        with self._writer.as_default():
            self._tf.summary.image(tag, np.asarray(image)[None], step=int(step))

    def points(self, tag: str, vertices: np.ndarray, colors: np.ndarray, step: int) -> None:
        """A coloured point cloud for TensorBoard's mesh plugin (``(K, 3)`` float, ``(K, 3)`` uint8)."""
        if self._tf is None or not len(vertices):
            return
        from tensorboard.plugins.mesh import summary_v2 as mesh_summary

        with self._writer.as_default():
            mesh_summary.mesh(tag, vertices=np.asarray(vertices, np.float32)[None],
                              colors=np.asarray(colors, np.uint8)[None], step=int(step))

    def flush(self) -> None:
        if self._tf is not None:
            self._writer.flush()
