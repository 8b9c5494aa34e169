"""Body of tests/test_distributed.py, run as ``python tests/_dist_worker.py OUT_DIR`` in a fresh process.

The host CPU must be split into logical devices before TensorFlow initialises them, which
a pytest process that already ran TensorFlow cannot do; so this script splits it into two
first thing, runs every scenario once (each trainer traces once: the costly part) and
writes what the tests check: ``OUT_DIR/arrays.npz`` (metrics and state arrays) and
``OUT_DIR/results.json`` (everything else).  Scenarios: ``sync`` (rasgan, ratio rule) and
``minimax`` (minimax loss, accuracy rule), each a one-device trainer and a mirrored trainer
with synchronized BatchNorm started from the same state; ``unsync`` (mirrored, plain
BatchNorm, the ``sync`` start); then checkpoint interchange, tracing and argument errors.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from tf3dgan.training.backends.tensorflow import split_cpu

split_cpu(2)

import keras  # noqa: E402
import numpy as np  # noqa: E402

from tf3dgan.data.datasets import pack  # noqa: E402
from tf3dgan.data.synthetic import make_shapes  # noqa: E402
from tf3dgan.errors import Tf3dganError  # noqa: E402
from tf3dgan.models.networks import build_models  # noqa: E402
from tf3dgan.training.backends.tensorflow import GANTrainer, make_strategy, tune_for_device  # noqa: E402

STEPS = 4            # one epoch: 32 grids / global batch 8
DATA = pack(make_shapes("boxes", 32, 8, seed=1))
VAL = pack(make_shapes("boxes", 16, 8, seed=2))


def models(strategy=None, synchronized_bn=False, precision="float32"):
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        return build_models("rasgan64", width=0.125, resolution=8, output_activation="sigmoid",
                            synchronized_bn=synchronized_bn, dtype_policy=precision)


def trainer(strategy=None, synchronized_bn=False, **kw):
    g, d = models(strategy, synchronized_bn, kw.get("precision", "float32"))
    kw = dict(dict(batch_size=8, seed=3, g_lr=0.01, d_lr=0.001, validation_packed=VAL), **kw)
    return GANTrainer(g, d, DATA, 8, strategy=strategy, **kw)


def run(t, calls=(2, 2)):
    """One epoch in ``calls`` host calls; the per-step metrics as NumPy arrays."""
    t.start_epoch()
    parts = [{k: v.numpy() for k, v in t.train_steps(n).items()} for n in calls]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def replica_spread(t):
    """Largest difference between a replica's copy of a variable and replica 0's, over
    ``(weights, BatchNorm moving statistics, optimizer variables, trainer state and RNG)``."""
    def spread(variables):
        worst = 0.0
        for v in variables:
            distributed = v.value if isinstance(v, keras.Variable) else v
            copies = [np.asarray(c.numpy(), np.float64) for c in distributed.values]
            worst = max([worst] + [float(np.max(np.abs(c - copies[0]))) for c in copies[1:]])
        return worst
    models_ = t.G.weights + t.D.weights
    moving = [v for v in models_ if "moving" in v.path]
    weights = [v for v in models_ if "moving" not in v.path]
    state = list(t._state.values()) + [t.rng.state]
    optimizers = t.opt_g.variables + t.opt_d.variables
    return {"weights": spread(weights), "bn_moving": spread(moving), "optimizer": spread(optimizers),
            "trainer_state": spread(state)}


def main(out_dir: str) -> None:
    tune_for_device()
    keras.utils.set_random_seed(0)
    arrays, results = {}, {"seconds": {}}
    strategy = make_strategy("mirrored")
    results["replicas"] = int(strategy.num_replicas_in_sync)
    results["devices"] = list(strategy.extended.worker_devices)

    def record(scenario, side, t, metrics):
        for k, v in metrics.items():
            arrays[f"{scenario}/{side}/metric/{k}"] = v
        for k, v in t.state_arrays().items():
            arrays[f"{scenario}/{side}/state/{k}"] = v

    start_state = {}
    scenarios = (("sync", dict(loss="rasgan"), (2, 2)),
                 ("minimax", dict(loss="minimax", d_rule="accuracy", accuracy_threshold=0.6), (2, 2)),
                 ("wgan", dict(loss="wgan-gp"), (2,)))
    for scenario, kw, calls in scenarios:
        tic = time.perf_counter()
        one = trainer(**kw)
        mirrored = trainer(strategy, synchronized_bn=True, **kw)
        start_state[scenario] = one.state_arrays()
        mirrored.load_state_arrays(start_state[scenario])           # same initial weights, RNG and rule state
        if scenario == "sync":
            record("start", "one", one, {})
            record("start", "mirrored", mirrored, {})
        record(scenario, "one", one, run(one, calls))
        record(scenario, "mirrored", mirrored, run(mirrored, calls))
        results[f"{scenario}_replica_spread"] = replica_spread(mirrored)
        results[f"{scenario}_trace_count"] = [one.trace_count, mirrored.trace_count]
        results["seconds"][scenario] = time.perf_counter() - tic
        if scenario == "sync":
            keep = one, mirrored

    # unsynchronized BatchNorm from the same start as "sync"
    tic = time.perf_counter()
    plain = trainer(strategy, synchronized_bn=False, loss="rasgan")
    plain.load_state_arrays(start_state["sync"])
    record("unsync", "mirrored", plain, run(plain))
    results["unsync_replica_spread"] = replica_spread(plain)
    results["seconds"]["unsync"] = time.perf_counter() - tic

    # checkpoints interchange: the mirrored run's state into the one-device trainer, one more
    # epoch on both (more calls: still one trace each), and the samples of both
    tic = time.perf_counter()
    one, mirrored = keep
    one.load_state_arrays(mirrored.state_arrays())
    for t in (one, mirrored):
        t.set_learning_rates(0.005, 0.0005)   # mirrored learning-rate variables: no retrace
    results["learning_rates"] = [one.learning_rates, mirrored.learning_rates]
    record("resumed", "loaded", one, {})
    record("resumed", "source", mirrored, {})
    record("resumed", "one", one, run(one, calls=(1, 3)))
    record("resumed", "mirrored", mirrored, run(mirrored, calls=(1, 1, 2)))
    z = np.random.default_rng(0).standard_normal((4, one.latent_dim)).astype(np.float32)
    arrays["generate/one"], arrays["generate/mirrored"] = one.generate(z), mirrored.generate(z)
    results["resumed_trace_count"] = [one.trace_count, mirrored.trace_count]
    results["seconds"]["resumed"] = time.perf_counter() - tic

    # mixed_float16: loss scaling across replicas, and an overflow that must skip the update everywhere
    tic = time.perf_counter()
    t = trainer(strategy, synchronized_bn=True, precision="mixed_float16", d_rule="always")
    t.start_epoch()
    first = {k: v.numpy().tolist() for k, v in t.train_steps(2).items()}
    huge = 2.0 ** 28
    t.opt_g.dynamic_scale.assign(huge)
    t.opt_d.dynamic_scale.assign(huge)
    g_before = [w.numpy().copy() for w in t.G.trainable_weights]
    overflow = {k: v.numpy().tolist() for k, v in t.train_steps(1).items()}
    unchanged = all(np.array_equal(b, w.numpy()) for b, w in zip(g_before, t.G.trainable_weights))
    results["float16"] = {"first": first, "overflow": overflow, "g_unchanged_after_overflow": unchanged,
                          "scales": [[float(c.numpy()) for c in opt.dynamic_scale.value.values]
                                     for opt in (t.opt_g, t.opt_d)],
                          "replica_spread": replica_spread(t), "trace_count": t.trace_count}
    results["seconds"]["float16"] = time.perf_counter() - tic

    errors = {}
    attempts = {
        "batch_not_divisible": lambda: trainer(strategy, synchronized_bn=True, batch_size=7),
        "models_outside_scope": lambda: GANTrainer(*models(None), DATA, 8, batch_size=8, strategy=strategy),
        "xla": lambda: trainer(strategy, synchronized_bn=True, xla=True),
        "split_cpu_late": lambda: split_cpu(3),
    }
    for name, attempt in attempts.items():
        try:
            attempt()
            errors[name] = None
        except Exception as e:
            errors[name] = [type(e).__name__, isinstance(e, Tf3dganError), str(e)]
    results["errors"] = errors

    np.savez(os.path.join(out_dir, "arrays.npz"), **arrays)
    with open(os.path.join(out_dir, "results.json"), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1])
