#!/usr/bin/env python3
"""Train (or score) the ModelNet10 shape classifier whose features the FID/KID metrics use.

    python tools/train_classifier.py --epochs 40 --seed 0             # train, write the package's weights
    python tools/train_classifier.py --evaluate --json                # score the shipped weights on the test split
Trains on the ten ModelNet10 classes' train splits (the 64³ grids of --data-dir OR-pooled to 32³), holds out
--val-fraction of each class to pick the epoch, reports the test split's accuracy per class and overall, and
writes <out>/voxnet32_m10.npz (weights, architecture, classes, version) and <out>/voxnet32_m10.json (how).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import shlex
import sys
import time
from pathlib import Path

import tf3dgan
from tf3dgan.cli import HelpFormatter, keras_backend, run_tool
from tf3dgan.errors import DataError, Tf3dganError

# Flags, data files and the output folder are checked before Keras / TensorFlow load (in run()).

CLASSES = ("bathtub", "bed", "chair", "desk", "dresser", "monitor", "night_stand", "sofa", "table", "toilet")
DATA_PATTERN = "modelnet10_{}_64_win.npz"
PACKAGE_WEIGHTS = Path(tf3dgan.__file__).resolve().parent / "metrics" / "weights"
WEIGHTS_NAME, PROVENANCE_NAME = "voxnet32_m10.npz", "voxnet32_m10.json"
AUGMENTATIONS = ("none", "flip", "flipshift")
DEFAULT_TAG = "voxnet32-m10-v1"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Train the ModelNet10 voxel classifier of the FID/KID metrics, or "
                                            "score it (--evaluate).", formatter_class=HelpFormatter)
    p.add_argument("--data-dir", default="../shared/data/voxels", metavar="DIR",
                   help=f"folder of the ten {DATA_PATTERN.format('<class>')} files (packed 64³, keys train/test)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help=f"where to write {WEIGHTS_NAME} and {PROVENANCE_NAME} [default: savepoint/classifier]; "
                        f"the package's own folder ({PACKAGE_WEIGHTS}, what FID/KID load) only with a --tag other "
                        "than the shipped weights' version")
    p.add_argument("--epochs", type=int, default=40, help="training epochs (the best one on the validation split is kept)")
    p.add_argument("--batch", type=int, default=32, help="grids per training step")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam's initial learning rate (cosine decay to 0)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the initial weights, validation split, shuffling and augmentation")
    p.add_argument("--val-fraction", type=float, default=0.1,
                   help="fraction of each class's train grids held out to choose the epoch (never the test split)")
    p.add_argument("--augment", choices=AUGMENTATIONS, default="flipshift",
                   help="training augmentation: mirror along the two horizontal axes (0 and 2; up is axis 1), and "
                        "shifts of up to 2 voxels horizontally and 1 vertically")
    p.add_argument("--no-class-weights", dest="class_weights", action="store_false",
                   help="weigh every grid alike (default: each class by 1/sqrt(its share), bathtubs being rare)")
    p.add_argument("--tag", default=DEFAULT_TAG, help="version string stored with the weights (name a new one for new weights)")
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="use only the first N grids of each class and split (quick checks; not for real weights)")
    p.add_argument("--evaluate", action="store_true",
                   help="no training: score a trained classifier (--weights) on the ModelNet10 test split")
    p.add_argument("--weights", default=None, metavar="FILE",
                   help="--evaluate these weights [default: the shipped ones]")
    p.add_argument("--json", action="store_true", help="print one JSON object with the scores instead of text")
    p.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    return p


# ------------------------------------------------------------------ checks (no Keras yet)


def check_args(args: argparse.Namespace) -> None:
    for flag, value, low in (("--epochs", args.epochs, 1), ("--batch", args.batch, 1), ("--limit", args.limit, 1)):
        if value is not None and value < low:
            raise Tf3dganError(f"{flag} must be at least {low}, not {value}")
    if not (math.isfinite(args.lr) and args.lr > 0):
        raise Tf3dganError(f"--lr must be a positive number, not {args.lr}")
    if not 0 < args.val_fraction < 1:
        raise Tf3dganError(f"--val-fraction must be between 0 and 1 (exclusive), not {args.val_fraction}")
    if not args.tag.strip() or any(c.isspace() for c in args.tag):
        raise Tf3dganError(f"--tag must be one word (e.g. {DEFAULT_TAG}), not {args.tag!r}")
    if args.evaluate and args.out is not None:
        raise Tf3dganError("--evaluate writes nothing: drop --out (or drop --evaluate to train)")
    if not args.evaluate and args.weights is not None:
        raise Tf3dganError("--weights names the classifier to --evaluate; training writes to --out")


def data_files(data_dir: str) -> list[Path]:
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


def print_report(report: dict, title: str) -> None:
    print(f"{title}: test accuracy {report['test_accuracy']:.4f} on {report['n_test']} grids")
    for c, acc in report["per_class_accuracy"].items():
        print(f"  {c:<12} {acc:.3f}  ({report['per_class_n'][c]} grids)")


# ------------------------------------------------------------------ actions


def evaluate(args: argparse.Namespace, files: list[Path]) -> None:
    from tf3dgan.data.datasets import unpack
    from tf3dgan.metrics.classifier import load_classifier

    packed, labels, _ = load_split(files, "test", args.limit)
    clf = load_classifier(args.weights)
    if tuple(clf.classes) != CLASSES:
        raise DataError(f"{clf.path}: classifier of classes {', '.join(clf.classes)}, not the ModelNet10 ten")
    start = time.perf_counter()
    pred = clf.predict(unpack(packed, 32))
    import keras

    report = {"version": clf.version, "weights": str(clf.path), "split": "test", "limit": args.limit,
              "backend": keras.backend.backend(),
              **accuracy_report(pred, labels), "seconds": round(time.perf_counter() - start, 2)}
    if args.json:
        print(json.dumps(report))
    else:
        print_report(report, clf.version)


def train(args: argparse.Namespace, files: list[Path], out: Path, argv: list[str]) -> None:
    import keras
    import numpy as np

    from tf3dgan.data.datasets import unpack
    from tf3dgan.metrics import classifier as C

    say = (lambda *a: None) if (args.quiet or args.json) else (lambda *a: print(*a, flush=True))
    packed, labels, names = load_split(files, "train", args.limit)
    test_packed, test_labels, _ = load_split(files, "test", args.limit)
    val = split_validation(labels, args.val_fraction, args.seed)
    if not val.any() or val.all():
        raise DataError(f"too few grids ({len(labels)}) to hold out a validation split; raise --limit")
    tr_x, tr_y, va_x, va_y = packed[~val], labels[~val], packed[val], labels[val]
    counts = np.bincount(tr_y, minlength=len(CLASSES)).astype(float)
    if args.class_weights:
        w = np.where(counts > 0, np.sqrt(counts.sum() / np.maximum(counts, 1)), 0.0)
        w /= (w[tr_y]).mean()
    else:
        w = np.ones(len(CLASSES))
    say(f"train {len(tr_y)} / validation {len(va_y)} / test {len(test_labels)} grids (32³, OR-pooled from 64³); "
        f"backend {keras.backend.backend()}")

    keras.utils.set_random_seed(args.seed)
    rng = np.random.default_rng(args.seed + 1)
    model = C.build_model()
    steps = math.ceil(len(tr_y) / args.batch)
    schedule = keras.optimizers.schedules.CosineDecay(args.lr, args.epochs * steps)
    model.compile(keras.optimizers.Adam(schedule),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])

    def predict(x_packed):
        logits = [np.asarray(model.predict_on_batch(unpack(x_packed[s:s + 128], 32)[..., None].astype(np.float32)))
                  for s in range(0, len(x_packed), 128)]
        return np.concatenate(logits)

    best = None
    history = []
    start = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        t0 = time.perf_counter()
        order = rng.permutation(len(tr_y))
        losses = []
        for s in range(0, len(order), args.batch):
            b = order[s:s + args.batch]
            x = augment(unpack(tr_x[b], 32), rng, args.augment)[..., None].astype(np.float32)
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
        say(f"epoch {epoch}/{args.epochs}: loss {np.mean(losses):.4f}, validation accuracy {val_acc:.4f} "
            f"(loss {val_loss:.4f}), {time.perf_counter() - t0:.0f} s")
    seconds = time.perf_counter() - start
    model.set_weights(best[3])
    report = accuracy_report(np.argmax(predict(test_packed), 1), test_labels)

    meta = {"version": args.tag, "classes": list(CLASSES), "architecture": C.ARCHITECTURE, "resolution": 32,
            "input": "32³ occupancy 0/1, binvox order [x][z][y] (up = axis 1); 64³ inputs OR-pooled to 32³",
            "features": f"{C.FEATURES_LAYER} (Dense {C.ARCHITECTURE['dense']} + ReLU, the penultimate layer)"}
    weights_path = C.save_weights(model, out / WEIGHTS_NAME, meta)
    data_note = {"files": [{"name": f.name, "bytes": f.stat().st_size, "sha256": _sha256(f)} for f in files],
                 "splits": "train (minus validation) / validation from train / test",
                 "n_train": int(len(tr_y)), "n_validation": int(len(va_y)), "n_test": int(len(test_labels)),
                 "resolution": 32, "pooling": "64³ → 32³ OR-pooling (tf3dgan.data.datasets.load_dataset(resolution=32))",
                 "limit_per_class": args.limit}
    provenance = {
        "version": args.tag, "weights_file": WEIGHTS_NAME, "weights_bytes": weights_path.stat().st_size,
        "weights_sha256": _sha256(weights_path), "params": int(model.count_params()),
        "command": shlex.join(["python", "tools/train_classifier.py", *argv]),
        "data": data_note, "epochs": args.epochs, "best_epoch": best[0], "val_accuracy": best[1],
        "batch": args.batch, "lr": args.lr, "lr_schedule": "cosine decay to 0 over all steps, Adam",
        "seed": args.seed, "val_fraction": args.val_fraction, "augment": args.augment,
        "class_weights": "1/sqrt(class share), mean 1" if args.class_weights else "none",
        **report, "history": history, "train_seconds": round(seconds, 1),
        "keras": keras.__version__, "backend": keras.backend.backend(), "tf3dgan": tf3dgan.__version__,
    }
    from tf3dgan.atomic import write_text

    write_text(out / PROVENANCE_NAME, json.dumps(provenance, indent=1) + "\n")
    if args.json:
        print(json.dumps({k: provenance[k] for k in ("version", "test_accuracy", "per_class_accuracy", "n_test",
                                                     "best_epoch", "val_accuracy", "weights_bytes")}
                         | {"weights": str(weights_path)}))
    else:
        print_report(report, f"{args.tag} (epoch {best[0]} of {args.epochs}, validation accuracy {best[1]:.4f})")
        print(f"wrote {weights_path} ({weights_path.stat().st_size / 1e6:.2f} MB) and {out / PROVENANCE_NAME}")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def run(args: argparse.Namespace, argv: list[str]) -> None:
    check_args(args)
    files = data_files(args.data_dir)
    if args.evaluate:
        if args.weights is not None and not Path(args.weights).is_file():
            raise DataError(f"{args.weights}: no such classifier weights file (--weights)")
        action = lambda: evaluate(args, files)  # noqa: E731
    else:
        out = Path(args.out) if args.out is not None else Path("savepoint") / "classifier"
        if out.resolve() == PACKAGE_WEIGHTS and (PACKAGE_WEIGHTS / WEIGHTS_NAME).is_file() and args.tag == DEFAULT_TAG:
            raise Tf3dganError(f"{out} holds the shipped classifier ({DEFAULT_TAG}), which every FID/KID result names: "
                               "new weights there need a new --tag (e.g. voxnet32-m10-v2); or write them elsewhere "
                               "with --out and score them with --evaluate --weights")
        check_out(out)
        action = lambda: train(args, files, out, argv)  # noqa: E731
    from tf3dgan.cli import import_tensorflow_quietly

    import_tensorflow_quietly(required=keras_backend() == "tensorflow")   # after the checks: a wrong flag answers at once
    action()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    return run_tool(lambda: run(args, argv), needs_tensorflow=False)


if __name__ == "__main__":
    sys.exit(main())
