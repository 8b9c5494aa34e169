#!/usr/bin/env python3
"""Compare the built-in voxelizer with binvox reference files: mean / min IoU per method
(``tf3dgan.data.voxel_check`` says how references are named).

Example: python tools/check_voxelizer.py shared/data/binvox_reference shared/data/modelnet_sample -v
"""
from __future__ import annotations

import argparse
import sys

from tf3dgan.cli import HelpFormatter, run_tool
from tf3dgan.data.voxel_check import check_voxelizer


def compare(args: argparse.Namespace) -> None:
    verbose = (lambda value, key, rel: print(f"{value:.4f}  {key:48s} {rel}")) if args.verbose else None
    print(check_voxelizer(args.ref_dir, args.mesh_dir, args.methods, on_file=verbose).describe())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="IoU of the built-in voxelizer against binvox reference files.",
                                formatter_class=HelpFormatter)
    p.add_argument("ref_dir", help="folder of reference voxel files (same relative paths as the meshes)")
    p.add_argument("mesh_dir", help="folder searched recursively for meshes")
    p.add_argument("--methods", nargs="+", choices=["binvox-win", "binvox", "surface"], default=None,
                   help="only these methods [default: all with references]")
    p.add_argument("-v", "--verbose", action="store_true", help="print the IoU of every file")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_tool(lambda: compare(args), needs_tensorflow=False)


if __name__ == "__main__":
    sys.exit(main())
