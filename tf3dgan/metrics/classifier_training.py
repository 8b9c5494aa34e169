"""Training and scoring the ModelNet10 shape classifier whose features the FID/KID metrics use (what
``tools/train_classifier.py`` runs).

Trains on the ten ModelNet10 classes' train splits (the 64³ grids OR-pooled to 32³), holds out a fraction of
each class to pick the epoch, reports the test split's accuracy per class and overall, and writes
``<out>/voxnet32_m10.npz`` (weights, architecture, classes, version) and ``<out>/voxnet32_m10.json`` (how).

NumPy only at import: the options, data files and output folder are checked before Keras / TensorFlow load.
"""
from __future__ import annotations

import hashlib
import json
import math
import shlex
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import tf3dgan
from tf3dgan.errors import DataError, Tf3dganError
from tf3dgan.metrics.classifier import CLASSES, PROVENANCE_NAME, WEIGHTS_DIR, WEIGHTS_NAME

DATA_PATTERN = "modelnet10_{}_64_win.npz"
DEFAULT_DATA_DIR = "../shared/data/voxels"
DEFAULT_OUT = Path("savepoint") / "classifier"
PACKAGE_WEIGHTS = WEIGHTS_DIR          # what FID/KID load
AUGMENTATIONS = ("none", "flip", "flipshift")
DEFAULT_TAG = "voxnet32-m10-v1"        # the shipped weights' version


@dataclass
class ClassifierOptions:
    """The settings of one training (or, with ``evaluate``, one scoring) run: the flags of tools/train_classifier.py."""

    data_dir: str = DEFAULT_DATA_DIR
    out: str | None = None             # [default: DEFAULT_OUT]
    epochs: int = 40
    batch: int = 32
    lr: float = 1e-3
    seed: int = 0
    val_fraction: float = 0.1
    augment: str = "flipshift"
    class_weights: bool = True
    tag: str = DEFAULT_TAG
    limit: int | None = None
    evaluate: bool = False
    weights: str | None = None         # the classifier to evaluate [default: the shipped one]

    def check(self) -> None:
        """Refuse bad values and combinations (no Keras yet)."""
        for flag, value, low in (("--epochs", self.epochs, 1), ("--batch", self.batch, 1),
                                 ("--limit", self.limit, 1)):
            if value is not None and value < low:
                raise Tf3dganError(f"{flag} must be at least {low}, not {value}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise Tf3dganError(f"--lr must be a positive number, not {self.lr}")
        if not 0 < self.val_fraction < 1:
            raise Tf3dganError(f"--val-fraction must be between 0 and 1 (exclusive), not {self.val_fraction}")
        if not self.tag.strip() or any(c.isspace() for c in self.tag):
            raise Tf3dganError(f"--tag must be one word (e.g. {DEFAULT_TAG}), not {self.tag!r}")
        if self.augment not in AUGMENTATIONS:
            raise Tf3dganError(f"--augment must be one of {', '.join(AUGMENTATIONS)}, not {self.augment!r}")
        if self.evaluate and self.out is not None:
            raise Tf3dganError("--evaluate writes nothing: drop --out (or drop --evaluate to train)")
        if not self.evaluate and self.weights is not None:
            raise Tf3dganError("--weights names the classifier to --evaluate; training writes to --out")


# ------------------------------------------------------------------ checks (no Keras yet)


def data_files(data_dir: str) -> list[Path]:
    """The ten ``modelnet10_<class>_64_win.npz`` files of ``data_dir``, in :data:`CLASSES` order."""
    folder = Path(data_dir)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such data folder (--data-dir: the folder of {DATA_PATTERN.format('<class>')})")
    files = [folder / DATA_PATTERN.format(c) for c in CLASSES]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise DataError(f"{folder}: lacks {', '.join(missing)} (all ten ModelNet10 classes are needed)")
    return files


def check_out(folder: Path) -> None:
    from tf3dgan.atomic import check_output_folder
    from tf3dgan.data.datasets import read_only_folder
    from tf3dgan.errors import write_error

    check_output_folder(folder)
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if existing is not None and existing.is_dir() and read_only_folder(existing):
        raise write_error(folder / WEIGHTS_NAME, PermissionError(13, f"Permission denied ({existing} is read-only)"))


# ------------------------------------------------------------------ data


def load_split(files: list[Path], split: str, limit: int | None):
    """Packed 32³ grids (N, 4096) and labels (N,) of one split of the ten classes."""
    import numpy as np

    from tf3dgan.data.datasets import load_dataset

    packed, labels, names = [], [], []
    for label, path in enumerate(files):
        ds = load_dataset(f"{path}:{split}", resolution=32, limit=limit)
        packed.append(ds.packed)
        labels.append(np.full(len(ds), label, np.int64))
        names += ds.names
    return np.concatenate(packed), np.concatenate(labels), names


def split_validation(labels, fraction: float, seed: int):
    """A boolean mask of the validation grids: ``fraction`` of each class (at least one), drawn with ``seed``."""
    import numpy as np

    rng = np.random.default_rng(seed)
    val = np.zeros(len(labels), bool)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if len(idx) < 2:
            continue
        rng.shuffle(idx)
        val[idx[:max(1, round(fraction * len(idx)))]] = True
    return val


def augment(grids, rng, kind: str):
    """Random mirror images along axes 0 and 2 and shifts (±2 voxels on axes 0 and 2, ±1 on the up axis 1)."""
    import numpy as np

    if kind == "none":
        return grids
    grids = grids.copy()
    for axis in (1, 3):          # batch axis 0: grid axes 0 and 2 are array axes 1 and 3
        flip = rng.random(len(grids)) < 0.5
        grids[flip] = np.flip(grids[flip], axis=axis)
    if kind == "flipshift":
        n, d = len(grids), grids.shape[1]
        pad = np.pad(grids, ((0, 0), (2, 2), (1, 1), (2, 2)))
        offsets = np.stack([rng.integers(0, 5, n), rng.integers(0, 3, n), rng.integers(0, 5, n)], 1)
        for i, (a, b, c) in enumerate(offsets):
            grids[i] = pad[i, a:a + d, b:b + d, c:c + d]
    return grids


def accuracy_report(pred, labels) -> dict:
    import numpy as np

    per_class = {c: float(np.mean(pred[labels == i] == i)) for i, c in enumerate(CLASSES) if np.any(labels == i)}
    counts = {c: int(np.sum(labels == i)) for i, c in enumerate(CLASSES) if np.any(labels == i)}
    confusion = np.zeros((len(CLASSES), len(CLASSES)), int)
    np.add.at(confusion, (labels, pred), 1)
    return {"test_accuracy": float(np.mean(pred == labels)), "n_test": int(len(labels)),
            "per_class_accuracy": per_class, "per_class_n": counts, "confusion": confusion.tolist()}


def format_report(report: dict, title: str) -> str:
    """The accuracy lines: overall, then one per class."""
    lines = [f"{title}: test accuracy {report['test_accuracy']:.4f} on {report['n_test']} grids"]
    lines += [f"  {c:<12} {acc:.3f}  ({report['per_class_n'][c]} grids)"
              for c, acc in report["per_class_accuracy"].items()]
    return "\n".join(lines)


# ------------------------------------------------------------------ results


@dataclass
class Scores:
    """A classifier scored on the test split (:func:`evaluate_classifier`)."""

    report: dict

    def json(self) -> dict:
        return self.report

    def text(self) -> str:
        return format_report(self.report, self.report["version"])


@dataclass
class Trained:
    """A trained classifier (:func:`train_classifier`): its weights file and the provenance written beside it."""

    weights: Path
    provenance_file: Path
    provenance: dict = field(repr=False)

    def json(self) -> dict:
        p = self.provenance
        return ({k: p[k] for k in ("version", "test_accuracy", "per_class_accuracy", "n_test", "best_epoch",
                                   "val_accuracy", "weights_bytes")} | {"weights": str(self.weights)})

    def text(self) -> str:
        p = self.provenance
        title = f"{p['version']} (epoch {p['best_epoch']} of {p['epochs']}, validation accuracy {p['val_accuracy']:.4f})"
        return (format_report(p, title) + "\n"
                + f"wrote {self.weights} ({self.weights.stat().st_size / 1e6:.2f} MB) and {self.provenance_file}")


# ------------------------------------------------------------------ actions


def run_classifier(options: ClassifierOptions, *, argv: Sequence[str] | None = None,
                   say: Callable[[str], None] | None = None) -> Scores | Trained:
    """Train (or, with ``options.evaluate``, score) the classifier: every check first, then Keras and TensorFlow
    load. ``argv``: the command line recorded in the provenance (as ``python tools/train_classifier.py ARGV``);
    ``say`` hears one line per training epoch."""
    from tf3dgan.cli import import_tensorflow_quietly, keras_backend

    options.check()
    files = data_files(options.data_dir)
    if options.evaluate:
        if options.weights is not None and not Path(options.weights).is_file():
            raise DataError(f"{options.weights}: no such classifier weights file (--weights)")
        action = lambda: _evaluate(files, options.weights, options.limit)  # noqa: E731
    else:
        out = Path(options.out) if options.out is not None else DEFAULT_OUT
        if (out.resolve() == PACKAGE_WEIGHTS and (PACKAGE_WEIGHTS / WEIGHTS_NAME).is_file()
                and options.tag == DEFAULT_TAG):
            raise Tf3dganError(f"{out} holds the shipped classifier ({DEFAULT_TAG}), which every FID/KID result names: "
                               "new weights there need a new --tag (e.g. voxnet32-m10-v2); or write them elsewhere "
                               "with --out and score them with --evaluate --weights")
        check_out(out)
        command = (shlex.join(["python", "tools/train_classifier.py", *argv]) if argv is not None
                   else f"tf3dgan.metrics.classifier_training.train_classifier({_changed(options)})")
        action = lambda: _train(options, files, out, command, say)  # noqa: E731
    import_tensorflow_quietly(required=keras_backend() == "tensorflow")   # after the checks: a wrong value answers at once
    return action()


def evaluate_classifier(data_dir: str = DEFAULT_DATA_DIR, weights: str | None = None,
                        limit: int | None = None) -> Scores:
    """Score the classifier ``weights`` (default: the shipped one) on the ModelNet10 test split of ``data_dir``
    (the first ``limit`` grids of each class only, if given)."""
    return run_classifier(ClassifierOptions(data_dir=data_dir, weights=weights, limit=limit, evaluate=True))


def train_classifier(data_dir: str = DEFAULT_DATA_DIR, out: str | None = None, *, say=None, argv=None,
                     **settings) -> Trained:
    """Train a classifier on ``data_dir``'s ten classes into ``out`` (``settings``: the other fields of
    :class:`ClassifierOptions`)."""
    return run_classifier(ClassifierOptions(data_dir=data_dir, out=out, **settings), argv=argv, say=say)


def _changed(options: ClassifierOptions) -> str:
    default = asdict(ClassifierOptions())
    return ", ".join(f"{k}={v!r}" for k, v in asdict(options).items() if v != default[k])


def _evaluate(files: list[Path], weights: str | None, limit: int | None) -> Scores:
    from tf3dgan.data.datasets import unpack
    from tf3dgan.metrics.classifier import load_classifier

    packed, labels, _ = load_split(files, "test", limit)
    clf = load_classifier(weights)
    if tuple(clf.classes) != CLASSES:
        raise DataError(f"{clf.path}: classifier of classes {', '.join(clf.classes)}, not the ModelNet10 ten")
    start = time.perf_counter()
    pred = clf.predict(unpack(packed, 32))
    import keras

    return Scores({"version": clf.version, "weights": str(clf.path), "split": "test", "limit": limit,
                   "backend": keras.backend.backend(),
                   **accuracy_report(pred, labels), "seconds": round(time.perf_counter() - start, 2)})


def _train(o: ClassifierOptions, files: list[Path], out: Path, command: str, say) -> Trained:
    import keras
    import numpy as np

    from tf3dgan.atomic import write_text
    from tf3dgan.data.datasets import unpack
    from tf3dgan.metrics import classifier as C

    say = say or (lambda *a: None)
    packed, labels, names = load_split(files, "train", o.limit)
    test_packed, test_labels, _ = load_split(files, "test", o.limit)
    val = split_validation(labels, o.val_fraction, o.seed)
    if not val.any() or val.all():
        raise DataError(f"too few grids ({len(labels)}) to hold out a validation split; raise --limit")
    tr_x, tr_y, va_x, va_y = packed[~val], labels[~val], packed[val], labels[val]
    counts = np.bincount(tr_y, minlength=len(CLASSES)).astype(float)
    if o.class_weights:
        w = np.where(counts > 0, np.sqrt(counts.sum() / np.maximum(counts, 1)), 0.0)
        w /= (w[tr_y]).mean()
    else:
        w = np.ones(len(CLASSES))
    say(f"train {len(tr_y)} / validation {len(va_y)} / test {len(test_labels)} grids (32³, OR-pooled from 64³); "
        f"backend {keras.backend.backend()}")

    keras.utils.set_random_seed(o.seed)
    rng = np.random.default_rng(o.seed + 1)
    model = C.build_model()
    steps = math.ceil(len(tr_y) / o.batch)
    schedule = keras.optimizers.schedules.CosineDecay(o.lr, o.epochs * steps)
    model.compile(keras.optimizers.Adam(schedule),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])

    def predict(x_packed):
        logits = [np.asarray(model.predict_on_batch(unpack(x_packed[s:s + 128], 32)[..., None].astype(np.float32)))
                  for s in range(0, len(x_packed), 128)]
        return np.concatenate(logits)

    best = None
    history = []
    start = time.perf_counter()
    for epoch in range(1, o.epochs + 1):
        t0 = time.perf_counter()
        order = rng.permutation(len(tr_y))
        losses = []
        for s in range(0, len(order), o.batch):
            b = order[s:s + o.batch]
            x = augment(unpack(tr_x[b], 32), rng, o.augment)[..., None].astype(np.float32)
            loss = model.train_on_batch(x, tr_y[b], sample_weight=w[tr_y[b]].astype(np.float32))
            losses.append(float(loss[0] if isinstance(loss, (list, tuple)) else loss))
        logits = predict(va_x)
        val_acc = float(np.mean(np.argmax(logits, 1) == va_y))
        shifted = logits - logits.max(1, keepdims=True)
        val_loss = float(np.mean(np.log(np.exp(shifted).sum(1)) - shifted[np.arange(len(va_y)), va_y]))
        history.append({"epoch": epoch, "train_loss": round(float(np.mean(losses)), 5),
                        "val_accuracy": round(val_acc, 5), "val_loss": round(val_loss, 5)})
        if best is None or (val_acc, -val_loss) > (best[1], -best[2]):
            best = (epoch, val_acc, val_loss, [np.array(v) for v in model.get_weights()])
        say(f"epoch {epoch}/{o.epochs}: loss {np.mean(losses):.4f}, validation accuracy {val_acc:.4f} "
            f"(loss {val_loss:.4f}), {time.perf_counter() - t0:.0f} s")
    seconds = time.perf_counter() - start
    model.set_weights(best[3])
    report = accuracy_report(np.argmax(predict(test_packed), 1), test_labels)

    meta = {"version": o.tag, "classes": list(CLASSES), "architecture": C.ARCHITECTURE, "resolution": 32,
            "input": "32³ occupancy 0/1, binvox order [x][z][y] (up = axis 1); 64³ inputs OR-pooled to 32³",
            "features": f"{C.FEATURES_LAYER} (Dense {C.ARCHITECTURE['dense']} + ReLU, the penultimate layer)"}
    weights_path = C.save_weights(model, out / WEIGHTS_NAME, meta)
    data_note = {"files": [{"name": f.name, "bytes": f.stat().st_size, "sha256": _sha256(f)} for f in files],
                 "splits": "train (minus validation) / validation from train / test",
                 "n_train": int(len(tr_y)), "n_validation": int(len(va_y)), "n_test": int(len(test_labels)),
                 "resolution": 32, "pooling": "64³ → 32³ OR-pooling (tf3dgan.data.datasets.load_dataset(resolution=32))",
                 "limit_per_class": o.limit}
    provenance = {
        "version": o.tag, "weights_file": WEIGHTS_NAME, "weights_bytes": weights_path.stat().st_size,
        "weights_sha256": _sha256(weights_path), "params": int(model.count_params()),
        "command": command,
        "data": data_note, "epochs": o.epochs, "best_epoch": best[0], "val_accuracy": best[1],
        "batch": o.batch, "lr": o.lr, "lr_schedule": "cosine decay to 0 over all steps, Adam",
        "seed": o.seed, "val_fraction": o.val_fraction, "augment": o.augment,
        "class_weights": "1/sqrt(class share), mean 1" if o.class_weights else "none",
        **report, "history": history, "train_seconds": round(seconds, 1),
        "keras": keras.__version__, "backend": keras.backend.backend(), "tf3dgan": tf3dgan.__version__,
    }
    write_text(out / PROVENANCE_NAME, json.dumps(provenance, indent=1) + "\n")
    return Trained(weights_path, out / PROVENANCE_NAME, provenance)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
