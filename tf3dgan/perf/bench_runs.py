"""A benchmark session: every backend × batch × precision × XLA × steps-per-call × transposed-convolution
configuration of ``tools/bench.py``, timed with :func:`tf3dgan.perf.benchmark.bench_grid`, printed as a table (or
JSON lines), compared, and summed up in one ``measured:`` line.

Light at import (no TensorFlow, Keras or JAX): :meth:`BenchOptions.check` answers before any of them loads. A
backend other than this process's Keras backend runs in a child process (``KERAS_BACKEND=<it>``).
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Iterator, Sequence, TextIO

from tf3dgan.choices import BACKENDS
from tf3dgan.cli import keras_backend
from tf3dgan.errors import Tf3dganError

XLA = {"off": [False], "on": [True], "both": [False, True]}
KERAS_NAME = {short: name for name, short in BACKENDS.items()}
#: How a child process runs this benchmark for another backend (the tool passes its own path instead)
DEFAULT_CHILD = (sys.executable, "-m", "tf3dgan.tools.bench")


def here() -> str:
    """The short name (``tf``, ``jax``) of this process's Keras backend."""
    return BACKENDS.get(keras_backend(), "tf")


@dataclass
class BenchOptions:
    """The settings of one session: the flags of tools/bench.py (lists where a flag takes several values)."""

    backend: list[str] = field(default_factory=lambda: [here()])
    arch: str = "rasgan64"
    batch: list[int] = field(default_factory=lambda: [24])
    precision: list[str] = field(default_factory=lambda: ["float32"])
    xla: str = "off"
    steps_per_call: list[int] = field(default_factory=lambda: [1])
    conv_transpose: list[str] = field(default_factory=lambda: ["native"])
    width: float = 1.0
    resolution: int | None = None
    steps: int = 10
    warmup: int = 2
    loss: str = "rasgan"
    peak_tflops: float | None = None
    seed: int = 0
    profile: str | None = None
    profile_calls: int = 3
    json: bool = False
    compare: bool = False

    def check(self) -> None:
        """Refuse what cannot run, before anything is timed (the tool shows the message as a usage error)."""
        from tf3dgan.atomic import check_output_folder
        from tf3dgan.spec import make_spec

        try:
            make_spec(self.arch, self.width, self.resolution)
        except ValueError as e:
            raise Tf3dganError(str(e)) from None
        for name, values, low in (("--batch", self.batch, 1), ("--steps-per-call", self.steps_per_call, 1),
                                  ("--steps", [self.steps], 1), ("--warmup", [self.warmup], 0),
                                  ("--profile-calls", [self.profile_calls], 1)):
            if any(v < low for v in values):
                raise Tf3dganError(f"{name} must be >= {low}")
        if self.peak_tflops is not None and not self.peak_tflops > 0:
            raise Tf3dganError("--peak-tflops must be positive")
        if self.profile is not None and os.path.exists(self.profile) and not os.path.isdir(self.profile):
            raise Tf3dganError(f"--profile {self.profile}: exists and is not a folder")
        if self.profile is not None:
            try:
                check_output_folder(self.profile)   # a file on the way, a read-only place: said before any timing
            except Tf3dganError as e:
                raise Tf3dganError(f"--profile: {e}") from None
        if self.compare and self.count() < 2:
            raise Tf3dganError("--compare needs at least two configurations (several -b, --precision, "
                               "--steps-per-call, --conv-transpose or --backend values, or --xla both on the tf "
                               "backend)")

    def axes(self, backend: str) -> dict[str, list]:
        """The values each configuration axis takes on ``backend``."""
        return {"steps_per_call": self.steps_per_call, "conv_transpose": list(dict.fromkeys(self.conv_transpose)),
                "batch": self.batch, "precision": self.precision,
                "xla": XLA[self.xla] if backend == "tf" else [False]}

    def count(self) -> int:
        """How many configurations the session times."""
        return sum(math.prod(map(len, self.axes(b).values())) for b in dict.fromkeys(self.backend))

    def child_args(self, backend: str) -> list[str]:
        """The tool's command line for one other backend, as JSON lines."""
        out = ["--backend", backend, "--arch", self.arch, "-b", *map(str, self.batch), "--precision",
               *self.precision, "--xla", self.xla, "--steps-per-call", *map(str, self.steps_per_call),
               "--width", repr(self.width), "--conv-transpose", *self.conv_transpose,
               "--profile-calls", str(self.profile_calls), "--steps", str(self.steps), "--warmup", str(self.warmup),
               "--loss", self.loss, "--seed", str(self.seed), "--json"]
        if self.resolution is not None:
            out += ["--resolution", str(self.resolution)]
        if self.peak_tflops is not None:
            out += ["--peak-tflops", repr(self.peak_tflops)]
        if self.profile is not None:
            out += ["--profile", os.path.abspath(self.profile)]
        return out


def _in_child(options: BenchOptions, backend: str, child: Sequence[str]) -> Iterator[dict]:
    env = dict(os.environ, KERAS_BACKEND=KERAS_NAME[backend])
    proc = subprocess.Popen([*child, *options.child_args(backend)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    for line in proc.stdout:
        if line.startswith("{"):
            yield json.loads(line)
    err = proc.stderr.read()
    if proc.wait() != 0:
        last = [x for x in err.strip().splitlines() if x.strip()][-1:] or ["(no output)"]
        raise Tf3dganError(f"the {backend} benchmark (KERAS_BACKEND={KERAS_NAME[backend]}) failed: {last[0]}")


def configurations(options: BenchOptions, child: Sequence[str] = DEFAULT_CHILD) -> Iterator[dict]:
    """Time every configuration; one result dict each (another backend's come from ``child`` + its flags)."""
    from tf3dgan.perf.benchmark import bench_grid

    this = BACKENDS.get(keras_backend())
    for backend in dict.fromkeys(options.backend):
        if backend != this:
            yield from _in_child(options, backend, child)
            continue
        axes = options.axes(backend)
        for spc in axes["steps_per_call"]:
            for conv_t in axes["conv_transpose"]:
                yield from bench_grid(axes["batch"], axes["precision"], axes["xla"], arch=options.arch,
                                      steps_per_call=spc, width=options.width, resolution=options.resolution,
                                      steps=options.steps, warmup=options.warmup, loss=options.loss,
                                      peak_tflops=options.peak_tflops, seed=options.seed, conv_transpose=conv_t,
                                      profile_dir=options.profile, profile_calls=options.profile_calls)


def summary_line(options: BenchOptions, results: list[dict]) -> str:
    """The ``measured:`` line: what was timed, how, and on what."""
    r = results[0]
    flops = ", ".join(f"b{b}: {t:.4g}" for b, t in {x["batch"]: x["step_tflop"] for x in results}.items())
    versions = ", ".join(f"{name} {v}" for name, key in (("TensorFlow", "tf_version"), ("JAX", "jax_version"))
                         for v in dict.fromkeys(x.get(key) for x in results) if v)
    return (f"measured: median of {options.steps} timed call(s) per configuration (D + G update, D always trained, "
            f"{options.loss} loss) after {options.warmup} untimed warm-up call(s); {r['arch']} {r['resolution']}³ "
            f"width {r['width']:g}; analytic TFLOP/step {flops}; on {r['device']}; {versions}, Keras "
            f"{r['keras_version']}; 1-min load average {r['loadavg_before']} before, "
            f"{results[-1]['loadavg_after']} after")


def run_bench(options: BenchOptions, *, child: Sequence[str] = DEFAULT_CHILD, out: TextIO | None = None,
              err: TextIO | None = None) -> list[dict]:
    """Time ``options``' configurations, printing each row (or JSON line) to ``out`` as it comes; then, to ``out``
    (to ``err`` with ``json``), the comparison and the ``measured:`` line. Returns the results."""
    from tf3dgan.perf.benchmark import TABLE_HEADER, config_label, format_row
    from tf3dgan.perf.profiling import format_kernels

    out = out or sys.stdout
    err = err or sys.stderr
    results = []
    if not options.json:
        print(format_row(TABLE_HEADER), file=out, flush=True)
    for r in configurations(options, child):
        results.append(r)
        print(json.dumps(r) if options.json else format_row(r), file=out, flush=True)
        if "profile" in r and not options.json:
            print(format_kernels(r["profile"]) if "kernels" in r["profile"] else f"  profile: {r['profile']['error']} "
                  f"(the trace is in {r['profile']['folder']}: open it with TensorBoard's profile plugin)",
                  file=out, flush=True)
    notes = err if options.json else out
    if options.compare and len(results) > 1:
        base = results[0]
        print(f"\nrelative to {config_label(base)} ({base['ms_per_step']:.1f} ms/step):", file=notes)
        for r in results[1:]:
            ratio = base["ms_per_step"] / r["ms_per_step"]
            print(f"  {config_label(r):58s} {ratio:6.2f}x {'faster' if ratio >= 1 else 'slower'}", file=notes)
    print(summary_line(options, results), file=notes, flush=True)
    return results
