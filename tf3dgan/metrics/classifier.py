"""A small VoxNet-like 3D CNN that classifies 32³ voxel shapes into the ten ModelNet10 classes.

Its penultimate layer is the feature space of the shape-quality metrics (FID and KID, see
:mod:`tf3dgan.metrics.features`): the generated shapes' features are compared with real ones'.

The network follows VoxNet (Maturana & Scherer, IROS 2015): a 5³ convolution of stride 2, a
3³ convolution, max-pooling, a dense layer and the class scores, with dropout.  This one adds
batch normalisation and a third convolution (see :data:`ARCHITECTURE`).  It is built from
``keras.layers`` only, so it runs on the TensorFlow and JAX backends alike.

The trained weights ship with the package (``weights/voxnet32_m10.npz``, beside them the JSON of
how they were trained: command, data, epochs, test accuracy).  :func:`load_classifier` reads
them once per process, without any download.  The weights file stores the architecture, the
class names and a version string (:attr:`VoxelClassifier.version`, e.g. ``voxnet32-m10-v1``):
quote it with any FID/KID, since features of other weights are not comparable.

Inputs: grids ``(N, D, D, D)`` (or one ``(D, D, D)``, or with a channel axis of 1 first or
last), voxel order as stored in the data (binvox ``[x][z][y]``, up = array axis 1).  Bool and
integer voxels are occupied when nonzero, float voxels when above ``threshold`` (0.5).  The
classifier sees 32³; 64³ and 128³ grids are OR-pooled to 32³ first (a cell is set when any of
its voxels is), exactly as its training data were pooled from the 64³ ModelNet10 grids; any
other side is refused with a :class:`~tf3dgan.errors.DataError`.
"""
from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from tf3dgan.errors import DataError, Tf3dganError

CLASSES = ("bathtub", "bed", "chair", "desk", "dresser", "monitor", "night_stand", "sofa", "table", "toilet")
RESOLUTION = 32
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
WEIGHTS_NAME = "voxnet32_m10.npz"
PROVENANCE_NAME = "voxnet32_m10.json"
WEIGHTS_FILE = WEIGHTS_DIR / WEIGHTS_NAME
PROVENANCE_FILE = WEIGHTS_DIR / PROVENANCE_NAME
FORMAT = "tf3dgan-voxel-classifier-1"   # layout of the weights file (see save_weights)

#: The network, layer by layer: each convolution is (filters, kernel, stride, max-pool after it),
#: all 'same'-padded and followed by batch normalisation (when ``batchnorm``) and LeakyReLU(0.1).
ARCHITECTURE: dict[str, Any] = {
    "convs": [[32, 5, 2, False], [32, 3, 1, True], [64, 3, 1, True]],
    "batchnorm": True,
    "conv_dropout": 0.3,
    "dense": 128,
    "dense_dropout": 0.4,
    "leaky_slope": 0.1,
}
FEATURES_LAYER = "features"     # the penultimate layer: Dense(128) + ReLU
LOGITS_LAYER = "logits"
DEFAULT_BATCH = 64


def build_model(architecture: dict | None = None, num_classes: int = len(CLASSES), resolution: int = RESOLUTION):
    """The Keras model (untrained): ``(N, R, R, R, 1)`` float occupancy in, ``num_classes`` logits out."""
    import keras
    from keras import layers

    arch = dict(ARCHITECTURE if architecture is None else architecture)
    x = inputs = keras.Input((resolution, resolution, resolution, 1), name="voxels")
    for i, (filters, kernel, stride, pool) in enumerate(arch["convs"]):
        x = layers.Conv3D(int(filters), int(kernel), strides=int(stride), padding="same",
                          use_bias=not arch["batchnorm"], name=f"conv{i + 1}")(x)
        if arch["batchnorm"]:
            x = layers.BatchNormalization(name=f"bn{i + 1}")(x)
        x = layers.LeakyReLU(arch["leaky_slope"], name=f"lrelu{i + 1}")(x)
        if pool:
            x = layers.MaxPooling3D(2, name=f"pool{i + 1}")(x)
    if arch["conv_dropout"]:
        x = layers.Dropout(arch["conv_dropout"], name="conv_dropout")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(int(arch["dense"]), activation="relu", name=FEATURES_LAYER)(x)
    if arch["dense_dropout"]:
        x = layers.Dropout(arch["dense_dropout"], name="dense_dropout")(x)
    outputs = layers.Dense(num_classes, name=LOGITS_LAYER)(x)
    return keras.Model(inputs, outputs, name="voxnet32")


# ------------------------------------------------------------------ inputs


def prepare_grids(grids, threshold: float = 0.5, resolution: int = RESOLUTION) -> np.ndarray:
    """``grids`` as float32 ``(N, R, R, R, 1)`` of 0/1 for the network (see the module docstring)."""
    from tf3dgan.data import datasets as data

    array = np.asarray(grids)
    if array.dtype.kind not in "biuf":
        raise DataError(f"classifier input: voxel values must be bool, integer or float, got dtype {array.dtype}")
    if array.ndim == 3:
        array = array[None]
    elif array.ndim == 5 and array.shape[-1] == 1:
        array = array[..., 0]
    elif array.ndim == 5 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 4 or not array.shape[1] == array.shape[2] == array.shape[3]:
        raise DataError(f"classifier input: grids must be (N, D, D, D) cubes (or one (D, D, D), or with a "
                        f"channel axis of 1), got shape {np.shape(grids)}")
    side = array.shape[1]
    factor = side // resolution if side >= resolution and side % resolution == 0 else 0
    if factor < 1 or factor & (factor - 1):
        raise DataError(f"classifier input: grids are {side}³; the classifier takes {resolution}³ grids "
                        f"(or {resolution}·2^k, e.g. {2 * resolution}³, which it OR-pools to {resolution}³)")
    if array.dtype.kind == "f":
        data.check_finite(array, "classifier input")
        occupied = (array > threshold).view(np.uint8)
    else:
        occupied = (array != 0).view(np.uint8)
    if factor > 1:
        occupied = data.unpack(data.pool(data.pack(occupied), side, factor), resolution)
    return occupied.astype(np.float32)[..., None]


# ------------------------------------------------------------------ the classifier


class VoxelClassifier:
    """A trained classifier: :meth:`features`, :meth:`logits`, :meth:`predict`, :attr:`classes`, :attr:`version`."""

    def __init__(self, model, meta: dict, path: Path | None = None):
        import keras

        self.model = model
        self.meta = dict(meta)
        self.classes: tuple[str, ...] = tuple(meta["classes"])
        self.version: str = str(meta["version"])
        self.resolution: int = int(meta.get("resolution", RESOLUTION))
        self.path = path
        self._features_model = keras.Model(model.inputs, model.get_layer(FEATURES_LAYER).output)
        kernel, bias = model.get_layer(LOGITS_LAYER).get_weights()
        self._kernel, self._bias = np.asarray(kernel, np.float32), np.asarray(bias, np.float32)

    @property
    def feature_dim(self) -> int:
        """F, the length of one feature vector."""
        return int(self._kernel.shape[0])

    def __repr__(self) -> str:
        return f"VoxelClassifier({self.version!r}, {len(self.classes)} classes, {self.feature_dim} features)"

    def features(self, grids, batch_size: int = DEFAULT_BATCH, threshold: float = 0.5) -> np.ndarray:
        """The penultimate layer's activations, float32 ``(N, F)``, ``batch_size`` grids at a time."""
        array = grids if isinstance(grids, np.ndarray) else np.asarray(grids)
        if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
            raise Tf3dganError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
        if array.ndim == 3:
            array = array[None]
        out = np.empty((len(array), self.feature_dim), np.float32)
        for start in range(0, len(array), int(batch_size)):
            x = prepare_grids(array[start:start + int(batch_size)], threshold, self.resolution)
            out[start:start + len(x)] = np.asarray(self._features_model.predict_on_batch(x), np.float32)
        if len(array) == 0:
            prepare_grids(array, threshold, self.resolution)     # still check the shape
        return out

    def logits_from_features(self, features) -> np.ndarray:
        """The class scores ``(N, classes)`` (before softmax) of :meth:`features` output."""
        return np.asarray(features, np.float32) @ self._kernel + self._bias

    def logits(self, grids, batch_size: int = DEFAULT_BATCH, threshold: float = 0.5) -> np.ndarray:
        """The class scores ``(N, classes)`` before softmax."""
        return self.logits_from_features(self.features(grids, batch_size, threshold))

    def predict(self, grids, batch_size: int = DEFAULT_BATCH, threshold: float = 0.5) -> np.ndarray:
        """The most likely class of each grid: int64 indices ``(N,)`` into :attr:`classes`."""
        return np.argmax(self.logits(grids, batch_size, threshold), axis=1).astype(np.int64)

    def predict_names(self, grids, batch_size: int = DEFAULT_BATCH, threshold: float = 0.5) -> list[str]:
        """:meth:`predict` as class names."""
        return [self.classes[i] for i in self.predict(grids, batch_size, threshold)]


# ------------------------------------------------------------------ weights files


def save_weights(model, path: str | os.PathLike, meta: dict) -> Path:
    """Atomically write ``model``'s weights and ``meta`` (version, classes, architecture, resolution)
    as one ``.npz``: ``meta`` (JSON text), ``weight_names`` and ``w000``, ``w001``, ... in
    ``model.weights`` order (float32)."""
    from tf3dgan.atomic import atomic_path

    for key in ("version", "classes", "architecture", "resolution"):
        if key not in meta:
            raise ValueError(f"meta lacks {key!r}")
    arrays = {f"w{i:03d}": np.asarray(w.numpy() if hasattr(w, "numpy") else w, np.float32)
              for i, w in enumerate(model.get_weights())}
    names = np.array([v.path for v in model.weights], dtype=str)
    text = json.dumps(dict(meta, format=FORMAT), sort_keys=True)
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, meta=np.array(text), weight_names=names, **arrays)
    return path


def read_weights(path: str | os.PathLike) -> tuple[dict, list[np.ndarray]]:
    """``(meta, weights)`` of a file written by :func:`save_weights`; a DataError names a bad file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such classifier weights file")
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            count = sum(1 for k in z.files if k.startswith("w") and k[1:].isdigit())
            weights = [z[f"w{i:03d}"] for i in range(count)]
    except (OSError, ValueError, KeyError, EOFError) as e:
        raise DataError(f"{path}: not a classifier weights file ({type(e).__name__}: {e})") from None
    if meta.get("format") != FORMAT:
        raise DataError(f"{path}: classifier weights of format {meta.get('format')!r}, expected {FORMAT!r}")
    return meta, weights


def load_classifier_file(path: str | os.PathLike) -> VoxelClassifier:
    """Build the network the file describes and load its weights (no cache; see :func:`load_classifier`)."""
    path = Path(path).resolve()
    meta, weights = read_weights(path)
    model = build_model(meta["architecture"], len(meta["classes"]), int(meta["resolution"]))
    expected = [tuple(w.shape) for w in model.weights]
    got = [tuple(w.shape) for w in weights]
    if expected != got:
        raise DataError(f"{path}: its {len(got)} weight arrays do not fit the architecture it names "
                        f"({len(expected)} expected)")
    model.set_weights(weights)
    return VoxelClassifier(model, meta, path)


@functools.lru_cache(maxsize=None)
def _cached(path: str) -> VoxelClassifier:
    return load_classifier_file(path)


def load_classifier(path: str | os.PathLike | None = None) -> VoxelClassifier:
    """The classifier of ``path`` (default: the weights shipped in the package), loaded once per
    process and shared afterwards (do not modify its model)."""
    target = WEIGHTS_FILE if path is None else Path(path)
    if path is None and not target.is_file():
        raise DataError(f"{target}: the shipped classifier weights are missing (reinstall tf3dgan, "
                        f"or train them with tools/train_classifier.py)")
    return _cached(str(Path(target).resolve()))


def provenance(path: str | os.PathLike | None = None) -> dict:
    """The provenance JSON beside a weights file (training command, data, epochs, accuracy); {} if none."""
    weights = WEIGHTS_FILE if path is None else Path(path)
    side = weights.with_name(weights.name[: -len(".npz")] + ".json") if weights.name.endswith(".npz") else None
    if side is None or not side.is_file():
        return {}
    return json.loads(side.read_text(encoding="utf-8"))
