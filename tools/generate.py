#!/usr/bin/env python3
"""Sample shapes from a trained run's generator (CPU is fine).

    python tools/generate.py -n chair-1 --count 16 --seed 0 --sheet --obj
    python tools/generate.py -n chair-1 -le 1000 --interpolate 8 --seed 3 --seed2 7
    python tools/generate.py --pretrained chair32 --count 99 --seed 7 --binary --dest chairs
Writes <out>/<name>/generated/<stem>.npy (a batch), and on request <stem>.png (a sheet) and <stem>_<i>.obj.
"""
from __future__ import annotations

import argparse
import sys

from tf3dgan.choices import COLORMAPS, GRAPH_STYLES, PRETRAINED
from tf3dgan.cli import HelpFormatter, run_tool

# Only light modules (NumPy at most) load before the flags, the run and --dest are checked; Keras and
# TensorFlow load after that (in tf3dgan.outputs.generation.generate_shapes), matplotlib only for --sheet.


def build_parser() -> argparse.ArgumentParser:
    from tf3dgan.outputs.mesh import MESH_KINDS  # NumPy only
    from tf3dgan.outputs.sampling import INTERPOLATIONS

    p = argparse.ArgumentParser(description="Generate voxel shapes with a trained generator.",
                                formatter_class=HelpFormatter)
    p.add_argument("-n", "--name", default=None, help="run name (reads <out>/<name>/config.json and its weights)")
    p.add_argument("-le", "--load_epoch", type=int, default=None,
                   help="use the checkpoint of this epoch [default: the run's newest state]")
    p.add_argument("--weights", default=None, metavar="FILE",
                   help="weights to use instead: a checkpoint .npz (self-describing) or a .weights.h5 "
                        "(config.json from -n or beside it)")
    p.add_argument("--pretrained", choices=PRETRAINED, default=None,
                   help="a generator shipped in the package instead of a run (chair32: ModelNet10 chairs at 32³; "
                        "its command and metrics are in README)")
    p.add_argument("--out", default="savepoint", metavar="DIR", help="folder of the runs")
    p.add_argument("--dest", default=None, metavar="DIR",
                   help="output folder [default: <out>/<name>/generated, or ./generated]")
    p.add_argument("--count", type=int, default=16, help="how many shapes")
    p.add_argument("--seed", type=int, default=0, help="seed of the latent vectors")
    p.add_argument("--interpolate", type=int, default=None, metavar="K",
                   help="instead of --count shapes: K shapes interpolated from the latent of --seed to --seed2's")
    p.add_argument("--seed2", type=int, default=None, help="end seed of --interpolate [default: --seed + 1]")
    p.add_argument("--interpolation", choices=INTERPOLATIONS, default="linear", help="path between the two latents")
    p.add_argument("--sheet", action="store_true", help="also draw the shapes as one PNG sheet")
    p.add_argument("--style", choices=GRAPH_STYLES, default="shaded", help="--sheet style")
    p.add_argument("-c", "--colormap", type=int, default=1, choices=range(len(COLORMAPS)), metavar="{0..7}",
                   help="--sheet colours: " + ", ".join(f"{i}={c}" for i, c in enumerate(COLORMAPS))
                        + f" [default: 1={COLORMAPS[1]}]")
    p.add_argument("--obj", action="store_true", help="also write one mesh per shape")
    p.add_argument("--mesh", choices=MESH_KINDS, default="faces",
                   help="mesh kind for --obj, as in convert_to_obj.py [default: faces]")
    p.add_argument("--threshold", type=float, default=None,
                   help="a voxel is solid above this value [default: the run's, from its config.json: 0.5 for "
                        "sigmoid generators, else the seed's 0.3]")
    p.add_argument("--binary", action="store_true",
                   help="also write the grids thresholded as uint8 0/1 (<stem>_binary.npy), for downstream use")
    p.add_argument("--no-ema", dest="ema", action="store_false",
                   help="a --g-ema run's raw G instead of its moving average")
    p.add_argument("--batch", type=int, default=16, help="shapes per generator call")
    return p


def run(args: argparse.Namespace) -> None:
    from tf3dgan.errors import Tf3dganError
    from tf3dgan.outputs.generation import generate_shapes

    weights = args.weights
    if args.pretrained:
        from tf3dgan import pretrained

        if args.name or args.weights or args.load_epoch is not None:
            raise Tf3dganError("--pretrained names the generator: drop -n, -le and --weights")
        weights = pretrained.path(args.pretrained)
    result = generate_shapes(args.name, weights=weights, load_epoch=args.load_epoch, out=args.out,
                             dest=args.dest, count=args.count, seed=args.seed, interpolate=args.interpolate,
                             seed2=args.seed2, interpolation=args.interpolation, sheet=args.sheet, style=args.style,
                             colormap=args.colormap, obj=args.obj, mesh=args.mesh, threshold=args.threshold,
                             batch=args.batch, binary=args.binary, ema=args.ema)
    print(result.summary())


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_tool(lambda: run(args), needs_tensorflow=False)


if __name__ == "__main__":
    sys.exit(main())
