"""The train step and the run loop: the in-graph D rule, no retracing, exact resume, outputs."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tf3dgan.data.datasets import pack
from tf3dgan.data.synthetic import make_shapes
from tf3dgan.errors import CheckpointError, Tf3dganError
from tf3dgan.training import runs
from tf3dgan.training.loop import TrainConfig, fit, lr_at, parse_lr_schedule


def tiny_trainer(loss="rasgan", d_rule=None, n=32, batch=8, **kw):
    from tf3dgan.models.networks import build_models
    from tf3dgan.training.backends.tensorflow import GANTrainer

    g, d = build_models("rasgan64", width=0.125, resolution=8, output_activation="sigmoid")
    data = pack(make_shapes("boxes", n, 8, seed=1))
    return GANTrainer(g, d, data, 8, batch_size=batch, loss=loss, d_rule=d_rule, seed=3, **kw)


def replay_rule(rule, d_loss, g_loss, accuracy, alpha=0.3, factor=2.0, timing="current"):
    """NumPy transcription of the seeds' rules: which steps train D, given the step losses and accuracies.

    ratio (64-3D-RaSGan.py): EMA α of both losses, D trains on the next step when factor·D_smooth > G_smooth;
    accuracy, ``current`` (SomTambe's main.py): D trains on this step when its accuracy on this batch, before
    the update, is < 0.8; ``previous`` (tf3dgan 0.1): on the next step when it was ≤ 0.8."""
    trained, train_next, d_s, g_s = [], True, 0.0, 0.0
    for d, g, acc in zip(d_loss, g_loss, accuracy):
        trained.append(acc < 0.8 if rule == "accuracy" and timing == "current" else train_next)
        d_s, g_s = alpha * d + (1 - alpha) * d_s, alpha * g + (1 - alpha) * g_s
        train_next = {"ratio": factor * d_s > g_s, "accuracy": acc <= 0.8, "always": True}[rule]
    return np.array(trained, dtype=np.float32)


@pytest.mark.parametrize("loss,rule,timing", [("rasgan", "ratio", None), ("rsgan", "ratio", None),
                                              pytest.param("minimax", "accuracy", "current", marks=pytest.mark.slow),
                                              pytest.param("minimax", "accuracy", "previous", marks=pytest.mark.slow),
                                              ("wgan-gp", "always", None)])
def test_d_rule_runs_in_graph_as_the_seed_describes(loss, rule, timing):
    trainer = tiny_trainer(loss=loss, d_rule=None if rule != "always" else "always",
                           g_lr=0.01, d_lr=0.0005, **({"accuracy_timing": timing} if timing else {}))
    assert trainer.d_rule == rule
    trainer.start_epoch()
    m = {k: v.numpy() for k, v in trainer.train_steps(4).items()}
    trainer.start_epoch()
    m2 = {k: v.numpy() for k, v in trainer.train_steps(4).items()}
    m = {k: np.concatenate([m[k], m2[k]]) for k in m}
    assert np.isfinite(m["d_loss"]).all() and np.isfinite(m["g_loss"]).all()
    constants = {"alpha": 0.35, "factor": 1.5} if loss == "rsgan" else {}   # 64-3D-RSGan.py's
    np.testing.assert_array_equal(m["d_trained"], replay_rule(rule, m["d_loss"], m["g_loss"], m["d_accuracy"],
                                                              timing=timing or "current", **constants))
    assert trainer.trace_count == 1


def test_ratio_rule_skips_d_when_it_is_ahead():
    # D far ahead (big D lr, tiny G lr): the seed's rule must stop training D on some steps,
    # and a skipped step must leave D's weights untouched.
    trainer = tiny_trainer(g_lr=1e-6, d_lr=0.05)
    trainer.start_epoch()
    trained = []
    for _ in range(6):
        if trainer.position >= trainer.steps_per_epoch:
            trainer.start_epoch()
        before = [w.numpy().copy() for w in trainer.D.trainable_weights]
        m = trainer.train_steps(1)
        after = [w.numpy() for w in trainer.D.trainable_weights]
        changed = any(not np.array_equal(a, b) for a, b in zip(before, after))
        assert changed == bool(m["d_trained"].numpy()[0])
        trained.append(changed)
    assert trained[0] and not all(trained)


def one_step(trainer, variables):
    """One train step (a new epoch first when the last one is done): its metrics, and whether any of
    ``variables`` changed."""
    if trainer.position >= trainer.steps_per_epoch:
        trainer.start_epoch()
    before = [v.numpy().copy() for v in variables]
    metrics = trainer.train_steps(1)
    return metrics, any(not np.array_equal(a, v.numpy()) for a, v in zip(before, variables))


@pytest.mark.parametrize("timing", ["current", "previous"])
def test_accuracy_rule_decides_when_the_seed_did(timing):
    # D far ahead: the accuracy rule must skip D on some steps. "current" (SomTambe's main.py): the decision
    # comes from this step's scores before D's update, accuracy < 0.8; "previous": last step's, <= 0.8. A
    # skipped step leaves D's weights and its Adam state (moments, iteration count) as they were.
    trainer = tiny_trainer(loss="minimax", g_lr=1e-6, d_lr=0.05, accuracy_timing=timing)
    assert trainer.d_rule == "accuracy"
    trainer.start_epoch()
    trained, accuracies = [], []
    for _ in range(14):
        m, changed = one_step(trainer, trainer.D.trainable_weights + trainer.opt_d.variables)
        assert changed == bool(m["d_trained"].numpy()[0])
        trained.append(changed)
        accuracies.append(float(m["d_accuracy"].numpy()[0]))
    acc = np.array(accuracies)
    expected = acc < 0.8 if timing == "current" else np.r_[True, acc[:-1] <= 0.8]
    np.testing.assert_array_equal(trained, expected)
    assert any(trained) and not all(trained)


@pytest.mark.parametrize("rule_loss", ["train", "eval"])
def test_a_skipped_d_step_feeds_the_rule_the_chosen_loss(rule_loss):
    # 64-3D-RaSGan.py, when the rule skips D, smooths d_loss2: the real batch through D with BatchNorm in
    # inference mode (moving statistics), scored against this step's fakes through D in training mode.
    # Replayed here with the trainer's own draws on a copy of its state taken before the step.
    import tensorflow as tf

    from tf3dgan.models.losses import rasgan
    from tf3dgan.training.algorithm import unpack

    def trainer(**kw):   # 16³: D has a BatchNorm layer (at 8³ it has none)
        from tf3dgan.models.networks import build_models
        from tf3dgan.training.backends.tensorflow import GANTrainer

        g, d = build_models("rasgan64", width=0.125, resolution=16, output_activation="sigmoid")
        return GANTrainer(g, d, pack(make_shapes("boxes", 32, 16, seed=1)), 16, batch_size=8, seed=3, **kw)

    a = trainer(rule_loss=rule_loss)
    a.start_epoch()
    a.train_steps(2)   # moving statistics away from their initial 0/1
    state = dict(a.state_arrays(), **{"trainer/train_d": np.array(False)})
    a.load_state_arrays(state)
    m = {k: v.numpy() for k, v in a.train_steps(1).items()}
    assert m["d_trained"][0] == 0
    z = tf.random.Generator.from_state(state["trainer/rng"], alg="philox").normal((8, a.latent_dim))
    rows = state["trainer/perm"][0][2 * 8:3 * 8]
    real = unpack(a._data.numpy()[rows], 16)
    expected = {}
    for mode, training in (("train", True), ("eval", False)):
        c = trainer()
        c.load_state_arrays(state)
        fake = c.G(z, training=True)
        real_logits = c.D(real, training=training)
        expected[mode] = float(rasgan(real_logits, c.D(fake, training=True))[0])
    assert abs(expected["train"] - expected["eval"]) > 1e-3       # the two sources differ here
    assert m["d_loss"][0] == pytest.approx(expected[rule_loss], rel=1e-5)


def test_n_critic_trains_g_on_every_nth_step_as_iwgan_did():
    # 64-3D-IWGan.py: D every iteration, G when iter_counter % 5 == 0 (iterations 0, 5, 10, ...); a step
    # without G's update leaves G and its optimizer as they were and reports the last G loss
    trainer = tiny_trainer(loss="wgan-gp", n_critic=3, g_lr=0.01, d_lr=0.001)
    trainer.start_epoch()
    changed, g_losses = [], []
    for _ in range(7):
        m, moved = one_step(trainer, trainer.G.trainable_weights + trainer.opt_g.variables)
        changed.append(moved)
        g_losses.append(float(m["g_loss"].numpy()[0]))
        assert m["d_trained"].numpy()[0] == 1
    assert changed == [True, False, False, True, False, False, True]
    assert g_losses[1] == g_losses[2] == g_losses[0] and g_losses[4] == g_losses[5] == g_losses[3]
    assert int(trainer.opt_g.iterations.numpy()) == 3 and int(trainer.opt_d.iterations.numpy()) == 7


def test_restart_state_zeroes_adam_and_the_rule_and_nothing_else():
    # --lr-schedule-reset: what restarting 64-3D-RaSGan.py from its saved networks resets
    trainer = tiny_trainer(g_lr=0.01, d_lr=0.001)
    trainer.start_epoch()
    trainer.train_steps(3)
    before = trainer.state_arrays()
    trainer.restart_state()
    after = trainer.state_arrays()
    assert before.keys() == after.keys()
    fresh = {"train_d": True, "d_smooth": 0.0, "g_smooth": 0.0, "since_d": 0, "ratio": 1, "g_wait": 0, "g_last": 0.0}
    for key, value in after.items():
        group, _, name = key.partition("/")
        if group in ("opt_g", "opt_d") and name != "learning_rate":
            assert not np.any(value), key
        elif group == "trainer" and name in fresh:
            assert value == fresh[name], key
        else:   # the weights, BatchNorm statistics, learning rates, data order, position, RNG
            np.testing.assert_array_equal(value, before[key], err_msg=key)
    assert int(before["opt_g/iteration"]) == 3 and trainer.position == 3


@pytest.mark.slow
def test_lr_schedule_reset_restarts_at_each_row_and_resumes_exactly(tmp_path):
    schedule = "0:0.002/0.0002,2:0.001/0.0001"
    straight = fit(tiny_config(tmp_path / "a", epochs=3, lr_schedule=schedule, lr_schedule_reset=True))
    iteration = lambda run, e: int(runs.load_checkpoint(runs.checkpoint_path(run, e))[0]["opt_g/iteration"])  # noqa: E731
    steps = 32 // 8
    assert [iteration(straight, e) for e in (1, 2, 3)] == [steps, 2 * steps, steps]   # zeroed at epoch 2's start
    plain = fit(tiny_config(tmp_path / "b", epochs=3, lr_schedule=schedule))
    assert iteration(plain, 3) == 3 * steps
    fit(tiny_config(tmp_path / "c", epochs=2, lr_schedule=schedule, lr_schedule_reset=True))
    resumed = fit(tiny_config(tmp_path / "c", epochs=3, lr_schedule=schedule, lr_schedule_reset=True, load=True))
    a, _ = runs.load_checkpoint(runs.checkpoint_path(straight, 3))
    b, _ = runs.load_checkpoint(runs.checkpoint_path(resumed, 3))
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_r1_adds_gamma_half_the_squared_input_gradient_of_d_on_the_real_batch():
    # --r1 GAMMA: D's loss + GAMMA/2 · E‖∇ₓD(x)‖² over the step's real batch. ∇ₓD by central finite differences
    # in NumPy on a tiny D (8³: one convolution and a Dense layer, no BatchNorm, so samples are independent).
    import tensorflow as tf

    from tf3dgan.training.algorithm import unpack

    plain, r1 = tiny_trainer(), tiny_trainer(r1_gamma=10.0)
    for t in (plain, r1):
        t.start_epoch()
    # a random convolution bias: with the zero initial bias, the all-empty windows of a binary grid sit exactly on
    # LeakyReLU's kink, where a central difference averages the two slopes and the gradient takes one
    state = plain.state_arrays()
    key = next(k for k in state if k.startswith("d/blocks.0.conv3d/bias"))
    state[key] = np.random.default_rng(0).normal(0.0, 0.1, state[key].shape).astype(np.float32)
    plain.load_state_arrays(state)
    r1.load_state_arrays(state)
    real = np.asarray(unpack(plain._data.numpy()[state["trainer/perm"][0][:8]], 8), np.float64)
    d_plain = float(plain.train_steps(1)["d_loss"].numpy()[0])
    d_r1 = float(r1.train_steps(1)["d_loss"].numpy()[0])
    b = tiny_trainer()
    b.load_state_arrays(state)
    h, n = 1e-2, real[0].size
    eye = np.eye(n).reshape((n,) + real.shape[1:])
    squared = []
    for x in real:   # one sample at a time: all its +h and -h perturbations in one batch
        batch = np.concatenate([x + h * eye, x - h * eye]).astype(np.float64)
        logits = np.asarray(b.D(tf.constant(batch, tf.float32), training=True), np.float64)[:, 0]
        grad = (logits[:n] - logits[n:]) / (2 * h)
        squared.append(np.sum(grad**2))
    assert np.mean(squared) > 1e-6
    assert d_r1 - d_plain == pytest.approx(0.5 * 10.0 * np.mean(squared), rel=2e-3)


def test_learning_rates_are_variables_and_the_step_traces_once():
    trainer = tiny_trainer()
    trainer.start_epoch()
    for i, n in enumerate([1, 3, 2, 4]):
        if trainer.position + n > trainer.steps_per_epoch:
            trainer.start_epoch()
        trainer.set_learning_rates(0.001 * (i + 1), 0.0001 * (i + 1))
        trainer.train_steps(n)
    assert trainer.learning_rates == pytest.approx((0.004, 0.0004))
    assert trainer.trace_count == 1


def test_state_round_trip_is_exact_and_checked():
    a, b = tiny_trainer(), tiny_trainer()
    a.start_epoch()
    a.train_steps(2)
    state = a.state_arrays()
    b.load_state_arrays(state)
    for key, value in b.state_arrays().items():
        np.testing.assert_array_equal(value, state[key], err_msg=key)
    bad = dict(state, **{"g/blocks.0.dense/kernel": np.zeros((3, 3), np.float32)})
    with pytest.raises(CheckpointError, match="g/blocks.0.dense/kernel"):
        b.load_state_arrays(bad)


def test_lr_schedule_parsing(tmp_path):
    seed_chair = "0:0.002/0.00005,300:0.005/0.00005,1200:0.007/0.00003,1600:0.008/0.00001"
    schedule = parse_lr_schedule(seed_chair, 0.1, 0.1)
    assert lr_at(schedule, 0) == (0.002, 0.00005)
    assert lr_at(schedule, 299) == (0.002, 0.00005)
    assert lr_at(schedule, 1200) == (0.007, 0.00003)
    assert lr_at(schedule, 2999) == (0.008, 0.00001)
    path = tmp_path / "lr.json"
    path.write_text(json.dumps({"10": [0.005, 0.0001], "20": {"g": 0.001, "d": 0.00002}}))
    schedule = parse_lr_schedule(str(path), 0.002, 0.00005)
    assert [lr_at(schedule, e) for e in (0, 10, 25)] == [(0.002, 0.00005), (0.005, 0.0001), (0.001, 0.00002)]
    with pytest.raises(Tf3dganError, match="lr-schedule"):
        parse_lr_schedule("0:abc", 0.1, 0.1)


def tiny_config(tmp_path, **kw):
    base = dict(name="run", data="synthetic:boxes:res=8:n=32", batchsize=8, width=0.125, out=str(tmp_path),
                sample=1, save=1, graph=2, graph3d=2, progress=False, deterministic=True, seed=5,
                lr_schedule="0:0.002/0.0002,3:0.001/0.0001")
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.slow
def test_resume_continues_exactly(tmp_path):
    straight = fit(tiny_config(tmp_path / "a", epochs=4))
    fit(tiny_config(tmp_path / "b", epochs=2))
    resumed = fit(tiny_config(tmp_path / "b", epochs=4, load=True))
    a, meta_a = runs.load_checkpoint(runs.checkpoint_path(straight))
    b, meta_b = runs.load_checkpoint(runs.checkpoint_path(resumed))
    assert meta_a["epoch"] == meta_b["epoch"] == 4
    assert a.keys() == b.keys()
    for key in a:   # bit for bit (deterministic ops; NaN where there is no validation set)
        np.testing.assert_array_equal(b[key], a[key], err_msg=key)
    assert len(a["history/d_loss"]) == 4 * 4   # 32 grids / batch 8 = 4 steps per epoch


def test_bad_settings_fail_before_any_data_is_read(tmp_path):
    for kw, words in ((dict(width=-1.0), "width must be a positive number"),
                      (dict(resolution=7), "resolution must be a power of two"),
                      (dict(cpu_devices=-1), "--cpu-devices must be >= 0"),
                      (dict(keep=-1), "--keep must be >= 0")):
        with pytest.raises(Tf3dganError, match=words):
            fit(tiny_config(tmp_path, data=str(tmp_path / "not_read"), epochs=1, **kw))   # (read: "does not exist")


@pytest.mark.slow
def test_a_resumed_run_keeps_its_model(tmp_path):
    fit(tiny_config(tmp_path, epochs=1))
    with pytest.raises(Tf3dganError, match=r"--width 0.25 does not match the run being resumed .*width 0.125"):
        fit(tiny_config(tmp_path, epochs=2, load=True, width=0.25))
    with pytest.raises(Tf3dganError, match=r"--arch 3dgan32 does not match .*arch rasgan64"):
        fit(tiny_config(tmp_path, epochs=2, load=True, arch="3dgan32"))
    run = fit(tiny_config(tmp_path, epochs=2, load=True, width=None))   # flags left out: the saved model
    config = runs.read_config(run)
    assert config["model"]["width"] == config["settings"]["width"] == 0.125
    assert config["settings"]["arch"] == "rasgan64" and config["settings"]["resolution"] == 8
    assert config["settings"]["output_activation"] == config["model"]["output_activation"]
    run = fit(tiny_config(tmp_path, epochs=3, load=True, arch="rasgan64"))   # the same values given: fine
    assert runs.read_config(run)["settings"]["epochs"] == 3


@pytest.mark.slow
def test_resume_from_an_earlier_epoch_truncates_history(tmp_path):
    run = fit(tiny_config(tmp_path, epochs=3))
    ckpt2, _ = runs.load_checkpoint(runs.checkpoint_path(run, 2))
    fit(tiny_config(tmp_path, epochs=3, load=True, load_epoch=2))
    latest, meta = runs.load_checkpoint(runs.checkpoint_path(run))
    assert meta["epoch"] == 3 and len(latest["history/d_loss"]) == 12
    np.testing.assert_array_equal(latest["history/d_loss"][:8], ckpt2["history/d_loss"])


def test_refuses_to_overwrite_a_run_and_to_resume_a_missing_one(tmp_path):
    fit(tiny_config(tmp_path, epochs=1))
    with pytest.raises(Tf3dganError, match="already holds a run"):
        fit(tiny_config(tmp_path, epochs=1))
    with pytest.raises(CheckpointError, match="no such run"):
        fit(tiny_config(tmp_path, name="other", epochs=1, load=True))
    with pytest.raises(CheckpointError, match="saved epochs: 1"):
        fit(tiny_config(tmp_path, epochs=2, load=True, load_epoch=7))


@pytest.mark.slow
def test_keep_prunes_old_numbered_checkpoints(tmp_path):
    run = fit(tiny_config(tmp_path, epochs=4, keep=2))
    assert runs.saved_epochs(run) == [3, 4]
    assert runs.checkpoint_path(run).is_file()


def test_non_finite_loss_stops_with_a_clear_message(tmp_path):
    cfg = tiny_config(tmp_path, epochs=3, lr_schedule=None, glr=1e30, dlr=1e30, output_activation="linear")
    with pytest.raises(Tf3dganError, match=r"non-finite .* at epoch \d+, step \d+"):
        fit(cfg)


@pytest.mark.slow
def test_xla_compiled_step_trains():
    trainer = tiny_trainer(xla=True)
    trainer.start_epoch()
    m = trainer.train_steps(2)
    trainer.train_steps(2)
    assert np.isfinite(m["d_loss"].numpy()).all() and np.isfinite(m["g_loss"].numpy()).all()
    assert trainer.trace_count == 1


@pytest.mark.slow
def test_a_float32_run_resumes_under_mixed_float16(tmp_path):
    run = fit(tiny_config(tmp_path, epochs=1, lr_schedule=None))
    fit(tiny_config(tmp_path, epochs=2, load=True, precision="mixed_float16", lr_schedule=None))
    arrays, meta = runs.load_checkpoint(runs.checkpoint_path(run))
    assert meta["epoch"] == 2 and meta["precision"] == "mixed_float16"
    assert any(k.startswith("opt_g_scale/") for k in arrays)
    assert np.isfinite(arrays["history/g_loss"]).all()
    assert (arrays["history/loss_scale"][4:] > 1).all()          # the loss scale was active in epoch 2
