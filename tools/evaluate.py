#!/usr/bin/env python3
"""Shape quality: a run's samples (or any voxel set) against a reference set, with the real-vs-real floor.

    python tools/evaluate.py -n chair32                                    # the run's samples vs its -v data
    python tools/evaluate.py --samples S.npy --reference ../shared/data/voxels/modelnet10_chair_64_win.npz:test \\
        --resolution 32 --json
The measuring is tf3dgan.metrics.evaluation.run_evaluation; this file parses the flags and prints its result.
"""
from __future__ import annotations

import argparse
import json
import sys

from tf3dgan.cli import HelpFormatter, run_tool


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Measure generated shapes against real ones: MMD, coverage and 1-NNA "
                                            "under IoU and Chamfer distances, the occupancy JSD, and the "
                                            "classifier's FID/KID, each with its spread and the real-vs-real floor.",
                                formatter_class=HelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("-n", "--name", help="the run: samples are drawn from its generator at fixed seeds")
    src.add_argument("--samples", metavar="SPEC",
                     help="a .npy batch of generated grids (thresholded at its run's threshold), or any source "
                          "train -d takes")
    p.add_argument("-le", "--load_epoch", type=int, default=None,
                   help="with -n: the checkpoint saved after epoch N [default: the newest]")
    p.add_argument("--out", default="savepoint", help="folder of the run folders")
    p.add_argument("--reference", metavar="SPEC", default=None,
                   help="the real shapes, any -d form, e.g. ../shared/data/voxels/modelnet10_chair_64_win.npz:test "
                        "[default: the run's -v data]")
    p.add_argument("--floor", metavar="SPEC", default=None,
                   help="real shapes other than the reference, for the real-vs-real floor [default: the run's "
                        "training data, else half of the reference against the other half]")
    p.add_argument("--count", type=int, default=None,
                   help="shapes per set [default: the reference's size]")
    p.add_argument("--resolution", type=int, default=None,
                   help="pool both sets to this size first [default: the smaller of the two]")
    p.add_argument("--pool-min", type=int, default=None,
                   help="pooling rule (as train --pool-min) [default: the run's, else 1]")
    p.add_argument("--threshold", type=float, default=None,
                   help="occupancy threshold of generated grids [default: the run's, from its config.json]")
    p.add_argument("--metrics", nargs="+", default=None, metavar="NAME",
                   help="which metrics (iou cd jsd fid kid) [default: all]")
    p.add_argument("--svm", action="store_true",
                   help="with -n: also the 3D-GAN protocol: a linear SVM on the run's D features, trained on the "
                        "ModelNet10 training split of all ten classes and scored on the test split, beside the "
                        "same protocol on an untrained D (the baseline); anchor 91.0 %%")
    p.add_argument("--svm-data", default="../shared/data/voxels", metavar="DIR",
                   help="folder of modelnet10_<class>_64_win.npz for --svm")
    p.add_argument("--svm-limit", type=int, default=None, metavar="N",
                   help="--svm on the first N grids of each class and split only (a quick check; not comparable)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sample latents, subsets and point sampling")
    p.add_argument("--batch", type=int, default=16, help="generator batch (with -n)")
    p.add_argument("--no-ema", dest="ema", action="store_false",
                   help="with -n: sample a --g-ema run's raw G instead of its moving average (to compare the two)")
    p.add_argument("-o", "--output", default=None,
                   help="JSON file of the result [default with -n: <run>/metrics/<epoch>.json]")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object instead of a table")
    return p


def run(args: argparse.Namespace) -> None:
    from tf3dgan.metrics.evaluation import run_evaluation

    done = run_evaluation(run=args.name, samples=args.samples, out=args.out, load_epoch=args.load_epoch,
                          reference=args.reference, floor=args.floor, count=args.count, resolution=args.resolution,
                          pool_min=args.pool_min, threshold=args.threshold, metrics=args.metrics, with_svm=args.svm,
                          svm_data=args.svm_data, svm_limit=args.svm_limit, seed=args.seed, batch=args.batch,
                          output=args.output, ema=args.ema, report=lambda line: print(line, file=sys.stderr))
    print(json.dumps(done.result, sort_keys=True, default=float) if args.json else done.text())
    if done.path is not None:
        print(f"wrote {done.path}", file=sys.stderr if args.json else sys.stdout)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_tool(lambda: run(args), needs_tensorflow=False)


if __name__ == "__main__":
    sys.exit(main())
