"""The TensorFlow backend: the step of :mod:`tf3dgan.training.algorithm` in a ``tf.function``.

``GANTrainer`` (a :class:`~tf3dgan.training.trainer.Trainer`) keeps every piece of state the step
needs in variables, so the step traces once, and gives the algorithm its context (:class:`_Context`):

* the models are called as they are (their BatchNorm statistics are variables), gradients come from
  ``tf.GradientTape``, ``ctx.cond`` is ``tf.cond``, the random numbers come from one
  ``tf.random.Generator`` (Philox) in the algorithm's order;
* the rule state is read from variables at the start of a step and assigned at its end;
* learning rates in the optimizers' variables (a schedule never retraces);
* loss scaling under ``mixed_float16`` (``keras.optimizers.LossScaleOptimizer``);
* ``steps_per_call`` steps per host call; per-step metrics come back as tensors that the
  caller may read whenever it likes (no host sync per step).

All state (weights, optimizer slots, rule state, RNG, data order) round-trips through
``state_arrays`` / ``load_state_arrays`` as NumPy arrays, so checkpoints are exact and
backend-neutral.

**Several devices** (``strategy=``, a ``tf.distribute`` strategy from ``make_strategy``): the
same algorithm, with the context's replica hooks doing the work.  The step draws the *global*
batch, latents and every other random number in cross-replica context exactly as the
one-device step does (same RNG calls, same order), and each replica
takes its slice by ``replica_id_in_sync_group`` (of the packed bits, before unpacking).  Each
replica gathers the logits of the whole batch (a zero-padded all-reduce: exact), so the
losses, the D accuracy and the validation loss are the one-device formulas on the global
batch, identical on every replica; the loss each replica differentiates is that global loss
÷ replicas, so the optimizers' cross-replica gradient sum is the global gradient (the
gathers are differentiable: their gradient is an all-reduce).  The WGAN-GP penalty is the
mean over replicas of the replicas' means.  The D-rule's ``tf.cond`` and the rule state run
in cross-replica context (decided and updated once).  Build the models inside
``strategy.scope()`` with ``synchronized_bn=True`` for one-device-equivalent BatchNorm.
"""
from __future__ import annotations

import contextlib
import json
import os

import numpy as np
import tensorflow as tf

from tf3dgan.choices import STRATEGIES  # the --strategy names (re-exported)
from tf3dgan.errors import Tf3dganError
from tf3dgan.training import algorithm, checkpoint_keys
from tf3dgan.training.trainer import D_RULES, METRICS, PRECISIONS, Trainer, optional_entry, with_ema_start

__all__ = ["GANTrainer", "D_RULES", "METRICS", "PRECISIONS", "default_precision", "make_strategy", "split_cpu",
           "tune_for_device"]


def default_precision() -> str:
    """``mixed_float16`` when a GPU is visible, else ``float32`` (float16 is ~40× slower on CPU)."""
    return "mixed_float16" if tf.config.list_physical_devices("GPU") else "float32"


def tune_for_device() -> None:
    """Process-wide TensorFlow settings measured to help this step.

    On CPU, Grappler's remapper cannot fuse the discriminator's conv + bias + LeakyReLU
    inside the conditional D update (it logs "remapper failed") and the attempt costs time:
    turning it off made a rasgan64 32³ batch-8 step 15% faster (1.06 s vs 1.24 s) and a
    64³ step no slower (6.68 s vs 6.79 s) on the 2-core CI CPU.  GPUs keep the remapper
    (its cuDNN fusions are where it pays)."""
    if not tf.config.list_physical_devices("GPU"):
        tf.config.optimizer.set_experimental_options({"remapping": False})




def make_strategy(name: str):
    """The ``tf.distribute`` strategy for ``--strategy NAME``, or ``None`` for one device.

    ``one``: ``None`` (the plain one-device step).  ``mirrored``: ``MirroredStrategy`` over all
    visible GPUs, or over the logical CPU devices when there is no GPU and several CPUs are
    configured (see ``split_cpu``).  ``multiworker``: ``MultiWorkerMirroredStrategy`` from the
    ``TF_CONFIG`` environment variable (create it at program start, before other TensorFlow
    work).  ``auto``: ``mirrored`` when more than one GPU is visible, else ``None``."""
    if name not in STRATEGIES:
        raise Tf3dganError(f"--strategy must be one of {', '.join(STRATEGIES)}, got {name!r}")
    if name == "one":
        return None
    if name == "multiworker":
        raw = os.environ.get("TF_CONFIG", "")
        if not raw.strip():
            raise Tf3dganError("--strategy multiworker needs the TF_CONFIG environment variable (the cluster's "
                               "workers and this worker's task), and it is not set; use --strategy mirrored "
                               "for the GPUs of one machine")
        try:
            config = json.loads(raw)
            task = config["task"]
            if not (isinstance(config["cluster"], dict) and config["cluster"].get(task["type"])
                    and 0 <= int(task["index"]) < len(config["cluster"][task["type"]])):
                raise ValueError(f"task {task} is not in the cluster {config['cluster']}")
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise Tf3dganError(f"TF_CONFIG is not a cluster description ({type(e).__name__}: {e}); expected "
                               '{"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", '
                               '"index": N}}') from None
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    if name == "auto":
        return tf.distribute.MirroredStrategy() if len(gpus) > 1 else None
    if gpus:
        return tf.distribute.MirroredStrategy()
    cpus = tf.config.list_logical_devices("CPU")
    return tf.distribute.MirroredStrategy([d.name for d in cpus]) if len(cpus) > 1 else tf.distribute.MirroredStrategy()


def split_cpu(n: int) -> None:
    """Split the host CPU into ``n`` logical devices (for testing ``mirrored`` without GPUs).

    Must run before TensorFlow initialises its devices (at the very start of the process);
    afterwards it raises ``Tf3dganError``.  Does nothing when the CPU is already split ``n`` ways."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    current = tf.config.get_logical_device_configuration(cpu)
    if current is not None and len(current) == n:
        return
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(n)])
    except RuntimeError as e:
        raise Tf3dganError(f"cannot split the CPU into {n} devices: TensorFlow's devices are already "
                           f"initialised (call split_cpu first thing in the process) ({e})") from None


class _Context:
    """The algorithm's context (see :mod:`tf3dgan.training.algorithm`) on TensorFlow: one device, or the
    replicas of a ``tf.distribute`` strategy (the replica hooks then slice, gather and all-reduce)."""

    def __init__(self, trainer: "GANTrainer"):
        self.t = trainer
        self.data, self.val = trainer._data, trainer._val
        self.replicas = trainer.replicas
        self.strategy = trainer.strategy

    # random numbers, in the algorithm's order, from the trainer's one generator
    def latents(self, phase: str):
        return self.t._latent()

    def mix_weights(self):
        return self.t.rng.uniform((self.t.batch_size, 1, 1, 1, 1))

    def validation_rows(self, n):
        return self.t.rng.uniform((self.t.batch_size,), 0, n, dtype=tf.int32)

    def uniforms(self, name: str, shape):
        return self.t.rng.uniform(shape)

    def _variables(self, name: str):
        model = self.t.G if name == "g" else self.t.G_ema
        return model.trainable_variables + model.non_trainable_variables

    def weights(self, name: str):
        return [tf.identity(v.value) for v in self._variables(name)]

    def assign(self, name: str, values):
        for v, value in zip(self._variables(name), values):
            v.assign(value)

    # the models
    def G(self, z, training: bool):
        return self.t.G(z, training=training)

    def D(self, x, training: bool):
        return self.t.D(x, training=training)

    def input_gradient(self, fn, x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            out = fn(x)
        return tape.gradient(out, x)

    def minimize(self, name: str, loss_fn, when=None):
        t = self.t
        opt, model = (t.opt_g, t.G) if name == "g" else (t.opt_d, t.D)
        with tf.GradientTape() as tape:
            loss, aux = loss_fn()
            if self.replicas > 1:   # each replica's share: the optimizer sums the replicas' gradients
                loss = loss / self.replicas
            scaled = opt.scale_loss(loss) if t.loss_scaled else loss
        grads = tape.gradient(scaled, model.trainable_variables)
        if self.strategy is not None and t.loss_scaled:
            # Keras' LossScaleOptimizer decides "finite?" from the first replica's gradients before
            # they are summed; make every replica see an overflow on any replica.
            finite = [tf.reduce_all(tf.math.is_finite(g)) for g in grads if g is not None]
            bad = tf.cast(tf.logical_not(tf.reduce_all(finite)), tf.float32)
            bad = tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, bad)
            poison = tf.where(bad > 0, tf.constant(np.nan, tf.float32), tf.constant(1.0, tf.float32))
            grads = [None if g is None else g * tf.cast(poison, g.dtype) for g in grads]
        if when is None:
            opt.apply(grads, model.trainable_variables)
            return aux
        # Apply, then put the old values back unless when(aux): an optimizer step cannot sit inside a tf.cond
        # in a replica (its gradient all-reduce is a synchronisation point). The decision is the same on every
        # replica (it is made from gathered, global values).
        apply = when(aux)
        kept = model.trainable_variables + opt.variables
        before = [tf.identity(v.value) for v in kept]
        with tf.control_dependencies(before):
            opt.apply(grads, model.trainable_variables)
        for v, old in zip(kept, before):
            v.assign(tf.where(apply, v.value, old))
        return aux

    def cond(self, pred, true_fn, false_fn):
        return tf.cond(pred, true_fn, false_fn)

    def loss_scale(self):
        return self.t.opt_g.dynamic_scale if self.t.loss_scaled else tf.constant(1.0)

    # replica hooks
    def per_replica(self, fn, *args):
        """``fn(*args)``; with a strategy, on every replica, returning replica 0's copy of the values
        every replica holds identically (global losses)."""
        if self.strategy is None:
            return fn(*args)
        out = self.strategy.run(fn, args=args)
        return tf.nest.map_structure(lambda v: self.strategy.experimental_local_results(v)[0], out)

    def local(self, x):
        """This replica's slice (by ``replica_id_in_sync_group``) of a global-batch tensor."""
        if self.strategy is None or x is None:
            return x
        rid = tf.distribute.get_replica_context().replica_id_in_sync_group
        n = self.t.local_batch
        return x[rid * n:(rid + 1) * n]

    def gather(self, *xs):
        """The global batch of per-replica tensors (N_local, ...): each replica's slice zero-padded into
        its place, summed over replicas (adding zeros is exact).  Differentiable: the gradient of the sum
        is the all-reduced gradient, of which each replica keeps its slice."""
        if self.strategy is None:
            return xs
        ctx = tf.distribute.get_replica_context()
        rid, n = ctx.replica_id_in_sync_group, self.t.local_batch
        before, after = rid * n, (self.replicas - 1 - rid) * n
        padded = [tf.pad(x, [[before, after]] + [[0, 0]] * (x.shape.rank - 1)) for x in xs]
        return ctx.all_reduce(tf.distribute.ReduceOp.SUM, padded)

    def replica_mean(self, x):
        if self.strategy is None:
            return x
        return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.MEAN, x)


class GANTrainer(Trainer):
    """Trains a (generator, discriminator) pair on an in-memory voxel dataset (TensorFlow backend).

    ``strategy``: a ``tf.distribute`` strategy (``make_strategy``) to train on several
    devices, or ``None`` for one.  With a strategy, build the models inside
    ``strategy.scope()`` (best with ``synchronized_bn=True``); ``batch_size`` is the global
    batch and must divide evenly over ``strategy.num_replicas_in_sync``; ``xla`` is refused.
    Checkpoints (``state_arrays``) have the same keys and shapes either way."""

    def __init__(self, generator, discriminator, data_packed: np.ndarray, dim: int, *, batch_size: int,
                 g_lr: float = 0.002, d_lr: float = 0.00005, seed: int = 0,
                 validation_packed: np.ndarray | None = None, xla: bool = False, strategy=None, **settings):
        super().__init__(generator, discriminator, data_packed, dim, batch_size=batch_size, **settings)
        self.strategy = strategy
        self.replicas = int(strategy.num_replicas_in_sync) if strategy is not None else 1
        if batch_size % self.replicas:
            raise ValueError(f"batch size {batch_size} does not split evenly over {self.replicas} replicas; "
                             f"use a multiple of {self.replicas}")
        if strategy is not None:
            outside = [v.path for v in generator.weights + discriminator.weights
                       if not strategy.extended.variable_created_in_scope(getattr(v, "value", v))]
            if outside:
                raise ValueError(f"{len(outside)} model variables (e.g. {outside[0]}) were not created under "
                                 "strategy.scope(); build the models inside it")
            if xla:
                raise ValueError("xla=True is not supported with a tf.distribute strategy (the replicas' "
                                 "synchronisation points cannot be compiled by XLA on every device); drop --xla")
        self.local_batch = self.batch_size // self.replicas
        n = int(data_packed.shape[0])
        with strategy.scope() if strategy is not None else contextlib.nullcontext():
            self._make_optimizers(g_lr, d_lr)
            self._make_ema_generator()
            self._data = tf.constant(data_packed, dtype=tf.uint8)
            self._val = None if validation_packed is None else tf.constant(validation_packed, dtype=tf.uint8)
            self.rng = tf.random.Generator.from_seed(seed)
            self._state = {key: tf.Variable(value, trainable=False)   # the rule state (algorithm.RULE_STATE)
                           for key, value in algorithm.initial_rule_state(n).items()}
        self._run_fn = tf.function(self._run_steps, jit_compile=bool(xla))
        self._shuffle_fn = tf.function(self._shuffle_orders)
        self._sample = tf.function(lambda z: self.sampler(z, training=False))

    # ------------------------------------------------------------------ Trainer's backend half
    def _shuffle(self) -> None:
        self._shuffle_fn()

    def _run(self, n: int) -> dict:
        return self._run_fn(tf.constant(n, dtype=tf.int32))

    def _set_rates(self, g_lr: float, d_lr: float) -> None:
        self.opt_g.learning_rate = g_lr
        self.opt_d.learning_rate = d_lr

    def _get_rates(self) -> tuple[float, float]:
        return float(self.opt_g.learning_rate.numpy()), float(self.opt_d.learning_rate.numpy())

    def generate(self, z: np.ndarray) -> np.ndarray:
        """Generator output (inference-mode BatchNorm; G's moving average with ``g_ema``) for latent vectors ``z``
        as float32 (N, D, H, W)."""
        return self._sample(tf.constant(z, dtype=tf.float32)).numpy()[..., 0]

    def sync_models(self) -> None:
        """Nothing to do: the Keras models' variables are the trained weights."""

    # ------------------------------------------------------------------ checkpoint state
    def _named_variables(self):
        """``(key, variable, positional key)`` for everything in a checkpoint: the models' and optimizers'
        variables (:func:`checkpoint_keys.checkpoint_variables`), then the rule state and the RNG."""
        yield from checkpoint_keys.checkpoint_variables(self.G, self.D, self.opt_g, self.opt_d, self.G_ema)
        for key, v in self._state.items():
            yield f"trainer/{key}", v, None
        yield "trainer/rng", self.rng.state, None

    def state_arrays(self) -> dict[str, np.ndarray]:
        """Every variable of the run (weights, optimizer slots, rule state, RNG) as NumPy arrays."""
        return {key: np.array(v.numpy()) for key, v, _ in self._named_variables()}

    def load_state_arrays(self, arrays: dict[str, np.ndarray], source: str = "checkpoint") -> None:
        """Restore ``state_arrays`` output (or a checkpoint with positional keys); a missing or mis-shaped
        entry is a CheckpointError naming the variable."""
        entries = list(self._named_variables())
        arrays = with_ema_start(checkpoint_keys.upgrade(arrays, entries))
        pending = []
        for key, v, _ in entries:
            value = checkpoint_keys.entry(arrays, key, v, source, optional=optional_entry(key))
            if value is not None:
                pending.append((v, value))
        for v, value in pending:
            v.assign(value)
        self._pos = int(self._state["pos"].numpy())

    # ------------------------------------------------------------------ graph code
    def _shuffle_orders(self):
        n = tf.shape(self._data)[0]
        keys = self.rng.uniform(tf.stack([2, n]))
        self._state["perm"].assign(tf.argsort(keys, axis=1, stable=True, direction="ASCENDING"))
        self._state["pos"].assign(0)

    def _latent(self):
        return self.rng.normal((self.batch_size, self.latent_dim))

    def _run_steps(self, n):
        self.trace_count += 1   # Python side effect: runs only while tracing
        ctx = _Context(self)
        arrays = {k: tf.TensorArray(tf.float32, size=n) for k in METRICS}
        for i in tf.range(n):
            state = {key: v.value() for key, v in self._state.items()}
            new_state, metrics = algorithm.train_step(ctx, self.settings, state)
            for key, value in new_state.items():
                if value is not state[key]:
                    self._state[key].assign(value)
            arrays = {k: arrays[k].write(i, metrics[k]) for k in METRICS}
        return {k: arrays[k].stack() for k in METRICS}
