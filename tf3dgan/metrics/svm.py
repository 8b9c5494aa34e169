"""The 3D-GAN linear-SVM protocol: a GAN's discriminator as a feature extractor for ModelNet10.

Wu et al. 2016 ("Learning a Probabilistic Latent Space of Object Shapes via 3D
Generative-Adversarial Modeling", §4.2) judge what a discriminator has learnt by how well a
*linear* classifier separates object classes in its features: the outputs of its convolution
layers (after the activation), each max-pooled to a small grid and concatenated, feed a linear
SVM trained on the ModelNet training split and scored on the test split.  3D-GAN reaches
91.0 % on ModelNet10 this way (83.3 % on ModelNet40).

Here (:func:`svm_protocol`):

* **features** (:func:`d_features`): every convolution layer of D that is followed by an
  activation (the logit layer is not), taken after that activation (LeakyReLU), with BatchNorm
  in inference mode (its moving statistics); each ``S³ × C`` output is max-pooled to
  ``g³ × C`` with ``g = min(grid, S)`` (``grid`` = 2 by default) and flattened in the order
  (bin x, bin y, bin z, channel); the layers are concatenated from the input side.  Bins follow
  the adaptive rule of PyTorch's ``AdaptiveMaxPool3d`` (bin ``i`` of ``g`` covers
  ``floor(i·S/g) … ceil((i+1)·S/g) − 1``), which for ``S`` divisible by ``g`` is plain max-pooling
  with kernel and stride ``S/g``: Wu et al.'s 2nd–4th layers (16³, 8³, 4³) pooled with kernels
  {8, 4, 2} are ``layers=(2, 3, 4), grid=2`` of a 64³ ``rasgan64`` D;
* **inputs**: the ModelNet10 grids (``<data_dir>/modelnet10_<class>_64_win.npz``, keys ``train``
  and ``test``) OR-pooled to the run's model resolution (the run's ``pool_min`` if it used one),
  as 0/1 float32, exactly as D saw its real training data;
* **classifier** (:func:`fit_linear_svm`): ``StandardScaler`` + a linear SVM (scikit-learn's
  ``SVC`` on a linear kernel: libsvm, hinge loss, one-vs-one); ``C`` chosen from ``Cs`` by
  stratified ``folds``-fold cross-validation on the training split only (the scaler is fitted
  inside each fold), then refitted on the whole training split and scored once on the test
  split.  The kernel is passed precomputed (one float64 Gram matrix per fold for every ``C``):
  the same fit as ``SVC(kernel="linear")``, several times faster; ``LinearSVC`` (liblinear,
  one-vs-rest) took 20–50 s per fit on the 3928 × 1792 features of a 32³ D, against 0.1–0.4 s
  here once the Gram matrix (0.6 s) is made.

The baseline to read a number against is the same protocol on an *untrained* D of the same
architecture (``untrained=True``: the architecture's initialisation, every kernel drawn from
N(0, 0.02) by NumPy's generator seeded with ``seed``, biases 0, BatchNorm at its identity
start): random convolution features already separate ModelNet10 classes well, so only the
margin above that baseline is what training taught D.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from tf3dgan.errors import CheckpointError, DataError, Tf3dganError
from tf3dgan.training import checkpoint_keys

__all__ = ["CLASSES", "DEFAULT_CS", "DEFAULT_DATA_DIR", "PAPER_ACCURACY", "LinearSVM", "class_file", "d_features",
           "feature_layers", "fit_linear_svm", "load_discriminator", "load_modelnet10", "svm_protocol",
           "untrained_discriminator"]

CLASSES = ("bathtub", "bed", "chair", "desk", "dresser", "monitor", "night_stand", "sofa", "table", "toilet")
DEFAULT_DATA_DIR = "../shared/data/voxels"
DEFAULT_CS = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
DEFAULT_GRID = 2
DEFAULT_FOLDS = 5
DEFAULT_BATCH = 64
#: 3D-GAN's ModelNet10 accuracy with this protocol (Wu et al. 2016, Table 1).
PAPER_ACCURACY = 0.910
INIT_STD = 0.02   # the seeds' N(0, 0.02) kernel initialisation (tf3dgan.models.networks)


def class_file(data_dir: str | Path, name: str) -> Path:
    """``<data_dir>/modelnet10_<name>_64_win.npz``."""
    return Path(data_dir) / f"modelnet10_{name}_64_win.npz"


# ------------------------------------------------------------------ discriminators


def load_discriminator(run_dir: str | Path, epoch: int | None = None, dtype_policy: str | None = "float32"):
    """Rebuild a run's discriminator from a checkpoint; returns ``(D, spec, source)``.

    ``spec`` is the model description (``meta["model"]``, an ``ArchSpec`` dict) and ``source`` the
    checkpoint read: ``checkpoints/ckpt-<epoch>.npz`` or, for ``epoch=None``, ``checkpoints/latest.npz``.
    ``D.checkpoint_meta`` holds the checkpoint's metadata (``epoch``, ``step_in_epoch``, ...).
    A missing folder or checkpoint, or weights that do not fit, is a one-line Tf3dganError."""
    from tf3dgan.models.networks import build_from_config
    from tf3dgan.training import runs

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise Tf3dganError(f"{run_dir}: no such run folder")
    source = runs.checkpoint_path(run_dir, epoch)
    if not source.is_file():
        have = ", ".join(map(str, runs.saved_epochs(run_dir))) or "none"
        what = (f"no checkpoint of epoch {epoch}" if epoch is not None
                else "no checkpoint (the run has not saved one yet)")
        raise CheckpointError(f"{source}: {what}; saved epochs: {have}")
    arrays, meta = runs.load_checkpoint(source)
    if not isinstance(meta.get("model"), dict):
        raise CheckpointError(f"{source}: checkpoint metadata has no model description")
    try:
        _, discriminator = build_from_config(meta["model"], dtype_policy=dtype_policy)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{source}: cannot rebuild its model ({e})") from None
    checkpoint_keys.load_model_weights(discriminator, "d", arrays, str(source))
    discriminator.checkpoint_meta = dict(meta)
    return discriminator, discriminator.spec.to_dict(), source


def untrained_discriminator(model: dict, seed: int = 0, dtype_policy: str | None = "float32"):
    """A discriminator of architecture ``model`` (an ``ArchSpec`` dict) at its initialisation, reproducibly:
    every convolution/dense kernel drawn from N(0, 0.02) by ``np.random.default_rng(seed)`` (in
    ``D.weights`` order), biases 0, BatchNorm gamma 1, beta 0, moving mean 0, moving variance 1."""
    import keras

    from tf3dgan.models.networks import build_from_config

    try:
        _, discriminator = build_from_config(model, dtype_policy=dtype_policy)
    except (TypeError, ValueError, KeyError) as e:
        raise Tf3dganError(f"cannot build a discriminator from {model!r} ({e})") from None
    rng = np.random.default_rng(seed)
    for layer in discriminator.blocks:
        if isinstance(layer, (keras.layers.Conv3D, keras.layers.Dense)):
            layer.kernel.assign(rng.normal(0.0, INIT_STD, tuple(layer.kernel.shape)).astype(np.float32))
            if layer.bias is not None:
                layer.bias.assign(np.zeros(tuple(layer.bias.shape), np.float32))
        elif isinstance(layer, keras.layers.BatchNormalization):
            for var, value in ((layer.gamma, 1.0), (layer.beta, 0.0), (layer.moving_mean, 0.0),
                               (layer.moving_variance, 1.0)):
                if var is not None:
                    var.assign(np.full(tuple(var.shape), value, np.float32))
    discriminator.checkpoint_meta = {"untrained": True, "seed": int(seed)}
    return discriminator


# ------------------------------------------------------------------ features


def feature_layers(discriminator) -> list[dict]:
    """D's feature layers, from the input side: every Conv3D followed by an activation before the next
    convolution / Flatten / Dense (the logit convolution of ``3dgan32`` is not one).  Each is
    ``{"number": 1-based, "conv_block": index in D.blocks, "block": the activation's index, "size": S,
    "channels": C}``."""
    import keras

    r = int(discriminator.spec.resolution)
    shape = (None, r, r, r, 1)
    found, pending = [], None
    activations = (keras.layers.LeakyReLU, keras.layers.ReLU, keras.layers.Activation, keras.layers.ELU,
                   keras.layers.PReLU)
    for i, layer in enumerate(discriminator.blocks):
        shape = tuple(layer.compute_output_shape(shape))
        if isinstance(layer, keras.layers.Conv3D):
            pending = i
        elif isinstance(layer, activations) and pending is not None:
            found.append({"number": len(found) + 1, "conv_block": pending, "block": i, "size": int(shape[1]),
                          "channels": int(shape[-1])})
            pending = None
        elif isinstance(layer, (keras.layers.Flatten, keras.layers.Dense)):
            pending = None
    return found


def _choose_layers(discriminator, layers: Iterable[int] | None) -> list[dict]:
    available = feature_layers(discriminator)
    if not available:
        raise Tf3dganError("the discriminator has no convolution layer followed by an activation")
    if layers is None:
        return available
    if isinstance(layers, (int, np.integer)):
        layers = [layers]
    wanted = list(layers)
    numbers = [f["number"] for f in available]
    bad = [n for n in wanted if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n not in numbers]
    if bad or not wanted or len(set(wanted)) != len(wanted):
        raise Tf3dganError(f"layers must be distinct conv layer numbers out of {', '.join(map(str, numbers))} "
                           f"(1 = nearest the input), got {list(layers)!r}")
    return [available[n - 1] for n in sorted(wanted)]


def _bins(size: int, grid: int) -> list[tuple[int, int]]:
    """Adaptive max-pool bins (PyTorch's rule): bin i covers floor(i*S/g) .. ceil((i+1)*S/g) - 1."""
    return [((i * size) // grid, -((-(i + 1) * size) // grid)) for i in range(grid)]


def _adaptive_max_pool(x, size: int, grid: int):
    from keras import ops

    if size % grid == 0:
        k = size // grid
        return ops.max_pool(x, pool_size=k, strides=k, padding="valid")
    for axis in (1, 2, 3):
        parts = []
        for a, b in _bins(size, grid):
            index = [slice(None)] * 5
            index[axis] = slice(a, b)
            parts.append(ops.max(x[tuple(index)], axis=axis, keepdims=True))
        x = ops.concatenate(parts, axis=axis)
    return x


class _Extractor:
    """The feature model of one discriminator, layer choice and grid (a Keras functional model sharing D's
    layers, BatchNorm called with ``training=False``)."""

    def __init__(self, discriminator, layers=None, grid: int = DEFAULT_GRID):
        import keras
        from keras import ops

        if isinstance(grid, bool) or not isinstance(grid, (int, np.integer)) or grid < 1:
            raise Tf3dganError(f"grid must be a whole number >= 1 (pooled cells per side), got {grid!r}")
        self.layers = _choose_layers(discriminator, layers)
        self.resolution = r = int(discriminator.spec.resolution)
        grids = {f["block"]: min(int(grid), f["size"]) for f in self.layers}
        for f in self.layers:
            f["pooled"] = grids[f["block"]]
            f["features"] = f["pooled"] ** 3 * f["channels"]
        self.feature_dim = int(sum(f["features"] for f in self.layers))
        inputs = keras.Input((r, r, r, 1), dtype="float32")
        x, outputs = inputs, []
        last = self.layers[-1]["block"]
        for i, layer in enumerate(discriminator.blocks[:last + 1]):
            x = layer(x, training=False) if isinstance(layer, keras.layers.BatchNormalization) else layer(x)
            if i in grids:
                size = int(x.shape[1])
                pooled = _adaptive_max_pool(ops.cast(x, "float32"), size, grids[i])
                outputs.append(ops.reshape(pooled, (-1, grids[i] ** 3 * int(x.shape[-1]))))
        out = outputs[0] if len(outputs) == 1 else ops.concatenate(outputs, axis=-1)
        self.model = keras.Model(inputs, out, name="d_features")

    def __call__(self, data, batch: int = DEFAULT_BATCH) -> np.ndarray:
        """Features of ``data``: grids, a VoxelDataset, or a list of them (streamed as one, so that only the
        last batch is short; it is padded to ``batch`` grids, so the model sees one input shape)."""
        if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
            raise Tf3dganError(f"batch must be a whole number >= 1, got {batch!r}")
        batch = int(batch)
        sources = [self._source(d) for d in (data if isinstance(data, list) else [data])]
        total = sum(n for n, _ in sources)
        out = np.empty((total, self.feature_dim), np.float32)
        r, done, parts, have = self.resolution, 0, [], 0

        def flush():
            nonlocal done, parts, have
            x = np.concatenate(parts) if len(parts) > 1 else parts[0]
            if len(x) < batch:
                x = np.concatenate([x, np.zeros((batch - len(x), r, r, r), x.dtype)])
            out[done:done + have] = np.asarray(self.model.predict_on_batch(x[..., None]), np.float32)[:have]
            done, parts, have = done + have, [], 0

        for n, take in sources:
            start = 0
            while start < n:
                step = min(batch - have, n - start)
                parts.append(np.asarray(take(slice(start, start + step)), np.float32))
                have, start = have + step, start + step
                if have == batch:
                    flush()
        if have:
            flush()
        return out

    def _source(self, data):
        from tf3dgan.data.datasets import VoxelDataset

        r = self.resolution
        if isinstance(data, VoxelDataset):
            if data.dim != r:
                raise DataError(f"{data.source}: {data.dim}³ grids, the discriminator takes {r}³")
            return len(data), data.grids
        array = np.asarray(data)
        if array.ndim == 5 and array.shape[-1] == 1:
            array = array[..., 0]
        if array.ndim == 3:
            array = array[None]
        if array.ndim != 4 or array.shape[1:] != (r, r, r):
            raise DataError(f"grids must be (N, {r}, {r}, {r}) for this discriminator, got shape {array.shape}")
        return len(array), (lambda idx: array[idx])


def d_features(discriminator, grids, batch: int = DEFAULT_BATCH, layers: Iterable[int] | None = None,
               grid: int = DEFAULT_GRID) -> np.ndarray:
    """The SVM features of ``grids`` (``(N, R, R, R)`` or ``(N, R, R, R, 1)`` occupancies, a
    :class:`~tf3dgan.data.datasets.VoxelDataset` of ``R³`` grids, or a list of them, in order): float32 ``(N, F)``,
    computed ``batch`` grids at a time.

    ``layers``: 1-based numbers of :func:`feature_layers` (None = all); each output is max-pooled to
    ``min(grid, S)³`` cells per channel and flattened as (bin x, bin y, bin z, channel); the layers are
    concatenated in depth order.  BatchNorm runs in inference mode."""
    return _Extractor(discriminator, layers, grid)(grids, batch)


# ------------------------------------------------------------------ data


def load_modelnet10(data_dir: str | Path = DEFAULT_DATA_DIR, resolution: int = 32, limit: int | None = None,
                    pool_min: int = 1, classes: Iterable[str] = CLASSES) -> dict:
    """The ten classes' ``train`` and ``test`` splits pooled to ``resolution``: ``{"train": [(class, dataset),
    ...], "test": [...]}`` (``limit``: the first ``limit`` grids of each class and split)."""
    from tf3dgan.data.datasets import load_dataset

    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: no such data folder (it should hold modelnet10_<class>_64_win.npz "
                        "for the ten ModelNet10 classes)")
    classes = list(classes)
    missing = [class_file(data_dir, c).name for c in classes if not class_file(data_dir, c).is_file()]
    if missing:
        raise DataError(f"{data_dir}: missing {len(missing)} of the {len(classes)} ModelNet10 class files: "
                        f"{', '.join(missing)}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1):
        raise Tf3dganError(f"limit must be a whole number >= 1 (grids per class and split), got {limit!r}")
    return {split: [(c, load_dataset(f"{class_file(data_dir, c)}:{split}", resolution=resolution, limit=limit,
                                     pool_min=pool_min)) for c in classes]
            for split in ("train", "test")}


# ------------------------------------------------------------------ the SVM


class LinearSVM:
    """A fitted ``StandardScaler`` + linear-kernel ``SVC`` (see :func:`fit_linear_svm`)."""

    def __init__(self, scaler, svc, train: np.ndarray, C: float, cv_accuracy: dict, folds: int):
        self.scaler, self.svc, self._train = scaler, svc, train
        self.C, self.cv_accuracy, self.folds = C, cv_accuracy, folds

    def decision_function(self, features) -> np.ndarray:
        return self.svc.decision_function(self.scaler.transform(np.asarray(features, np.float64)) @ self._train.T)

    def predict(self, features) -> np.ndarray:
        return self.svc.predict(self.scaler.transform(np.asarray(features, np.float64)) @ self._train.T)


def _svc(C: float):
    from sklearn.svm import SVC

    return SVC(C=C, kernel="precomputed", cache_size=500)


def fit_linear_svm(features, labels, Cs: Iterable[float] = DEFAULT_CS, folds: int = DEFAULT_FOLDS,
                   seed: int = 0) -> LinearSVM:
    """Standardise, then a linear SVM (libsvm's ``SVC``, one-vs-one), ``C`` chosen from ``Cs`` by stratified
    ``folds``-fold cross-validation (shuffled with ``seed``; ``min(folds, smallest class)`` folds) on these
    training features alone, then refitted on all of them.

    The same as ``GridSearchCV(make_pipeline(StandardScaler(), SVC(kernel="linear")), {"svc__C": Cs},
    cv=StratifiedKFold(folds, shuffle=True, random_state=seed))`` (the scaler fitted inside each fold, ties
    to the first best C), computed with one Gram matrix per fold shared by every C (float64 products)."""
    from sklearn.model_selection import StratifiedKFold
    from sklearn.preprocessing import StandardScaler

    x, y = np.asarray(features, np.float64), np.asarray(labels)
    Cs = [float(c) for c in Cs]
    if not Cs or not all(np.isfinite(c) and c > 0 for c in Cs):
        raise Tf3dganError(f"Cs must be positive numbers, got {Cs!r}")
    if isinstance(folds, bool) or not isinstance(folds, (int, np.integer)) or folds < 2:
        raise Tf3dganError(f"folds must be a whole number >= 2, got {folds!r}")
    _, counts = np.unique(y, return_counts=True)
    if len(counts) < 2:
        raise Tf3dganError("the SVM needs training grids of at least 2 classes")
    k = int(min(folds, counts.min()))
    if k < 2:
        raise Tf3dganError(f"every class needs at least 2 training grids for cross-validation, got {counts.min()}")
    scores = np.zeros((k, len(Cs)))
    for f, (a, b) in enumerate(StratifiedKFold(k, shuffle=True, random_state=seed).split(x, y)):
        scaler = StandardScaler().fit(x[a])
        xa, xb = scaler.transform(x[a]), scaler.transform(x[b])
        gram, cross = xa @ xa.T, xb @ xa.T
        for j, C in enumerate(Cs):
            scores[f, j] = np.mean(_svc(C).fit(gram, y[a]).predict(cross) == y[b])
    mean = scores.mean(axis=0)
    best = Cs[int(np.argmax(mean))]
    scaler = StandardScaler().fit(x)
    xs = scaler.transform(x)
    svc = _svc(best).fit(xs @ xs.T, y)
    return LinearSVM(scaler, svc, xs, best, {C: float(m) for C, m in zip(Cs, mean)}, k)


# ------------------------------------------------------------------ the protocol


def _run_pool_min(run_dir: Path | None) -> int:
    if run_dir is None:
        return 1
    from tf3dgan.training import runs

    try:
        value = runs.read_config(run_dir).get("data", {}).get("pool_min", 1)
    except Tf3dganError:
        return 1
    return int(value) if isinstance(value, int) and value >= 1 else 1


def svm_protocol(run_dir: str | Path | None = None, epoch: int | None = None,
                 data_dir: str | Path = DEFAULT_DATA_DIR, seed: int = 0, limit: int | None = None,
                 report: Callable[[str], object] | None = print, *, untrained: bool = False,
                 model: dict | None = None, layers: Iterable[int] | None = None, grid: int = DEFAULT_GRID,
                 Cs: Iterable[float] = DEFAULT_CS, folds: int = DEFAULT_FOLDS, batch: int = DEFAULT_BATCH,
                 pool_min: int | None = None) -> dict:
    """Wu et al.'s linear-SVM protocol on a run's discriminator (see the module docstring); returns a dict:

    ``svm_accuracy`` (fraction of the test split classified right), ``per_class`` ({class: fraction of its
    test grids}), ``mean_class_accuracy``, ``confusion`` (rows: true class, columns: predicted, in
    ``classes`` order), ``C`` (chosen), ``cv_accuracy`` ({C: mean cross-validation accuracy}), ``n_train``,
    ``n_test``, ``feature_dim``, ``layers`` (the layers used: number, size, channels, pooled grid, features),
    ``grid``, ``resolution``, ``model``, ``epoch`` (None when untrained), ``step_in_epoch``, ``source`` (the
    checkpoint, or "untrained (seed N)"), ``untrained``, ``seed``, ``limit``, ``paper_accuracy`` (0.910),
    and seconds: ``load_seconds`` (D and data), ``feature_seconds``, ``svm_seconds`` (cross-validation, refit,
    test), ``seconds`` (all).

    ``untrained=True`` scores a freshly initialised D of the run's architecture (or of ``model``, an
    ``ArchSpec`` dict, when no run is given) seeded with ``seed``.  ``seed`` also shuffles the cross-validation folds.
    ``report`` gets progress lines (None: silent)."""
    say = report if report is not None else (lambda line: None)
    t0 = time.perf_counter()
    Cs = [float(c) for c in Cs]
    if not Cs or not all(np.isfinite(c) and c > 0 for c in Cs):
        raise Tf3dganError(f"Cs must be positive numbers, got {Cs!r}")
    if isinstance(folds, bool) or not isinstance(folds, (int, np.integer)) or folds < 2:
        raise Tf3dganError(f"folds must be a whole number >= 2, got {folds!r}")
    try:    # fail early, before the features, if scikit-learn is missing
        from sklearn.svm import SVC  # noqa: F401  (imported only to see that it imports)
    except ImportError:
        raise Tf3dganError("the SVM protocol needs scikit-learn (pip install scikit-learn)") from None

    run = None if run_dir is None else Path(run_dir)
    if run is None and not (untrained and model is not None):
        raise Tf3dganError("svm_protocol needs a run folder (or untrained=True with a model description)")
    step_in_epoch = None
    if untrained:
        if model is None:
            from tf3dgan.training import runs
            if not run.is_dir():
                raise Tf3dganError(f"{run}: no such run folder")
            model = runs.read_config(run).get("model")
            if not isinstance(model, dict):
                raise Tf3dganError(f"{run / runs.CONFIG_NAME}: has no model description")
        discriminator = untrained_discriminator(model, seed)
        spec, source, epoch = discriminator.spec.to_dict(), f"untrained (seed {seed})", None
    else:
        discriminator, spec, source_path = load_discriminator(run, epoch)
        meta = discriminator.checkpoint_meta
        epoch, step_in_epoch, source = meta.get("epoch"), meta.get("step_in_epoch"), str(source_path)
    resolution = int(spec["resolution"])
    pool_min = _run_pool_min(run) if pool_min is None else int(pool_min)
    extractor = _Extractor(discriminator, layers, grid)
    what = f"epoch {epoch}" if epoch is not None else source
    say(f"svm: {spec['arch']} {resolution}³ ×{spec['width']:g} D ({what}); features: conv layers "
        + ", ".join(f"{f['number']} ({f['size']}³×{f['channels']} → {f['pooled']}³)" for f in extractor.layers)
        + f" = {extractor.feature_dim} per grid")

    data = load_modelnet10(data_dir, resolution, limit, pool_min)
    t_load = time.perf_counter()
    n = {split: sum(len(d) for _, d in parts) for split, parts in data.items()}
    say(f"svm: ModelNet10 {n['train']} train / {n['test']} test grids at {resolution}³ "
        f"({t_load - t0:.1f} s to load)")
    feats, labels = {}, {}
    for split, parts in data.items():
        feats[split] = extractor([d for _, d in parts], batch)
        labels[split] = np.concatenate([np.full(len(d), k) for k, (_, d) in enumerate(parts)])
    t_feat = time.perf_counter()
    if not (np.isfinite(feats["train"]).all() and np.isfinite(feats["test"]).all()):
        raise Tf3dganError(f"{source}: the discriminator gives NaN or infinite features (diverged weights?)")
    say(f"svm: features in {t_feat - t_load:.1f} s")

    fit = fit_linear_svm(feats["train"], labels["train"], Cs, folds, seed)
    predicted = fit.predict(feats["test"])
    t_svm = time.perf_counter()

    confusion = np.zeros((len(CLASSES), len(CLASSES)), np.int64)
    np.add.at(confusion, (labels["test"], predicted), 1)
    per_class = {c: float(confusion[i, i] / confusion[i].sum()) for i, c in enumerate(CLASSES)}
    cv = fit.cv_accuracy
    result = {
        "svm_accuracy": float(np.mean(predicted == labels["test"])),
        "per_class": per_class,
        "mean_class_accuracy": float(np.mean(list(per_class.values()))),
        "confusion": confusion.tolist(),
        "classes": list(CLASSES),
        "C": fit.C,
        "cv_accuracy": cv,
        "folds": fit.folds,
        "n_train": int(n["train"]),
        "n_test": int(n["test"]),
        "feature_dim": int(extractor.feature_dim),
        "layers": [{key: f[key] for key in ("number", "size", "channels", "pooled", "features")}
                   for f in extractor.layers],
        "grid": int(grid),
        "resolution": resolution,
        "pool_min": pool_min,
        "model": spec,
        "epoch": epoch,
        "step_in_epoch": step_in_epoch,
        "source": source,
        "untrained": bool(untrained),
        "seed": int(seed),
        "limit": limit,
        "paper_accuracy": PAPER_ACCURACY,
        "load_seconds": round(t_load - t0, 3),
        "feature_seconds": round(t_feat - t_load, 3),
        "svm_seconds": round(t_svm - t_feat, 3),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    say(f"svm: C = {result['C']:g} (cv {cv[result['C']]:.3f}); test accuracy {result['svm_accuracy']:.4f} "
        f"({int(np.trace(confusion))}/{n['test']}; 3D-GAN: {PAPER_ACCURACY:.3f}); SVM {t_svm - t_feat:.1f} s")
    return result
