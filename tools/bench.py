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
import json
import math
import os
import subprocess
import sys

from tf3dgan.atomic import check_output_folder
from tf3dgan.choices import ARCHS, BACKENDS, IMPLEMENTATIONS, OBJECTIVES, PRECISIONS
from tf3dgan.cli import HelpFormatter, keras_backend, run_tool
from tf3dgan.errors import Tf3dganError
from tf3dgan.spec import make_spec

# TensorFlow/Keras load only in run() (tf3dgan.perf.benchmark), after the flags are checked: --help and a
# bad flag answer at once.

_XLA = {"off": [False], "on": [True], "both": [False, True]}
_KERAS_NAME = {short: name for name, short in BACKENDS.items()}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Benchmark the compiled GAN train step (median time of single calls, "
                                            "analytic FLOP/s).", formatter_class=HelpFormatter)
    here = BACKENDS.get(keras_backend(), "tf")
    p.add_argument("--backend", nargs="+", default=[here], choices=list(_KERAS_NAME),
                   help="Keras backend(s): tf (tf.function step) and/or jax (jax.jit step); a backend other than "
                        f"this process's runs in a child process [default: {here}, from KERAS_BACKEND]")
    p.add_argument("--arch", default="rasgan64", choices=ARCHS, help="network architecture")
    p.add_argument("-b", "--batch", type=int, nargs="+", default=[24], help="batch size(s) [default: 24]")
    p.add_argument("--precision", nargs="+", default=["float32"], choices=PRECISIONS,
                   help="Keras dtype policy(ies) [default: float32]")
    p.add_argument("--xla", nargs="?", const="on", default="off", choices=list(_XLA),
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


def _check(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    try:
        make_spec(args.arch, args.width, args.resolution)
    except ValueError as e:
        p.error(str(e))
    for name, values, low in (("--batch", args.batch, 1), ("--steps-per-call", args.steps_per_call, 1),
                              ("--steps", [args.steps], 1), ("--warmup", [args.warmup], 0),
                              ("--profile-calls", [args.profile_calls], 1)):
        if any(v < low for v in values):
            p.error(f"{name} must be >= {low}")
    if args.peak_tflops is not None and not args.peak_tflops > 0:
        p.error("--peak-tflops must be positive")
    if args.profile is not None and os.path.exists(args.profile) and not os.path.isdir(args.profile):
        p.error(f"--profile {args.profile}: exists and is not a folder")
    if args.profile is not None:
        try:
            check_output_folder(args.profile)   # a file on the way, a read-only place: said before any timing
        except Tf3dganError as e:
            p.error(f"--profile: {e}")
    configs = sum(math.prod(map(len, _axes(args, backend).values())) for backend in dict.fromkeys(args.backend))
    if args.compare and configs < 2:
        p.error("--compare needs at least two configurations (several -b, --precision, --steps-per-call, "
                "--conv-transpose or --backend values, or --xla both on the tf backend)")


def _child_args(args: argparse.Namespace, backend: str) -> list[str]:
    """This command line for one other backend, as JSON lines."""
    out = ["--backend", backend, "--arch", args.arch, "-b", *map(str, args.batch), "--precision", *args.precision,
           "--xla", args.xla, "--steps-per-call", *map(str, args.steps_per_call), "--width", repr(args.width),
           "--conv-transpose", *args.conv_transpose, "--profile-calls", str(args.profile_calls),
           "--steps", str(args.steps), "--warmup", str(args.warmup), "--loss", args.loss, "--seed", str(args.seed),
           "--json"]
    if args.resolution is not None:
        out += ["--resolution", str(args.resolution)]
    if args.peak_tflops is not None:
        out += ["--peak-tflops", repr(args.peak_tflops)]
    if args.profile is not None:
        out += ["--profile", os.path.abspath(args.profile)]
    return out


def _in_child(args: argparse.Namespace, backend: str):
    env = dict(os.environ, KERAS_BACKEND=_KERAS_NAME[backend])
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), *_child_args(args, backend)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    for line in proc.stdout:
        if line.startswith("{"):
            yield json.loads(line)
    err = proc.stderr.read()
    if proc.wait() != 0:
        last = [x for x in err.strip().splitlines() if x.strip()][-1:] or ["(no output)"]
        raise Tf3dganError(f"the {backend} benchmark (KERAS_BACKEND={_KERAS_NAME[backend]}) failed: {last[0]}")


def _axes(args: argparse.Namespace, backend: str) -> dict[str, list]:
    """The values each configuration axis takes on ``backend`` (what ``_configs`` runs and ``_check`` counts)."""
    return {"steps_per_call": args.steps_per_call, "conv_transpose": list(dict.fromkeys(args.conv_transpose)),
            "batch": args.batch, "precision": args.precision, "xla": _XLA[args.xla] if backend == "tf" else [False]}


def _configs(args: argparse.Namespace):
    from tf3dgan.perf.benchmark import bench_grid

    here = BACKENDS.get(keras_backend())
    for backend in dict.fromkeys(args.backend):
        if backend != here:
            yield from _in_child(args, backend)
            continue
        axes = _axes(args, backend)
        for spc in axes["steps_per_call"]:
            for conv_t in axes["conv_transpose"]:
                yield from bench_grid(axes["batch"], axes["precision"], axes["xla"], arch=args.arch, steps_per_call=spc,
                                      width=args.width, resolution=args.resolution, steps=args.steps,
                                      warmup=args.warmup, loss=args.loss, peak_tflops=args.peak_tflops,
                                      seed=args.seed, conv_transpose=conv_t, profile_dir=args.profile,
                                      profile_calls=args.profile_calls)


def run(args: argparse.Namespace) -> list[dict]:
    from tf3dgan.perf.benchmark import TABLE_HEADER, config_label, format_row
    from tf3dgan.perf.profiling import format_kernels

    results = []
    if not args.json:
        print(format_row(TABLE_HEADER), flush=True)
    for r in _configs(args):
        results.append(r)
        print(json.dumps(r) if args.json else format_row(r), flush=True)
        if "profile" in r and not args.json:
            print(format_kernels(r["profile"]) if "kernels" in r["profile"] else f"  profile: {r['profile']['error']} "
                  f"(the trace is in {r['profile']['folder']}: open it with TensorBoard's profile plugin)", flush=True)
    out = sys.stderr if args.json else sys.stdout
    if args.compare and len(results) > 1:
        base = results[0]
        print(f"\nrelative to {config_label(base)} ({base['ms_per_step']:.1f} ms/step):", file=out)
        for r in results[1:]:
            ratio = base["ms_per_step"] / r["ms_per_step"]
            print(f"  {config_label(r):58s} {ratio:6.2f}x {'faster' if ratio >= 1 else 'slower'}", file=out)
    r = results[0]
    flops = ", ".join(f"b{b}: {t:.4g}" for b, t in {x["batch"]: x["step_tflop"] for x in results}.items())
    versions = ", ".join(f"{name} {v}" for name, key in (("TensorFlow", "tf_version"), ("JAX", "jax_version"))
                         for v in dict.fromkeys(x.get(key) for x in results) if v)
    summary = (f"measured: median of {args.steps} timed call(s) per configuration (D + G update, D always trained, "
               f"{args.loss} loss) after {args.warmup} untimed warm-up call(s); {r['arch']} {r['resolution']}³ width "
               f"{r['width']:g}; analytic TFLOP/step {flops}; on {r['device']}; {versions}, Keras "
               f"{r['keras_version']}; 1-min load average {r['loadavg_before']} before, "
               f"{results[-1]['loadavg_after']} after")
    print(summary, file=out, flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _check(parser, args)
    return run_tool(lambda: run(args))   # TensorFlow (or this process's Keras backend) loads only now


if __name__ == "__main__":
    sys.exit(main())
