#!/usr/bin/env python3
"""Pictures of voxel grids (the original convert_to_graph.py, plus a shaded renderer and sample sheets).

    python tools/convert_to_graph.py -n chair-1                 # savepoint/chair-1/*.npy -> savepoint/chair-1/3D_graphs/
    python tools/convert_to_graph.py -f samples.npy --style shaded --grid 4x4 -o sheet.png
Graphs show z up: the array axis --up-axis (1 for binvox/ModelNet data) is drawn vertically.
"""
from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

from tf3dgan.cli import HelpFormatter, run_tool
from tf3dgan.runs import sample_files
from tf3dgan.errors import DataError, Tf3dganError
from tf3dgan.mesh import load_grids
from tf3dgan.plots import COLORMAPS, DEFAULT_VIEW, STYLES, save_voxel_graph, save_voxel_sheet


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Draw voxel grids (.npy/.raw/.binvox) as 3D graphs (PNG).",
                                formatter_class=HelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("-n", "--name", help="run name: draw every <out>/<name>/*.npy into <out>/<name>/3D_graphs/ "
                                          "(existing pictures are kept; --force redraws them)")
    src.add_argument("-f", "--file", help="draw one file [picture: <its folder>/3D_graphs/<stem>.png, or -o]")
    p.add_argument("-c", "--colormap", type=int, default=1, choices=range(len(COLORMAPS)), metavar="{0..7}",
                   help="colours by height: " + ", ".join(f"{i}={c}" for i, c in enumerate(COLORMAPS)))
    p.add_argument("--style", choices=STYLES, default="scatter",
                   help="scatter: the original's points of the surface voxels; shaded: a rendered voxel surface")
    p.add_argument("--grid", default=None, metavar="RxC",
                   help="a sheet of the first R*C grids of each file (e.g. 4x4) instead of one grid")
    p.add_argument("--tile", type=float, default=3.0, help="size of one panel of a --grid sheet, in inches (100 dpi)")
    p.add_argument("--index", type=int, default=None, help="which grid of a batch .npy to draw [default: 0]")
    p.add_argument("--threshold", type=float, default=0.3, help="a voxel is solid above this value")
    p.add_argument("--view", nargs=2, type=float, default=list(DEFAULT_VIEW), metavar=("AZ", "EL"),
                   help="azimuth and elevation of the viewer, in degrees")
    p.add_argument("--up-axis", type=int, choices=(0, 1, 2), default=1,
                   help="array axis that points up (1 for binvox/ModelNet grids)")
    p.add_argument("--out", default="savepoint", help="folder of the runs (with -n)")
    p.add_argument("-o", "--output", default=None, help="picture file with -f")
    p.add_argument("--force", action="store_true", help="with -n: redraw pictures that already exist")
    return p


def parse_grid(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", text)
    if not m or int(m[1]) < 1 or int(m[2]) < 1:
        raise Tf3dganError(f"--grid wants ROWSxCOLS with positive numbers (e.g. 4x4), not {text!r}")
    return int(m[1]), int(m[2])


def draw(args, src: Path, target: Path, sheet) -> None:
    grids = load_grids(src)
    style = dict(threshold=args.threshold, colormap=COLORMAPS[args.colormap], up_axis=args.up_axis,
                 view=tuple(args.view), style=args.style)
    if sheet is not None:
        rows, cols = sheet
        count = min(rows * cols, len(grids))
        titles = [str(i) for i in range(count)] if len(grids) > 1 else [src.stem]
        save_voxel_sheet(target, grids[:count], titles, rows, cols, title=src.name, tile=args.tile, **style)
        return
    i = 0 if args.index is None else args.index
    if not -len(grids) <= i < len(grids):
        raise DataError(f"{src}: --index {i} is out of range (the file holds {len(grids)} grid(s))")
    title = f"{src.stem}[{i % len(grids)}]" if len(grids) > 1 else src.stem
    save_voxel_graph(target, grids[i], title, **style)


def run(args: argparse.Namespace) -> None:
    sheet = parse_grid(args.grid)
    if not 0.5 <= args.tile <= 20:
        raise Tf3dganError(f"--tile must be between 0.5 and 20 inches, not {args.tile:g}")
    if sheet is not None and args.index is not None:
        raise Tf3dganError("--grid and --index do not go together (a sheet starts at the first grid)")
    start = time.perf_counter()
    if args.name is not None:
        if args.output:
            raise Tf3dganError("-o/--output goes with -f/--file, not -n/--name")
        folder, files = sample_files(args.out, args.name, "draw")
        graphs = folder / "3D_graphs"
        drawn = skipped = 0
        for f in files:
            target = graphs / f"{f.stem}.png"
            if target.exists() and not args.force:
                skipped += 1
                continue
            draw(args, f, target, sheet)
            drawn += 1
        extra = f", kept {skipped} existing (--force redraws them)" if skipped else ""
        print(f"drew {drawn} graph{'s' * (drawn != 1)} into {graphs}{extra} in {time.perf_counter() - start:.1f}s")
    else:
        src = Path(args.file)
        target = Path(args.output) if args.output else src.parent / "3D_graphs" / f"{src.stem}.png"
        if target.suffix.lower() not in (".png", ".jpg", ".jpeg", ".pdf", ".svg"):
            raise Tf3dganError(f"{target}: unknown picture type {target.suffix or '(none)'!r} "
                               "(use .png, .jpg, .pdf or .svg)")
        draw(args, src, target, sheet)
        print(f"wrote {target} in {time.perf_counter() - start:.1f}s")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_tool(lambda: run(args), needs_tensorflow=False)


if __name__ == "__main__":
    sys.exit(main())
