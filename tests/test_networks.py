"""Tests for tf3dgan.models.networks: exact parameter counts, layer structure, shapes, initialisation,
mixed precision, and a JAX-backend smoke run in a subprocess.

Full-size models are only built (cheap); forward passes use ``width=0.125``.
"""
from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
from keras import layers, ops

from tf3dgan.models.networks import (
    ARCHS,
    LATENT_DIM,
    ArchSpec,
    Discriminator,
    Generator,
    build_from_config,
    build_models,
    make_spec,
)

REPO_ROOT = Path(__file__).resolve().parents[1]

FULL_COUNTS = {  # (generator, discriminator), BN moving statistics included
    "rasgan64": (17_604_801, 11_051_457),
    "3dgan32": (2_199_808, 4_650_944),
}
NATIVE = {"rasgan64": 64, "3dgan32": 32}


def blocks_of(model, kind):
    return [layer for layer in model.blocks if isinstance(layer, kind)]


def n_weights(variables):
    return int(sum(np.prod(v.shape) for v in variables))


def expected_counts(arch, width=1.0, resolution=None, latent=LATENT_DIM):
    """Parameter counts written from the architecture description (independent of models.py)."""
    r = resolution or NATIVE[arch]
    ch = lambda base: max(1, int(round(base * width)))  # noqa: E731
    bn = lambda c: 4 * c  # noqa: E731                  gamma, beta, moving mean, moving variance
    if arch == "rasgan64":
        stages = int(math.log2(r // 4))
        chans = [ch(64 * 2 ** i) for i in reversed(range(stages))]      # e.g. 512, 256, 128, 64
        g = latent * 64 * chans[0] + 64 * chans[0] + bn(chans[0])       # Dense(z → 4³·c0) + BN
        for cin, cout in zip(chans, chans[1:]):
            g += 4 ** 3 * cin * cout + cout + bn(cout)                  # ConvT k4 with bias + BN
        g += 4 ** 3 * chans[-1] * 1 + 1                                 # last ConvT → 1 channel
        dch = [ch(64 * 2 ** i) for i in range(stages)]                  # 64, 128, 256, 512
        d, cin = 0, 1
        for i, cout in enumerate(dch):
            d += 4 ** 3 * cin * cout + cout + (bn(cout) if i > 0 else 0)
            cin = cout
        size = r // 2 ** stages                                         # 4
        d += size ** 3 * cin + 1                                        # Dense(1)
        return g, d
    stages = int(math.log2(r // 2))
    chans = [ch(64 * 2 ** i) for i in reversed(range(stages))]
    g, cin = 0, latent
    for cout in chans:
        g += 2 ** 3 * cin * cout + bn(cout)                             # ConvT k2, no bias, + BN
        cin = cout
    g += 2 ** 3 * cin                                                   # last ConvT → 1, no bias
    d, cin, size, i = 0, 1, r, 0
    while size > 1:
        cout = ch(64 * 2 ** i)
        d += 3 ** 3 * cin * cout + bn(cout)                             # Conv k3, no bias, + BN
        cin, size, i = cout, (size - 3) // 2 + 1, i + 1
    d += cin                                                            # Conv k1 → 1, no bias
    return g, d


@pytest.fixture(scope="module")
def full():
    """Full-size models of both architectures with the TF1 seeds' initialisation, built once (weights created,
    no forward pass)."""
    return {arch: build_models(arch, init="normal") for arch in ARCHS}


@pytest.fixture(scope="module")
def pytorch_full():
    """The same with PyTorch's default initialisation (3dgan32's own default)."""
    return {arch: build_models(arch, init="pytorch") for arch in ARCHS}


def z_batch(n, seed=0, latent=LATENT_DIM):
    return np.random.default_rng(seed).standard_normal((n, latent)).astype(np.float32)


# ----------------------------------------------------------------------------------------
# parameter counts
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ARCHS)
def test_exact_parameter_counts(full, arch):
    g, d = full[arch]
    assert (g.count_params(), d.count_params()) == FULL_COUNTS[arch]
    assert expected_counts(arch) == FULL_COUNTS[arch]        # the description adds up, too
    bn_g = sum(layer.gamma.shape[0] for layer in blocks_of(g, layers.BatchNormalization))
    bn_d = sum(layer.gamma.shape[0] for layer in blocks_of(d, layers.BatchNormalization))
    # moving statistics are non-trainable, everything else trainable
    assert n_weights(g.non_trainable_weights) == 2 * bn_g
    assert n_weights(d.non_trainable_weights) == 2 * bn_d
    assert n_weights(g.trainable_weights) == FULL_COUNTS[arch][0] - 2 * bn_g
    assert n_weights(d.trainable_weights) == FULL_COUNTS[arch][1] - 2 * bn_d


@pytest.mark.parametrize("arch,width,resolution", [
    ("rasgan64", 0.5, None), ("rasgan64", 0.125, 16), ("rasgan64", 0.25, 32), ("rasgan64", 1.0, 8),
    ("3dgan32", 0.5, None), ("3dgan32", 0.125, 16), ("3dgan32", 0.25, 64), ("3dgan32", 1.0, 4),
])
def test_parameter_counts_of_variants(arch, width, resolution):
    g, d = build_models(arch, width=width, resolution=resolution)
    assert (g.count_params(), d.count_params()) == expected_counts(arch, width, resolution)


def test_latent_dim_option():
    g, d = build_models("3dgan32", width=0.125, resolution=8, latent_dim=64)
    assert g.spec.latent_dim == 64
    assert g.count_params() == expected_counts("3dgan32", 0.125, 8, latent=64)[0]
    assert tuple(g(z_batch(2, latent=64)).shape) == (2, 8, 8, 8, 1)


# ----------------------------------------------------------------------------------------
# layer structure
# ----------------------------------------------------------------------------------------

def _assert_bn(layer):
    assert layer.momentum == pytest.approx(0.9)
    assert layer.epsilon == pytest.approx(1e-5)


def _spatial_trace(model, input_shape):
    """Output shape after every block, computed without running the model."""
    shape, shapes = tuple(input_shape), []
    for layer in model.blocks:
        shape = tuple(layer.compute_output_shape(shape))
        shapes.append(shape)
    return shapes


def test_rasgan64_generator_structure(full):
    g, _ = full["rasgan64"]
    kinds = [type(layer).__name__ for layer in g.blocks]
    assert kinds == (["Dense", "Reshape", "BatchNormalization", "ReLU"]
                     + ["Conv3DTranspose", "BatchNormalization", "ReLU"] * 3
                     + ["Conv3DTranspose", "Activation"])
    (dense,) = blocks_of(g, layers.Dense)
    assert dense.units == 4 * 4 * 4 * 512 and dense.use_bias
    convs = blocks_of(g, layers.Conv3DTranspose)
    assert len(convs) == 4
    assert [c.filters for c in convs] == [256, 128, 64, 1]
    for conv in convs:
        assert tuple(conv.kernel_size) == (4, 4, 4)
        assert tuple(conv.strides) == (2, 2, 2)
        assert conv.padding == "same"
        assert conv.use_bias and conv.bias is not None
        assert conv.activation in (None, keras.activations.linear)
    bns = blocks_of(g, layers.BatchNormalization)
    assert len(bns) == 4
    for bn in bns:
        _assert_bn(bn)
    assert g.blocks[-1].activation is keras.activations.linear   # raw linear output
    assert g.spec.output_activation == "linear"
    shapes = _spatial_trace(g, (None, LATENT_DIM))
    conv_shapes = [s for s, layer in zip(shapes, g.blocks) if isinstance(layer, layers.Conv3DTranspose)]
    assert shapes[1] == (None, 4, 4, 4, 512)
    assert conv_shapes == [(None, 8, 8, 8, 256), (None, 16, 16, 16, 128),
                           (None, 32, 32, 32, 64), (None, 64, 64, 64, 1)]


def test_rasgan64_discriminator_structure(full):
    _, d = full["rasgan64"]
    kinds = [type(layer).__name__ for layer in d.blocks]
    assert kinds == (["Conv3D", "LeakyReLU"]                       # no BN after the first conv
                     + ["Conv3D", "BatchNormalization", "LeakyReLU"] * 3
                     + ["Flatten", "Dense"])
    convs = blocks_of(d, layers.Conv3D)
    assert [c.filters for c in convs] == [64, 128, 256, 512]
    for conv in convs:
        assert tuple(conv.kernel_size) == (4, 4, 4)
        assert tuple(conv.strides) == (2, 2, 2)
        assert conv.padding == "same"
        assert conv.use_bias and conv.bias is not None
    assert len(blocks_of(d, layers.BatchNormalization)) == 3
    for bn in blocks_of(d, layers.BatchNormalization):
        _assert_bn(bn)
    for act in blocks_of(d, layers.LeakyReLU):
        assert act.negative_slope == pytest.approx(0.2)
    dense = d.blocks[-1]
    assert isinstance(dense, layers.Dense) and dense.units == 1
    assert dense.activation is keras.activations.linear            # a logit, no sigmoid
    shapes = _spatial_trace(d, (None, 64, 64, 64, 1))
    conv_shapes = [s for s, layer in zip(shapes, d.blocks) if isinstance(layer, layers.Conv3D)]
    assert conv_shapes == [(None, 32, 32, 32, 64), (None, 16, 16, 16, 128),
                           (None, 8, 8, 8, 256), (None, 4, 4, 4, 512)]
    assert shapes[-1] == (None, 1)


def test_3dgan32_generator_structure(full):
    g, _ = full["3dgan32"]
    kinds = [type(layer).__name__ for layer in g.blocks]
    assert kinds == (["Reshape"] + ["Conv3DTranspose", "BatchNormalization", "ReLU"] * 4
                     + ["Conv3DTranspose", "Activation"])
    convs = blocks_of(g, layers.Conv3DTranspose)
    assert [c.filters for c in convs] == [512, 256, 128, 64, 1]
    assert [tuple(c.strides) for c in convs] == [(1, 1, 1)] + [(2, 2, 2)] * 4
    for conv in convs:
        assert tuple(conv.kernel_size) == (2, 2, 2)
        assert conv.padding == "valid"
        assert not conv.use_bias and conv.bias is None
    for bn in blocks_of(g, layers.BatchNormalization):
        _assert_bn(bn)
    assert g.blocks[-1].activation is keras.activations.sigmoid
    assert g.spec.output_activation == "sigmoid"
    shapes = _spatial_trace(g, (None, LATENT_DIM))
    assert shapes[0] == (None, 1, 1, 1, LATENT_DIM)
    conv_shapes = [s for s, layer in zip(shapes, g.blocks) if isinstance(layer, layers.Conv3DTranspose)]
    assert [s[1] for s in conv_shapes] == [2, 4, 8, 16, 32]
    assert shapes[-1] == (None, 32, 32, 32, 1)


def test_3dgan32_discriminator_structure(full):
    _, d = full["3dgan32"]
    kinds = [type(layer).__name__ for layer in d.blocks]
    assert kinds == ["Conv3D", "BatchNormalization", "LeakyReLU"] * 4 + ["Conv3D", "Flatten"]
    convs = blocks_of(d, layers.Conv3D)
    assert [c.filters for c in convs] == [64, 128, 256, 512, 1]
    for conv in convs[:-1]:
        assert tuple(conv.kernel_size) == (3, 3, 3)
        assert tuple(conv.strides) == (2, 2, 2)
        assert conv.padding == "valid"
        assert not conv.use_bias
    last = convs[-1]
    assert tuple(last.kernel_size) == (1, 1, 1) and not last.use_bias
    assert last.activation in (None, keras.activations.linear)
    for act in blocks_of(d, layers.LeakyReLU):
        assert act.negative_slope == pytest.approx(0.2)
    for bn in blocks_of(d, layers.BatchNormalization):
        _assert_bn(bn)
    shapes = _spatial_trace(d, (None, 32, 32, 32, 1))
    conv_shapes = [s for s, layer in zip(shapes, d.blocks) if isinstance(layer, layers.Conv3D)]
    assert [s[1] for s in conv_shapes] == [15, 7, 3, 1, 1]
    assert shapes[-1] == (None, 1)


# ----------------------------------------------------------------------------------------
# shapes, options, validation
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ARCHS)
def test_forward_shapes_small_width(arch):
    g, d = build_models(arch, width=0.125)
    r = NATIVE[arch]
    for training in (False, True):
        x = g(z_batch(2), training=training)
        assert tuple(x.shape) == (2, r, r, r, 1)
        assert keras.backend.standardize_dtype(x.dtype) == "float32"
        logit = d(x, training=training)
        assert tuple(logit.shape) == (2, 1)
        assert keras.backend.standardize_dtype(logit.dtype) == "float32"
        assert np.all(np.isfinite(ops.convert_to_numpy(logit)))
    if arch == "3dgan32":                                 # sigmoid output lies in [0, 1]
        v = ops.convert_to_numpy(x)
        assert v.min() >= 0.0 and v.max() <= 1.0
        assert v.min() < 0.5 < v.max()
    else:                                                 # raw linear output takes both signs
        v = ops.convert_to_numpy(x)
        assert v.min() < 0.0 < v.max()


def test_sigmoid_output_range_for_large_inputs():
    g, _ = build_models("3dgan32", width=0.125, resolution=16)
    for training in (False, True):
        v = ops.convert_to_numpy(g(50.0 * z_batch(3, seed=1), training=training))
        assert np.all(np.isfinite(v)) and v.min() >= 0.0 and v.max() <= 1.0


@pytest.mark.parametrize("arch,resolution", [("rasgan64", 8), ("rasgan64", 16), ("rasgan64", 32),
                                             ("3dgan32", 4), ("3dgan32", 8), ("3dgan32", 16)])
def test_reduced_resolution_shapes(arch, resolution):
    g, d = build_models(arch, width=0.125, resolution=resolution)
    assert g.spec.resolution == d.spec.resolution == resolution
    x = g(z_batch(3))
    assert tuple(x.shape) == (3, resolution, resolution, resolution, 1)
    assert tuple(d(x).shape) == (3, 1)


def test_reduced_rasgan64_keeps_the_layers_nearest_the_output():
    g, d = build_models("rasgan64", resolution=16)
    (dense,) = blocks_of(g, layers.Dense)
    assert dense.units == 4 ** 3 * 128                       # Dense → 4³·128 → 8³·64 → 16³·1
    assert [c.filters for c in blocks_of(g, layers.Conv3DTranspose)] == [64, 1]
    assert [c.filters for c in blocks_of(d, layers.Conv3D)] == [64, 128]


def test_width_scales_channels():
    g, d = build_models("rasgan64", width=0.125)
    assert blocks_of(g, layers.Dense)[0].units == 4 ** 3 * 64
    assert [c.filters for c in blocks_of(g, layers.Conv3DTranspose)] == [32, 16, 8, 1]
    assert [c.filters for c in blocks_of(d, layers.Conv3D)] == [8, 16, 32, 64]
    assert blocks_of(d, layers.Dense)[0].units == 1
    g, d = build_models("3dgan32", width=0.5)
    assert [c.filters for c in blocks_of(g, layers.Conv3DTranspose)] == [256, 128, 64, 32, 1]
    assert [c.filters for c in blocks_of(d, layers.Conv3D)] == [32, 64, 128, 256, 1]
    g, _ = build_models("3dgan32", width=0.01, resolution=8)   # never below one channel
    assert [c.filters for c in blocks_of(g, layers.Conv3DTranspose)] == [1, 1, 1]
    big, _ = build_models("3dgan32", width=2.0, resolution=8)
    assert [c.filters for c in blocks_of(big, layers.Conv3DTranspose)] == [256, 128, 1]


@pytest.mark.parametrize("kwargs", [
    dict(arch="rasgan128"), dict(arch="3DGAN32"), dict(arch=""),
    dict(arch="rasgan64", resolution=4), dict(arch="rasgan64", resolution=48),
    dict(arch="rasgan64", resolution=-64), dict(arch="3dgan32", resolution=2),
    dict(arch="3dgan32", resolution=24), dict(arch="3dgan32", resolution=33),
    dict(arch="rasgan64", width=0.0), dict(arch="3dgan32", width=-1.0),
    dict(arch="rasgan64", width=float("nan")),
    dict(arch="rasgan64", output_activation="relu"), dict(arch="rasgan64", init="xavier"),
    dict(arch="rasgan64", data_scale=0.0), dict(arch="3dgan32", data_scale=255.0),
    dict(arch="rasgan64", d_norm="layer"), dict(arch="rasgan64", latent_std=-1.0),
])
def test_invalid_options_raise_value_error(kwargs):
    with pytest.raises(ValueError):
        make_spec(**kwargs)
    with pytest.raises(ValueError):
        build_models(**kwargs)
    with pytest.raises(ValueError):
        Generator(**kwargs)
    with pytest.raises(ValueError):
        Discriminator(**kwargs)


def test_spec_defaults_and_config_round_trip():
    assert make_spec("rasgan64") == ArchSpec("rasgan64", 1.0, 64, "linear", LATENT_DIM)
    assert make_spec("3dgan32") == ArchSpec("3dgan32", 1.0, 32, "sigmoid", LATENT_DIM, init="pytorch")   # its seed's
    g, d = build_models("rasgan64", width=0.125, resolution=16, output_activation="sigmoid")
    config = dict(g.get_config(), unrelated="ignored")
    assert g.get_config() == d.get_config() == make_spec("rasgan64", 0.125, 16, "sigmoid").to_dict()
    g2, d2 = build_from_config(config)
    assert g2.spec == g.spec and d2.spec == d.spec
    assert (g2.count_params(), d2.count_params()) == (g.count_params(), d.count_params())
    assert g2.blocks[-1].activation is keras.activations.sigmoid


# ----------------------------------------------------------------------------------------
# initialisation
# ----------------------------------------------------------------------------------------

def _kernels_and_biases(model):
    kernels, biases = [], []
    for layer in model.blocks:
        if isinstance(layer, (layers.Dense, layers.Conv3D, layers.Conv3DTranspose)):
            kernels.append((layer.name, layer.kernel.numpy()))
            if layer.use_bias:
                biases.append(layer.bias.numpy())
    return kernels, biases


@pytest.mark.parametrize("arch", ARCHS)
def test_weight_initialisation(full, arch):
    for model in full[arch]:
        kernels, biases = _kernels_and_biases(model)
        assert kernels
        for name, k in kernels:
            n = k.size
            # sampling error of a normal sample's std is std/sqrt(2n); allow 5 sigma (>= "a few %")
            assert abs(k.std() - 0.02) <= 0.02 * (5 / math.sqrt(2 * n) + 0.005), (name, k.std())
            assert abs(k.mean()) <= 5 * 0.02 / math.sqrt(n), (name, k.mean())
            assert np.abs(k).max() < 0.02 * 8                     # no stray large values
        if arch == "rasgan64":
            assert len(biases) == len(kernels)
            for name, k in kernels:
                if k.size >= 4096:                                 # the full-size conv kernels
                    assert k.std() == pytest.approx(0.02, rel=0.05), name
        else:
            assert biases == []
        for b in biases:
            np.testing.assert_array_equal(b, 0.0)
        for bn in blocks_of(model, layers.BatchNormalization):
            np.testing.assert_array_equal(bn.beta.numpy(), 0.0)
            np.testing.assert_array_equal(bn.moving_mean.numpy(), 0.0)
            np.testing.assert_array_equal(bn.moving_variance.numpy(), 1.0)


@pytest.mark.parametrize("arch", ARCHS)
def test_generator_bn_gammas(full, arch):
    g, _ = full[arch]
    gammas = np.concatenate([bn.gamma.numpy() for bn in blocks_of(g, layers.BatchNormalization)])
    assert gammas.size == 960
    assert gammas.mean() == pytest.approx(1.0, abs=5 * 0.02 / math.sqrt(gammas.size))
    assert gammas.std() == pytest.approx(0.02, rel=5 / math.sqrt(2 * gammas.size))
    assert gammas.std() > 0.01                                     # random, not all ones


@pytest.mark.parametrize("arch", ARCHS)
def test_discriminator_bn_gammas_are_tensorlayers_default(full, arch):
    # 64-3D-RaSGan.py gives D's BatchNormLayer no gamma_init: tensorlayer 1.9's default N(1, 0.002)
    _, d = full[arch]
    gammas = np.concatenate([bn.gamma.numpy() for bn in blocks_of(d, layers.BatchNormalization)])
    assert gammas.mean() == pytest.approx(1.0, abs=5 * 0.002 / math.sqrt(gammas.size))
    assert gammas.std() == pytest.approx(0.002, rel=5 / math.sqrt(2 * gammas.size))


@pytest.mark.parametrize("arch", ARCHS)
def test_pytorch_initialisation_matches_pytorchs_formulas(pytorch_full, arch):
    # PyTorch's Conv3d/ConvTranspose3d/Linear reset_parameters: kaiming_uniform_(a=√5) -> U(±1/√fan_in), i.e.
    # variance 1/(3·fan_in), with fan_in = weight.size(1)·k³ (for a transposed convolution: out-channels·k³);
    # bias U(±1/√fan_in) from the same fan_in; BatchNorm weight 1, bias 0. In Keras' kernel layout
    # (k, k, k, in, out) / (k, k, k, out, in) / (in, out) that fan-in is the product of all axes but the last.
    for model in pytorch_full[arch]:
        checked = 0
        for layer in model.blocks:
            if not isinstance(layer, (layers.Dense, layers.Conv3D, layers.Conv3DTranspose)):
                continue
            k = layer.kernel.numpy().astype(np.float64)
            fan_in = int(np.prod(k.shape[:-1]))
            bound = 1.0 / math.sqrt(fan_in)
            assert np.abs(k).max() <= bound * (1 + 1e-6), layer.name
            # the mean of x² of U(±b) is b²/3 with relative standard error √(4/5)/√n: 5 sigma
            assert np.mean(k**2) == pytest.approx(bound**2 / 3, rel=4.5 / math.sqrt(k.size)), layer.name
            assert abs(k.mean()) <= 5 * bound / math.sqrt(3 * k.size), layer.name
            if layer.use_bias:
                b = layer.bias.numpy()
                assert np.abs(b).max() <= bound * (1 + 1e-6) and np.any(b != 0), layer.name
            checked += 1
        assert checked >= 4
        for bn in blocks_of(model, layers.BatchNormalization):
            np.testing.assert_array_equal(bn.gamma.numpy(), 1.0)
            np.testing.assert_array_equal(bn.beta.numpy(), 0.0)
    assert not any(layer.use_bias for model in pytorch_full["3dgan32"] for layer in model.blocks
                   if isinstance(layer, (layers.Conv3D, layers.Conv3DTranspose)))   # models.py: bias=False


def test_pytorch_init_gives_the_generator_output_spread_the_issue_measured():
    # with PyTorch's init a 3dgan32 G's pre-sigmoid output spreads far more than with N(0, 0.02)
    z = z_batch(8)
    spread = {}
    for init in ("normal", "pytorch"):
        keras.utils.set_random_seed(0)
        g, _ = build_models("3dgan32", width=0.5, init=init, output_activation="sigmoid")
        spread[init] = float(np.std(np.asarray(g(z, training=True))))
    assert spread["pytorch"] > 3 * spread["normal"]


def test_models_are_independently_initialised():
    g1, d1 = build_models("3dgan32", width=0.125, resolution=8)
    g2, d2 = build_models("3dgan32", width=0.125, resolution=8)
    k1 = blocks_of(g1, layers.Conv3DTranspose)[0].kernel.numpy()
    k2 = blocks_of(g2, layers.Conv3DTranspose)[0].kernel.numpy()
    assert not np.array_equal(k1, k2)


# ----------------------------------------------------------------------------------------
# mixed precision
# ----------------------------------------------------------------------------------------

def _run_blocks(model, x, training=False):
    """Feed x through model.blocks one layer at a time, returning every intermediate output."""
    outputs = []
    for layer in model.blocks:
        x = layer(x, training=training) if isinstance(layer, layers.BatchNormalization) else layer(x)
        outputs.append(x)
    return outputs


@pytest.mark.parametrize("policy,low", [("mixed_bfloat16", "bfloat16"), ("mixed_float16", "float16")])
@pytest.mark.parametrize("arch", ARCHS)
def test_mixed_precision(arch, policy, low):
    before = keras.config.dtype_policy().name
    g, d = build_models(arch, width=0.125, resolution=16, dtype_policy=policy)
    assert keras.config.dtype_policy().name == before             # the global policy is untouched
    std = keras.backend.standardize_dtype
    for model in (g, d):
        for layer in model.blocks[:-2]:
            assert layer.compute_dtype == low, layer.name
        for w in model.weights:
            assert std(w.dtype) == "float32", w.name               # variables stay float32
    assert g.blocks[-1].compute_dtype == "float32"                 # G's output activation
    logit_layer = d.blocks[-1] if arch == "rasgan64" else d.blocks[-2]
    assert logit_layer.compute_dtype == "float32"                  # D's logit layer

    z = z_batch(2)
    for training in (False, True):
        g_outs = _run_blocks(g, z, training)
        assert all(std(o.dtype) == low for o in g_outs[:-1])        # hidden layers in low precision
        assert std(g_outs[-1].dtype) == "float32"
        d_outs = _run_blocks(d, g_outs[-1], training)
        hidden = d_outs[:-1] if arch == "rasgan64" else d_outs[:-2]
        assert all(std(o.dtype) == low for o in hidden)
        assert std(d_outs[-1].dtype) == "float32"
        # and through the models' own call
        x = g(z, training=training)
        logit = d(x, training=training)
        assert std(x.dtype) == "float32" and tuple(x.shape) == (2, 16, 16, 16, 1)
        assert std(logit.dtype) == "float32" and tuple(logit.shape) == (2, 1)
        assert np.all(np.isfinite(ops.convert_to_numpy(logit)))
        np.testing.assert_allclose(ops.convert_to_numpy(x), ops.convert_to_numpy(g_outs[-1]))


def test_mixed_precision_close_to_float32():
    g32, d32 = build_models("rasgan64", width=0.125, resolution=16)
    g16, d16 = build_models("rasgan64", width=0.125, resolution=16, dtype_policy="mixed_bfloat16")
    g16.set_weights(g32.get_weights())
    d16.set_weights(d32.get_weights())
    z = z_batch(4, seed=3)
    x32, x16 = ops.convert_to_numpy(g32(z)), ops.convert_to_numpy(g16(z))
    assert np.abs(x32 - x16).max() <= 0.05 * np.abs(x32).max() + 1e-3
    l32, l16 = ops.convert_to_numpy(d32(x32)), ops.convert_to_numpy(d16(x32))
    assert np.abs(l32 - l16).max() <= 0.05 * np.abs(l32).max() + 1e-3


# ----------------------------------------------------------------------------------------
# JAX backend
# ----------------------------------------------------------------------------------------

JAX_SCRIPT = textwrap.dedent(r"""
    import sys

    import jax
    import jax.numpy as jnp
    import numpy as np
    import keras
    from keras import ops

    from tf3dgan.models import losses, networks as models

    assert keras.backend.backend() == "jax", keras.backend.backend()

    def nls(x):   # -log sigmoid(x), float64
        return np.logaddexp(0.0, -np.asarray(x, np.float64))

    rng = np.random.default_rng(0)
    for arch, res in (("rasgan64", 16), ("3dgan32", 4)):
        g, d = models.build_models(arch, width=0.125, resolution=res)
        z = rng.standard_normal((3, models.LATENT_DIM)).astype("float32")
        x = g(z)
        x_train = g(z, training=True)
        assert tuple(x.shape) == (3, res, res, res, 1), x.shape
        assert tuple(x_train.shape) == (3, res, res, res, 1), x_train.shape
        assert keras.backend.standardize_dtype(x.dtype) == "float32"
        assert type(x).__module__.startswith("jax"), type(x)
        fake = d(x)
        real = d(x_train, training=True)
        assert tuple(fake.shape) == (3, 1) and tuple(real.shape) == (3, 1), (fake.shape, real.shape)
        assert keras.backend.standardize_dtype(real.dtype) == "float32"
        if arch == "3dgan32":
            v = np.asarray(x)
            assert v.min() >= 0.0 and v.max() <= 1.0
        d_loss, g_loss = losses.rasgan(real, fake)
        assert tuple(ops.shape(d_loss)) == () and tuple(ops.shape(g_loss)) == ()
        cr, cf = np.asarray(real, np.float64), np.asarray(fake, np.float64)
        rr, ff = cr - cf.mean(), cf - cr.mean()
        ref_d = nls(rr).mean() + nls(-ff).mean()
        ref_g = nls(ff).mean() + nls(-rr).mean()
        assert abs(float(d_loss) - ref_d) <= 1e-5 * (1 + abs(ref_d)), (float(d_loss), ref_d)
        assert abs(float(g_loss) - ref_g) <= 1e-5 * (1 + abs(ref_g)), (float(g_loss), ref_g)
        acc = float(losses.d_accuracy(losses.get_objective("rasgan"), real, fake))
        assert 0.0 <= acc <= 1.0
        print(arch, "ok", float(d_loss), float(g_loss), flush=True)
        # the phase-form transposed convolutions give the same generator output and the same
        # gradients (of a fixed random weighting of every output voxel) under JAX
        g_phase, _ = models.build_models(arch, width=0.125, resolution=res, conv_transpose="phase")
        g_phase.set_weights(g.get_weights())
        err = float(np.max(np.abs(np.asarray(g_phase(z, training=True)) - np.asarray(x_train))))
        assert err <= 1e-5, (arch, err)
        cotangent = rng.standard_normal(x_train.shape).astype("float32")

        def gradients(model):
            frozen = [v.value for v in model.non_trainable_variables]

            def weighted_sum(trainable):
                y, _ = model.stateless_call(trainable, frozen, z, training=True)
                return jnp.sum(y * cotangent)

            return jax.jit(jax.grad(weighted_sum))([v.value for v in model.trainable_variables])

        want, got = gradients(g), gradients(g_phase)
        assert len(want) == len(got) == len(g.trainable_variables)
        scale = max(float(np.max(np.abs(w))) for w in want)
        for w, h in zip(want, got):
            # a bias that BatchNorm cancels has a zero gradient up to rounding: tolerance on the global scale
            np.testing.assert_allclose(np.asarray(h), np.asarray(w), rtol=1e-4, atol=1e-5 * scale)
        print(arch, "phase gradients ok", len(want), scale, flush=True)

    assert "tensorflow" not in sys.modules, "tensorflow was imported under the JAX backend"
    print("TF3DGAN_JAX_OK")
""")


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")
@pytest.mark.slow
def test_models_and_losses_run_under_jax():
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    # every eager JAX op is an XLA compile on CPU; cheaper compiles keep this test at seconds
    env["XLA_FLAGS"] = " ".join(filter(None, [
        os.environ.get("XLA_FLAGS", ""),
        "--xla_backend_optimization_level=0", "--xla_llvm_disable_expensive_passes=true"]))
    proc = subprocess.run([sys.executable, "-c", JAX_SCRIPT], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-4000:]}"
    assert "TF3DGAN_JAX_OK" in proc.stdout, proc.stdout


# ---------------------------------------------------------------------------------- phase form
PHASE_CASES = [  # filters, kernel, stride, padding, input size
    (5, 4, 2, "same", (4, 4, 4)),      # rasgan64's layers
    (3, 2, 2, "valid", (3, 4, 5)),     # 3dgan32's layers (non-cubic input)
    (6, 2, 1, "valid", (1, 1, 1)),     # 3dgan32's first layer
    (4, 4, 2, "valid", (3, 3, 3)),
    (2, 3, 1, "same", (5, 4, 3)),
    (2, 6, 3, "same", (2, 3, 2)),
    (2, 4, 2, "same", (1, 1, 1)),
]


@pytest.mark.parametrize("filters,kernel,stride,padding,size", PHASE_CASES)
def test_phase_conv_transpose_equals_conv3d_transpose(filters, kernel, stride, padding, size):
    import tensorflow as tf

    from tf3dgan.models.phase_conv import PhaseConv3DTranspose

    rng = np.random.default_rng(kernel * 10 + stride)
    x = tf.constant(rng.standard_normal((2, *size, 3)).astype("float32"))
    native = layers.Conv3DTranspose(filters, kernel, strides=stride, padding=padding, activation="relu",
                                    bias_initializer="random_normal")
    phase = PhaseConv3DTranspose(filters, kernel, strides=stride, padding=padding, activation="relu")
    native.build(x.shape)
    phase.build(x.shape)
    assert [w.shape for w in phase.weights] == [w.shape for w in native.weights]   # the same weights
    phase.set_weights(native.get_weights())
    results, weight = [], None
    for layer in (native, phase):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
            if weight is None:   # a fixed random cotangent: gradients of every output voxel count
                weight = tf.constant(rng.standard_normal(y.shape).astype("float32"))
            loss = tf.reduce_sum(y * weight)
        results.append([y, *tape.gradient(loss, [x, layer.kernel, layer.bias])])   # output, dx, dkernel, dbias
    for want, got in zip(*results):
        assert tuple(got.shape) == tuple(want.shape)
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch,res", [("rasgan64", 16), ("3dgan32", 8)])
def test_generator_with_phase_conv_transpose_is_the_same_model(arch, res, tmp_path):
    g, _ = build_models(arch, width=0.125, resolution=res)
    g_phase, _ = build_models(arch, width=0.125, resolution=res, conv_transpose="phase")
    assert [w.shape for w in g_phase.weights] == [w.shape for w in g.weights]
    g.save_weights(tmp_path / "g.weights.h5")
    g_phase.load_weights(tmp_path / "g.weights.h5")             # the weight files interchange
    z = np.random.default_rng(0).standard_normal((3, LATENT_DIM)).astype("float32")
    for training in (False, True):
        np.testing.assert_allclose(ops.convert_to_numpy(g_phase(z, training=training)),
                                   ops.convert_to_numpy(g(z, training=training)), atol=1e-5)
    with pytest.raises(ValueError, match="conv_transpose must be one of native, phase"):
        build_models(arch, width=0.125, resolution=res, conv_transpose="fft")


def test_data_scale_and_latent_std_are_what_the_seeds_networks_saw():
    # 64-3D-RaSGan.py's D saw 0/255 voxels and its linear G trained towards 255; tf3dgan's models take and
    # return 0..1 grids: D(x) of a scale-255 model is the plain D on 255·x, G(z) is the plain G's output / 255.
    # SomTambe's z ~ N(0, 0.33) is a latent_std 0.33 G fed N(0, 1).
    plain_g, plain_d = build_models("rasgan64", width=0.125, resolution=16)
    g, d = build_models("rasgan64", width=0.125, resolution=16, data_scale=255.0, latent_std=0.33)
    assert checkpoint_keys_of(g) == checkpoint_keys_of(plain_g)       # the same variables: checkpoints move freely
    g.set_weights(plain_g.get_weights())
    d.set_weights(plain_d.get_weights())
    z = z_batch(4)
    x = (np.random.default_rng(1).random((4, 16, 16, 16, 1)) > 0.7).astype(np.float32)
    np.testing.assert_allclose(np.asarray(g(z)), np.asarray(plain_g(z * 0.33)) / 255.0, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(np.asarray(d(x)), np.asarray(plain_d(x * 255.0)), rtol=1e-5, atol=1e-5)


def checkpoint_keys_of(model):
    from tf3dgan.training.checkpoint_keys import model_keys

    return [key for key, _, _ in model_keys(model, "g")]
