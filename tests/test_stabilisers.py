"""The stabilisers the seeds lack (TensorFlow backend; the JAX side: tests/test_backend_jax.py): G's moving average
(--g-ema), differentiable augmentation (--augment), minibatch standard deviation (--mbstd), each against a NumPy
transcription of its definition (tests/_stabiliser_reference.py), in checkpoints, resumed exactly, and through the CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest
from _cli import FIXTURES, TINY, error_line, tool
from _stabiliser_reference import augment as augment_reference
from _stabiliser_reference import minibatch_std, moving_average

from tf3dgan.data.datasets import pool, unpack
from tf3dgan.training import runs
from tf3dgan.training.loop import TrainConfig, fit

ALL = ("translation", "mirror", "cutout")


def chairs(res=16):
    """The fixture's 12 ModelNet10 training chairs (64³, as the seed voxelized them) pooled to ``res``³, packed."""
    with np.load(FIXTURES / "modelnet10_chair_64_win_small.npz") as z:
        return pool(z["train"], 64, 64 // res)


def chair_grids(res=16):
    return unpack(chairs(res), res).astype(np.float32)[..., None]


def trainer(res=16, batch=4, seed=3, mbstd=0, **kw):
    """A tiny TensorFlow trainer on the fixture chairs (rasgan64 at 16³, width 1/8: D has a BatchNorm layer)."""
    import keras

    from tf3dgan.models.networks import build_models
    from tf3dgan.training.backends.tensorflow import GANTrainer

    keras.utils.set_random_seed(seed)
    g, d = build_models("rasgan64", width=0.125, resolution=res, output_activation="sigmoid", mbstd=mbstd)
    return GANTrainer(g, d, chairs(res), res, batch_size=batch, seed=seed, **kw)


def g_variables(t, model=None):
    model = model or t.G
    return [np.array(v.numpy()) for v in model.trainable_variables + model.non_trainable_variables]


# ------------------------------------------------------------------ augmentation
@pytest.mark.parametrize("ops", [("translation",), ("mirror",), ("cutout",), ALL])
def test_augmentation_is_its_definition(ops):
    from keras import ops as K

    from tf3dgan.training import augment

    x = chair_grids()
    x = np.concatenate([x, 0.8 * x + 0.1 * np.random.default_rng(1).random(x.shape, np.float32)])  # G-like values
    u = np.random.default_rng(2).random((len(x), augment.DRAWS)).astype(np.float32)
    u[::2, 3] = 0.2   # half the grids mirrored
    got = np.asarray(K.convert_to_numpy(augment.augment(K.convert_to_tensor(x), K.convert_to_tensor(u), ops)))
    expected = augment_reference(x, u, ops)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    changed = [not np.array_equal(a, b) for a, b in zip(expected, x)]
    assert sum(changed) >= len(x) // 2, ops   # each operation does something to most grids
    if ops == ("mirror",):   # a chair about its own centre of mass: close to itself, unlike about the grid's centre
        iou = lambda a, b: ((a > .5) & (b > .5)).sum() / max(((a > .5) | (b > .5)).sum(), 1)  # noqa: E731
        own = np.mean([iou(a, b) for a, b in zip(expected[:12:2], x[:12:2])])
        centre = np.mean([iou(a[::-1], b) for a, b in zip(x[:12:2], x[:12:2])])
        assert own > 0.6 and own > centre + 0.2


def test_augmentation_is_differentiable_and_linear_in_the_grid():
    # translation and cutout are linear maps A of the grid (the mirror's shift is fixed by the grid's centre, so it
    # is linear for that grid): the gradient of <A(x), w> is Aᵀw, so <grad, y> = <A(y), w>.
    import tensorflow as tf

    from tf3dgan.training import augment

    x = tf.constant(chair_grids()[:6])
    u = tf.constant(np.random.default_rng(3).random((6, augment.DRAWS)), tf.float32)
    w = tf.constant(np.random.default_rng(4).normal(size=x.shape), tf.float32)
    y = tf.constant(np.random.default_rng(5).random(x.shape), tf.float32)
    for ops, probe in ((("translation", "cutout"), y), (ALL, x)):
        with tf.GradientTape() as tape:
            tape.watch(x)
            total = tf.reduce_sum(augment.augment(x, u, ops) * w)
        grad = tape.gradient(total, x)
        assert grad is not None and float(tf.reduce_max(tf.abs(grad))) > 0
        lhs = float(tf.reduce_sum(grad * probe))
        rhs = float(tf.reduce_sum(augment.augment(probe, u, ops) * w))
        assert lhs == pytest.approx(rhs, rel=1e-5, abs=1e-4)


def test_a_step_shows_d_the_real_and_the_generated_batch_through_the_same_augmentation():
    # Replayed with the trainer's own draws (z, then the D phase's 16 uniforms per grid: the first 8 for the real
    # grid, the last 8 for the generated one) on a copy of the state taken before the step.
    import tensorflow as tf

    from tf3dgan.models.losses import rasgan
    from tf3dgan.training import augment
    from tf3dgan.training.algorithm import unpack as unpack_ops

    a = trainer(augment=ALL, d_rule="always")
    a.start_epoch()
    a.train_steps(1)
    state = a.state_arrays()
    d_loss = float(a.train_steps(1)["d_loss"].numpy()[0])
    rng = tf.random.Generator.from_state(state["trainer/rng"], alg="philox")
    z = rng.normal((4, a.latent_dim))
    u = rng.uniform((4, 2 * augment.DRAWS)).numpy()
    rows = state["trainer/perm"][0][4:8]
    real = np.asarray(unpack_ops(a._data.numpy()[rows], 16))
    c = trainer(augment=ALL, d_rule="always")
    c.load_state_arrays(state)
    fake = c.G(z, training=True).numpy()
    seen_real = augment_reference(real, u[:, :8], ALL)
    seen_fake = augment_reference(fake, u[:, 8:], ALL)
    expected = float(rasgan(c.D(seen_real, training=True), c.D(seen_fake, training=True))[0])
    plain = float(rasgan(c.D(real, training=True), c.D(fake, training=True))[0])
    assert abs(expected - plain) > 1e-4          # the augmentation matters to this loss
    assert d_loss == pytest.approx(expected, rel=1e-4)


# ------------------------------------------------------------------ G's moving average
@pytest.mark.parametrize("n_critic", [1, 2])
def test_g_ema_is_the_moving_average_of_g(n_critic):
    t = trainer(g_ema=0.9, n_critic=n_critic, loss="wgan-gp" if n_critic > 1 else "rasgan")
    snapshots, trained = [g_variables(t)], []
    t.start_epoch()
    for _ in range(6):
        if t.position >= t.steps_per_epoch:
            t.start_epoch()
        t.train_steps(1)
        snapshots.append(g_variables(t))
        n = len(t.G.trainable_variables)   # (G's BatchNorm statistics move in the D phase too)
        trained.append(not all(np.array_equal(a, b) for a, b in zip(snapshots[-2][:n], snapshots[-1][:n])))
    assert trained == ([True] * 6 if n_critic == 1 else [True, False] * 3)
    expected = moving_average(snapshots, 0.9, trained)[-1]
    for got, want, raw in zip(g_variables(t, t.G_ema), expected, snapshots[-1]):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert not np.allclose(g_variables(t, t.G_ema)[0], snapshots[-1][0])    # the average is not G
    assert int(t.state_arrays()["trainer/ema_count"]) == sum(trained)
    z = np.random.default_rng(0).normal(size=(3, t.latent_dim)).astype(np.float32)
    np.testing.assert_allclose(t.generate(z), t.G_ema(z, training=False).numpy()[..., 0], atol=1e-6)  # samples: EMA


def test_checkpoints_carry_the_average_and_a_resumed_trainer_continues_exactly():
    kw = dict(g_ema=0.99, augment=ALL, mbstd=2)
    straight = trainer(**kw)
    straight.start_epoch()
    straight.train_steps(3)
    first = trainer(**kw)
    first.start_epoch()
    first.train_steps(1)
    saved = first.state_arrays()
    assert any(k.startswith("g_ema/") for k in saved)
    resumed = trainer(seed=11, **kw)   # other initial weights and stream: all comes from the checkpoint
    resumed.load_state_arrays(saved)
    resumed.train_steps(2)
    a, b = straight.state_arrays(), resumed.state_arrays()
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_allclose(b[key], a[key], rtol=1e-5, atol=1e-6, err_msg=key)


def test_a_checkpoint_without_an_average_starts_it_from_its_g():
    plain = trainer()
    plain.start_epoch()
    plain.train_steps(2)
    t = trainer(g_ema=0.999, seed=11)
    t.load_state_arrays(plain.state_arrays())
    for got, want in zip(g_variables(t, t.G_ema), g_variables(plain)):
        np.testing.assert_array_equal(got, want)
    assert int(t.state_arrays()["trainer/ema_count"]) == 0


# ------------------------------------------------------------------ minibatch standard deviation
def test_minibatch_std_is_its_definition_and_mixes_only_a_group():
    from keras import ops as K

    from tf3dgan.models.networks import MinibatchStd

    x = np.random.default_rng(0).normal(size=(8, 2, 2, 2, 3)).astype(np.float32)
    got = K.convert_to_numpy(MinibatchStd(4)(K.convert_to_tensor(x)))
    np.testing.assert_allclose(got, minibatch_std(x, 4), rtol=1e-5, atol=1e-6)
    _, d = __import__("tf3dgan.models.networks", fromlist=["build_models"]).build_models(
        "rasgan64", width=0.125, resolution=16, mbstd=2)
    grids = chair_grids()[:4]
    base = d(grids, training=False).numpy()[:, 0]
    other = grids.copy()
    other[0] = 0   # grid 0's group (batch 4, groups of 2): grids 0 and 2
    moved = d(other, training=False).numpy()[:, 0]
    assert moved[2] != base[2] and moved[1] == base[1] and moved[3] == base[3]


# ------------------------------------------------------------------ the tools
def test_bad_stabiliser_flags_are_one_line_each(tmp_path):
    for flags, words in ((["--g-ema", "1.5"], "--g-ema must be in [0, 1)"),
                         (["--augment", "translation,rotate"], "unknown --augment operation 'rotate'"),
                         (["--mbstd", "1"], "minibatch std group size must be 0 (off) or at least 2"),
                         (["--mbstd", "3"], "--mbstd 3 needs a batch per replica that is a multiple of 3")):
        proc = tool("train", "-n", "bad", "--out", tmp_path, "-e", "1", *TINY, *flags, timeout=120)
        assert words in error_line(proc), (flags, proc.stderr[-500:])


@pytest.mark.slow
def test_a_run_with_every_stabiliser_samples_exports_and_evaluates_its_average(tmp_path):
    from tf3dgan.training.checkpoint_keys import model_keys

    cfg = TrainConfig(name="run", data="synthetic:chairs:res=16:n=16", batchsize=4, width=0.125, out=str(tmp_path),
                      epochs=2, sample=1, save=1, graph=2, graph3d=2, progress=False, seed=5, g_ema=0.9,
                      augment="translation,mirror,cutout", mbstd=2, r1=1.0, output_activation="sigmoid")
    run_dir = fit(cfg)
    config = json.loads((run_dir / "config.json").read_text())
    assert config["settings"]["g_ema"] == 0.9 and config["settings"]["augment"] == "translation,mirror,cutout"
    assert config["model"]["mbstd"] == 2
    arrays, _ = runs.load_checkpoint(runs.checkpoint_path(run_dir))
    averaged, _ = runs.load_generator(run_dir)
    raw, _ = runs.load_generator(run_dir, ema=False)
    exported, _ = runs.load_generator(run_dir, weights=run_dir / runs.GENERATOR_WEIGHTS)
    assert averaged.moving_average and not raw.moving_average and exported.moving_average
    for key, w, _ in model_keys(averaged, "g"):
        np.testing.assert_array_equal(w.numpy(), arrays["g_ema/" + key[2:]])
    for (key, w, _), e in zip(model_keys(raw, "g"), exported.weights):
        np.testing.assert_array_equal(w.numpy(), arrays[key])
        np.testing.assert_array_equal(e.numpy(), arrays["g_ema/" + key[2:]])
    ref = "synthetic:chairs:res=16:n=8:seed=9"
    ema = tool("evaluate", "-n", "run", "--out", tmp_path, "--reference", ref, "--metrics", "iou", "--json")
    no_ema = tool("evaluate", "-n", "run", "--out", tmp_path, "--reference", ref, "--metrics", "iou", "--json",
                  "--no-ema")
    assert ema.returncode == 0 and no_ema.returncode == 0, ema.stderr[-2000:] + no_ema.stderr[-2000:]
    a, b = json.loads(ema.stdout), json.loads(no_ema.stdout)
    assert "moving average" in a["samples"] and "moving average" not in b["samples"]
