#!/usr/bin/env python3
"""Time the compiled GAN train step (D update + G update) for every backend × batch × precision × XLA ×
steps-per-call combination.

Examples:
    python tools/bench.py --arch rasgan64 -b 8 24 --precision float32 mixed_bfloat16 --steps 5
    python tools/bench.py -b 8 --resolution 32 --backend tf jax --precision float32 mixed_bfloat16 --compare
A backend other than this process's Keras backend runs in a child process (KERAS_BACKEND=<it>).
"""
from __future__ import annotations

import argparse
import os
import sys

from tf3dgan.choices import ARCHS, IMPLEMENTATIONS, OBJECTIVES, PRECISIONS
from tf3dgan.cli import HelpFormatter, run_tool
from tf3dgan.errors import Tf3dganError
from tf3dgan.perf.bench_runs import KERAS_NAME, XLA, BenchOptions, here, run_bench

# The session is tf3dgan.perf.bench_runs.run_bench; TensorFlow/Keras load only there (tf3dgan.perf.benchmark), after
# the flags are checked: --help and a bad flag answer at once.


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Benchmark the compiled GAN train step (median time of single calls, "
                                            "analytic FLOP/s).", formatter_class=HelpFormatter)
    this = here()
    p.add_argument("--backend", nargs="+", default=[this], choices=list(KERAS_NAME),
                   help="Keras backend(s): tf (tf.function step) and/or jax (jax.jit step); a backend other than "
                        f"this process's runs in a child process [default: {this}, from KERAS_BACKEND]")
    p.add_argument("--arch", default="rasgan64", choices=ARCHS, help="network architecture")
    p.add_argument("-b", "--batch", type=int, nargs="+", default=[24], help="batch size(s) [default: 24]")
    p.add_argument("--precision", nargs="+", default=["float32"], choices=PRECISIONS,
                   help="Keras dtype policy(ies) [default: float32]")
    p.add_argument("--xla", nargs="?", const="on", default="off", choices=list(XLA),
                   help="tf backend: compile the step with XLA: --xla (= on), --xla both (each configuration "
                        "twice), or --no-xla (= off, plain tf.function) [default: off]; the jax backend always "
                        "compiles with XLA")
    p.add_argument("--no-xla", dest="xla", action="store_const", const="off", help="same as --xla off")
    p.add_argument("--steps-per-call", type=int, nargs="+", default=[1],
                   help="train steps per compiled call [default: 1]")
    p.add_argument("--conv-transpose", nargs="+", default=["native"], choices=IMPLEMENTATIONS,
                   help="G's transposed convolutions: native (Conv3DTranspose) and/or phase (one stride-1 "
                        "convolution + interleave, tf3dgan.models.phase_conv) [default: native]")
    p.add_argument("--width", type=float, default=1.0, help="channel-width multiplier")
    p.add_argument("--resolution", type=int, default=None, help="grid size [default: the architecture's native one]")
    p.add_argument("--steps", type=int, default=10, help="timed calls per configuration; the median is reported")
    p.add_argument("--warmup", type=int, default=2,
                   help="untimed calls before the timed ones; they include tracing and compilation")
    p.add_argument("--loss", default="rasgan", choices=OBJECTIVES,
                   help="GAN objective; every step trains both D and G")
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="the device's peak TFLOP/s, for the %% of peak column (which shows - without it)")
    p.add_argument("--seed", type=int, default=0, help="seed of weights, data and noise")
    p.add_argument("--profile", metavar="DIR", default=None,
                   help="after timing each configuration, trace --profile-calls more calls into DIR/<config>/ and "
                        "print the kernels that took the time (summing the trace needs JAX installed)")
    p.add_argument("--profile-calls", type=int, default=3, help="calls traced per configuration with --profile")
    p.add_argument("--json", action="store_true", help="print one JSON object per configuration instead of the table")
    p.add_argument("--compare", action="store_true",
                   help="after the table, print every configuration's speed relative to the first one")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    options = BenchOptions(**vars(parser.parse_args(argv)))
    try:
        options.check()
    except Tf3dganError as e:
        parser.error(str(e))
    # TensorFlow (or this process's Keras backend) loads only now; another backend runs this file in a child process
    return run_tool(lambda: run_bench(options, child=[sys.executable, os.path.abspath(__file__)]))


if __name__ == "__main__":
    sys.exit(main())
