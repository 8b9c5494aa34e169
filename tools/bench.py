#!/usr/bin/env python3
"""Time the compiled GAN train step (D update + G update) for every batch × precision × XLA combination.

Example: python tools/bench.py --arch rasgan64 -b 8 24 --precision float32 mixed_bfloat16 --steps 5
"""
from __future__ import annotations

import argparse
import json
import sys

from tf3dgan.cli import import_tensorflow_quietly, run_tool

import_tensorflow_quietly()   # before the imports below load TensorFlow through Keras

from tf3dgan.benchmark import PRECISIONS  # noqa: E402
from tf3dgan.losses import OBJECTIVES  # noqa: E402
from tf3dgan.models import ARCHS, make_spec  # noqa: E402

_XLA = {"off": [False], "on": [True], "both": [False, True]}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Benchmark the compiled GAN train step (median time of single calls, "
                                            "analytic FLOP/s).", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--arch", default="rasgan64", choices=ARCHS, help="network architecture")
    p.add_argument("-b", "--batch", type=int, nargs="+", default=[24], help="batch size(s)")
    p.add_argument("--precision", nargs="+", default=["float32"], choices=PRECISIONS, help="dtype policy(ies)")
    p.add_argument("--xla", nargs="?", const="on", default="off", choices=list(_XLA),
                   help="compile with XLA: --xla (= on), --xla both, or --no-xla (= off)")
    p.add_argument("--no-xla", dest="xla", action="store_const", const="off", help="plain tf.function (default)")
    p.add_argument("--steps-per-call", type=int, default=1, help="train steps per compiled call")
    p.add_argument("--width", type=float, default=1.0, help="channel-width multiplier")
    p.add_argument("--resolution", type=int, default=None, help="grid size [default: the architecture's native one]")
    p.add_argument("--steps", type=int, default=10, help="timed calls per configuration (the median is reported)")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls first (tracing included)")
    p.add_argument("--loss", default="rasgan", choices=list(OBJECTIVES), help="GAN objective (D always trains)")
    p.add_argument("--peak-tflops", type=float, default=None, help="the device's peak TFLOP/s, for the %% of peak column")
    p.add_argument("--seed", type=int, default=0, help="seed of weights, data and noise")
    p.add_argument("--json", action="store_true", help="print one JSON object per configuration instead of the table")
    return p


def _check(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    try:
        make_spec(args.arch, args.width, args.resolution)
    except ValueError as e:
        p.error(str(e))
    for name, values, low in (("--batch", args.batch, 1), ("--steps-per-call", [args.steps_per_call], 1),
                              ("--steps", [args.steps], 1), ("--warmup", [args.warmup], 0)):
        if any(v < low for v in values):
            p.error(f"{name} must be >= {low}")
    if args.peak_tflops is not None and not args.peak_tflops > 0:
        p.error("--peak-tflops must be positive")


def run(args: argparse.Namespace) -> list[dict]:
    from tf3dgan.benchmark import TABLE_HEADER, bench_grid, format_row

    results = []
    if not args.json:
        print(format_row(TABLE_HEADER), flush=True)
    grid = bench_grid(args.batch, args.precision, _XLA[args.xla], arch=args.arch,
                      steps_per_call=args.steps_per_call, width=args.width, resolution=args.resolution,
                      steps=args.steps, warmup=args.warmup, loss=args.loss, peak_tflops=args.peak_tflops,
                      seed=args.seed)
    for r in grid:
        results.append(r)
        print(json.dumps(r) if args.json else format_row(r), flush=True)
    r = results[0]
    flops = ", ".join(f"b{b}: {t:.4g}" for b, t in {x["batch"]: x["step_tflop"] for x in results}.items())
    summary = (f"measured: median of {args.steps} timed call(s) of {args.steps_per_call} train step(s) (D + G update, "
               f"D always trained, {args.loss} loss) after {args.warmup} untimed warm-up call(s), per configuration; "
               f"{r['arch']} {r['resolution']}³ width {r['width']:g}; analytic TFLOP/step {flops}; on {r['device']}; "
               f"TensorFlow {r['tf_version']}, Keras {r['keras_version']}; 1-min load average "
               f"{r['loadavg_before']} before, {results[-1]['loadavg_after']} after")
    print(summary, file=sys.stderr if args.json else sys.stdout, flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _check(parser, args)
    return run_tool(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
