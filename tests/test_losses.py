"""Tests for tf3dgan.models.losses against independent float64 NumPy transcriptions of the formulas.

The references below are written from the textbook definitions (log σ, log(1 − σ)) and
do not share code with the package.  Moderate logits are compared with the naive
formulas; extreme logits (±80, ±500, where a float32 ``log(sigmoid(x))`` gives −inf/NaN)
are compared with analytic limits and with a float64 ``logaddexp`` form.
"""
from __future__ import annotations

import os

import keras
import numpy as np
import pytest
from keras import ops

from tf3dgan.models import losses
from tf3dgan.models.losses import OBJECTIVES, Objective, d_accuracy, get_objective, gradient_penalty_from_grads

NAMES = ("rasgan", "rsgan", "minimax", "minimax-saturating", "wgan-gp")
SIZES = (1, 7, 24)
RTOL, ATOL = 1e-5, 1e-6

needs_tf = pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                              reason="gradient checks use tf.GradientTape")


# ----------------------------------------------------------------------------------------
# float64 references (textbook formulas)
# ----------------------------------------------------------------------------------------

def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def naive_reference(name, real, fake):
    """The formulas exactly as written in the papers, in float64 (fine for moderate logits)."""
    cr, cf = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    log, s, E = np.log, _sigmoid, np.mean
    if name == "rasgan":
        d_real = s(cr - E(cf))            # D̃(x_r)
        d_fake = s(cf - E(cr))            # D̃(x_f)
        return (-E(log(d_real)) - E(log(1.0 - d_fake)),
                -E(log(d_fake)) - E(log(1.0 - d_real)))
    if name == "rsgan":
        return -E(log(s(cr - cf))), -E(log(s(cf - cr)))
    if name == "minimax-saturating":
        return -E(log(s(cr))) - E(log(1.0 - s(cf))), E(log(1.0 - s(cf)))
    if name == "minimax":
        return -E(log(s(cr))) - E(log(1.0 - s(cf))), -E(log(s(cf)))
    if name == "wgan-gp":
        return E(cf) - E(cr), -E(cf)
    raise KeyError(name)


def _nls(x):
    """−log σ(x) in float64 without overflow."""
    return np.logaddexp(0.0, -np.asarray(x, np.float64))


def _nl1ms(x):
    """−log(1 − σ(x)) in float64 without overflow."""
    return np.logaddexp(0.0, np.asarray(x, np.float64))


def stable_reference(name, real, fake):
    """The same formulas with −log σ and −log(1 − σ) written via logaddexp (any logits)."""
    cr, cf = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    E = np.mean
    if name == "rasgan":
        r, f = cr - E(cf), cf - E(cr)
        return E(_nls(r)) + E(_nl1ms(f)), E(_nls(f)) + E(_nl1ms(r))
    if name == "rsgan":
        return E(_nls(cr - cf)), E(_nls(cf - cr))
    if name == "minimax-saturating":
        return E(_nls(cr)) + E(_nl1ms(cf)), -E(_nl1ms(cf))
    if name == "minimax":
        return E(_nls(cr)) + E(_nl1ms(cf)), E(_nls(cf))
    if name == "wgan-gp":
        return E(cf) - E(cr), -E(cf)
    raise KeyError(name)


def reference_gp(grads):
    g = np.asarray(grads, np.float64).reshape(len(grads), -1)
    return np.mean((np.sqrt(np.sum(g ** 2, axis=1) + 1e-12) - 1.0) ** 2)


def reference_accuracy(relativistic, real, fake):
    cr, cf = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    if relativistic:
        cr, cf = cr - cf.mean(), cf - cr.mean()
    return 0.5 * (np.mean(cr >= 0) + np.mean(cf < 0))   # SomTambe's main.py: real right at D >= 0.5, fake at < 0.5


def logits(n, seed, scale=2.0, shift=0.0):
    """A float32 (n, 1) logit batch; the references see exactly the same float32 values."""
    rng = np.random.default_rng(seed)
    return (shift + scale * rng.standard_normal((n, 1))).astype(np.float32)


def run(name, real, fake):
    d_loss, g_loss = OBJECTIVES[name].fn(real, fake)
    return float(ops.convert_to_numpy(d_loss)), float(ops.convert_to_numpy(g_loss))


def finite_difference(fn, real, fake, h=1e-5):
    """Central differences of fn(real, fake) -> (d, g) in float64; returns 4 gradient arrays."""
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    out = {k: np.zeros_like(real if k[1] == "r" else fake) for k in ("dr", "df", "gr", "gf")}
    for which, base in (("r", real), ("f", fake)):
        for i in range(base.size):
            up, down = base.copy(), base.copy()
            up.flat[i] += h
            down.flat[i] -= h
            args_up = (up, fake) if which == "r" else (real, up)
            args_down = (down, fake) if which == "r" else (real, down)
            (du, gu), (dd, gd) = fn(*args_up), fn(*args_down)
            out["d" + which].flat[i] = (du - dd) / (2 * h)
            out["g" + which].flat[i] = (gu - gd) / (2 * h)
    return out


# ----------------------------------------------------------------------------------------
# values
# ----------------------------------------------------------------------------------------

def test_default_backend_is_tensorflow():
    if os.environ.get("KERAS_BACKEND"):
        pytest.skip("KERAS_BACKEND is set explicitly")
    assert keras.backend.backend() == "tensorflow"


def test_objective_table():
    assert set(OBJECTIVES) == set(NAMES)
    for name, objective in OBJECTIVES.items():
        assert isinstance(objective, Objective)
        assert objective.name == name
        assert callable(objective.fn)
        assert get_objective(name) is objective
    assert OBJECTIVES["rasgan"].fn is losses.rasgan
    assert OBJECTIVES["wgan-gp"].fn is losses.wgan_gp
    rules = {name: o.default_d_rule for name, o in OBJECTIVES.items()}
    assert rules == {"rasgan": "ratio", "rsgan": "ratio", "minimax-saturating": "accuracy",
                     "minimax": "accuracy", "wgan-gp": "always"}
    relativistic = {name: o.relativistic for name, o in OBJECTIVES.items()}
    assert relativistic == {"rasgan": True, "rsgan": True, "minimax-saturating": False,
                            "minimax": False, "wgan-gp": True}
    with pytest.raises(Exception):          # frozen dataclass
        OBJECTIVES["rasgan"].default_d_rule = "always"


@pytest.mark.parametrize("bad", ["RaSGAN", "wgan", "lsgan", "", "wgan_gp"])
def test_unknown_objective_raises_value_error(bad):
    with pytest.raises(ValueError, match="unknown loss"):
        get_objective(bad)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_loss_matches_textbook_formula(name, n, seed):
    real = logits(n, seed, scale=2.0, shift=0.5)
    fake = logits(n, seed + 100, scale=3.0, shift=-0.7)
    d_ref, g_ref = naive_reference(name, real, fake)
    # the naive and the stable reference agree here, so they transcribe the same formula
    np.testing.assert_allclose(stable_reference(name, real, fake), (d_ref, g_ref), rtol=1e-12, atol=1e-12)
    d_loss, g_loss = run(name, real, fake)
    np.testing.assert_allclose(d_loss, d_ref, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(g_loss, g_ref, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("name", NAMES)
def test_loss_outputs_are_float32_scalars_for_any_input_dtype(name):
    real, fake = logits(7, 3), logits(7, 4)
    d_ref, g_ref = run(name, real, fake)
    for dtype in ("float16", "bfloat16", "float64"):
        d_loss, g_loss = OBJECTIVES[name].fn(ops.cast(real, dtype), ops.cast(fake, dtype))
        for value, ref in ((d_loss, d_ref), (g_loss, g_ref)):
            assert tuple(ops.shape(value)) == ()
            assert keras.backend.standardize_dtype(value.dtype) == "float32"
            np.testing.assert_allclose(float(ops.convert_to_numpy(value)), ref, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("name", NAMES)
def test_loss_accepts_tensor_inputs(name):
    real, fake = logits(7, 5), logits(7, 6)
    expected = run(name, real, fake)
    got = run(name, ops.convert_to_tensor(real), ops.convert_to_tensor(fake))
    np.testing.assert_allclose(got, expected, rtol=1e-7)


def test_loss_ordering_sanity():
    """D's loss is lower when D is right; the relativistic losses are symmetric under swap."""
    good_real, good_fake = logits(24, 7, 1.0, 3.0), logits(24, 8, 1.0, -3.0)
    for name in ("rasgan", "rsgan", "minimax-saturating", "minimax", "wgan-gp"):
        d_good, _ = run(name, good_real, good_fake)
        d_bad, _ = run(name, good_fake, good_real)
        assert d_good < d_bad, name
    for name in ("rasgan", "rsgan"):
        d_loss, g_loss = run(name, good_real, good_fake)
        d_swap, g_swap = run(name, good_fake, good_real)
        np.testing.assert_allclose((d_loss, g_loss), (g_swap, d_swap), rtol=1e-6)


# ----------------------------------------------------------------------------------------
# stability at extreme logits
# ----------------------------------------------------------------------------------------

def _constant(value, n=8):
    return np.full((n, 1), value, np.float32)


def _analytic_limit(name, a, b):
    """Losses for constant real logits a and fake logits b with |a − b| large (softplus(x) ≈ max(x, 0))."""
    relu = lambda x: max(x, 0.0)  # noqa: E731
    if name == "rasgan":   # r = a − b, f = b − a
        return relu(b - a) + relu(b - a), relu(a - b) + relu(a - b)
    if name == "rsgan":
        return relu(b - a), relu(a - b)
    if name == "minimax-saturating":
        return relu(-a) + relu(b), -relu(b)
    if name == "minimax":
        return relu(-a) + relu(b), relu(-b)
    if name == "wgan-gp":
        return b - a, -b
    raise KeyError(name)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("big", [80.0, 500.0])
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_losses_at_extreme_logits_match_analytic_limits(name, big, sign):
    a, b = sign * big, -sign * big
    d_loss, g_loss = run(name, _constant(a), _constant(b))
    assert np.isfinite(d_loss) and np.isfinite(g_loss)
    d_lim, g_lim = _analytic_limit(name, a, b)
    # the neglected terms are ≤ log(1 + e^-160) ~ 1e-70; float32 rounding of values ~1000 is ~1e-4
    np.testing.assert_allclose((d_loss, g_loss), (d_lim, g_lim), rtol=1e-6, atol=1e-6)


def test_rasgan_extreme_limits_explicitly():
    d_loss, g_loss = run("rasgan", _constant(80.0), _constant(-80.0))
    assert d_loss == pytest.approx(0.0, abs=1e-6)        # D is certain and right
    assert g_loss == pytest.approx(2 * 160.0, rel=1e-6)  # G pays the margin twice
    d_loss, g_loss = run("rasgan", _constant(-500.0), _constant(500.0))
    assert d_loss == pytest.approx(2 * 1000.0, rel=1e-6)  # reversed: D pays the margin
    assert g_loss == pytest.approx(0.0, abs=1e-6)


def test_naive_float32_formula_would_overflow_here():
    """Guards the stability tests: a float32 log(sigmoid) transcription breaks at these logits."""
    with np.errstate(all="ignore"):
        x = np.float32(80.0)
        naive = -np.log(np.float32(1.0) - np.float32(1.0) / (np.float32(1.0) + np.exp(-x)))
    assert not np.isfinite(naive)
    d_loss, _ = run("minimax-saturating", _constant(0.0), _constant(80.0))
    assert np.isfinite(d_loss) and d_loss == pytest.approx(80.0 + np.log(2.0), rel=1e-6)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("big", [80.0, 500.0])
def test_extreme_noisy_batches_match_stable_reference(name, big):
    for real_shift, fake_shift in ((big, -big), (-big, big), (big, big), (-big, -big)):
        real = logits(7, 11, scale=3.0, shift=real_shift)
        fake = logits(7, 12, scale=3.0, shift=fake_shift)
        d_loss, g_loss = run(name, real, fake)
        assert np.isfinite(d_loss) and np.isfinite(g_loss)
        d_ref, g_ref = stable_reference(name, real, fake)
        # float32 cancellation in (C_r − E C_f) at |C| ≈ 500 costs ~ 500 · 2^-24 ≈ 3e-5 absolute
        np.testing.assert_allclose((d_loss, g_loss), (d_ref, g_ref), rtol=1e-5, atol=2e-4)


# ----------------------------------------------------------------------------------------
# gradients
# ----------------------------------------------------------------------------------------

def _tf_grads(name, real, fake):
    import tensorflow as tf

    r, f = tf.Variable(real), tf.Variable(fake)
    with tf.GradientTape(persistent=True) as tape:
        d_loss, g_loss = OBJECTIVES[name].fn(r, f)
    out = {"dr": tape.gradient(d_loss, r), "df": tape.gradient(d_loss, f),
           "gr": tape.gradient(g_loss, r), "gf": tape.gradient(g_loss, f)}
    del tape
    # wgan's G loss does not depend on the real logits: None is the correct (zero) answer
    return {k: (np.zeros(real.shape) if v is None else v.numpy()) for k, v in out.items()}


@needs_tf
@pytest.mark.parametrize("name", NAMES)
def test_gradients_match_finite_differences(name):
    real, fake = logits(7, 21, 2.0, 0.3), logits(7, 22, 2.0, -0.3)
    got = _tf_grads(name, real, fake)
    ref = finite_difference(lambda r, f: stable_reference(name, r, f), real, fake)
    for key in ref:
        np.testing.assert_allclose(got[key], ref[key], rtol=1e-4, atol=1e-6, err_msg=f"{name} {key}")


@needs_tf
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("big", [80.0, 500.0])
def test_gradients_finite_at_extreme_logits(name, big):
    for real_shift, fake_shift in ((big, -big), (-big, big), (big, big), (-big, -big)):
        real = logits(7, 31, 1.0, real_shift)
        fake = logits(7, 32, 1.0, fake_shift)
        got = _tf_grads(name, real, fake)
        ref = finite_difference(lambda r, f: stable_reference(name, r, f), real, fake, h=1e-3)
        for key in ref:
            assert np.all(np.isfinite(got[key])), f"{name} {key} at {real_shift}/{fake_shift}"
            # the gradient of a mean of softplus terms is bounded by a few / N
            np.testing.assert_allclose(got[key], ref[key], rtol=1e-3, atol=1e-5,
                                       err_msg=f"{name} {key} at {real_shift}/{fake_shift}")


# ----------------------------------------------------------------------------------------
# gradient penalty and D accuracy
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("shape", [(5,), (4, 4, 4, 1), (3, 2, 5, 2)])
def test_gradient_penalty_matches_formula(n, shape):
    rng = np.random.default_rng(n * 31 + len(shape))
    grads = (rng.standard_normal((n,) + shape) * rng.uniform(0.05, 0.6)).astype(np.float32)
    got = float(ops.convert_to_numpy(gradient_penalty_from_grads(grads)))
    np.testing.assert_allclose(got, reference_gp(grads), rtol=RTOL, atol=ATOL)


def test_gradient_penalty_special_values():
    unit = np.zeros((3, 2, 2, 2, 1), np.float32)
    unit[:, 0, 0, 0, 0] = 1.0                       # every norm exactly 1
    assert float(ops.convert_to_numpy(gradient_penalty_from_grads(unit))) == pytest.approx(0.0, abs=1e-12)
    zeros = np.zeros((4, 3, 3, 3, 1), np.float32)   # norm = sqrt(1e-12) = 1e-6
    got = float(ops.convert_to_numpy(gradient_penalty_from_grads(zeros)))
    assert got == pytest.approx((1e-6 - 1.0) ** 2, rel=1e-6)
    assert losses.GP_WEIGHT == 10.0 and losses.GP_EPSILON == 1e-12


@needs_tf
def test_gradient_penalty_differentiable_at_zero():
    import tensorflow as tf

    g = tf.Variable(np.zeros((2, 3, 3, 3, 1), np.float32))
    with tf.GradientTape() as tape:
        penalty = gradient_penalty_from_grads(g)
    grad = tape.gradient(penalty, g).numpy()
    assert np.all(np.isfinite(grad))
    np.testing.assert_array_equal(grad, 0.0)        # d/dg of (‖g‖−1)² at g = 0 with the epsilon


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("n", SIZES)
def test_d_accuracy_matches_reference(name, n):
    objective = OBJECTIVES[name]
    for seed in range(4):
        real = logits(n, 40 + seed, 2.0, 0.4)
        fake = logits(n, 60 + seed, 2.0, -0.2)
        got = float(ops.convert_to_numpy(d_accuracy(objective, real, fake)))
        assert got == pytest.approx(reference_accuracy(objective.relativistic, real, fake), abs=1e-7)
        assert 0.0 <= got <= 1.0


def test_d_accuracy_relativistic_vs_absolute():
    real = np.array([[5.0], [6.0]], np.float32)    # all positive
    fake = np.array([[3.0], [4.0]], np.float32)    # all positive, but below the real scores
    acc = lambda name: float(ops.convert_to_numpy(d_accuracy(OBJECTIVES[name], real, fake)))  # noqa: E731
    assert acc("minimax-saturating") == pytest.approx(0.5)    # every real right, every fake wrong
    assert acc("minimax") == pytest.approx(0.5)
    assert acc("rasgan") == pytest.approx(1.0)     # relative to the other batch's mean
    assert acc("rsgan") == pytest.approx(1.0)
    assert acc("wgan-gp") == pytest.approx(1.0)
    assert float(ops.convert_to_numpy(d_accuracy(OBJECTIVES["minimax"], -real, real))) == 0.0


@needs_tf
def test_losses_trace_with_unknown_batch_size():
    """The trainer's compiled step sees (None, 1) logits and (None, D, H, W, 1) gradients."""
    import tensorflow as tf

    spec = tf.TensorSpec([None, 1], tf.float32)

    @tf.function(input_signature=[spec, spec, tf.TensorSpec([None, 4, 4, 4, 1], tf.float32)])
    def everything(real, fake, grads):
        out = [gradient_penalty_from_grads(grads)]
        for name in NAMES:
            out += list(OBJECTIVES[name].fn(real, fake))
            out.append(d_accuracy(OBJECTIVES[name], real, fake))
        return out

    for n in SIZES:
        real, fake = logits(n, 70 + n), logits(n, 80 + n)
        grads = logits(n * 64, 90 + n, 0.2).reshape(n, 4, 4, 4, 1)
        got = [float(v) for v in everything(real, fake, grads)]
        expected = [reference_gp(grads)]
        for name in NAMES:
            expected += list(naive_reference(name, real, fake))
            expected.append(reference_accuracy(OBJECTIVES[name].relativistic, real, fake))
        np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)
