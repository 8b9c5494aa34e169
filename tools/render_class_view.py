#!/usr/bin/env python3
"""Render a model to a PNG with Blender (the original render_class_view.py, for Blender 3.4 / 4.x).

    python tools/render_class_view.py -m chair.obj -o chair.png                      # the original's view, cycles
    python tools/render_class_view.py -m savepoint/chairs/100.npy -o s.png --engine workbench -a 30 -e 20
    python tools/render_class_view.py -m chair.obj -o turn.png --views views.txt     # turn_0.png, turn_1.png, ...
Needs Blender (apt-get install blender, or -b /path/to/blender); the scene is tf3dgan/outputs/blender_scene.py,
the work tf3dgan.outputs.render.render_model.
"""
from __future__ import annotations

import argparse
import sys

from tf3dgan.cli import HelpFormatter, run_tool
from tf3dgan.outputs.render import (
    DEFAULT_AZIMUTH,
    DEFAULT_COLOR,
    DEFAULT_DISTANCE,
    DEFAULT_ELEVATION,
    DEFAULT_ENGINE,
    DEFAULT_RESOLUTION,
    DEFAULT_SAMPLES,
    DEFAULT_TILT,
    DEFAULT_TIMEOUT,
    ENGINES,
    render_model,
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Render a mesh or voxel grid to a PNG (transparent background) with "
                                            "Blender.", formatter_class=HelpFormatter)
    p.add_argument("-m", "--model_file", required=True,
                   help="model to render: .obj, .ply, .stl, .glb/.gltf, .off, or a voxel grid .npy/.raw/.binvox/.npz "
                        "(its first grid)")
    p.add_argument("-o", "--output_img", default="demo_img.png",
                   help="output PNG; with --views, <stem>_<i>.png beside it [default: %(default)s]")
    p.add_argument("-b", "--blender_path", default=None, help="Blender executable [default: blender on PATH]")
    p.add_argument("-a", "--azimuth", type=float, default=None,
                   help=f"degrees around the vertical axis, 0 = front (-y), 90 = +x [default: {DEFAULT_AZIMUTH:g}]")
    p.add_argument("-e", "--elevation", type=float, default=None,
                   help=f"degrees above the horizon [default: {DEFAULT_ELEVATION:g}]")
    p.add_argument("-t", "--tilt", type=float, default=None,
                   help=f"camera roll in degrees [default: {DEFAULT_TILT:g}]")
    p.add_argument("-d", "--distance", type=float, default=None,
                   help=f"camera distance from the model's centre; the model is scaled to a bounding-box diagonal "
                        f"of 1 [default: {DEFAULT_DISTANCE:g}]")
    p.add_argument("--views", default=None, metavar="FILE",
                   help="render one PNG per line 'azimuth elevation tilt distance' of FILE, in one Blender run "
                        "(instead of -a/-e/-t/-d)")
    p.add_argument("--engine", choices=ENGINES, default=DEFAULT_ENGINE, help="render engine [default: %(default)s]")
    p.add_argument("--samples", type=int, default=DEFAULT_SAMPLES,
                   help="samples per pixel (cycles, eevee; workbench anti-aliasing) [default: %(default)s]")
    p.add_argument("--resolution", type=int, default=DEFAULT_RESOLUTION,
                   help="image side in pixels (square) [default: %(default)s]")
    p.add_argument("--color", default=DEFAULT_COLOR,
                   help="model colour: hex #rrggbb or r,g,b floats 0-1 (sRGB) [default: %(default)s]")
    p.add_argument("--up", choices=("z", "y"), default="z",
                   help="the model file's up axis (tf3dgan and ModelNet: z) [default: %(default)s]")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                   help="seconds to wait for Blender [default: %(default)g]")
    p.add_argument("--verbose", action="store_true", help="print the Blender command and Blender's output")
    return p


def run(args: argparse.Namespace) -> None:
    result = render_model(args.model_file, args.output_img, views_file=args.views, azimuth=args.azimuth,
                          elevation=args.elevation, tilt=args.tilt, distance=args.distance, engine=args.engine,
                          samples=args.samples, resolution=args.resolution, color=args.color,
                          blender=args.blender_path, timeout=args.timeout, verbose=args.verbose, up=args.up)
    print(result.summary())


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_tool(lambda: run(args), needs_tensorflow=False)


if __name__ == "__main__":
    sys.exit(main())
