#!/usr/bin/env python3
"""Train (or score) the ModelNet10 shape classifier whose features the FID/KID metrics use.

    python tools/train_classifier.py --epochs 40 --seed 0             # train, write the package's weights
    python tools/train_classifier.py --evaluate --json                # score the shipped weights on the test split
Trains on the ten ModelNet10 classes' train splits (the 64³ grids of --data-dir OR-pooled to 32³), holds out
--val-fraction of each class to pick the epoch, reports the test split's accuracy per class and overall, and
writes <out>/voxnet32_m10.npz (weights, architecture, classes, version) and <out>/voxnet32_m10.json (how).
The work is tf3dgan.metrics.classifier_training.run_classifier; this file parses the flags and prints its result.
"""
from __future__ import annotations

import argparse
import json
import sys

from tf3dgan.cli import HelpFormatter, run_tool
from tf3dgan.metrics.classifier_training import (
    AUGMENTATIONS,
    DATA_PATTERN,
    DEFAULT_DATA_DIR,
    DEFAULT_TAG,
    PACKAGE_WEIGHTS,
    PROVENANCE_NAME,
    WEIGHTS_NAME,
    ClassifierOptions,
    run_classifier,
)

# NumPy at most loads before the flags, data files and output folder are checked; Keras / TensorFlow after them.


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Train the ModelNet10 voxel classifier of the FID/KID metrics, or "
                                            "score it (--evaluate).", formatter_class=HelpFormatter)
    p.add_argument("--data-dir", default=DEFAULT_DATA_DIR, metavar="DIR",
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


def run(args: argparse.Namespace, argv: list[str]) -> None:
    options = ClassifierOptions(**{k: v for k, v in vars(args).items() if k not in ("json", "quiet")})
    say = None if args.quiet or args.json else lambda line: print(line, flush=True)
    result = run_classifier(options, argv=argv, say=say)
    print(json.dumps(result.json()) if args.json else result.text())


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    return run_tool(lambda: run(args, argv), needs_tensorflow=False)


if __name__ == "__main__":
    sys.exit(main())
