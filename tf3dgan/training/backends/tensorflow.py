"""The compiled GAN train step (TensorFlow backend).

``GANTrainer`` owns the two optimizers, the training data (in memory, packed bits) and
every piece of state the step needs, all as variables so the step traces once:

* D update on a real batch, then G update on a **fresh** real batch (as the seed does),
  both with BatchNorm in training mode;
* the adaptive discriminator rule, evaluated in the graph: ``ratio`` (the RaSGAN seed:
  exponential moving averages, α = 0.3, of both losses; train D next step only when
  2·D_smooth > G_smooth), ``accuracy`` (3D-GAN: train D only when its accuracy on the last
  batch was ≤ 0.8) or ``always``;
* batches drawn inside the graph from two per-epoch permutations of the dataset (one for
  the D step, one for the G step: an epoch is one pass, as in the seed);
* learning rates in the optimizers' variables (a schedule never retraces);
* loss scaling under ``mixed_float16`` (``keras.optimizers.LossScaleOptimizer``);
* ``steps_per_call`` steps per host call; per-step metrics come back as tensors that the
  caller may read whenever it likes (no host sync per step).

All state (weights, optimizer slots, rule state, RNG, data order) round-trips through
``state_arrays`` / ``load_state_arrays`` as NumPy arrays, so checkpoints are exact and
backend-neutral.

**Several devices** (``strategy=``, a ``tf.distribute`` strategy from ``make_strategy``):
the step draws the *global* batch, latents and every other random number in cross-replica
context exactly as the one-device step does (same RNG calls, same order), and each replica
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

from tf3dgan.errors import Tf3dganError
from tf3dgan.models import losses
from tf3dgan.training.trainer import D_RULES, METRICS, PRECISIONS, adam, check_settings, checkpoint_entry, checkpoint_variables

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


from tf3dgan.choices import STRATEGIES  # noqa: E402


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


class GANTrainer:
    """Trains a (generator, discriminator) pair on an in-memory voxel dataset.

    ``strategy``: a ``tf.distribute`` strategy (``make_strategy``) to train on several
    devices, or ``None`` for one.  With a strategy, build the models inside
    ``strategy.scope()`` (best with ``synchronized_bn=True``); ``batch_size`` is the global
    batch and must divide evenly over ``strategy.num_replicas_in_sync``; ``xla`` is refused.
    Checkpoints (``state_arrays``) have the same keys and shapes either way."""

    def __init__(self, generator, discriminator, data_packed: np.ndarray, dim: int, *, batch_size: int,
                 loss: str = "rasgan", d_rule: str | None = None, g_lr: float = 0.002, d_lr: float = 0.00005,
                 precision: str = "float32", seed: int = 0, validation_packed: np.ndarray | None = None,
                 xla: bool = False, ema_alpha: float = 0.3, accuracy_threshold: float = 0.8, strategy=None):
        n = int(data_packed.shape[0])
        self.objective, self.d_rule = check_settings(loss, d_rule, precision, batch_size, n)
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
        self.G, self.D = generator, discriminator
        self.dim, self.batch_size, self.precision = int(dim), int(batch_size), precision
        self.local_batch = self.batch_size // self.replicas
        self.latent_dim = int(generator.spec.latent_dim)
        self.steps_per_epoch = n // self.batch_size
        self.ema_alpha, self.accuracy_threshold = float(ema_alpha), float(accuracy_threshold)
        self.loss_scaled = precision == "mixed_float16"
        with strategy.scope() if strategy is not None else contextlib.nullcontext():
            self.opt_g = adam(g_lr, self.loss_scaled)
            self.opt_d = adam(d_lr, self.loss_scaled)
            self.opt_g.build(self.G.trainable_variables)
            self.opt_d.build(self.D.trainable_variables)

            self._data = tf.constant(data_packed, dtype=tf.uint8)
            self._val = None if validation_packed is None else tf.constant(validation_packed, dtype=tf.uint8)
            self._shifts = tf.constant(np.arange(7, -1, -1, dtype=np.uint8))
            self.rng = tf.random.Generator.from_seed(seed)
            var = lambda value, dtype: tf.Variable(value, dtype=dtype, trainable=False)  # noqa: E731
            self._state = {  # everything the step reads or writes besides weights and optimizer slots
                "perm": var(np.tile(np.arange(n, dtype=np.int32), (2, 1)), tf.int32),
                "pos": var(0, tf.int32),             # step within the epoch
                "train_d": var(True, tf.bool),       # the rule's decision for the next step
                "d_smooth": var(0.0, tf.float32),
                "g_smooth": var(0.0, tf.float32),
                "since_d": var(0, tf.int32),         # steps since D was last trained
                "ratio": var(1, tf.int32),           # the seed's "G/D train ratio"
            }
        self.trace_count = 0
        self._host_pos = 0   # the step within the epoch, tracked on the host (no device read per call)
        self._run = tf.function(self._run_steps, jit_compile=bool(xla))
        self._new_epoch = tf.function(self._shuffle)
        self._sample = tf.function(lambda z: self.G(z, training=False))

    # ------------------------------------------------------------------ public API
    @property
    def position(self) -> int:
        """Steps already taken in the current epoch."""
        return self._host_pos

    def start_epoch(self) -> None:
        """Draw this epoch's two data orders (in the graph, from the trainer's RNG)."""
        self._new_epoch()
        self._host_pos = 0

    def set_learning_rates(self, g_lr: float, d_lr: float) -> None:
        self.opt_g.learning_rate = g_lr
        self.opt_d.learning_rate = d_lr

    @property
    def learning_rates(self) -> tuple[float, float]:
        return float(self.opt_g.learning_rate.numpy()), float(self.opt_d.learning_rate.numpy())

    def train_steps(self, n: int) -> dict:
        """Run ``n`` train steps in one compiled call; returns per-step metric tensors (length n).

        The steps must fit in the current epoch (call ``start_epoch`` first and after every
        ``steps_per_epoch`` steps): past its end there is no data left in this epoch's order."""
        if n < 1 or self._host_pos + n > self.steps_per_epoch:
            raise ValueError(f"{n} steps from step {self._host_pos} run past the epoch's {self.steps_per_epoch} "
                             "steps; call start_epoch() first")
        self._host_pos += n
        return self._run(tf.constant(n, dtype=tf.int32))

    def generate(self, z: np.ndarray) -> np.ndarray:
        """Generator output (inference-mode BatchNorm) for latent vectors ``z`` as float32 (N, D, H, W)."""
        return self._sample(tf.constant(z, dtype=tf.float32)).numpy()[..., 0]

    # ------------------------------------------------------------------ checkpoint state
    def _named_variables(self):
        """``(key, variable)`` for everything in a checkpoint: ``trainer_base.checkpoint_variables``
        (weights, optimizers), then the step's own state and the RNG."""
        yield from checkpoint_variables(self.G, self.D, self.opt_g, self.opt_d)
        for key, v in self._state.items():
            yield f"trainer/{key}", v
        yield "trainer/rng", self.rng.state

    def state_arrays(self) -> dict[str, np.ndarray]:
        """Every variable of the run (weights, optimizer slots, rule state, RNG) as NumPy arrays."""
        return {key: np.array(v.numpy()) for key, v in self._named_variables()}

    def load_state_arrays(self, arrays: dict[str, np.ndarray], source: str = "checkpoint") -> None:
        """Restore ``state_arrays`` output; a missing or mis-shaped entry is a CheckpointError."""
        pending = []
        for key, v in self._named_variables():
            value = checkpoint_entry(arrays, key, v.shape, source)
            if value is not None:
                pending.append((v, value))
        for v, value in pending:
            v.assign(value)
        self._host_pos = int(self._state["pos"].numpy())

    # ------------------------------------------------------------------ graph code
    def _shuffle(self):
        n = tf.shape(self._data)[0]
        keys = self.rng.uniform(tf.stack([2, n]))
        self._state["perm"].assign(tf.argsort(keys, axis=1, stable=True, direction="ASCENDING"))
        self._state["pos"].assign(0)

    def _unpack(self, packed):
        bits = tf.bitwise.bitwise_and(tf.bitwise.right_shift(packed[:, :, None], self._shifts), 1)
        d = self.dim
        return tf.cast(tf.reshape(bits, (-1, d, d, d, 1)), tf.float32)

    def _real_batch(self, which: int):
        start = self._state["pos"] * self.batch_size
        idx = self._state["perm"][which, start:start + self.batch_size]
        return self._unpack(tf.gather(self._data, idx))

    def _latent(self):
        return self.rng.normal((self.batch_size, self.latent_dim))

    def _gradient_penalty(self, real, fake):
        eps = self.rng.uniform((self.batch_size, 1, 1, 1, 1))
        mixed = eps * real + (1.0 - eps) * tf.cast(fake, tf.float32)
        with tf.GradientTape() as tape:
            tape.watch(mixed)
            scores = self.D(mixed, training=True)
        return losses.gradient_penalty_from_grads(tape.gradient(scores, mixed))

    def _d_forward(self, real, z):
        fake = self.G(z, training=True)
        real_logits, fake_logits = self.D(real, training=True), self.D(fake, training=True)
        d_loss, _ = self.objective.fn(real_logits, fake_logits)
        if self.objective.name == "wgan-gp":
            d_loss = d_loss + losses.GP_WEIGHT * self._gradient_penalty(real, fake)
        return d_loss, real_logits, fake_logits

    def _scaled(self, opt, loss):
        """The loss to differentiate (call inside the tape): loss-scaled under float16."""
        return opt.scale_loss(loss) if self.loss_scaled else loss

    def _apply(self, opt, model, tape, scaled_loss):
        opt.apply(tape.gradient(scaled_loss, model.trainable_variables), model.trainable_variables)

    def _val_loss(self, fake_logits):
        """D's loss on a random validation batch (inference-mode BN) against this step's fakes."""
        n = tf.shape(self._val)[0]
        idx = self.rng.uniform((self.batch_size,), 0, n, dtype=tf.int32)
        real_logits = self.D(self._unpack(tf.gather(self._val, idx)), training=False)
        return self.objective.fn(real_logits, fake_logits)[0]

    def _step(self):
        s = self._state
        trained = s["train_d"].value()
        real, z = self._real_batch(0), self._latent()

        def train_d():
            with tf.GradientTape() as tape:
                out = self._d_forward(real, z)
                scaled = self._scaled(self.opt_d, out[0])
            self._apply(self.opt_d, self.D, tape, scaled)
            return out

        d_loss, real_logits, fake_logits = tf.cond(trained, train_d, lambda: self._d_forward(real, z))
        val_loss = self._val_loss(fake_logits) if self._val is not None else tf.constant(np.nan, tf.float32)

        real2, z2 = self._real_batch(1), self._latent()
        with tf.GradientTape() as tape:
            fake2 = self.G(z2, training=True)
            _, g_loss = self.objective.fn(self.D(real2, training=True), self.D(fake2, training=True))
            scaled = self._scaled(self.opt_g, g_loss)
        self._apply(self.opt_g, self.G, tape, scaled)

        accuracy = losses.d_accuracy(self.objective, real_logits, fake_logits)
        return self._update_rule(trained, d_loss, g_loss, accuracy, val_loss)

    def _update_rule(self, trained, d_loss, g_loss, accuracy, val_loss):
        """The rule: decide whether D trains on the next step; advance the step; the metrics."""
        s = self._state
        a = self.ema_alpha
        s["d_smooth"].assign(a * d_loss + (1.0 - a) * s["d_smooth"])
        s["g_smooth"].assign(a * g_loss + (1.0 - a) * s["g_smooth"])
        if self.d_rule == "ratio":
            s["train_d"].assign(2.0 * s["d_smooth"] > s["g_smooth"])
        elif self.d_rule == "accuracy":
            s["train_d"].assign(accuracy <= self.accuracy_threshold)
        else:
            s["train_d"].assign(True)
        s["ratio"].assign(tf.where(trained, s["since_d"], s["ratio"]))
        s["since_d"].assign(tf.where(trained, 1, s["since_d"] + 1))
        s["pos"].assign_add(1)
        scale = self.opt_g.dynamic_scale if self.loss_scaled else tf.constant(1.0)
        return {"d_loss": d_loss, "g_loss": g_loss, "val_loss": val_loss,
                "d_trained": tf.cast(trained, tf.float32), "ratio": tf.cast(s["ratio"], tf.float32),
                "d_accuracy": accuracy, "loss_scale": tf.cast(scale, tf.float32)}

    # ------------------------------------------------------------------ graph code: several replicas
    def _local(self, x):
        """This replica's slice (by ``replica_id_in_sync_group``) of a global-batch tensor."""
        rid = tf.distribute.get_replica_context().replica_id_in_sync_group
        return x[rid * self.local_batch:(rid + 1) * self.local_batch]

    def _gather(self, *xs):
        """The global batch of per-replica tensors (N_local, ...): each replica's slice zero-padded
        into its place, summed over replicas (adding zeros is exact).  Differentiable: the
        gradient of the sum is the all-reduced gradient, of which each replica keeps its slice."""
        ctx = tf.distribute.get_replica_context()
        rid = ctx.replica_id_in_sync_group
        before = rid * self.local_batch
        after = (self.replicas - 1 - rid) * self.local_batch
        padded = [tf.pad(x, [[before, after]] + [[0, 0]] * (x.shape.rank - 1)) for x in xs]
        return ctx.all_reduce(tf.distribute.ReduceOp.SUM, padded)

    def _replica_d_forward(self, real, z, eps):
        """D's global loss on this step's batch (``real``/``z``/``eps``: this replica's slices)
        and the global logits."""
        fake = self.G(z, training=True)
        real_logits, fake_logits = self._gather(self.D(real, training=True), self.D(fake, training=True))
        d_loss, _ = self.objective.fn(real_logits, fake_logits)
        if self.objective.name == "wgan-gp":
            mixed = eps * real + (1.0 - eps) * tf.cast(fake, tf.float32)
            with tf.GradientTape() as tape:
                tape.watch(mixed)
                scores = self.D(mixed, training=True)
            penalty = losses.gradient_penalty_from_grads(tape.gradient(scores, mixed))   # this replica's mean
            penalty = tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.MEAN, penalty)
            d_loss = d_loss + losses.GP_WEIGHT * penalty
        return d_loss, real_logits, fake_logits

    def _replica_apply(self, opt, model, tape, scaled_loss):
        """``opt.apply`` in replica context: Keras' optimizer all-reduces (sums) the gradients."""
        grads = tape.gradient(scaled_loss, model.trainable_variables)
        if self.loss_scaled:
            # Keras' LossScaleOptimizer decides "finite?" from the first replica's gradients
            # before they are summed; make every replica see an overflow on any replica.
            finite = [tf.reduce_all(tf.math.is_finite(g)) for g in grads if g is not None]
            bad = tf.cast(tf.logical_not(tf.reduce_all(finite)), tf.float32)
            bad = tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, bad)
            poison = tf.where(bad > 0, tf.constant(np.nan, tf.float32), tf.constant(1.0, tf.float32))
            grads = [None if g is None else g * tf.cast(poison, g.dtype) for g in grads]
        opt.apply(grads, model.trainable_variables)

    def _replica_d(self, train: bool, packed, z, eps, val_packed):
        """One replica's D phase: forward (and update when ``train``), accuracy, validation loss."""
        real, z = self._unpack(self._local(packed)), self._local(z)
        eps = None if eps is None else self._local(eps)
        if train:
            with tf.GradientTape() as tape:
                d_loss, real_logits, fake_logits = self._replica_d_forward(real, z, eps)
                scaled = self._scaled(self.opt_d, d_loss / self.replicas)
            self._replica_apply(self.opt_d, self.D, tape, scaled)
        else:
            d_loss, real_logits, fake_logits = self._replica_d_forward(real, z, eps)
        accuracy = losses.d_accuracy(self.objective, real_logits, fake_logits)
        if val_packed is None:
            val_loss = tf.constant(np.nan, tf.float32)
        else:
            (val_logits,) = self._gather(self.D(self._unpack(self._local(val_packed)), training=False))
            val_loss = self.objective.fn(val_logits, fake_logits)[0]
        return d_loss, tf.cast(accuracy, tf.float32), val_loss

    def _replica_g(self, packed, z):
        real, z = self._unpack(self._local(packed)), self._local(z)
        with tf.GradientTape() as tape:
            fake = self.G(z, training=True)
            real_logits, fake_logits = self._gather(self.D(real, training=True), self.D(fake, training=True))
            _, g_loss = self.objective.fn(real_logits, fake_logits)
            scaled = self._scaled(self.opt_g, g_loss / self.replicas)
        self._replica_apply(self.opt_g, self.G, tape, scaled)
        return g_loss

    def _first_replica(self, values):
        """Replica 0's copy of values every replica holds identically (global losses)."""
        return tf.nest.map_structure(lambda v: self.strategy.experimental_local_results(v)[0], values)

    def _distributed_step(self):
        """``_step`` over the strategy's replicas: random numbers and batches drawn for the global
        batch in cross-replica context, in the one-device step's order; the rule runs once."""
        s, st, b = self._state, self.strategy, self.batch_size
        trained = s["train_d"].value()
        start = s["pos"] * b
        packed = tf.gather(self._data, s["perm"][0, start:start + b])
        z = self._latent()
        eps = self.rng.uniform((b, 1, 1, 1, 1)) if self.objective.name == "wgan-gp" else None
        val_packed = None
        if self._val is not None:
            val_packed = tf.gather(self._val, self.rng.uniform((b,), 0, tf.shape(self._val)[0], dtype=tf.int32))

        def d_phase(train):
            return lambda: self._first_replica(st.run(self._replica_d, args=(train, packed, z, eps, val_packed)))

        d_loss, accuracy, val_loss = tf.cond(trained, d_phase(True), d_phase(False))

        packed2 = tf.gather(self._data, s["perm"][1, start:start + b])
        z2 = self._latent()
        g_loss = self._first_replica(st.run(self._replica_g, args=(packed2, z2)))
        return self._update_rule(trained, d_loss, g_loss, accuracy, val_loss)

    def _run_steps(self, n):
        self.trace_count += 1   # Python side effect: runs only while tracing
        step = self._step if self.strategy is None else self._distributed_step
        arrays = {k: tf.TensorArray(tf.float32, size=n) for k in METRICS}
        for i in tf.range(n):
            metrics = step()
            arrays = {k: arrays[k].write(i, tf.cast(metrics[k], tf.float32)) for k in METRICS}
        return {k: arrays[k].stack() for k in METRICS}
