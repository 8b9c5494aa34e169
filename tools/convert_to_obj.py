#!/usr/bin/env python3
"""Convert voxel grids (generated samples, .npy/.raw/.binvox, or training data) to meshes (the original convert_to_obj.py).

    python tools/convert_to_obj.py -n chairs            # savepoint/chairs/*.npy -> savepoint/chairs/models/*.obj
    python tools/convert_to_obj.py -f savepoint/chairs/100.npy --mesh marching-cubes --smooth 1 --format stl
    python tools/convert_to_obj.py -f chairs.npz:train --index 7 -o chair7.obj   # any train -d source
Meshes are z-up (x, y, z) = (axis0, axis2, axis1) * scale; see tf3dgan/mesh.py.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tf3dgan.cli import HelpFormatter, run_tool
from tf3dgan.errors import DataError, Tf3dganError
from tf3dgan.outputs.mesh import (
    DEFAULT_SCALE,
    FORMATS,
    MESH_KINDS,
    EmptyGridError,
    check_output,
    empty_note,
    export_mesh,
    grid_to_mesh,
    open_grids,
)


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


def _mesh(args, grid, name):
    return grid_to_mesh(grid, threshold=args.threshold, mesh=args.mesh, scale=args.scale, smooth=args.smooth,
                        name=name)


def convert_run(args, fmt: str) -> None:
    from tf3dgan.training.runs import sample_files, threshold_for

    folder, files = sample_files(args.out, args.name, "convert")
    args.threshold, _ = threshold_for(run_dir=folder, given=args.threshold)
    models = check_output(folder / "models" / f"x.{fmt}").parent
    wrote = skipped = empty = 0
    for f in files:
        target = models / f"{f.stem}.{fmt}"
        if target.exists():
            skipped += 1
            continue
        source = open_grids(f)
        try:
            m = _mesh(args, source.grids([0])[0], str(f))
        except EmptyGridError as exc:
            print(f"skipped {f}: {exc}", flush=True)
            empty += 1
            continue
        export_mesh(m, target, fmt)
        wrote += 1
    extra = "".join([f", skipped {skipped} existing" if skipped else "",
                     f", skipped {empty} with no voxel above --threshold {args.threshold:g}" if empty else ""])
    print(f"wrote {wrote} .{fmt} file{'s' * (wrote != 1)} to {models}{extra}")


def convert_file(args, fmt: str) -> None:
    from tf3dgan.training.runs import threshold_for

    args.threshold, _ = threshold_for(args.file, given=args.threshold)
    i = 0 if args.index is None else args.index
    source = open_grids(args.file, limit=None if args.all or i < 0 else i + 1)
    indices = list(range(len(source))) if args.all else [source.index(i)]
    if args.output:
        out = Path(args.output)
        base = out.with_suffix("") if out.suffix.lstrip(".").lower() in FORMATS else out
    else:
        base = source.folder / source.stem
    written, empty = [], []
    check_output(base.parent / f"{base.name}.{fmt}")
    for i in indices:
        target = base.parent / f"{base.name}_{i}.{fmt}" if args.all else base.parent / f"{base.name}.{fmt}"
        start = time.perf_counter()
        try:
            m = _mesh(args, source.grids([i])[0], source.label(i))   # one grid unpacked at a time
        except EmptyGridError:
            if not args.all:
                raise
            empty.append(i)
            continue
        seconds = time.perf_counter() - start
        export_mesh(m, target, fmt)
        written.append((target, m, seconds))
    if not written:
        raise DataError(f"{source.spec}: none of its {len(source)} grids has a voxel above --threshold "
                        f"{args.threshold:g}; give a lower --threshold")
    if len(written) == 1 and not args.all:
        t, m, seconds = written[0]
        print(f"wrote {t} ({len(m.vertices)} vertices, {len(m.faces)} triangles; meshed in {1000 * seconds:.0f} ms)")
    else:
        print(f"wrote {len(written)} .{fmt} file{'s' * (len(written) != 1)} to {base.parent} "
              f"({written[0][0].name} ... {written[-1][0].name})")
    if empty:
        print(empty_note(empty, len(indices), args.threshold) + "; not written")


def run(args: argparse.Namespace) -> None:
    if args.scale <= 0:
        raise Tf3dganError(f"--scale must be positive, not {args.scale:g}")
    if args.smooth < 0:
        raise Tf3dganError(f"--smooth must be >= 0, not {args.smooth:g}")
    fmt = args.format
    if fmt is None:
        suffix = Path(args.output).suffix.lstrip(".").lower() if args.output else ""
        fmt = suffix if suffix in FORMATS else "obj"
    if args.name is not None:
        if args.output or args.index is not None or args.all:
            raise Tf3dganError("-o/--output, --index and --all go with -f/--file, not -n/--name")
        convert_run(args, fmt)
    else:
        convert_file(args, fmt)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_tool(lambda: run(args), needs_tensorflow=False)


if __name__ == "__main__":
    sys.exit(main())
