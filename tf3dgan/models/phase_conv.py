"""Transposed 3D convolution as one stride-1 convolution plus an interleave ("phase" form).

A transposed convolution with stride ``s`` and kernel ``k = m·s`` gives output voxel
``s·q + p`` (phase ``p`` per axis) from ``m`` input voxels per axis only, through the kernel
taps ``p, p + s, …``.  All ``s³`` phases therefore read the same ``m³`` input window: they are
ONE stride-1 convolution of the input (padded by ``m - 1``) with kernel ``m³`` and ``s³·O``
output channels, whose channel groups are then interleaved into the ``s``-times larger grid
(depth-to-space) and cropped for ``padding="same"``.  No multiplication by an inserted zero,
no input-dilated convolution (the op XLA and cuDNN sometimes run slowly: openxla issue 34273,
jax issue 8537).  For rasgan64's k4 s2 layers that is a 2³ convolution to 8·O channels; for
3dgan32's k2 s2 layers a 1³ convolution (a matrix product) to 8·O channels.

:class:`PhaseConv3DTranspose` (class name ``Conv3DTranspose``) is ``keras.layers.Conv3DTranspose`` with this ``call``: the same
constructor, config, weights (the kernel keeps its ``(k, k, k, filters, in)`` shape; the phase
kernel is rearranged from it inside the step, so gradients land on the same variable) and
outputs to float tolerance — a model built with it loads and saves the same weight files.
Cases it does not cover (``channels_first``, dilation, ``output_padding``, a kernel that is
not a multiple of the stride) fall back to the layer's own ``call``.
"""
from __future__ import annotations

import keras
from keras import ops

from tf3dgan.choices import IMPLEMENTATIONS  # noqa: F401  (re-exported)


def phase_supported(layer) -> bool:
    """Whether ``layer`` (a Conv3DTranspose) is one the phase form computes."""
    k, s = tuple(layer.kernel_size), tuple(layer.strides)
    return (layer.data_format == "channels_last" and set(layer.dilation_rate) == {1}
            and layer.output_padding is None and all(ki % si == 0 for ki, si in zip(k, s)))


def phase_kernel(kernel, strides):
    """Rearrange a Conv3DTranspose kernel ``(k, k, k, O, C)`` into the phase convolution's
    ``(m, m, m, C, s³·O)`` kernel (channel index ``((p_d·s + p_h)·s + p_w)·O + o``)."""
    kd, kh, kw, o, c = kernel.shape
    (sd, sh, sw) = strides
    md, mh, mw = kd // sd, kh // sh, kw // sw
    w = ops.reshape(kernel, (md, sd, mh, sh, mw, sw, o, c))           # tap index j·s + p  ->  (j, p)
    w = ops.flip(w, axis=(0, 2, 4))                                   # tap j reads input offset m-1-j
    w = ops.transpose(w, (0, 2, 4, 7, 1, 3, 5, 6))                    # (m, m, m, C, s, s, s, O)
    return ops.reshape(w, (md, mh, mw, c, sd * sh * sw * o))


def conv3d_transpose_phase(x, kernel, strides, padding: str):
    """``conv_transpose(x, kernel, strides, padding)`` (channels-last, no dilation or output
    padding, kernel a multiple of the stride) in the phase form."""
    kd, kh, kw, o, _ = kernel.shape
    s = tuple(strides)
    m = (kd // s[0], kh // s[1], kw // s[2])
    n = tuple(x.shape[1:4])
    if any(v is None for v in n):
        raise ValueError("the phase form needs static spatial sizes")
    w = phase_kernel(kernel, s)
    x = ops.pad(x, [(0, 0)] + [(mi - 1, mi - 1) for mi in m] + [(0, 0)])
    y = ops.conv(x, ops.cast(w, x.dtype), strides=1, padding="valid")     # (N, n+m-1, ..., s³·O)
    q = tuple(ni + mi - 1 for ni, mi in zip(n, m))
    y = ops.reshape(y, (-1, q[0], q[1], q[2], s[0], s[1], s[2], o))
    y = ops.transpose(y, (0, 1, 4, 2, 5, 3, 6, 7))
    y = ops.reshape(y, (-1, q[0] * s[0], q[1] * s[1], q[2] * s[2], o))    # the "valid" output
    if padding == "same":   # TensorFlow's/Keras' SAME: output n·s, (k - s) // 2 cropped in front
        k = (kd, kh, kw)
        start = [(ki - si) // 2 for ki, si in zip(k, s)]
        y = y[:, start[0]:start[0] + n[0] * s[0], start[1]:start[1] + n[1] * s[1], start[2]:start[2] + n[2] * s[2], :]
    return y


class Conv3DTranspose(keras.layers.Conv3DTranspose):
    """``keras.layers.Conv3DTranspose`` computed in the phase form (see the module docstring).

    Named like the Keras class on purpose: Keras keys the weights in a ``.weights.h5`` file by
    the snake-cased class names of the layers, so only the same name keeps weight files
    interchangeable between the two forms (it also gives the layers the same default names)."""

    def call(self, inputs):
        if not phase_supported(self):
            return super().call(inputs)
        y = conv3d_transpose_phase(inputs, self.kernel, self.strides, self.padding)
        if self.use_bias:
            y = ops.add(y, ops.reshape(self.bias, (1, 1, 1, 1, self.filters)))
        return self.activation(y) if self.activation is not None else y


PhaseConv3DTranspose = Conv3DTranspose   # the name to import it by
