#!/usr/bin/env python3
"""Voxelize meshes for training: the original converter's -m/-b flags, plus a built-in binvox.

Every mesh under -m (.off; .obj/.stl/.ply with trimesh) becomes a voxel file beside it
(X.off -> X.raw, binvox's raw layout), then each folder of meshes gets the dataset cache
that training loads in under a second. Existing outputs of the same --dim and method are
skipped; if any has another size or method the run refuses up front (--force replaces them),
so a folder never mixes grid sizes. To train at 32³ from 64³ files, keep them:
tools/train.py --resolution 32 pools them down.

Example: python tools/convert_data.py -m ModelNet10/chair            (= Windows binvox -d 64, built in)
         python tools/convert_data.py -m ModelNet10 --method binvox  (= Linux binvox -d 64)
         python tools/convert_data.py -m ModelNet10 -b ./binvox      (run a binvox program, as the original)
"""
from __future__ import annotations

import argparse
import sys

from tf3dgan.cli import HelpFormatter, run_tool
from tf3dgan.data.voxelize import DEFAULT_METHOD, DEFAULT_TIMEOUT, METHODS, OUTPUT_FORMATS, ConvertOptions, convert_meshes


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Voxelize meshes (binvox conventions) and write the training dataset cache.",
                                formatter_class=HelpFormatter)
    p.add_argument("-m", "--model_dir", required=True, help="folder searched recursively for .off (.obj/.stl/.ply) meshes")
    p.add_argument("-b", "--binvox_binary", default=None,
                   help="run this binvox program ([binary, -d, DIM, -t, raw, mesh]) instead of the built-in voxelizer")
    p.add_argument("--dim", type=int, default=64, help="voxel grid side")
    p.add_argument("--method", default=DEFAULT_METHOD, choices=METHODS,
                   help="binvox-win: the original's data (Windows binvox.exe: default method at 2*dim, OR-pooled to dim); "
                        "binvox: binvox's default method at dim (Linux binvox -d DIM); "
                        "surface: hollow shell of every cell a triangle touches (binvox -e)")
    p.add_argument("--center", action="store_true", help="centre the mesh on every axis (binvox -cb)")
    p.add_argument("--format", default="raw", choices=OUTPUT_FORMATS,
                   help="output beside each mesh: X.raw (binvox raw: dim^3 bytes 0/255, order [x][z][y]), X.binvox or X.npy")
    p.add_argument("-j", "--jobs", type=int, default=None, help="processes [default: all cores]")
    p.add_argument("--force", action="store_true",
                   help="reconvert meshes whose output file exists (skipped otherwise when it has this --dim and "
                        "method; outputs of another size or method are refused up front without --force)")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds allowed per mesh for -b")
    p.add_argument("--no-cache", dest="cache", action="store_false", help="do not write the dataset caches")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no tqdm bar")
    return p


def convert(args: argparse.Namespace) -> int:
    """Run the conversion; returns the number of failed files."""
    options = ConvertOptions(dim=args.dim, method=args.method, center=args.center, format=args.format,
                             binvox_binary=args.binvox_binary, timeout=args.timeout, force=args.force)
    summary = convert_meshes(args.model_dir, options, jobs=args.jobs, progress=None if args.progress else False,
                             write_caches=args.cache)
    print(summary.describe())
    return summary.count("failed")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    failed = []
    status = run_tool(lambda: failed.append(convert(args)), needs_tensorflow=False)
    if status == 0 and failed and failed[0]:
        return 1
    return status


if __name__ == "__main__":
    sys.exit(main())
