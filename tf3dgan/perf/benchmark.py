"""Train-step throughput: analytic FLOP counts and a timed benchmark of the compiled step.

``forward_flops`` / ``step_flops`` count the multiply-adds (× 2) of the dense and
convolution layers of a model's ``blocks`` list from their shapes alone; they use Keras
layer classes only, so they work under every Keras backend.  Bias adds, BatchNorm,
activations, losses and optimizer updates are left out (under 1 % for these models).

One full train step (D update, then G update, as :class:`tf3dgan.training.backends.tensorflow.GANTrainer`
runs it with D always trained) costs, per sample, with ``F_G`` and ``F_D`` the forward
FLOPs of one grid through each network and a backward pass ≈ 2 forward passes::

    D update: G forward (F_G), D forward on real and fake (2 F_D), D backward on both (4 F_D)
    G update: G forward (F_G), D forward on real and fake (2 F_D),
              D backward on fake to reach G (2 F_D), G backward (2 F_G)
    total    = 4 F_G + 10 F_D

For ``rasgan64`` at batch 24 that is 2.62 TFLOP.  The WGAN-GP penalty (an extra D pass and
a double backward) is not counted.

``bench`` builds a pair, trains it on synthetic furniture and reports the median time of
single compiled calls; :func:`format_table` renders results as ``tools/bench.py`` prints them.
"""
from __future__ import annotations

import gc
import math
import os
import platform
import statistics
import time
from typing import Iterable, Sequence

import keras
import numpy as np

from tf3dgan.errors import Tf3dganError
from tf3dgan.models.networks import Discriminator, build_models, make_spec
from tf3dgan.training.backends import get_backend
from tf3dgan.training.trainer import PRECISIONS

RESULT_KEYS = ("backend", "arch", "batch", "precision", "xla", "steps_per_call", "width", "resolution", "loss",
               "conv_transpose",
               "ms_per_step", "ms_per_step_min", "ms_per_step_max", "samples_per_s", "step_tflop",
               "achieved_tflops", "achieved_gflops", "peak_tflops", "pct_of_peak", "calls_timed", "steps_timed",
               "warmup_calls", "trace_count", "device", "tf_version", "jax_version", "keras_version",
               "loadavg_before", "loadavg_after")
#: ``backend`` values: Keras' backend names, shortened
from tf3dgan.choices import BACKENDS  # noqa: E402,F401  (re-exported)

# ---------------------------------------------------------------------------------------- FLOPs

_CONV = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)
_CONV_T = (keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose, keras.layers.Conv3DTranspose)


def _per_sample(input_shape: Sequence) -> tuple:
    shape = tuple(input_shape)
    if shape and shape[0] is None:
        shape = shape[1:]
    if not shape or any(d is None for d in shape):
        raise ValueError(f"forward_flops needs a fully known per-sample input shape, got {tuple(input_shape)}")
    return tuple(int(d) for d in shape)


def _layer_flops(layer, in_shape: tuple, out_shape: tuple) -> int:
    """FLOPs (2 × multiply-adds) of one layer for one sample; shapes include a batch axis of 1."""
    if isinstance(layer, _CONV_T):   # every input voxel scatters a k^d × Cin × Cout product
        return 2 * math.prod(in_shape[1:-1]) * math.prod(layer.kernel_size) * in_shape[-1] * out_shape[-1] \
            // int(getattr(layer, "groups", 1) or 1)
    if isinstance(layer, _CONV):     # every output voxel gathers a k^d × Cin × Cout product
        return 2 * math.prod(out_shape[1:-1]) * math.prod(layer.kernel_size) * in_shape[-1] * out_shape[-1] \
            // int(getattr(layer, "groups", 1) or 1)
    if isinstance(layer, keras.layers.Dense):   # applies to the last axis of its input
        return 2 * math.prod(in_shape[1:-1]) * in_shape[-1] * int(layer.units)
    return 0


def forward_flops(model, input_shape: Sequence | None = None) -> int:
    """Analytic FLOPs (2 × multiply-adds) of one forward pass of ``model`` for one sample.

    Walks ``model.blocks`` (``model.layers`` when it has none) with ``compute_output_shape``,
    counting Dense, ConvND and ConvNDTranspose layers; other layers count 0.
    ``input_shape`` is the per-sample shape (a leading ``None`` is allowed and dropped); for
    this package's Generator/Discriminator it defaults to ``(latent_dim,)`` / ``(R, R, R, 1)``.
    """
    if input_shape is None:
        input_shape = _default_input_shape(model)
    shape = (1,) + _per_sample(input_shape)
    total = 0
    for layer in getattr(model, "blocks", None) or model.layers:
        out = tuple(layer.compute_output_shape(shape))
        total += _layer_flops(layer, shape, out)
        shape = out
    return int(total)


def _default_input_shape(model) -> tuple:
    spec = getattr(model, "spec", None)
    if spec is None:
        raise ValueError(f"{model.name}: pass input_shape (the model has no architecture spec)")
    if isinstance(model, Discriminator):
        return (spec.resolution,) * 3 + (1,)
    return (spec.latent_dim,)


def step_flops(generator, discriminator, batch: int) -> int:
    """Analytic FLOPs of one full train step (D update + G update) at ``batch``: batch × (4 F_G + 10 F_D)."""
    f_g = forward_flops(generator, (generator.spec.latent_dim,))
    r = discriminator.spec.resolution
    f_d = forward_flops(discriminator, (r, r, r, 1))
    return int(batch) * (4 * f_g + 10 * f_d)


# ---------------------------------------------------------------------------------------- device

def device_name() -> str:
    """The accelerator the current Keras backend trains on: the first GPU's name, else the CPU model and cores."""
    if keras.backend.backend() == "jax":
        import jax

        gpus = [d for d in jax.devices() if d.platform == "gpu"]
        if gpus:
            return f"GPU: {gpus[0].device_kind}" + (f" (+{len(gpus) - 1} more)" if len(gpus) > 1 else "")
        return cpu_name()
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        try:
            name = tf.config.experimental.get_device_details(gpus[0]).get("device_name") or gpus[0].name
        except Exception:   # details are best effort
            name = gpus[0].name
        return f"GPU: {name}" + (f" (+{len(gpus) - 1} more)" if len(gpus) > 1 else "")
    return cpu_name()


def cpu_name() -> str:
    """``CPU: <model> (<n> logical cores, bf16: ...)`` from /proc/cpuinfo."""
    model, flags = None, None
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and model is None:
                    model = value.strip()
                elif key.strip() == "flags" and flags is None:
                    flags = set(value.split())
    except OSError:
        pass
    extra = ""
    if flags is not None:   # bfloat16 is only fast with native support (mixed_bfloat16 is emulated otherwise)
        native = sorted(flags & {"avx512_bf16", "amx_bf16"})
        extra = ", bf16: " + ("+".join(native) if native else "none native")
    name = model or platform.processor() or platform.machine()
    return f"CPU: {name} ({os.cpu_count()} logical cores{extra})"


def _version(module: str) -> str | None:
    import sys

    m = sys.modules.get(module)
    return getattr(m, "__version__", None) if m is not None else None


def loadavg() -> float | None:
    """The 1-minute load average (None where the OS has none)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


# ---------------------------------------------------------------------------------------- bench

def bench(arch: str = "rasgan64", batch: int = 24, precision: str = "float32", xla: bool = False,
          steps_per_call: int = 1, width: float = 1.0, resolution: int | None = None, steps: int = 10,
          warmup: int = 2, loss: str = "rasgan", peak_tflops: float | None = None, seed: int = 0,
          conv_transpose: str = "native", profile_dir: str | None = None, profile_calls: int = 3) -> dict:
    """Time the compiled train step of one configuration; returns a dict with :data:`RESULT_KEYS`.

    Builds the pair under the ``precision`` dtype policy and a :class:`GANTrainer`
    (``d_rule="always"``, so every step trains both networks) on ``batch × steps_per_call``
    synthetic furniture grids; every call starts a fresh epoch (outside the timing), so one call
    of ``steps_per_call`` steps is exactly one epoch.  ``warmup`` calls (tracing included) are
    not timed; then ``steps`` calls are timed one by one, each ending with ``.numpy()`` on its
    metrics so the device has finished.  ``ms_per_step`` is the median call time divided by
    ``steps_per_call``; ``achieved_tflops`` divides the analytic :func:`step_flops` by it.
    ``conv_transpose="phase"`` builds G with :mod:`tf3dgan.models.phase_conv`'s transposed convolutions.
    ``profile_dir``: after timing, ``profile_calls`` more calls are traced into a sub-folder named
    by the configuration, and ``result["profile"]`` holds :func:`tf3dgan.perf.profiling.top_kernels`
    (per call) — or ``{"error": ...}`` where the trace cannot be summarised (it needs JAX).
    """
    from tf3dgan.data import datasets as data
    from tf3dgan.data import synthetic

    backend = keras.backend.backend()
    try:
        adapter = get_backend(backend)
    except Tf3dganError:
        raise ValueError(f"the benchmark runs on Keras' tensorflow or jax backend, not {backend!r}") from None
    Trainer = adapter.Trainer
    adapter.tune_for_device()
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    for name, value, low in (("batch", batch, 1), ("steps_per_call", steps_per_call, 1), ("steps", steps, 1),
                             ("warmup", warmup, 0)):
        if int(value) != value or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    spec = make_spec(arch, width, resolution)
    load_before = loadavg()
    generator, discriminator = build_models(spec.arch, spec.width, spec.resolution, dtype_policy=precision,
                                            conv_transpose=conv_transpose)
    grids = synthetic.make_shapes("furniture", batch * steps_per_call, spec.resolution, seed)
    trainer = Trainer(generator, discriminator, data.pack(grids), spec.resolution, batch_size=batch,
                      loss=loss, d_rule="always", precision=precision, seed=seed, xla=bool(xla))

    def call() -> float:
        trainer.start_epoch()      # position 0: the call's steps fit in the epoch (a tiny argsort, untimed
        t0 = time.perf_counter()   # except where the device still runs it when the clock starts)
        metrics = trainer.train_steps(steps_per_call)
        np.asarray(metrics["g_loss"])   # waits until the device has finished
        return time.perf_counter() - t0

    for _ in range(warmup):
        call()
    times = [call() for _ in range(steps)]

    profile = None
    if profile_dir is not None:
        from tf3dgan.perf import profiling

        label = "_".join(str(v) for v in (adapter.short, spec.arch, spec.resolution, f"w{spec.width:g}",
                                          f"b{batch}", precision, "xla" if xla else "", f"spc{steps_per_call}",
                                          conv_transpose) if v != "")
        folder = os.path.join(profile_dir, label)
        with profiling.trace(folder):
            for _ in range(profile_calls):
                call()
        try:
            profile = dict(profiling.top_kernels(folder, calls=profile_calls), folder=folder)
        except (ImportError, FileNotFoundError) as e:
            profile = {"error": f"{type(e).__name__}: {e}", "folder": folder}

    result = {
        "backend": adapter.short, "arch": spec.arch, "batch": int(batch), "precision": precision, "xla": bool(xla),
        "steps_per_call": int(steps_per_call), "width": spec.width, "resolution": spec.resolution, "loss": loss,
        "conv_transpose": conv_transpose,
        **timing_fields(times, steps_per_call, batch, step_flops(generator, discriminator, batch), peak_tflops),
        "warmup_calls": int(warmup), "trace_count": int(trainer.trace_count),
        "device": device_name(), "tf_version": None, "jax_version": None,
        f"{adapter.short}_version": _version(adapter.name),   # the version of the backend's library
        "keras_version": keras.__version__,
        "loadavg_before": load_before, "loadavg_after": loadavg(),
    }
    if profile is not None:
        result["profile"] = profile
    trainer = generator = discriminator = None   # drop the last references before clearing the session
    keras.backend.clear_session()
    gc.collect()
    return result


def timing_fields(times: Sequence[float], steps_per_call: int, batch: int, flop: int,
                  peak_tflops: float | None) -> dict:
    """The result keys derived from the timed calls (seconds, each ``steps_per_call`` steps): the
    median as ``ms_per_step``, min/max, samples/s, and the analytic ``flop`` per step as achieved
    TFLOP/s and % of ``peak_tflops``."""
    ms = 1000.0 * statistics.median(times) / steps_per_call
    tflops = flop / 1e12 / (ms / 1000.0)
    return {
        "ms_per_step": round(ms, 3),
        "ms_per_step_min": round(1000.0 * min(times) / steps_per_call, 3),
        "ms_per_step_max": round(1000.0 * max(times) / steps_per_call, 3),
        "samples_per_s": round(batch * 1000.0 / ms, 3),
        "step_tflop": flop / 1e12, "achieved_tflops": tflops, "achieved_gflops": round(tflops * 1000.0, 3),
        "peak_tflops": peak_tflops,
        "pct_of_peak": None if not peak_tflops else round(100.0 * tflops / peak_tflops, 3),
        "calls_timed": len(times), "steps_timed": len(times) * steps_per_call,
    }


def bench_grid(batches: Iterable[int], precisions: Iterable[str], xlas: Iterable[bool], **kwargs):
    """Yield :func:`bench` results for every (batch, precision, xla) combination, in that nesting order."""
    for b in batches:
        for p in precisions:
            for x in xlas:
                yield bench(batch=b, precision=p, xla=x, **kwargs)


# ---------------------------------------------------------------------------------------- table

TABLE_HEADER = ("config", "ms/step", "samples/s", "GFLOP/s", "% of peak")
_WIDTHS = (58, 10, 11, 10, 11)


def config_label(r: dict) -> str:
    """A short label: ``tf rasgan64 64³ w1 b8 float32 tf.function`` (``xla``; ``jit`` on JAX; + ``spc4`` when
    several steps per call; + ``phase`` for the phase-form transposed convolutions)."""
    compiled = "jit" if r.get("backend") == "jax" else ("xla" if r["xla"] else "tf.function")
    label = (f"{r.get('backend', 'tf')} {r['arch']} {r['resolution']}³ w{r['width']:g} b{r['batch']} "
             f"{r['precision']} {compiled}")
    label += f" spc{r['steps_per_call']}" if r["steps_per_call"] != 1 else ""
    return label + (" phase" if r.get("conv_transpose", "native") != "native" else "")


def format_row(r: dict | Sequence[str], label=None, first_width: int | None = None) -> str:
    """One table row of a result (``label(r)`` names it, :func:`config_label` by default) or of header cells."""
    if isinstance(r, dict):
        pct = "-" if r.get("pct_of_peak") is None else f"{r['pct_of_peak']:.1f}"
        cells = ((label or config_label)(r), f"{r['ms_per_step']:.1f}", f"{r['samples_per_s']:.2f}",
                 f"{r['achieved_gflops']:.1f}", pct)
    else:
        cells = tuple(r)
    return cells[0].ljust(first_width or _WIDTHS[0]) + "".join(c.rjust(w) for c, w in zip(cells[1:], _WIDTHS[1:]))


def format_table(results: Sequence[dict]) -> str:
    return "\n".join([format_row(TABLE_HEADER)] + [format_row(r) for r in results])
