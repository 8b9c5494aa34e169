#!/usr/bin/env python3
"""Pictures of voxel grids (the original convert_to_graph.py, plus a shaded renderer and sample sheets).

    python tools/convert_to_graph.py -n chair-1                 # savepoint/chair-1/*.npy -> savepoint/chair-1/3D_graphs/
    python tools/convert_to_graph.py -f samples.npy --style shaded --grid 4x4 -o sheet.png
    python tools/convert_to_graph.py -f ModelNet10/chair/train --grid 4x4 -o data.png   # any train -d source
Graphs show z up: the array axis --up-axis (1 for binvox/ModelNet data) is drawn vertically.
"""
from __future__ import annotations

import argparse
import sys

from tf3dgan.choices import COLORMAPS, DEFAULT_VIEW
from tf3dgan.choices import GRAPH_STYLES as STYLES
from tf3dgan.cli import HelpFormatter, run_tool

# The drawing is tf3dgan.outputs.graphs.draw_graphs; tf3dgan.outputs.plots imports matplotlib and SciPy (a second or
# more) only to draw, so --help answers at once.


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Draw voxel grids (.npy/.raw/.binvox, or any training data source) "
                                            "as 3D graphs (PNG).",
                                formatter_class=HelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("-n", "--name", help="run name: draw every <out>/<name>/*.npy into <out>/<name>/3D_graphs/ "
                                          "(existing pictures are kept; --force redraws them)")
    src.add_argument("-f", "--file",
                     help="draw one source: a .npy/.raw/.binvox file, or anything train -d takes (a folder of voxel "
                          "files, .npz, FILE.npz:KEY, a dataset cache, synthetic:KIND) "
                          "[picture: <its folder>/3D_graphs/<stem>.png, or -o]")
    p.add_argument("-c", "--colormap", type=int, default=1, choices=range(len(COLORMAPS)), metavar="{0..7}",
                   help="colours by height: " + ", ".join(f"{i}={c}" for i, c in enumerate(COLORMAPS)))
    p.add_argument("--style", choices=STYLES, default="scatter",
                   help="scatter: the original's points of the surface voxels; shaded: a rendered voxel surface")
    p.add_argument("--grid", default=None, metavar="RxC",
                   help="a sheet of the first R*C grids of each file (e.g. 4x4) instead of one grid")
    p.add_argument("--tile", type=float, default=3.0, help="size of one panel of a --grid sheet, in inches (100 dpi)")
    p.add_argument("--index", type=int, default=None, help="which grid of a batch or dataset to draw [default: 0]")
    p.add_argument("--threshold", type=float, default=None,
                   help="a voxel is solid above this value [default: the run's (config.json of the run the grids "
                        "belong to: 0.5 for sigmoid generators, else 0.3); 0.3, the original's, for other grids]")
    p.add_argument("--view", nargs=2, type=float, default=list(DEFAULT_VIEW), metavar=("AZ", "EL"),
                   help="azimuth and elevation of the viewer, in degrees")
    p.add_argument("--up-axis", type=int, choices=(0, 1, 2), default=1,
                   help="array axis that points up (1 for binvox/ModelNet grids)")
    p.add_argument("--out", default="savepoint", help="folder of the runs (with -n)")
    p.add_argument("-o", "--output", default=None, help="picture file with -f (.png, .jpg, .pdf or .svg)")
    p.add_argument("--force", action="store_true", help="with -n: redraw pictures that already exist")
    return p


def run(args: argparse.Namespace) -> None:
    from tf3dgan.outputs.graphs import draw_graphs

    result = draw_graphs(args.name, args.file, out=args.out, output=args.output, grid=args.grid, tile=args.tile,
                         index=args.index, threshold=args.threshold, colormap=args.colormap, style=args.style,
                         view=args.view, up_axis=args.up_axis, force=args.force,
                         report=lambda line: print(line, flush=True))
    print(result.summary())


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_tool(lambda: run(args), needs_tensorflow=False)


if __name__ == "__main__":
    sys.exit(main())
