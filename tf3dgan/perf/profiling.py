"""Where the step's time goes: trace a few train-step calls and sum the device kernels by name.

``trace(folder)`` records a profile with the running Keras backend's profiler (``jax.profiler``
under JAX, ``tf.profiler.experimental`` under TensorFlow); both write an XSpace protobuf
(``*.xplane.pb``).  ``top_kernels(folder)`` reads it with ``jax.profiler.ProfileData`` (so it
needs JAX installed, also for a TensorFlow trace) and sums the events per name:

* on a GPU, the kernels of the ``/device:GPU:N`` planes' stream lines (cuDNN/cuBLAS/XLA kernel
  names such as ``sm90_xmma_fprop_implicit_gemm_...`` or ``loop_fusion_12``);
* without one, the host plane's op events: XLA's CPU runtime threads under JAX (fusions, dots),
  TensorFlow's executor threads (``tf_Compute``: ``scope/op:KernelType``) under TensorFlow.

Used by ``tools/bench.py --profile DIR``.
"""
from __future__ import annotations

import contextlib
import os
import re
from collections import defaultdict
from pathlib import Path

# lines of a GPU plane that summarise (rather than are) kernel executions
_SUMMARY_LINES = ("XLA Modules", "XLA Ops", "Steps", "Framework Ops", "Launch Stats", "Source")


@contextlib.contextmanager
def trace(folder: str | os.PathLike):
    """Profile what runs inside the block into ``folder`` (created) with the Keras backend's profiler."""
    import keras

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if keras.backend.backend() == "jax":
        import jax

        with jax.profiler.trace(str(folder)):
            yield
        return
    import tensorflow as tf

    tf.profiler.experimental.start(str(folder))
    try:
        yield
    finally:
        tf.profiler.experimental.stop()


def xplane_files(folder: str | os.PathLike) -> list[Path]:
    """The XSpace files under ``folder``, newest last."""
    return sorted(Path(folder).rglob("*.xplane.pb"), key=lambda p: p.stat().st_mtime)


def _kernel_events(plane):
    """The events of ``plane`` that are kernels/ops (not the summaries or runtime wrappers around them)."""
    lines = list(plane.lines)
    if plane.name.startswith("/device:"):
        # the CUDA streams' lines hold the kernels; others (XLA Modules/Ops, Steps) summarise them
        streams = [line for line in lines if line.name.startswith("Stream")]
        for line in streams or [x for x in lines if not x.name.startswith(_SUMMARY_LINES)]:
            yield from line.events
        return
    # host: XLA's CPU runtime threads (JAX) or TensorFlow's executor threads, without the
    # runtimes' own wrappers (ThunkExecutor::Execute, ExecutorState::Process, ...)
    for line in lines:
        if line.name.startswith(("tf_XLA", "XLA Ops", "tf_Compute")):
            yield from (e for e in line.events if "::" not in e.name)


def top_kernels(folder: str | os.PathLike, limit: int = 15, calls: int = 1) -> dict:
    """Sum the newest profile's kernel events under ``folder`` by name.

    Returns ``{"device": "gpu" | "host", "planes": [...], "total_ms": T, "kernels": [{"name",
    "ms", "count", "share"}, ...], "kinds": [...]}`` with times divided by ``calls`` (the traced
    calls), the ``limit`` largest first; ``share`` is of ``total_ms`` (the summed time of all
    kernels); ``kinds`` sums the same by :func:`kind_of` (e.g. every ``Conv3DBackpropInputV2``).
    Kernels running at once (several streams or threads) make ``total_ms`` exceed the wall time."""
    from jax.profiler import ProfileData

    files = xplane_files(folder)
    if not files:
        raise FileNotFoundError(f"{folder}: no *.xplane.pb profile in it")
    data = ProfileData.from_file(str(files[-1]))
    planes = list(data.planes)
    gpu = [p for p in planes if p.name.startswith("/device:GPU")]
    chosen = gpu or [p for p in planes if p.name.startswith("/host:CPU")]
    totals, counts = defaultdict(int), defaultdict(int)
    for plane in chosen:
        for event in _kernel_events(plane):
            totals[event.name] += int(event.duration_ns)
            counts[event.name] += 1
    kinds, kind_counts = defaultdict(int), defaultdict(int)
    for name, ns in totals.items():
        kinds[kind_of(name)] += ns
        kind_counts[kind_of(name)] += counts[name]
    total = sum(totals.values())
    scale, per = 1e-6 / max(int(calls), 1), 1 / max(int(calls), 1)

    def rows(times, numbers):
        return [{"name": n, "ms": times[n] * scale, "count": numbers[n] * per, "share": times[n] / total if total else 0.0}
                for n in sorted(times, key=times.get, reverse=True)[:limit]]

    return {"device": "gpu" if gpu else "host", "planes": [p.name for p in chosen], "total_ms": total * scale,
            "kernels": rows(totals, counts), "kinds": rows(kinds, kind_counts)}


def kind_of(name: str) -> str:
    """The kind of work an event name stands for: TensorFlow's ``scope/op:Kernel`` → ``Kernel``;
    XLA's numbered ops (``conv_general_dilated.108``, ``loop_fusion_12``) → without the number."""
    if ":" in name and "/" in name:
        return name.rsplit(":", 1)[1]
    return re.sub(r"[._]\d+$", "", name)


def format_kernels(summary: dict, width: int = 90) -> str:
    """A small table of :func:`top_kernels`' result."""
    lines = [f"  {'kernel' if summary['device'] == 'gpu' else 'host op'} (per call; "
             f"{summary['total_ms']:.2f} ms in all on {', '.join(summary['planes']) or 'no plane'})"]
    for k in summary["kernels"]:
        name = k["name"] if len(k["name"]) <= width else "…" + k["name"][-(width - 1):]   # the op is at the end
        lines.append(f"  {k['ms']:9.3f} ms {100 * k['share']:5.1f}% {k['count']:6.1f}×  {name}")
    if summary.get("kinds"):
        lines.append("  by kind: " + ", ".join(f"{k['name']} {100 * k['share']:.0f}%" for k in summary["kinds"][:6]))
    return "\n".join(lines)
