#!/usr/bin/env python3
"""Sample shapes from a trained run's generator (CPU is fine).

    python tools/generate.py -n chair-1 --count 16 --seed 0 --sheet --obj
    python tools/generate.py -n chair-1 -le 1000 --interpolate 8 --seed 3 --seed2 7
Writes <out>/<name>/generated/<stem>.npy (a batch), and on request <stem>.png (a sheet) and <stem>_<i>.obj.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from tf3dgan.choices import COLORMAPS, GRAPH_STYLES
from tf3dgan.cli import HelpFormatter, import_tensorflow_quietly, run_tool
from tf3dgan.errors import Tf3dganError

# Only light modules (NumPy at most) load before the flags, the run and --dest are checked; Keras and
# TensorFlow load in run() after that, matplotlib only for --sheet.


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
    p.add_argument("--batch", type=int, default=16, help="shapes per generator call")
    return p


def run(args: argparse.Namespace) -> None:
    import numpy as np

    from tf3dgan.atomic import atomic_path, check_output_folder
    from tf3dgan.outputs import sampling
    from tf3dgan.spec import describe
    from tf3dgan.training import runs

    if args.name is None and args.weights is None:
        raise Tf3dganError("say which generator: -n RUN (optionally -le EPOCH) or --weights FILE")
    if args.load_epoch is not None and args.weights is not None:
        raise Tf3dganError("-le picks a checkpoint of the run; --weights names a file: give one of them")
    for flag, value, low in (("--count", args.count, 1), ("--batch", args.batch, 1),
                             ("--interpolate", args.interpolate, 2)):
        if value is not None and value < low:
            raise Tf3dganError(f"{flag} must be at least {low}, not {value}")
    run_dir = runs.run_path(args.out, args.name) if args.name else None
    if run_dir is not None and not run_dir.is_dir():
        raise Tf3dganError(f"{run_dir}: no such run folder (check -n and --out)")
    runs.generator_source(run_dir, args.weights, args.load_epoch)   # a missing file answers before TF starts
    dest = Path(args.dest) if args.dest else (run_dir / "generated" if run_dir else Path("generated"))
    check_output_folder(dest)                                         # so does an unwritable --dest
    start = time.perf_counter()
    if os.environ.get("KERAS_BACKEND", "tensorflow") == "tensorflow":
        import_tensorflow_quietly()   # after the checks above, so a wrong flag answers at once
    generator, source = runs.load_generator(run_dir, args.weights, args.load_epoch)
    spec = generator.spec
    threshold = args.threshold   # else the run's (config.json), else the one its model implies
    if threshold is None:
        threshold = (runs.run_threshold(run_dir) if run_dir else None) or runs.model_threshold(spec.to_dict())

    if args.interpolate:
        seed2 = args.seed + 1 if args.seed2 is None else args.seed2
        ends = [sampling.latents(1, spec.latent_dim, s)[0] for s in (args.seed, seed2)]
        z = sampling.interpolate(*ends, args.interpolate, args.interpolation)
        stem = f"interp_seed{args.seed}-{seed2}_k{args.interpolate}"
        titles = [f"t={t:.2f}" for t in np.linspace(0, 1, args.interpolate)]
        rows, cols = 1, args.interpolate
    else:
        z = sampling.latents(args.count, spec.latent_dim, args.seed)
        stem = f"seed{args.seed}_n{args.count}"
        titles = [str(i) for i in range(args.count)]
        rows, cols = None, None
    grids = sampling.generate(generator, z, args.batch)
    target = dest / f"{stem}.npy"
    with atomic_path(target) as tmp:
        np.save(tmp, grids)
    with atomic_path(dest / f"{stem}_latents.npy") as tmp:
        np.save(tmp, z)
    wrote = [f"{target} {tuple(grids.shape)}"]
    if args.sheet:
        from tf3dgan.outputs import plots

        sheet = plots.save_voxel_sheet(dest / f"{stem}.png", grids, titles, rows, cols, style=args.style,
                                       threshold=threshold, colormap=COLORMAPS[args.colormap],
                                       title=f"{describe(spec)} from {source.name}")
        wrote.append(str(sheet))
    if args.obj:
        from tf3dgan.outputs import mesh

        empty = 0
        for i, g in enumerate(grids):
            if not (g > threshold).any():
                empty += 1
                continue
            mesh.export_mesh(mesh.grid_to_mesh(g, threshold=threshold, mesh=args.mesh), dest / f"{stem}_{i}.obj")
        wrote.append(f"{len(grids) - empty} .obj meshes ({stem}_<i>.obj)"
                     + (f"; {empty} shape(s) with no voxel above {threshold:g} have none" if empty else ""))
    print(f"generated {len(grids)} shapes of {spec.resolution}³ with {source} in "
          f"{time.perf_counter() - start:.1f}s; wrote " + ", ".join(wrote))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_tool(lambda: run(args), needs_tensorflow=False)


if __name__ == "__main__":
    sys.exit(main())
