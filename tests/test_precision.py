"""Mixed precision on the TensorFlow train step: float32 logits, finite steps, loss scaling that recovers."""
from __future__ import annotations

import numpy as np
import pytest

from tf3dgan.data.datasets import pack
from tf3dgan.data.synthetic import make_shapes


def trainer_in(precision, n=32, **kw):
    from tf3dgan.models.networks import build_models
    from tf3dgan.training.backends.tensorflow import GANTrainer

    g, d = build_models("rasgan64", width=0.125, resolution=8, output_activation="sigmoid", dtype_policy=precision)
    data = pack(make_shapes("boxes", n, 8, seed=1))
    return GANTrainer(g, d, data, 8, batch_size=8, seed=3, precision=precision, d_rule="always", **kw)


@pytest.mark.parametrize("precision", ["mixed_float16", pytest.param("mixed_bfloat16", marks=pytest.mark.slow)])
def test_mixed_precision_steps_are_finite_with_float32_logits(precision):
    import keras

    t = trainer_in(precision)
    compute = "float16" if precision == "mixed_float16" else "bfloat16"
    assert t.G.blocks[1].compute_dtype == compute           # the bulk of the network runs in 16 bits
    assert all(w.dtype == "float32" for w in t.G.weights + t.D.weights)   # variables stay float32
    z = keras.random.normal((4, t.latent_dim))
    fake = t.G(z, training=False)
    assert fake.dtype == "float32" and t.D(fake, training=False).dtype == "float32"
    before = [w.numpy().copy() for w in t.G.trainable_weights]
    t.start_epoch()
    m = {k: v.numpy() for k, v in t.train_steps(4).items()}
    assert all(np.isfinite(m[k]).all() for k in ("d_loss", "g_loss", "d_accuracy"))
    assert any(not np.array_equal(b, w.numpy()) for b, w in zip(before, t.G.trainable_weights))
    if precision == "mixed_float16":
        assert (m["loss_scale"] > 1).all()
    else:
        assert (m["loss_scale"] == 1).all()


def test_loss_scale_backs_off_after_an_overflow_and_training_goes_on():
    t = trainer_in("mixed_float16", n=8 * 40)     # 40 steps in an epoch
    t.start_epoch()
    normal = float(t.train_steps(1)["loss_scale"].numpy()[-1])
    huge = 2.0 ** 28                                       # gradients × 2^28 overflow float16: inf
    t.opt_g.dynamic_scale.assign(huge)
    t.opt_d.dynamic_scale.assign(huge)
    g_before = [w.numpy().copy() for w in t.G.trainable_weights]
    first = t.train_steps(1)
    assert float(first["loss_scale"].numpy()[0]) == huge / 2     # overflow: the scale halves ...
    assert all(np.array_equal(b, w.numpy()) for b, w in zip(g_before, t.G.trainable_weights))   # ... the step is skipped
    m = {k: v.numpy() for k, v in t.train_steps(30).items()}
    scale = m["loss_scale"]
    assert (np.diff(scale) <= 0).all() and scale[-1] < huge / 2   # it keeps halving until gradients are finite,
    assert scale[-1] == scale[-5] and scale[-1] >= normal / 2    # then holds (no step is lost after that)
    assert np.isfinite(m["g_loss"]).all() and np.isfinite(m["d_loss"]).all()
    g_mid = [w.numpy().copy() for w in t.G.trainable_weights]
    t.train_steps(2)
    assert any(not np.array_equal(b, w.numpy()) for b, w in zip(g_mid, t.G.trainable_weights))   # updates resumed
