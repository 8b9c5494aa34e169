#!/usr/bin/env python3
"""Pictures of voxel grids (the original convert_to_graph.py, plus a shaded renderer and sample sheets).

    python tools/convert_to_graph.py -n chair-1                 # savepoint/chair-1/*.npy -> savepoint/chair-1/3D_graphs/
    python tools/convert_to_graph.py -f samples.npy --style shaded --grid 4x4 -o sheet.png
    python tools/convert_to_graph.py -f ModelNet10/chair/train --grid 4x4 -o data.png   # any train -d source
Graphs show z up: the array axis --up-axis (1 for binvox/ModelNet data) is drawn vertically.
"""
from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

from tf3dgan.choices import COLORMAPS, DEFAULT_VIEW
from tf3dgan.choices import GRAPH_STYLES as STYLES
from tf3dgan.cli import HelpFormatter, run_tool
from tf3dgan.errors import Tf3dganError

# tf3dgan.outputs.plots imports matplotlib and SciPy (a second or more): imported only to draw, so --help answers at once.
PICTURE_TYPES = (".png", ".jpg", ".jpeg", ".pdf", ".svg")


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


def parse_grid(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", text)
    if not m or int(m[1]) < 1 or int(m[2]) < 1:
        raise Tf3dganError(f"--grid wants ROWSxCOLS with positive numbers (e.g. 4x4), not {text!r}")
    return int(m[1]), int(m[2])


def _limit(args, sheet) -> int | None:
    """How many grids of a dataset are needed (None: all): a folder of loose files is read only so far."""
    if sheet is not None:
        return sheet[0] * sheet[1]
    i = 0 if args.index is None else args.index
    return i + 1 if i >= 0 else None


def draw(args, source, target: Path, sheet) -> str | None:
    """Draw ``source`` (a GridSource) to ``target``: grid --index, or a sheet; returns a note on empty panels."""
    from tf3dgan.outputs.mesh import check_occupied, empty_grids, empty_note

    style = dict(threshold=args.threshold, colormap=COLORMAPS[args.colormap], up_axis=args.up_axis,
                 view=tuple(args.view), style=args.style)
    if sheet is not None:
        rows, cols = sheet
        indices = list(range(min(rows * cols, len(source))))
        grids = source.grids(indices)
        titles = [source.title(i) for i in indices]
        empty = empty_grids(grids, args.threshold)
        if len(empty) == len(indices) == 1:
            check_occupied(grids[0], args.threshold, source.label(0))
        from tf3dgan.outputs import plots  # matplotlib and SciPy: only once there is something to draw

        plots.save_voxel_sheet(target, grids, titles, rows, cols, title=Path(source.spec).name or source.spec,
                               tile=args.tile, **style)
        return empty_note(empty, len(indices), args.threshold, "panels") if empty else None
    i = source.index(0 if args.index is None else args.index)
    grid = source.grids([i])[0]
    check_occupied(grid, args.threshold, source.label(i))
    from tf3dgan.outputs import plots

    title = f"{source.stem}[{i}]" if source.names is None and len(source) > 1 else source.title(i)
    plots.save_voxel_graph(target, grid, title, **style)
    return None


def run(args: argparse.Namespace) -> None:
    from tf3dgan.outputs.mesh import EmptyGridError, check_output, open_grids
    from tf3dgan.training.runs import sample_files, threshold_for

    sheet = parse_grid(args.grid)
    if not 0.5 <= args.tile <= 20:
        raise Tf3dganError(f"--tile must be between 0.5 and 20 inches, not {args.tile:g}")
    if sheet is not None and args.index is not None:
        raise Tf3dganError("--grid and --index do not go together (a sheet starts at the first grid)")
    if args.output and Path(args.output).suffix.lower() not in PICTURE_TYPES:
        raise Tf3dganError(f"{args.output}: unknown picture type {Path(args.output).suffix or '(none)'!r} "
                           "(use .png, .jpg, .pdf or .svg)")
    start = time.perf_counter()
    if args.name is not None:
        if args.output:
            raise Tf3dganError("-o/--output goes with -f/--file, not -n/--name")
        folder, files = sample_files(args.out, args.name, "draw")
        args.threshold, _ = threshold_for(run_dir=folder, given=args.threshold)
        graphs = check_output(folder / "3D_graphs" / "x.png").parent
        drawn = skipped = 0
        empty = []
        for f in files:
            target = graphs / f"{f.stem}.png"
            if target.exists() and not args.force:
                skipped += 1
                continue
            try:
                note = draw(args, open_grids(f), target, sheet)
            except EmptyGridError as exc:
                print(f"skipped {f}: {exc}", flush=True)
                empty.append(f)
                continue
            if note:
                print(f"{target}: {note}", flush=True)
            drawn += 1
        extra = "".join([f", kept {skipped} existing (--force redraws them)" if skipped else "",
                         f", skipped {len(empty)} with no voxel above --threshold {args.threshold:g}" if empty else ""])
        print(f"drew {drawn} graph{'s' * (drawn != 1)} into {graphs}{extra} in {time.perf_counter() - start:.1f}s")
    else:
        args.threshold, _ = threshold_for(args.file, given=args.threshold)
        source = open_grids(args.file, limit=_limit(args, sheet))
        target = Path(args.output) if args.output else source.folder / "3D_graphs" / f"{source.stem}.png"
        check_output(target)
        note = draw(args, source, target, sheet)
        print(f"wrote {target} in {time.perf_counter() - start:.1f}s")
        if note:
            print(note)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_tool(lambda: run(args), needs_tensorflow=False)


if __name__ == "__main__":
    sys.exit(main())
