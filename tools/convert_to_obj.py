#!/usr/bin/env python3
"""Convert voxel grids (generated samples, .npy/.raw/.binvox, or training data) to meshes (the original convert_to_obj.py).

    python tools/convert_to_obj.py -n chairs            # savepoint/chairs/*.npy -> savepoint/chairs/models/*.obj
    python tools/convert_to_obj.py -f savepoint/chairs/100.npy --mesh marching-cubes --smooth 1 --format stl
    python tools/convert_to_obj.py -f chairs.npz:train --index 7 -o chair7.obj   # any train -d source
Meshes are z-up (x, y, z) = (axis0, axis2, axis1) * scale; see tf3dgan/outputs/mesh.py.
The converting is tf3dgan.outputs.meshes.convert_to_meshes; this file parses the flags.
"""
from __future__ import annotations

import argparse
import sys

from tf3dgan.cli import HelpFormatter, run_tool
from tf3dgan.outputs.mesh import DEFAULT_SCALE, FORMATS, MESH_KINDS
from tf3dgan.outputs.meshes import convert_to_meshes


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Convert voxel grids to meshes (OBJ by default).",
                                formatter_class=HelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("-n", "--name", help="run name: convert every <out>/<name>/*.npy into <out>/<name>/models/")
    src.add_argument("-f", "--file", help="convert grids of one source: a .npy/.raw/.binvox file, or anything train -d "
                                          "takes (a folder of voxel files, .npz, FILE.npz:KEY, a dataset cache, "
                                          "synthetic:KIND)")
    p.add_argument("--out", default="savepoint", help="folder of the runs (with -n)")
    p.add_argument("-o", "--output", default=None,
                   help="output file with -f [default: beside the input as <stem>.<format>; with --all <stem>_<i>]")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--index", type=int, default=None,
                       help="which grid of a batch or dataset to convert [default: 0]")
    which.add_argument("--all", action="store_true",
                       help="convert every grid of a batch or dataset (<stem>_<i>.<format>; empty grids are skipped "
                            "and counted)")
    p.add_argument("--threshold", type=float, default=None,
                   help="a voxel is solid above this value [default: the run's (config.json of the run the grids "
                        "belong to: 0.5 for sigmoid generators, else 0.3); 0.3, the original's, for other grids]")
    p.add_argument("--mesh", choices=MESH_KINDS, default="cubes",
                   help="cubes: the original's exposed-voxel cubes; faces: closed surface of the exposed faces; "
                        "marching-cubes: smooth closed surface")
    p.add_argument("--smooth", type=float, default=0.0, help="Gaussian sigma (voxels) before marching cubes")
    p.add_argument("--format", choices=FORMATS, default=None,
                   help="mesh file format [default: from -o's suffix, else obj]")
    p.add_argument("--scale", type=float, default=DEFAULT_SCALE, help="voxel size in mesh units")
    return p


def run(args: argparse.Namespace) -> None:
    result = convert_to_meshes(args.name, args.file, out=args.out, output=args.output, index=args.index,
                               every=args.all, threshold=args.threshold, mesh=args.mesh, smooth=args.smooth,
                               fmt=args.format, scale=args.scale, report=lambda line: print(line, flush=True))
    print(result.summary())


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_tool(lambda: run(args), needs_tensorflow=False)


if __name__ == "__main__":
    sys.exit(main())
