"""The compiled GAN train step on Keras' JAX backend (no TensorFlow needed).

``JaxGANTrainer`` has the constructor and public API of :class:`tf3dgan.training.backends.tensorflow.GANTrainer`
and the same step semantics; only the random streams differ (JAX's threefry keys instead of
TensorFlow's Philox generator):

* D update on a real batch, then G update on a **fresh** real batch, both with BatchNorm in
  training mode (``model.stateless_call(..., training=True)``; the moving statistics are
  threaded through every call in the order TensorFlow assigns them: G(z), D(real), D(fake)
  [, D(interpolates) for wgan-gp], then G(z₂), D(real₂), D(fake₂));
* the adaptive discriminator rule (``ratio`` / ``accuracy`` / ``always``) evaluated inside the
  compiled step; a step that skips D takes a ``lax.cond`` branch that only runs the forward
  pass, so D's weights and its optimizer state (Adam's iteration counter included) pass
  through unchanged, as when the TensorFlow path does not apply D's optimizer;
* batches unpacked from the packed-bit dataset (kept on the device) and gathered from the
  two per-epoch permutations inside the step;
* learning rates are values in the optimizer state, so changing them never recompiles;
* ``mixed_float16`` uses ``keras.optimizers.LossScaleOptimizer.stateless_apply`` (the same
  rule as the TensorFlow path: a non-finite gradient halves the scale and skips the update,
  2000 finite steps in a row double it);
* ``train_steps(n)`` runs ``n`` steps in one ``jax.jit`` call (``lax.scan``; one compilation
  per distinct ``n``) with the state donated, and returns the per-step metrics as device
  arrays without waiting for them.

``distribution=keras.distribution.DataParallel(...)`` spreads every step over the devices of
its mesh (GSPMD): the state and the packed dataset are replicated, each real batch, latent
batch and penalty mix is sharded along the batch axis, and XLA inserts the all-reduces.
The program computes what the one-device program computes (BatchNorm statistics and the
relativistic averages are over the global batch, i.e. synchronized), so a run gives the same
losses on one device or several, up to the order of float sums; see :func:`make_distribution`.

``state_arrays`` / ``load_state_arrays`` use the keys, shapes and dtypes of
``GANTrainer``, so a checkpoint written by either backend resumes on the other.  The RNG
state ``trainer/rng`` (int64 ``(3,)``, TensorFlow's Philox state) holds the JAX key as
``[k0, k1, RNG_TAG]``; a TensorFlow-written state is turned into a JAX key by hashing it
(and written back unchanged while no random number has been drawn since loading).
"""
from __future__ import annotations

import contextlib
import itertools
import math

import jax
import jax.numpy as jnp
import keras
import numpy as np
from jax import lax

from tf3dgan.models import losses
from tf3dgan.training.trainer import METRICS, adam, check_settings, checkpoint_entry, checkpoint_variables

RNG_IMPL = "threefry2x32"
RNG_TAG = 0x4A41585F6B6579   # "JAX_key": marks a trainer/rng array that holds a JAX key
_TRAINER_DTYPES = {"perm": np.int32, "pos": np.int32, "train_d": np.bool_, "d_smooth": np.float32,
                   "g_smooth": np.float32, "since_d": np.int32, "ratio": np.int32}


def default_precision() -> str:
    """``mixed_float16`` when JAX sees a GPU, else ``float32`` (float16 is very slow on CPU)."""
    try:
        return "mixed_float16" if jax.devices("gpu") else "float32"
    except RuntimeError:   # no GPU backend
        return "float32"


def tune_for_device() -> None:
    """Nothing to tune under JAX (kept for the same interface as ``training.tune_for_device``)."""


from tf3dgan.choices import JAX_STRATEGIES as STRATEGIES  # noqa: E402


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


# ---------------------------------------------------------------------- CPU convolutions
# XLA's CPU backend runs convolutions with input dilation (a transposed convolution, and the
# input gradient of every strided convolution) through a slow generic loop: a rasgan64 G
# forward pass at 32³ takes over a minute, and its small-channel convolutions are slow too.
# On CPU the trainer therefore traces the models with Keras' JAX ``conv`` (strided) and
# ``conv_transpose`` replaced by equivalent formulations made of matrix products, pads,
# slices and reshapes only, whose gradients are made of the same.  They equal the native
# ops up to float rounding.

def _conv_geometry(x, w):
    nd = x.ndim - 2
    return nd, x.shape[0], x.shape[-1], w.shape[-1], x.shape[1:-1], w.shape[:nd]


def conv_strided(x, w, pads, strides):
    """``lax.conv_general_dilated(x, w, strides, pads)`` for channels-last ``x`` (N, *S, C) and
    ``w`` (*K, C, O): space-to-depth (each stride-sized block of the padded input becomes one
    position with s^d·C channels), then a stride-1 correlation with ⌈K/s⌉ taps per axis as
    matrix products: one product of the gathered taps when the channels are few, else one per
    tap, summed."""
    nd, n, c, o, size, k = _conv_geometry(x, w)
    s = tuple(strides)
    q = [(size[i] + pads[i][0] + pads[i][1] - k[i]) // s[i] + 1 for i in range(nd)]
    m = [-(-k[i] // s[i]) for i in range(nd)]               # taps per axis after space-to-depth
    t = [q[i] + m[i] - 1 for i in range(nd)]                # positions per axis after space-to-depth
    cfg = [(0, 0, 0)] + [(pads[i][0], s[i] * t[i] - size[i] - pads[i][0], 0) for i in range(nd)] + [(0, 0, 0)]
    xp = lax.pad(x, jnp.zeros((), x.dtype), cfg)
    xp = xp.reshape((n,) + sum(((t[i], s[i]) for i in range(nd)), ()) + (c,))
    perm = (0,) + tuple(1 + 2 * i for i in range(nd)) + tuple(2 + 2 * i for i in range(nd)) + (2 * nd + 1,)
    cs = math.prod(s) * c
    xp = xp.transpose(perm).reshape((n,) + tuple(t) + (cs,))
    wcfg = [(0, m[i] * s[i] - k[i], 0) for i in range(nd)] + [(0, 0, 0), (0, 0, 0)]
    wp = lax.pad(w, jnp.zeros((), w.dtype), wcfg)             # zero taps up to a multiple of s
    wp = wp.reshape(sum(((m[i], s[i]) for i in range(nd)), ()) + (c, o))
    wperm = tuple(2 * i for i in range(nd)) + tuple(2 * i + 1 for i in range(nd)) + (2 * nd, 2 * nd + 1)
    taps = math.prod(m)
    wp = wp.transpose(wperm).reshape((taps, cs, o))
    cols = [xp[(slice(None),) + tuple(slice(j[i], j[i] + q[i]) for i in range(nd))].reshape(-1, cs)
            for j in itertools.product(*[range(mi) for mi in m])]
    if cs < 128:    # few channels: one product of the gathered taps
        y = jnp.concatenate(cols, axis=1) @ wp.reshape(taps * cs, o)
    else:
        y = cols[0] @ wp[0]
        for j in range(1, taps):
            y = y + cols[j] @ wp[j]
    return y.reshape((n,) + tuple(q) + (o,))


def _overlap_add(p, axis: int, tap_axis: int, s: int, lo: int, out: int):
    """Sum ``p[..., i (at axis), ..., t (at tap_axis), ...]`` into output position
    ``s·i + lo − t`` along ``axis`` (removing ``tap_axis``; ``out`` outputs): the taps of each
    output phase (position mod s) are shifted into place and added, then the phases interleaved."""
    size, k = p.shape[axis], p.shape[tap_axis]
    q = -(-out // s)                                         # outputs per phase
    taps = [jnp.squeeze(t, tap_axis) for t in lax.split(p, [1] * k, axis=tap_axis)]   # gradient: one concat
    zero = jnp.zeros((), p.dtype)
    phases = []
    for r in range(s):
        first = (lo - r) % s                                 # this phase's first tap
        e = (lo - first - r) // s
        acc = None
        for j, tap in enumerate(range(first, k, s)):         # output q takes input q + j − e through this tap
            cfg = [(0, 0, 0)] * taps[tap].ndim
            cfg[axis] = (e - j, q - size - e + j, 0)
            shifted = lax.pad(taps[tap], zero, cfg)
            acc = shifted if acc is None else acc + shifted
        if acc is None:
            shape = list(taps[0].shape)
            shape[axis] = q
            acc = jnp.zeros(shape, p.dtype)
        phases.append(acc)
    y = jnp.stack(phases, axis=axis + 1)
    y = y.reshape(y.shape[:axis] + (q * s,) + y.shape[axis + 2:])
    return lax.slice_in_dim(y, 0, out, axis=axis)


def conv_lhs_dilated(x, w, pads, dilation):
    """``lax.conv_general_dilated(x, w, 1, pads, lhs_dilation=dilation)`` (a transposed
    convolution; ``w`` (*K, C, O) in correlation form) for channels-last ``x``: one matrix
    product gives every input position times every tap, then an overlap-add per spatial axis
    puts each product where the dilated convolution would."""
    nd, n, c, o, size, k = _conv_geometry(x, w)
    s = tuple(dilation)
    out = [(size[i] - 1) * s[i] + 1 + pads[i][0] + pads[i][1] - k[i] + 1 for i in range(nd)]
    w2 = jnp.moveaxis(w.reshape((math.prod(k), c, o)), 1, 0).reshape(c, math.prod(k) * o)
    y = (x.reshape(-1, c) @ w2).reshape((n,) + tuple(size) + tuple(k) + (o,))
    for i in range(nd):     # y: (n, out_0..out_{i-1}, size_i.., k_i.., o); the next tap axis is 1 + nd
        y = _overlap_add(y, 1 + i, 1 + nd, s[i], pads[i][0], out[i])
    return y


def _tuple(value, nd):
    return tuple(value) if isinstance(value, (tuple, list)) else (int(value),) * nd


@contextlib.contextmanager
def cpu_friendly_convolutions(enabled: bool = True):
    """While active (and ``enabled``), Keras' JAX ``conv`` with strides and ``conv_transpose``
    (channels-last, no kernel dilation, no groups, 1-3 spatial axes) use the formulations
    above; other cases fall through to Keras.  Use it around tracing: the compiled program keeps
    the choice.  (It swaps functions in Keras' JAX backend module while active, so other
    threads tracing Keras convolutions meanwhile get the same, equivalent, formulations.)"""
    if not enabled:
        yield
        return
    from keras.src import backend as kb
    from keras.src.backend.common.backend_utils import compute_conv_transpose_padding_args_for_jax

    nn = kb.nn
    native_conv, native_conv_t = nn.conv, nn.conv_transpose

    def conv(inputs, kernel, strides=1, padding="valid", data_format=None, dilation_rate=1):
        nd = inputs.ndim - 2
        strides, dilation = _tuple(strides, nd), _tuple(dilation_rate, nd)
        if (kb.standardize_data_format(data_format) != "channels_last" or set(dilation) != {1}
                or set(strides) == {1} or inputs.shape[-1] != kernel.shape[-2] or not 1 <= nd <= 3):
            return native_conv(inputs, kernel, strides, padding, data_format, dilation_rate)
        kernel = jnp.asarray(kernel)
        inputs = jnp.asarray(inputs, kernel.dtype)
        pads = lax.padtype_to_pads(inputs.shape[1:-1], kernel.shape[:nd], strides, padding.upper())
        return conv_strided(inputs, kernel, pads, strides)

    def conv_transpose(inputs, kernel, strides=1, padding="valid", output_padding=None, data_format=None,
                       dilation_rate=1):
        nd = inputs.ndim - 2
        dilation = _tuple(dilation_rate, nd)
        if (kb.standardize_data_format(data_format) != "channels_last" or set(dilation) != {1}
                or inputs.shape[-1] != kernel.shape[-1] or not 1 <= nd <= 3):
            return native_conv_t(inputs, kernel, strides, padding, output_padding, data_format, dilation_rate)
        inputs, kernel = jnp.asarray(inputs), jnp.asarray(kernel)
        pads = compute_conv_transpose_padding_args_for_jax(inputs.shape, kernel.shape, strides, padding,
                                                           output_padding, dilation_rate)
        rhs = jnp.flip(kernel, axis=tuple(range(nd))).swapaxes(-1, -2)   # as lax.conv_transpose(transpose_kernel=True)
        return conv_lhs_dilated(inputs, rhs, pads, _tuple(strides, nd))

    nn.conv, nn.conv_transpose = conv, conv_transpose
    try:
        yield
    finally:
        nn.conv, nn.conv_transpose = native_conv, native_conv_t


class JaxGANTrainer:
    """Trains a (generator, discriminator) pair on an in-memory voxel dataset (JAX backend)."""

    def __init__(self, generator, discriminator, data_packed: np.ndarray, dim: int, *, batch_size: int,
                 loss: str = "rasgan", d_rule: str | None = None, g_lr: float = 0.002, d_lr: float = 0.00005,
                 precision: str = "float32", seed: int = 0, validation_packed: np.ndarray | None = None,
                 xla: bool = False, ema_alpha: float = 0.3, accuracy_threshold: float = 0.8,
                 cpu_convolutions: bool | None = None, distribution=None):
        if keras.backend.backend() != "jax":
            raise RuntimeError(f"JaxGANTrainer needs Keras' JAX backend (KERAS_BACKEND=jax), "
                               f"not {keras.backend.backend()!r}")
        n = int(data_packed.shape[0])
        self.objective, self.d_rule = check_settings(loss, d_rule, precision, batch_size, n)
        self.G, self.D = generator, discriminator
        self.dim, self.batch_size, self.precision = int(dim), int(batch_size), precision
        self.latent_dim = int(generator.spec.latent_dim)
        self.steps_per_epoch = n // self.batch_size
        self.ema_alpha, self.accuracy_threshold = float(ema_alpha), float(accuracy_threshold)
        self.xla = True   # always compiled by XLA; the argument exists for the same signature
        # None: the rewritten convolutions on CPU only (GPUs run transposed convolutions natively)
        self.cpu_convolutions = (jax.default_backend() == "cpu") if cpu_convolutions is None else bool(cpu_convolutions)
        self.loss_scaled = precision == "mixed_float16"
        self.opt_g = adam(g_lr, self.loss_scaled)
        self.opt_d = adam(d_lr, self.loss_scaled)
        self.opt_g.build(self.G.trainable_variables)
        self.opt_d.build(self.D.trainable_variables)

        self._set_distribution(distribution)
        self._data = self._put(np.ascontiguousarray(data_packed, dtype=np.uint8))
        self._val = (None if validation_packed is None
                     else self._put(np.ascontiguousarray(validation_packed, dtype=np.uint8)))
        self._layout = self._make_layout()
        self._state = self._initial_state(n, seed)
        self._pos = 0                 # host mirror of trainer/pos (no device sync to read it)
        self._foreign_rng = None      # a loaded TensorFlow RNG state, kept while unused
        self.trace_count = 0          # traces of the train-steps function (one per distinct n)
        self._runs = {}
        self._shuffle_fn = jax.jit(self._shuffle, donate_argnums=0)
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
        """``(key, group, index, save_dtype)`` for every checkpoint entry, in GANTrainer's order.

        ``group`` names a list in the state pytree (``g_tr``, ``g_nt``, ``d_tr``, ``d_nt``,
        ``opt_g``, ``opt_d``) or a trainer scalar; the optimizer lists follow
        ``optimizer.variables`` (what ``stateless_apply`` takes); the keys are
        ``trainer_base.checkpoint_variables``' (the TensorFlow trainer's)."""
        where = {}   # id(variable) -> (group, index) in the state pytree
        for prefix, model in (("g", self.G), ("d", self.D)):
            where.update({id(v): (f"{prefix}_tr", i) for i, v in enumerate(model.trainable_variables)})
            where.update({id(v): (f"{prefix}_nt", i) for i, v in enumerate(model.non_trainable_variables)})
        for name, opt in (("opt_g", self.opt_g), ("opt_d", self.opt_d)):
            where.update({id(v): (name, i) for i, v in enumerate(opt.variables)})
        layout = []
        for key, v in checkpoint_variables(self.G, self.D, self.opt_g, self.opt_d):
            dtype = np.dtype(v.dtype)
            if dtype.kind in "iu" and not key.startswith(("g/", "d/")):
                dtype = np.dtype(np.int64)   # optimizer counters: Keras "int" is int64 under TensorFlow
            layout.append((key, *where[id(v)], dtype))
        for key, dtype in _TRAINER_DTYPES.items():
            layout.append((f"trainer/{key}", key, None, np.dtype(dtype)))
        layout.append(("trainer/rng", "rng", None, np.dtype(np.int64)))
        return layout

    def _initial_state(self, n: int, seed: int) -> dict:
        values = lambda vs: [np.array(v.value) for v in vs]  # noqa: E731
        state = {
            "g_tr": values(self.G.trainable_variables), "g_nt": values(self.G.non_trainable_variables),
            "d_tr": values(self.D.trainable_variables), "d_nt": values(self.D.non_trainable_variables),
            "opt_g": values(self.opt_g.variables), "opt_d": values(self.opt_d.variables),
            "perm": np.tile(np.arange(n, dtype=np.int32), (2, 1)),
            "pos": np.int32(0),
            "train_d": np.bool_(True),
            "d_smooth": np.float32(0),
            "g_smooth": np.float32(0),
            "since_d": np.int32(0),
            "ratio": np.int32(1),
            "rng": np.asarray(jax.random.key_data(jax.random.key(seed, impl=RNG_IMPL))),
        }
        return jax.tree_util.tree_map(self._put, state)

    def _lr_index(self, opt) -> int:
        inner = getattr(opt, "inner_optimizer", opt)
        return next(i for i, v in enumerate(opt.variables) if v is inner._learning_rate)

    def _scale_index(self, opt) -> int:
        return next(i for i, v in enumerate(opt.variables) if v is opt.dynamic_scale)

    # ------------------------------------------------------------------ public API
    @property
    def position(self) -> int:
        """Steps already taken in the current epoch."""
        return self._pos

    def start_epoch(self) -> None:
        """Draw this epoch's two data orders (on the device, from the trainer's RNG key)."""
        self._foreign_rng = None
        self._state = self._shuffle_fn(self._state)
        self._pos = 0

    def set_learning_rates(self, g_lr: float, d_lr: float) -> None:
        for name, opt, lr in (("opt_g", self.opt_g, g_lr), ("opt_d", self.opt_d, d_lr)):
            values = list(self._state[name])
            values[self._lr_index(opt)] = self._put(np.float32(lr))
            self._state[name] = values

    @property
    def learning_rates(self) -> tuple[float, float]:
        return (float(self._state["opt_g"][self._lr_index(self.opt_g)]),
                float(self._state["opt_d"][self._lr_index(self.opt_d)]))

    def train_steps(self, n: int) -> dict:
        """Run ``n`` train steps in one compiled call; returns per-step metric arrays (length n)
        on the device (reading them, e.g. ``np.asarray``, waits for the steps to finish)."""
        n = int(n)
        if n < 1:
            raise ValueError(f"train_steps needs n >= 1, got {n}")
        if self._pos + n > self.steps_per_epoch:
            raise ValueError(f"{n} steps from step {self._pos} run past the epoch's {self.steps_per_epoch} "
                             f"steps; call start_epoch() first")
        run = self._runs.get(n)
        if run is None:
            run = self._runs[n] = jax.jit(lambda state, data, val: self._run_steps(state, data, val, n),
                                          donate_argnums=0)
        self._foreign_rng = None
        self._state, metrics = run(self._state, self._data, self._val)
        self._pos += n
        return metrics

    def generate(self, z: np.ndarray) -> np.ndarray:
        """Generator output (inference-mode BatchNorm) for latent vectors ``z`` as float32 (N, D, H, W)."""
        out = self._sample_fn(self._state["g_tr"], self._state["g_nt"], self._put(np.asarray(z, np.float32)))
        return np.asarray(out, dtype=np.float32)[..., 0]

    def sync_models(self) -> None:
        """Copy the trained weights into the Keras models' variables (so ``G.save_weights`` and
        ``G(z)`` see them); ``state_arrays`` does this too."""
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
        for prefix, model in (("g", self.G), ("d", self.D)):
            for i, w in enumerate(model.weights):
                w.assign(np.array(arrays[f"{prefix}/{i:03d}"]))   # a host copy: never a donated buffer

    def state_arrays(self) -> dict[str, np.ndarray]:
        """Every variable of the run (weights, optimizer slots, rule state, RNG) as NumPy arrays,
        keyed and typed as ``GANTrainer.state_arrays``; also syncs the Keras models' weights."""
        arrays = self._state_numpy()
        self._assign_models(arrays)
        return arrays

    def load_state_arrays(self, arrays: dict[str, np.ndarray], source: str = "checkpoint") -> None:
        """Restore ``state_arrays`` output (from either backend); a missing or mis-shaped entry is
        a CheckpointError."""
        host = jax.device_get(self._state)
        host = {k: list(v) if isinstance(v, list) else v for k, v in host.items()}
        foreign = None
        for key, group, index, _ in self._layout:
            current = np.asarray(host[group] if index is None else host[group][index])
            value = checkpoint_entry(arrays, key, (3,) if key == "trainer/rng" else current.shape, source)
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
    def _shuffle(self, state):
        key, sub = jax.random.split(jax.random.wrap_key_data(state["rng"], impl=RNG_IMPL))
        n = self._data.shape[0]
        perm = jnp.argsort(jax.random.uniform(sub, (2, n)), axis=1, stable=True).astype(jnp.int32)
        return dict(state, perm=perm, pos=jnp.zeros((), jnp.int32), rng=jax.random.key_data(key))

    def _sample(self, g_tr, g_nt, z):
        with cpu_friendly_convolutions(self.cpu_convolutions):
            out, _ = self.G.stateless_call(g_tr, g_nt, z, training=False)
        return out.astype(jnp.float32)

    def _unpack(self, packed):
        shifts = jnp.arange(7, -1, -1, dtype=jnp.uint8)
        bits = (packed[:, :, None] >> shifts) & jnp.uint8(1)
        d = self.dim
        return bits.reshape(-1, d, d, d, 1).astype(jnp.float32)

    def _real_batch(self, data, state, which: int):
        start = state["pos"] * self.batch_size
        idx = jax.lax.dynamic_slice(state["perm"][which], (start,), (self.batch_size,))
        return self._shard_batch(self._unpack(jnp.take(data, idx, axis=0)))

    def _latent(self, key):
        return self._shard_batch(jax.random.normal(key, (self.batch_size, self.latent_dim), jnp.float32))

    def _d_forward(self, d_tr, d_nt, g_tr, g_nt, real, z, key_gp):
        """D's loss (with the wgan-gp penalty) and the updated BatchNorm statistics."""
        fake, g_nt = self.G.stateless_call(g_tr, g_nt, z, training=True)
        real_logits, d_nt = self.D.stateless_call(d_tr, d_nt, real, training=True)
        fake_logits, d_nt = self.D.stateless_call(d_tr, d_nt, fake, training=True)
        d_loss, _ = self.objective.fn(real_logits, fake_logits)
        if self.objective.name == "wgan-gp":
            eps = self._shard_batch(jax.random.uniform(key_gp, (self.batch_size, 1, 1, 1, 1), jnp.float32))
            mixed = eps * real + (1.0 - eps) * fake.astype(jnp.float32)

            def score_sum(x, nt):
                scores, nt = self.D.stateless_call(d_tr, nt, x, training=True)
                return jnp.sum(scores.astype(jnp.float32)), nt

            grads, d_nt = jax.grad(score_sum, has_aux=True)(mixed, d_nt)
            d_loss = d_loss + losses.GP_WEIGHT * losses.gradient_penalty_from_grads(grads)
        return d_loss, (real_logits, fake_logits, g_nt, d_nt)

    def _loss_scale(self, opt, opt_vars):
        return opt_vars[self._scale_index(opt)] if self.loss_scaled else jnp.float32(1.0)

    def _step(self, state, data, val):
        s = state
        trained = s["train_d"]
        key, k_z, k_gp, k_val, k_z2 = jax.random.split(jax.random.wrap_key_data(s["rng"], impl=RNG_IMPL), 5)
        real, z = self._real_batch(data, s, 0), self._latent(k_z)
        g_tr = s["g_tr"]

        # D's forward pass always runs (it updates the BatchNorm statistics and gives the
        # metrics); its backward pass and D's optimizer only run on steps the rule trains D
        d_scale = self._loss_scale(self.opt_d, s["opt_d"])

        def d_scaled_loss(weights):
            d_loss, aux = self._d_forward(weights, s["d_nt"], g_tr, s["g_nt"], real, z, k_gp)
            return d_loss * d_scale, (d_loss, aux)

        scaled, d_vjp, (d_loss, (real_logits, fake_logits, g_nt, d_nt)) = jax.vjp(d_scaled_loss, s["d_tr"],
                                                                                   has_aux=True)

        def train_d(d_tr, opt_d):
            grads = d_vjp(jnp.ones_like(scaled))[0]
            new_d_tr, new_opt_d = self.opt_d.stateless_apply(opt_d, grads, d_tr)
            return list(new_d_tr), list(new_opt_d)

        d_tr, opt_d = jax.lax.cond(trained, train_d, lambda d_tr, opt_d: (list(d_tr), list(opt_d)),
                                   list(s["d_tr"]), list(s["opt_d"]))

        if val is not None:
            idx = jax.random.randint(k_val, (self.batch_size,), 0, val.shape[0], jnp.int32)
            val_logits, _ = self.D.stateless_call(d_tr, d_nt, self._shard_batch(self._unpack(jnp.take(val, idx, axis=0))),
                                                  training=False)
            val_loss = self.objective.fn(val_logits, fake_logits)[0]
        else:
            val_loss = jnp.float32(jnp.nan)

        real2, z2 = self._real_batch(data, s, 1), self._latent(k_z2)
        g_scale = self._loss_scale(self.opt_g, s["opt_g"])

        def g_scaled_loss(weights):
            fake2, new_g_nt = self.G.stateless_call(weights, g_nt, z2, training=True)
            real2_logits, new_d_nt = self.D.stateless_call(d_tr, d_nt, real2, training=True)
            fake2_logits, new_d_nt = self.D.stateless_call(d_tr, new_d_nt, fake2, training=True)
            _, g_loss = self.objective.fn(real2_logits, fake2_logits)
            return g_loss * g_scale, (g_loss, new_g_nt, new_d_nt)

        (_, (g_loss, g_nt, d_nt)), grads = jax.value_and_grad(g_scaled_loss, has_aux=True)(g_tr)
        g_tr, opt_g = self.opt_g.stateless_apply(s["opt_g"], grads, g_tr)

        # the rule: decide whether D trains on the next step
        a = self.ema_alpha
        d_smooth = a * d_loss + (1.0 - a) * s["d_smooth"]
        g_smooth = a * g_loss + (1.0 - a) * s["g_smooth"]
        accuracy = losses.d_accuracy(self.objective, real_logits, fake_logits)
        if self.d_rule == "ratio":
            train_next = 2.0 * d_smooth > g_smooth
        elif self.d_rule == "accuracy":
            train_next = accuracy <= self.accuracy_threshold
        else:
            train_next = jnp.bool_(True)
        ratio = jnp.where(trained, s["since_d"], s["ratio"])
        since_d = jnp.where(trained, jnp.int32(1), s["since_d"] + 1)
        new_state = {
            "g_tr": list(g_tr), "g_nt": list(g_nt), "d_tr": list(d_tr), "d_nt": list(d_nt),
            "opt_g": list(opt_g), "opt_d": list(opt_d), "perm": s["perm"], "pos": s["pos"] + 1,
            "train_d": jnp.asarray(train_next, jnp.bool_), "d_smooth": d_smooth.astype(jnp.float32),
            "g_smooth": g_smooth.astype(jnp.float32), "since_d": since_d.astype(jnp.int32),
            "ratio": ratio.astype(jnp.int32), "rng": jax.random.key_data(key),
        }
        metrics = {"d_loss": d_loss, "g_loss": g_loss, "val_loss": val_loss, "d_trained": trained,
                   "ratio": ratio, "d_accuracy": accuracy, "loss_scale": self._loss_scale(self.opt_g, opt_g)}
        return new_state, {k: jnp.asarray(metrics[k]).astype(jnp.float32) for k in METRICS}

    def _run_steps(self, state, data, val, n: int):
        self.trace_count += 1   # Python side effect: runs only while tracing
        with cpu_friendly_convolutions(self.cpu_convolutions):
            return jax.lax.scan(lambda carry, _: self._step(carry, data, val), state, None, length=n)
