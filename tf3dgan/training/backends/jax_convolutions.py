"""Convolutions for XLA's CPU backend, made of matrix products (used by the JAX backend on CPU).

XLA's CPU backend runs convolutions with input dilation (a transposed convolution, and the input
gradient of every strided convolution) through a slow generic loop: a rasgan64 G forward pass at 32³
takes over a minute, and its small-channel convolutions are slow too.  On CPU the JAX trainer therefore
traces the models with Keras' JAX ``conv`` (strided) and ``conv_transpose`` replaced by equivalent
formulations made of matrix products, pads, slices and reshapes only, whose gradients are made of the
same.  They equal the native ops up to float rounding.
"""
from __future__ import annotations

import contextlib
import itertools
import math

import jax.numpy as jnp
from jax import lax

from tf3dgan.training.backends import keras_internals


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
    nn = keras_internals.jax_nn()
    standardize_data_format = keras_internals.standardize_data_format
    compute_conv_transpose_padding_args_for_jax = keras_internals.conv_transpose_padding_for_jax
    native_conv, native_conv_t = nn.conv, nn.conv_transpose

    def conv(inputs, kernel, strides=1, padding="valid", data_format=None, dilation_rate=1):
        nd = inputs.ndim - 2
        strides, dilation = _tuple(strides, nd), _tuple(dilation_rate, nd)
        if (standardize_data_format(data_format) != "channels_last" or set(dilation) != {1}
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
        if (standardize_data_format(data_format) != "channels_last" or set(dilation) != {1}
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
