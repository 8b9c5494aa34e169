"""The JAX backend: the step of :mod:`tf3dgan.training.algorithm` under ``jax.jit`` (no TensorFlow needed).

``JaxGANTrainer`` (a :class:`~tf3dgan.training.trainer.Trainer`) keeps the whole run state in one pytree
(the models' trainable and non-trainable weights, both optimizers' variables, the rule state, the RNG
key), donated to each compiled call, and gives the algorithm its context (:class:`_Context`):

* the models run as ``model.stateless_call``; the context threads their BatchNorm statistics through
  every call in the algorithm's order (G(z), D(real), D(fake) [, D(interpolates)], then G(z₂), D(real₂),
  D(fake₂)), as TensorFlow's variables see them;
* gradients come from ``jax.value_and_grad``; ``ctx.cond`` is ``lax.cond`` (a step whose rule skips D
  takes the branch without D's update, so D's weights and its optimizer state, Adam's iteration counter
  included, pass through unchanged);
* the random numbers come from threefry keys: each step splits the run's key into the step's next key
  and one key per draw (D latents, penalty mix, validation rows, G latents);
* learning rates are values in the optimizer state, so changing them never recompiles;
* ``mixed_float16`` uses ``keras.optimizers.LossScaleOptimizer.stateless_apply`` (the same rule as
  TensorFlow's: a non-finite gradient halves the scale and skips the update, 2000 finite steps in a row
  double it);
* ``train_steps(n)`` runs ``n`` steps in one ``jax.jit`` call (``lax.scan``; one compilation per distinct
  ``n``) and returns the per-step metrics as device arrays without waiting for them;
* on CPU the models are traced with the matrix-product convolutions of :mod:`.jax_convolutions`.

``distribution=keras.distribution.DataParallel(...)`` spreads every step over the devices of its mesh
(GSPMD): the state and the packed dataset are replicated, each batch (real, latent, penalty mix,
validation) is sharded along the batch axis (``ctx.local``), and XLA inserts the all-reduces.  The program
computes what the one-device program computes (BatchNorm statistics and the relativistic averages are
over the global batch, i.e. synchronized), so a run gives the same losses on one device or several, up
to the order of float sums; see :func:`make_distribution`.

``state_arrays`` / ``load_state_arrays`` use the keys, shapes and dtypes of the TensorFlow trainer, so a
checkpoint written by either backend resumes on the other.  The RNG state ``trainer/rng`` (int64 ``(3,)``,
TensorFlow's Philox state) holds the JAX key as ``[k0, k1, RNG_TAG]``; a TensorFlow-written state is
turned into a JAX key by hashing it (and written back unchanged while no random number has been drawn
since loading).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import keras
import numpy as np
from jax import lax

from tf3dgan.choices import JAX_STRATEGIES as STRATEGIES  # the --strategy names (re-exported)
from tf3dgan.training import algorithm, checkpoint_keys
from tf3dgan.training.algorithm import RULE_STATE
from tf3dgan.training.backends.jax_convolutions import conv_lhs_dilated, conv_strided, cpu_friendly_convolutions  # noqa: F401  (re-exported)
from tf3dgan.training.trainer import Trainer, optional_entry, with_ema_start

RNG_IMPL = "threefry2x32"
RNG_TAG = 0x4A41585F6B6579   # "JAX_key": marks a trainer/rng array that holds a JAX key
MODEL_GROUPS = ("g_tr", "g_nt", "d_tr", "d_nt", "opt_g", "opt_d")   # the state pytree's lists of arrays
EMA_GROUPS = ("ge_tr", "ge_nt")   # G's moving average (``g_ema``): G_ema's trainable and non-trainable arrays


def default_precision() -> str:
    """``mixed_float16`` when JAX sees a GPU, else ``float32`` (float16 is very slow on CPU)."""
    try:
        return "mixed_float16" if jax.devices("gpu") else "float32"
    except RuntimeError:   # no GPU backend
        return "float32"


def tune_for_device() -> None:
    """Nothing to tune under JAX (kept for the same interface as ``training.tune_for_device``)."""




def split_cpu(n: int) -> None:
    """Make JAX's CPU platform ``n`` devices (to try data parallelism without GPUs).  Must run
    before JAX initialises its backends; afterwards it raises ``Tf3dganError``."""
    from tf3dgan.errors import Tf3dganError

    if n < 1:
        raise Tf3dganError(f"--cpu-devices must be at least 1, got {n}")
    try:
        jax.config.update("jax_num_cpu_devices", int(n))
    except RuntimeError as e:
        if len(jax.devices("cpu")) == n:
            return
        raise Tf3dganError(f"cannot split the CPU into {n} devices: JAX's backends are already initialised "
                           f"({e})") from None


def make_distribution(name: str):
    """The ``keras.distribution.DataParallel`` for ``--strategy NAME`` under JAX, or ``None`` for one
    device.  ``one``: ``None``.  ``mirrored``: data parallel over all devices of JAX's default
    platform (the GPUs, else the CPU devices of ``split_cpu``).  ``auto``: ``mirrored`` when the
    default platform has more than one device, else ``None``.  (``multiworker`` is TensorFlow's;
    a multi-host JAX run needs ``jax.distributed.initialize`` first and is not wired up.)"""
    from tf3dgan.errors import Tf3dganError

    if name == "multiworker":
        raise Tf3dganError("--strategy multiworker is TensorFlow's (TF_CONFIG); under KERAS_BACKEND=jax use "
                           "--strategy mirrored for the devices of one machine")
    if name not in STRATEGIES:
        raise Tf3dganError(f"--strategy must be one of {', '.join(STRATEGIES)} under JAX, got {name!r}")
    devices = jax.devices()
    if name == "one" or (name == "auto" and len(devices) < 2):
        return None
    return keras.distribution.DataParallel(devices=devices)


def _key_from_tf_state(state: np.ndarray) -> np.ndarray:
    """A JAX key (uint32 (2,)) derived deterministically from any int64 (3,) RNG state."""
    words = np.asarray(state, np.int64).view(np.uint32)
    return np.random.SeedSequence(words.tolist()).generate_state(2, np.uint32)


class _Context:
    """The algorithm's context (see :mod:`tf3dgan.training.algorithm`) while a JAX step is traced.

    ``vars`` holds the models' and optimizers' current arrays (tracers); model calls read them and write
    the new BatchNorm statistics back, ``minimize`` writes the updated weights and optimizer state, and
    ``cond`` / gradients run their functions with ``vars`` as an explicit input and output, so nothing
    leaks out of a JAX transformation.  There are no replica hooks: a sharded step is one program
    (``local`` constrains a batch to be split over the mesh)."""

    replicas = 1

    def __init__(self, trainer: "JaxGANTrainer", state: dict, data, val):
        self.t = trainer
        self.data, self.val = data, val
        self.vars = {k: list(state[k]) for k in trainer._groups}
        key, k_z, k_gp, k_val, k_z2 = jax.random.split(jax.random.wrap_key_data(state["rng"], impl=RNG_IMPL), 5)
        self.next_key = key
        self.keys = {"d": k_z, "gp": k_gp, "val": k_val, "g": k_z2}
        if trainer.settings.augment:   # keys of their own, so runs without augmentation keep their stream
            self.keys["augment_d"], self.keys["augment_g"] = jax.random.split(jax.random.fold_in(key, 1), 2)

    # random numbers: one key per draw
    def latents(self, phase: str):
        return self.t._latent(self.keys[phase])

    def mix_weights(self):
        return self.local(jax.random.uniform(self.keys["gp"], (self.t.batch_size, 1, 1, 1, 1), jnp.float32))

    def validation_rows(self, n):
        return jax.random.randint(self.keys["val"], (self.t.batch_size,), 0, n, jnp.int32)

    def uniforms(self, name: str, shape):
        return self.local(jax.random.uniform(self.keys[name], shape, jnp.float32))

    def weights(self, name: str):
        tr, nt = ("g_tr", "g_nt") if name == "g" else EMA_GROUPS
        return self.vars[tr] + self.vars[nt]

    def assign(self, name: str, values):
        tr, nt = ("g_tr", "g_nt") if name == "g" else EMA_GROUPS
        n = len(self.vars[tr])
        self.vars = dict(self.vars, **{tr: list(values[:n]), nt: list(values[n:])})

    # the models
    def _call(self, name: str, model, x, training: bool):
        out, nt = model.stateless_call(self.vars[f"{name}_tr"], self.vars[f"{name}_nt"], x, training=training)
        if training:
            self.vars[f"{name}_nt"] = list(nt)
        return out

    def G(self, z, training: bool):
        return self._call("g", self.t.G, z, training)

    def D(self, x, training: bool):
        return self._call("d", self.t.D, x, training)

    def _isolated(self, fn, vars_in: dict):
        """Run ``fn()`` with ``vars`` = ``vars_in``; returns ``(fn's result, vars after)`` and restores ``vars``."""
        outer = self.vars
        self.vars = {k: list(v) for k, v in vars_in.items()}
        try:
            return fn(), self.vars
        finally:
            self.vars = outer

    def input_gradient(self, fn, x):
        def total(x):
            out, after = self._isolated(lambda: fn(x), self.vars)
            return jnp.sum(out.astype(jnp.float32)), after

        grads, self.vars = jax.grad(total, has_aux=True)(x)
        return grads

    def minimize(self, name: str, loss_fn, when=None):
        t = self.t
        opt = t.opt_g if name == "g" else t.opt_d
        tr, opt_key = f"{name}_tr", f"opt_{name}"
        scale = t._loss_scale(opt, self.vars[opt_key])

        def scaled_loss(weights):
            (loss, aux), after = self._isolated(loss_fn, dict(self.vars, **{tr: weights}))
            return loss * scale, (aux, after)

        (_, (aux, after)), grads = jax.value_and_grad(scaled_loss, has_aux=True)(self.vars[tr])
        weights, opt_vars = opt.stateless_apply(self.vars[opt_key], grads, self.vars[tr])
        if when is not None:   # keep the weights and optimizer state unless ``when(aux)``
            apply = when(aux)
            keep = lambda new, old: [jnp.where(apply, a, b) for a, b in zip(new, old)]  # noqa: E731
            weights, opt_vars = keep(weights, self.vars[tr]), keep(opt_vars, self.vars[opt_key])
        self.vars = dict(after, **{tr: list(weights), opt_key: list(opt_vars)})
        return aux

    def cond(self, pred, true_fn, false_fn):
        def branch(fn):
            return lambda vars_in: self._isolated(fn, vars_in)[::-1]   # (vars after, result)

        self.vars, out = lax.cond(pred, branch(true_fn), branch(false_fn), self.vars)
        self.vars = {k: list(v) for k, v in self.vars.items()}
        return out

    def loss_scale(self):
        return self.t._loss_scale(self.t.opt_g, self.vars["opt_g"])

    # replica hooks: one program over the mesh
    def per_replica(self, fn, *args):
        return fn(*args)

    def local(self, x):
        return None if x is None else self.t._shard_batch(x)

    def gather(self, *xs):
        return xs

    def replica_mean(self, x):
        return x


class JaxGANTrainer(Trainer):
    """Trains a (generator, discriminator) pair on an in-memory voxel dataset (JAX backend)."""

    def __init__(self, generator, discriminator, data_packed: np.ndarray, dim: int, *, batch_size: int,
                 g_lr: float = 0.002, d_lr: float = 0.00005, seed: int = 0,
                 validation_packed: np.ndarray | None = None, xla: bool = False,
                 cpu_convolutions: bool | None = None, distribution=None, **settings):
        if keras.backend.backend() != "jax":
            raise RuntimeError(f"JaxGANTrainer needs Keras' JAX backend (KERAS_BACKEND=jax), "
                               f"not {keras.backend.backend()!r}")
        super().__init__(generator, discriminator, data_packed, dim, batch_size=batch_size, **settings)
        n = int(data_packed.shape[0])
        self.xla = True   # always compiled by XLA; the argument exists for the same signature
        # None: the rewritten convolutions on CPU only (GPUs run transposed convolutions natively)
        self.cpu_convolutions = (jax.default_backend() == "cpu") if cpu_convolutions is None else bool(cpu_convolutions)
        self._make_optimizers(g_lr, d_lr)
        self._make_ema_generator()
        self._groups = MODEL_GROUPS + (EMA_GROUPS if self.G_ema is not None else ())
        self._set_distribution(distribution)
        self._data = self._put(np.ascontiguousarray(data_packed, dtype=np.uint8))
        self._val = (None if validation_packed is None
                     else self._put(np.ascontiguousarray(validation_packed, dtype=np.uint8)))
        self._layout = self._make_layout()
        self._state = self._initial_state(n, seed)
        self._foreign_rng = None      # a loaded TensorFlow RNG state, kept while unused
        self._runs = {}
        self._shuffle_fn = jax.jit(self._shuffle_orders, donate_argnums=0)
        self._sample_fn = jax.jit(self._sample)

    # ------------------------------------------------------------------ devices
    def _set_distribution(self, distribution) -> None:
        """Shardings for ``distribution`` (a ``keras.distribution.DataParallel``) or one device."""
        self.distribution = distribution
        self.replicas = 1
        self._replicated = self._batch_sharding = None
        if distribution is None:
            return
        if not isinstance(distribution, keras.distribution.DataParallel):
            raise ValueError(f"distribution must be a keras.distribution.DataParallel, got {type(distribution).__name__}")
        mesh = distribution.device_mesh.backend_mesh
        self.replicas = int(mesh.devices.size)
        if self.batch_size % self.replicas:
            raise ValueError(f"batch size {self.batch_size} does not split evenly over {self.replicas} devices")
        self._replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
        self._batch_sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(distribution.batch_dim_name))

    def _put(self, value) -> jax.Array:
        """A fresh device buffer: on the default device, or replicated over the distribution's mesh."""
        value = np.array(value)
        return jax.device_put(value) if self._replicated is None else jax.device_put(value, self._replicated)

    def _shard_batch(self, x):
        """Constrain a batch-major array to be split along its batch axis over the mesh (no-op on one device)."""
        return x if self._batch_sharding is None else lax.with_sharding_constraint(x, self._batch_sharding)

    # ------------------------------------------------------------------ state layout
    def _make_layout(self):
        """``(key, group, index, save_dtype)`` for every checkpoint entry, in the TensorFlow trainer's order.

        ``group`` names a list in the state pytree (``MODEL_GROUPS``) or a rule-state entry; the optimizer
        lists follow ``optimizer.variables`` (what ``stateless_apply`` takes); the keys are
        ``trainer.checkpoint_variables``'."""
        where = {}   # id(variable) -> (group, index) in the state pytree
        for prefix, model in (("g", self.G), ("d", self.D)):
            where.update({id(v): (f"{prefix}_tr", i) for i, v in enumerate(model.trainable_variables)})
            where.update({id(v): (f"{prefix}_nt", i) for i, v in enumerate(model.non_trainable_variables)})
        for name, opt in (("opt_g", self.opt_g), ("opt_d", self.opt_d)):
            where.update({id(v): (name, i) for i, v in enumerate(opt.variables)})
        if self.G_ema is not None:
            where.update({id(v): ("ge_tr", i) for i, v in enumerate(self.G_ema.trainable_variables)})
            where.update({id(v): ("ge_nt", i) for i, v in enumerate(self.G_ema.non_trainable_variables)})
        layout = []
        self._entries = checkpoint_keys.checkpoint_variables(self.G, self.D, self.opt_g, self.opt_d, self.G_ema)
        for key, v, _ in self._entries:
            dtype = np.dtype(v.dtype)
            if dtype.kind in "iu" and not key.startswith(("g/", "d/", "g_ema/")):
                dtype = np.dtype(np.int64)   # optimizer counters: Keras "int" is int64 under TensorFlow
            layout.append((key, *where[id(v)], dtype))
        for key, dtype in RULE_STATE.items():
            layout.append((f"trainer/{key}", key, None, np.dtype(dtype)))
        layout.append(("trainer/rng", "rng", None, np.dtype(np.int64)))
        return layout

    def _initial_state(self, n: int, seed: int) -> dict:
        values = lambda vs: [np.array(v.value) for v in vs]  # noqa: E731
        state = {
            "g_tr": values(self.G.trainable_variables), "g_nt": values(self.G.non_trainable_variables),
            "d_tr": values(self.D.trainable_variables), "d_nt": values(self.D.non_trainable_variables),
            "opt_g": values(self.opt_g.variables), "opt_d": values(self.opt_d.variables),
            **({"ge_tr": values(self.G_ema.trainable_variables), "ge_nt": values(self.G_ema.non_trainable_variables)}
               if self.G_ema is not None else {}),
            **algorithm.initial_rule_state(n),
            "rng": np.asarray(jax.random.key_data(jax.random.key(seed, impl=RNG_IMPL))),
        }
        return jax.tree_util.tree_map(self._put, state)

    def _lr_index(self, opt) -> int:
        lr = opt.learning_rate   # the optimizer's learning-rate variable (a LossScaleOptimizer: its inner one's)
        return next(i for i, v in enumerate(opt.variables) if v is lr)

    def _scale_index(self, opt) -> int:
        return next(i for i, v in enumerate(opt.variables) if v is opt.dynamic_scale)

    def _loss_scale(self, opt, opt_vars):
        return opt_vars[self._scale_index(opt)] if self.loss_scaled else jnp.float32(1.0)

    # ------------------------------------------------------------------ Trainer's backend half
    def _shuffle(self) -> None:
        self._foreign_rng = None
        self._state = self._shuffle_fn(self._state)

    def _run(self, n: int) -> dict:
        run = self._runs.get(n)
        if run is None:
            run = self._runs[n] = jax.jit(lambda state, data, val: self._run_steps(state, data, val, n),
                                          donate_argnums=0)
        self._foreign_rng = None
        self._state, metrics = run(self._state, self._data, self._val)
        return metrics

    def _set_rates(self, g_lr: float, d_lr: float) -> None:
        for name, opt, lr in (("opt_g", self.opt_g, g_lr), ("opt_d", self.opt_d, d_lr)):
            values = list(self._state[name])
            values[self._lr_index(opt)] = self._put(np.float32(lr))
            self._state[name] = values

    def _get_rates(self) -> tuple[float, float]:
        return (float(self._state["opt_g"][self._lr_index(self.opt_g)]),
                float(self._state["opt_d"][self._lr_index(self.opt_d)]))

    def generate(self, z: np.ndarray) -> np.ndarray:
        """Generator output (inference-mode BatchNorm; G's moving average with ``g_ema``) for latent vectors ``z``
        as float32 (N, D, H, W)."""
        tr, nt = EMA_GROUPS if self.G_ema is not None else ("g_tr", "g_nt")
        out = self._sample_fn(self._state[tr], self._state[nt], self._put(np.asarray(z, np.float32)))
        return np.asarray(out, dtype=np.float32)[..., 0]

    def sync_models(self) -> None:
        """Copy the trained weights into the Keras models' variables (so ``G.save_weights`` and
        ``G(z)`` see them)."""
        self._assign_models(self._state_numpy())

    # ------------------------------------------------------------------ checkpoint state
    def _state_numpy(self) -> dict[str, np.ndarray]:
        host = jax.device_get(self._state)
        out = {}
        for key, group, index, dtype in self._layout:
            value = host[group] if index is None else host[group][index]
            if key == "trainer/rng":
                value = (self._foreign_rng if self._foreign_rng is not None
                         else np.array([*np.asarray(value, np.uint32).tolist(), RNG_TAG]))
            out[key] = np.array(value, dtype=dtype)
        return out

    def _assign_models(self, arrays: dict[str, np.ndarray]) -> None:
        for key, w, _ in self._entries:
            if key.split("/")[0] in (*checkpoint_keys.MODEL_GROUPS, "g_ema"):
                w.assign(np.array(arrays[key]))   # a host copy: never a donated buffer

    def state_arrays(self) -> dict[str, np.ndarray]:
        """Every variable of the run (weights, optimizer slots, rule state, RNG) as NumPy arrays, keyed and
        typed as the TensorFlow trainer's (the Keras models are not touched: ``sync_models`` does that)."""
        return self._state_numpy()

    def load_state_arrays(self, arrays: dict[str, np.ndarray], source: str = "checkpoint") -> None:
        """Restore ``state_arrays`` output (from either backend, or a checkpoint with positional keys); a
        missing or mis-shaped entry is a CheckpointError naming the variable."""
        arrays = with_ema_start(checkpoint_keys.upgrade(arrays, self._entries))
        variables = {key: v for key, v, _ in self._entries}
        host = jax.device_get(self._state)
        host = {k: list(v) if isinstance(v, list) else v for k, v in host.items()}
        foreign = None
        for key, group, index, _ in self._layout:
            current = np.asarray(host[group] if index is None else host[group][index])
            like = variables[key] if key in variables else np.empty((3,) if key == "trainer/rng" else current.shape)
            value = checkpoint_keys.entry(arrays, key, like, source, optional=optional_entry(key))
            if value is None:
                continue
            if key == "trainer/rng":
                value = np.asarray(value, np.int64)
                if value[2] == RNG_TAG and 0 <= value[0] < 2**32 and 0 <= value[1] < 2**32:
                    new = value[:2].astype(np.uint32)
                else:   # TensorFlow's Philox state: derive a key, and keep the state for saving
                    new, foreign = _key_from_tf_state(value), value.copy()
            else:
                new = value.astype(current.dtype)
            if index is None:
                host[group] = new
            else:
                host[group][index] = new
        self._state = jax.tree_util.tree_map(self._put, host)
        self._foreign_rng = foreign
        self._pos = int(host["pos"])

    # ------------------------------------------------------------------ compiled code
    def _shuffle_orders(self, state):
        key, sub = jax.random.split(jax.random.wrap_key_data(state["rng"], impl=RNG_IMPL))
        n = self._data.shape[0]
        perm = jnp.argsort(jax.random.uniform(sub, (2, n)), axis=1, stable=True).astype(jnp.int32)
        return dict(state, perm=perm, pos=jnp.zeros((), jnp.int32), rng=jax.random.key_data(key))

    def _sample(self, g_tr, g_nt, z):
        with cpu_friendly_convolutions(self.cpu_convolutions):
            out, _ = self.sampler.stateless_call(g_tr, g_nt, z, training=False)
        return out.astype(jnp.float32)

    def _latent(self, key):
        return self._shard_batch(jax.random.normal(key, (self.batch_size, self.latent_dim), jnp.float32))

    def _step(self, state, data, val):
        ctx = _Context(self, state, data, val)
        rule, metrics = algorithm.train_step(ctx, self.settings, {k: state[k] for k in RULE_STATE})
        new_state = dict(ctx.vars, rng=jax.random.key_data(ctx.next_key),
                         **{k: jnp.asarray(rule[k]).astype(dtype) for k, dtype in RULE_STATE.items()})
        return new_state, metrics

    def _run_steps(self, state, data, val, n: int):
        self.trace_count += 1   # Python side effect: runs only while tracing
        with cpu_friendly_convolutions(self.cpu_convolutions):
            return jax.lax.scan(lambda carry, _: self._step(carry, data, val), state, None, length=n)
