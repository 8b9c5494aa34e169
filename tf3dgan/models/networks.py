"""Generator and discriminator of the two seed architectures, as Keras 3 subclassed models.

Only ``keras.layers`` / ``keras.ops`` are used, so the models run under every Keras
backend (TensorFlow for training here, JAX for the GPU benchmarks).

Architectures (channels-last, grids batched as ``(N, D, H, W, 1)``):

``rasgan64`` — 64-3D-RaSGAN (jpjuvo): G = Dense(z → 4³·512) → BN → ReLU → 4 ×
  Conv3DTranspose(k4, s2, same) 512→256→128→64→1 with BN+ReLU after all but the last;
  raw (linear) output.  D = Conv3D(k4, s2, same) 1→64 LeakyReLU(0.2) [no BN], then
  64→128→256→512 each BN + LeakyReLU(0.2), Flatten, Dense(1) → logit.  Weights N(0, 0.02),
  biases 0, G's BN gammas N(1, 0.02), D's N(1, 0.002) (``init="normal"``, the default).

``3dgan32`` — the 3D-GAN PyTorch seed (Wu et al. 2016, 32³): G = z as 1³×200 →
  Conv3DTranspose k2 s1 → 512, then k2 s2 → 256 → 128 → 64 → 1, no biases, BN+ReLU after
  all but the last, sigmoid output.  D = Conv3D k3 s2 valid, no biases, 1→64→128→256→512
  each BN + LeakyReLU(0.2) (32→15→7→3→1), then Conv3D k1 512→1 → logit.  PyTorch's default
  initialisation (``init="pytorch"``, the default for this architecture).

``ArchSpec`` also carries the seeds' data conventions: ``data_scale`` (D sees an occupied voxel as this value
and G's raw output trains to it; the models take and return grids on the 0..1 scale), ``latent_std`` (G sees
z·std), and ``d_norm="none"`` (64-3D-IWGan.py's critic, without BatchNorm).

``resolution`` changes the number of up/down-sampling stages (both networks keep the layers
nearest the voxel grid, so a 16³ ``rasgan64`` G is Dense→4³·128 → 8³·64 → 16³·1 and its D
is 16³·1 → 8³·64 → 4³·128 → Dense), and ``width``
multiplies every channel count except the single output channel; both exist so tests and
CPU demos can train small versions.  BatchNorm uses momentum 0.9 and epsilon 1e-5 (the
TF1/tensorlayer and PyTorch defaults of the seeds).  The logit layer of D and G's output
activation compute in float32 under a mixed-precision policy.

``synchronized_bn=True`` (TensorFlow backend only) makes every BatchNorm layer compute its
batch statistics over the global batch of a ``tf.distribute`` strategy (all-reduced across
replicas) instead of each replica's slice; the layers, weights and their order are the same,
so checkpoints move freely between synchronized and plain models.  It is a runtime option,
not part of the ``ArchSpec``.  So is ``conv_transpose="phase"``: G's transposed convolutions
computed as one stride-1 convolution plus an interleave (:mod:`tf3dgan.models.phase_conv`), with the
same weights and outputs.
"""
from __future__ import annotations

import math

import keras
from keras import layers

from tf3dgan.models.phase_conv import IMPLEMENTATIONS, PhaseConv3DTranspose
from tf3dgan.spec import _DEFAULT_OUTPUT, _NATIVE_RESOLUTION, ARCHS, LATENT_DIM, ArchSpec, describe, make_spec  # noqa: F401  (re-exported)

_BN = dict(momentum=0.9, epsilon=1e-5)


def _channels(base: int, width: float) -> int:
    return max(1, int(round(base * width)))


def _init(std=0.02, mean=0.0):
    return keras.initializers.RandomNormal(mean=mean, stddev=std)


class _Inits:
    """The initialisers of one ``init`` scheme (``ArchSpec.init``).

    ``normal`` (the TF1 seeds, jpjuvo's tensorlayer code): weights N(0, 0.02), biases 0, G's BatchNorm
    γ ~ N(1, 0.02), D's γ ~ N(1, 0.002) (tensorlayer 1.9's default, which 64-3D-RaSGan.py keeps).
    ``pytorch`` (what a PyTorch layer starts from, SomTambe's 3D-GAN seed): weights
    U(±1/√fan_in) (``kaiming_uniform_(a=√5)``: variance 1/(3·fan_in); Keras' VarianceScaling(1/3, fan_in,
    uniform) computes the same fan-in, out-channels·k³ for a transposed convolution as PyTorch does), biases
    U(±1/√fan_in), BatchNorm γ = 1, β = 0."""

    def __init__(self, scheme: str):
        self.pytorch = scheme == "pytorch"

    def kernel(self):
        if self.pytorch:
            return keras.initializers.VarianceScaling(scale=1.0 / 3.0, mode="fan_in", distribution="uniform")
        return _init()

    def bias(self, fan_in: int):
        if self.pytorch:
            bound = 1.0 / math.sqrt(fan_in)
            return keras.initializers.RandomUniform(-bound, bound)
        return "zeros"

    def g_gamma(self):
        return "ones" if self.pytorch else _init(mean=1.0)

    def d_gamma(self):   # 64-3D-RaSGan.py passes none: tensorlayer 1.9's BatchNormLayer default, N(1, 0.002)
        return "ones" if self.pytorch else _init(std=0.002, mean=1.0)


class MinibatchStd(layers.Layer):
    """StyleGAN's minibatch standard deviation (Karras et al. 2018) for voxel features: the batch is split into
    groups of ``group`` grids (grid i in group i mod B/group, as StyleGAN2 does); within each group, the standard
    deviation of every feature over the group's grids, averaged over the features and positions, is appended to
    every grid of the group as one more constant channel.  D then sees how varied a batch is, which a collapsed
    G cannot fake.  The batch (per replica) must be a multiple of ``group``."""

    def __init__(self, group: int = 4, **kwargs):
        super().__init__(**kwargs)
        self.group = int(group)

    def call(self, x):
        g = self.group
        y = keras.ops.reshape(keras.ops.cast(x, "float32"), (g, -1, *x.shape[1:]))            # (G, B/G, ...)
        std = keras.ops.sqrt(keras.ops.var(y, axis=0) + 1e-8)                                  # (B/G, ...)
        stat = keras.ops.mean(std, axis=tuple(range(1, len(x.shape))), keepdims=True)         # (B/G, 1, 1, 1, 1)
        stat = keras.ops.tile(stat, (g, *x.shape[1:-1], 1))                                    # (B, d, d, d, 1)
        return keras.ops.concatenate([x, keras.ops.cast(stat, x.dtype)], axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], input_shape[-1] + 1)

    def get_config(self):
        return {**super().get_config(), "group": self.group}


class _VoxelNet(keras.Model):
    """A chain of layers (``self.blocks``) built from an :class:`ArchSpec`; BatchNorm layers
    get the ``training`` flag, the others are called plainly."""

    def __init__(self, arch="rasgan64", width=1.0, resolution=None, output_activation=None,
                 latent_dim=LATENT_DIM, dtype_policy=None, synchronized_bn=False, conv_transpose="native",
                 init=None, data_scale=1.0, d_norm="batch", latent_std=1.0, mbstd=0, **kwargs):
        super().__init__(**kwargs)
        self.spec = make_spec(arch, width, resolution, output_activation, latent_dim, init, data_scale, d_norm,
                              latent_std, mbstd)
        if conv_transpose not in IMPLEMENTATIONS:
            raise ValueError(f"conv_transpose must be one of {', '.join(IMPLEMENTATIONS)}, got {conv_transpose!r}")
        self.conv_transpose = conv_transpose
        if synchronized_bn and keras.backend.backend() != "tensorflow":
            raise ValueError(f"synchronized BatchNorm needs Keras' TensorFlow backend, not {keras.backend.backend()!r}")
        self.synchronized_bn = bool(synchronized_bn)
        self.blocks = self._make_blocks(self.spec, dtype_policy)

    def _bn(self, **kwargs):
        """A BatchNorm layer with the seeds' momentum/epsilon (synchronized across replicas if asked)."""
        if self.synchronized_bn:
            kwargs["synchronized"] = True
        return layers.BatchNormalization(**_BN, **kwargs)

    def _make_blocks(self, spec: ArchSpec, policy) -> list:
        raise NotImplementedError

    def build(self, input_shape):
        shape = tuple(input_shape)   # build layer by layer from shapes alone (no data needed)
        for layer in self.blocks:
            if not layer.built:
                layer.build(shape)
            shape = layer.compute_output_shape(shape)
        self.built = True

    def _chain(self, x, training):
        for layer in self.blocks:
            x = layer(x, training=training) if isinstance(layer, layers.BatchNormalization) else layer(x)
        return x

    def get_config(self):
        config = self.spec.to_dict()
        if self.synchronized_bn:
            config["synchronized_bn"] = True
        return config


class Generator(_VoxelNet):
    """Maps latent vectors ``(N, latent_dim)`` to voxel grids ``(N, R, R, R, 1)`` (float32, on the 0..1 scale:
    with ``data_scale`` s the last layer's raw output, which trains towards s, is divided by s)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("name", "generator")
        super().__init__(*args, **kwargs)

    def call(self, z, training=False):
        x = self._chain(z if self.spec.latent_std == 1 else z * self.spec.latent_std, training)
        return x if self.spec.data_scale == 1 else x / self.spec.data_scale

    def _make_blocks(self, s: ArchSpec, p) -> list:
        stages = int(math.log2(s.resolution // (4 if s.arch == "rasgan64" else 2)))
        chans = [_channels(64 * 2**i, s.width) for i in reversed(range(stages))]
        init = _Inits(s.init)
        conv = dict(kernel_initializer=init.kernel(), dtype=p)
        bn = dict(gamma_initializer=init.g_gamma(), dtype=p)
        deconv = PhaseConv3DTranspose if self.conv_transpose == "phase" else layers.Conv3DTranspose
        if s.arch == "rasgan64":   # a transposed convolution's bias fan-in is out-channels · k³ (PyTorch's)
            blocks = [layers.Dense(4 * 4 * 4 * chans[0], bias_initializer=init.bias(s.latent_dim), **conv),
                      layers.Reshape((4, 4, 4, chans[0]), dtype=p)]
            ups = [deconv(c, 4, strides=2, padding="same", bias_initializer=init.bias(c * 4**3), **conv)
                   for c in chans[1:]]
            last = deconv(1, 4, strides=2, padding="same", bias_initializer=init.bias(4**3), **conv)
        else:
            blocks = [layers.Reshape((1, 1, 1, s.latent_dim), dtype=p),
                      deconv(chans[0], 2, strides=1, use_bias=False, **conv)]
            ups = [deconv(c, 2, strides=2, use_bias=False, **conv) for c in chans[1:]]
            last = deconv(1, 2, strides=2, use_bias=False, **conv)
        blocks += [self._bn(**bn), layers.ReLU(dtype=p)]
        for up in ups:
            blocks += [up, self._bn(**bn), layers.ReLU(dtype=p)]
        return blocks + [last, layers.Activation(s.output_activation, dtype="float32")]


class Discriminator(_VoxelNet):
    """Maps voxel grids ``(N, R, R, R, 1)`` on the 0..1 scale to one float32 logit per grid, ``(N, 1)`` (with
    ``data_scale`` s the grid is multiplied by s first: D sees what the seed's D saw)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("name", "discriminator")
        super().__init__(*args, **kwargs)

    def call(self, x, training=False):
        return self._chain(x if self.spec.data_scale == 1 else x * self.spec.data_scale, training)

    def _make_blocks(self, s: ArchSpec, p) -> list:
        act = dict(negative_slope=0.2, dtype=p)
        init = _Inits(s.init)
        bn = dict(gamma_initializer=init.d_gamma(), dtype=p)
        norm = s.d_norm == "batch"
        blocks, channels_in = [], 1
        if s.arch == "rasgan64":
            for i in range(int(math.log2(s.resolution // 4))):
                c = _channels(64 * 2**i, s.width)
                blocks.append(layers.Conv3D(c, 4, strides=2, padding="same", kernel_initializer=init.kernel(),
                                            bias_initializer=init.bias(channels_in * 4**3), dtype=p))
                if i > 0 and norm:
                    blocks.append(self._bn(**bn))
                blocks.append(layers.LeakyReLU(**act))
                channels_in = c
            blocks += [MinibatchStd(s.mbstd, dtype=p)] if s.mbstd else []
            return blocks + [layers.Flatten(dtype=p),
                             layers.Dense(1, kernel_initializer=init.kernel(),
                                          bias_initializer=init.bias(4**3 * channels_in), dtype="float32")]
        size, i = s.resolution, 0
        while size > 1:   # k3 s2 valid: 32 -> 15 -> 7 -> 3 -> 1
            blocks.append(layers.Conv3D(_channels(64 * 2**i, s.width), 3, strides=2, use_bias=False,
                                        kernel_initializer=init.kernel(), dtype=p))
            blocks += [self._bn(**bn)] if norm else []
            blocks.append(layers.LeakyReLU(**act))
            size, i = (size - 3) // 2 + 1, i + 1
        blocks += [MinibatchStd(s.mbstd, dtype=p)] if s.mbstd else []
        return blocks + [layers.Conv3D(1, 1, use_bias=False, kernel_initializer=init.kernel(), dtype="float32"),
                         layers.Flatten(dtype="float32")]


def build_models(arch: str = "rasgan64", width: float = 1.0, resolution: int | None = None,
                 output_activation: str | None = None, latent_dim: int = LATENT_DIM,
                 dtype_policy: str | None = None, synchronized_bn: bool = False, conv_transpose: str = "native",
                 init: str | None = None, data_scale: float = 1.0, d_norm: str = "batch", latent_std: float = 1.0,
                 mbstd: int = 0):
    """Return the built ``(generator, discriminator)`` pair for an architecture name.

    ``dtype_policy`` is a Keras dtype policy name (``"float32"``, ``"mixed_float16"``,
    ``"mixed_bfloat16"``); ``None`` uses Keras' global policy.  The models are built
    (weights created), so ``count_params()`` and weight loading work at once.
    ``synchronized_bn`` uses cross-replica BatchNorm statistics (for a ``tf.distribute``
    strategy: call this inside ``strategy.scope()``); weights are the same either way.
    ``conv_transpose="phase"`` computes the generator's transposed convolutions in the phase
    form (:mod:`tf3dgan.models.phase_conv`: same weights, same outputs to float tolerance).
    """
    spec = make_spec(arch, width, resolution, output_activation, latent_dim, init, data_scale, d_norm, latent_std,
                     mbstd)
    kw = dict(spec.to_dict(), dtype_policy=dtype_policy, synchronized_bn=synchronized_bn)
    generator, discriminator = Generator(**kw, conv_transpose=conv_transpose), Discriminator(**kw)
    r = spec.resolution
    generator.build((None, spec.latent_dim))
    discriminator.build((None, r, r, r, 1))
    return generator, discriminator


def build_from_config(config: dict, dtype_policy: str | None = None, synchronized_bn: bool = False):
    """Build the pair from a run's ``config.json`` ``model`` section (an ``ArchSpec`` dict)."""
    return build_models(**{k: config[k] for k in ArchSpec.__dataclass_fields__ if k in config},
                        dtype_policy=dtype_policy, synchronized_bn=synchronized_bn)
