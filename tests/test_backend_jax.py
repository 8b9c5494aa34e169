"""JaxGANTrainer: the JAX-backend train step, against the TensorFlow GANTrainer's semantics.

This process runs Keras on TensorFlow, so the JAX side runs in two worker processes
(``tests/_jax_worker.py``, ``KERAS_BACKEND=jax``; two so that their XLA compilations use both
cores; ``--xla_backend_optimization_level=1`` because at this size compilation, not the steps,
takes the time: it halves compile times at the same step speed; JAX's compilation cache is
kept in pytest's cache folder, so later runs skip most compilation).  The module fixture
starts the first worker, trains a tiny TensorFlow run and saves its checkpoint, then starts
the second worker (which loads it); each test checks one worker scenario's results.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from test_training import replay_rule  # the NumPy transcription of the seed's D rule

from tf3dgan.data.datasets import pack
from tf3dgan.data.synthetic import make_shapes
from tf3dgan.training import runs

pytestmark = pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")

REPO = Path(__file__).resolve().parents[1]
WORKER = REPO / "tests" / "_jax_worker.py"
GRIDS = make_shapes("boxes", 32, 8, seed=1)          # the workers' dataset (tests/test_training.py's)
DATA = {8: pack(GRIDS), 16: pack(make_shapes("boxes", 32, 16, seed=1))}
WORKERS = (("compile_once", "learn_rasgan", "resume", "d_rule_skip", "conv_rewrite", "bfloat16", "wgan_gp",
            "faithful_modes"),
           ("cross_backend", "learn_minimax", "float16", "data_parallel", "stabilisers"))   # the second needs the TF checkpoint


def tf_tiny(res=16, **kw):
    """A tiny TensorFlow trainer (rasgan64, width 1/8, batch 8, 32 boxes; at 16³ D has a BatchNorm
    layer and G a transposed convolution with BatchNorm after it)."""
    from tf3dgan.models.networks import build_models
    from tf3dgan.training.backends.tensorflow import GANTrainer

    g, d = build_models("rasgan64", width=0.125, resolution=res, output_activation="sigmoid")
    return GANTrainer(g, d, DATA[res], res, batch_size=8, seed=3, **kw)


def noise_driven_keys(trainer) -> set:
    """Checkpoint keys of the convolution biases that a BatchNorm follows, of that BatchNorm's
    moving mean, and of those biases' Adam slots.  Training-mode BatchNorm cancels such a bias,
    so its gradient is rounding noise, which Adam turns into steps of up to the learning rate in
    a backend-dependent direction."""
    from keras import layers

    from tf3dgan.training import checkpoint_keys

    key_of = {id(v): key for key, v, _ in checkpoint_keys.checkpoint_variables(trainer.G, trainer.D, trainer.opt_g,
                                                                                 trainer.opt_d)}
    keys = set()
    for model, opt in ((trainer.G, trainer.opt_g), (trainer.D, trainer.opt_d)):
        inner = getattr(opt, "inner_optimizer", opt)
        for layer, after in zip(model.blocks, model.blocks[1:]):
            if (isinstance(layer, (layers.Conv3D, layers.Conv3DTranspose)) and layer.use_bias
                    and isinstance(after, layers.BatchNormalization)):
                keys |= {key_of[id(layer.bias)], key_of[id(after.moving_mean)]}
                var = inner._get_variable_index(layer.bias)
                keys |= {key_of[id(slots[var])] for slots in (inner._momentums, inner._velocities)}
    return keys


def fix_latents(trainer, z1, z2):
    """Make the TF trainer's D step draw ``z1`` and its G step ``z2`` (set before the first trace)."""
    import tensorflow as tf

    calls = []

    def latent():
        calls.append(None)
        return tf.constant(z1 if len(calls) % 2 else z2)

    trainer._latent = latent


def start_worker(out, inp, cache, scenarios):
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu", CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2")
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=1").strip()
    log = open(out / f"log-{scenarios[0]}.txt", "w")
    with log:
        return subprocess.Popen([sys.executable, str(WORKER), str(out), str(inp), str(cache), *scenarios], cwd=REPO,
                                env=env, stdout=log, stderr=subprocess.STDOUT)


@pytest.fixture(scope="module")
def side(tmp_path_factory, request):
    inp, out = tmp_path_factory.mktemp("tf_side"), tmp_path_factory.mktemp("jax_side")
    cache = (request.config.cache.mkdir("jax_compilation_cache")   # compiled programs, kept between runs
             if getattr(request.config, "cache", None) is not None else tmp_path_factory.mktemp("xla_cache"))
    procs = [start_worker(out, inp, cache, WORKERS[0])]
    try:
        trainer = tf_tiny(d_rule="always")
        trainer.start_epoch()
        trainer.train_steps(2)
        state = trainer.state_arrays()
        runs.save_checkpoint(inp / "tf_run", state, {"epoch": 0, "step_in_epoch": 2}, numbered=False)
        rng = np.random.default_rng(0)
        latents = {k: rng.standard_normal((n, 200)).astype(np.float32) for k, n in (("z", 3), ("z1", 8), ("z2", 8))}
        np.savez(inp / "latents.npz", **latents)
        procs.append(start_worker(out, inp, cache, WORKERS[1]))
        for p in procs:
            p.wait(timeout=600)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, group in zip(procs, WORKERS):
        assert p.returncode == 0, (out / f"log-{group[0]}.txt").read_text()[-4000:]
    return SimpleNamespace(inp=inp, out=out, state=state, latents=latents)


def result(side, name) -> dict:
    error = side.out / f"{name}.error"
    if error.exists():
        pytest.fail(f"JAX worker scenario {name!r} failed:\n{error.read_text()}", pytrace=False)
    with np.load(side.out / f"{name}.npz") as z:
        return {k: z[k] for k in z.files}


@pytest.mark.slow
def test_the_jax_side_runs_without_tensorflow(side):
    reports = sorted(side.out.glob("worker-*.txt"))     # the workers make "import tensorflow" fail
    assert len(reports) == len(WORKERS)
    assert all(r.read_text().strip() == "tensorflow blocked: True" for r in reports)


@pytest.mark.slow
def test_steps_compile_once_and_return_device_arrays_without_host_sync(side):
    from tf3dgan.training.backends.tensorflow import METRICS

    r = result(side, "compile_once")
    assert r["trace_count"] == 1                 # 6 calls, new learning rates before each, 2 epochs
    assert r["device_arrays"]                    # jax.Array metrics, under a device-to-host transfer ban
    assert r["finite"]
    assert tuple(r["keys"]) == tuple(sorted(METRICS))
    np.testing.assert_allclose(r["learning_rates"], (0.006, 0.0006), rtol=1e-6)
    errors = list(r["errors"])
    assert len(errors) == 4, errors
    assert "bad.npz: entry 'g/blocks.0.dense/kernel' has shape (3, 3)" in errors[0]
    assert "'trainer/rng'" in errors[1]
    assert "bad.npz: has no entry 'opt_d/blocks.0.conv3d/kernel/velocity'" in errors[2]
    assert "start_epoch" in errors[3]


@pytest.mark.slow
def test_the_seeds_accuracy_rule_n_critic_and_r1_under_jax(side):
    r = result(side, "faithful_modes")
    trained = r["trained"].astype(bool)
    np.testing.assert_array_equal(trained, r["accuracy"] < 0.8)      # decided on this step, before the update
    assert trained.any() and not trained.all()
    np.testing.assert_array_equal(r["d_same"], ~trained)             # a skipped step: D and Adam untouched
    np.testing.assert_array_equal(r["g_same"], [False, True, True, False, True, True, False])
    assert r["g_loss"][1] == r["g_loss"][2] == r["g_loss"][0]       # no update: the last G loss
    assert r["r1_expected"] > 1e-6 and r["r1_diff"] == pytest.approx(r["r1_expected"], rel=1e-4)   # --r1 10


@pytest.mark.slow
def test_the_stabilisers_under_jax(side):
    r = result(side, "stabilisers")
    assert r["augment_error"] < 1e-6                       # --augment: its definition (tests/_stabiliser_reference.py)
    assert r["ema_error"] < 1e-5                           # --g-ema: the moving average of G's 5 snapshots
    assert r["ema_keys"] == r["g_keys"] and r["ema_count"] == 3
    assert list(r["state_mismatch"]) == []                 # every stabiliser: resumed = straight through


@pytest.mark.slow
def test_a_skipped_d_step_leaves_d_and_its_optimizer_bit_identical(side):
    r = result(side, "d_rule_skip")
    trained = r["m_d_trained"].astype(bool)
    assert trained[0] and not trained.all()      # the ratio rule skipped D on some steps
    skipped_calls = ~trained.reshape(-1, 2).any(axis=1)        # calls of 2 steps that never trained D
    assert skipped_calls.any()
    np.testing.assert_array_equal(r["d_same"], skipped_calls)      # D's trainable weights
    np.testing.assert_array_equal(r["opt_d_same"], skipped_calls)  # Adam's slots and iteration counter
    np.testing.assert_array_equal(r["m_d_trained"], replay_rule("ratio", r["m_d_loss"], r["m_g_loss"],
                                                                r["m_d_accuracy"]))
    assert r["trace_count"] == 1


@pytest.mark.slow
@pytest.mark.parametrize("loss,rule", [("rasgan", "ratio"), ("minimax", "accuracy")])
def test_losses_are_finite_and_the_generator_learns(side, loss, rule):
    r = result(side, f"learn_{loss}")
    assert str(r["d_rule"]) == rule
    assert np.isfinite(r["m_d_loss"]).all() and np.isfinite(r["m_g_loss"]).all()
    np.testing.assert_array_equal(r["m_d_trained"], replay_rule(rule, r["m_d_loss"], r["m_g_loss"],
                                                                r["m_d_accuracy"]))
    assert r["trace_count"] == 1
    # 40 steps: the samples' occupancy moves from the untrained 0.5 everywhere to the data's
    data = GRIDS.astype(np.float32)
    before, after = r["before"], r["after"]
    err = lambda s: np.abs(s.mean(0) - data.mean(0)).mean()  # noqa: E731  per-voxel occupancy error
    assert abs(before.mean() - 0.5) < 0.05
    assert abs(after.mean() - data.mean()) < 0.5 * abs(before.mean() - data.mean()), (before.mean(), after.mean())
    assert err(after) < 0.8 * err(before), (err(before), err(after))


@pytest.mark.slow
def test_wgan_gp_trains_with_the_gradient_penalty(side):
    r = result(side, "wgan_gp")
    assert str(r["d_rule"]) == "always" and (r["m_d_trained"] == 1).all()
    assert np.isfinite(r["m_d_loss"]).all() and np.isfinite(r["m_g_loss"]).all()
    # an untrained critic has input gradients far from norm 1: the penalty (weight 10) dominates
    assert r["m_d_loss"][0] > 5, r["m_d_loss"]


@pytest.mark.slow
def test_mixed_bfloat16_steps_are_finite_with_float32_logits(side):
    r = result(side, "bfloat16")
    assert r["logits_dtype"] == "float32"
    assert np.isfinite(r["m_d_loss"]).all() and np.isfinite(r["m_g_loss"]).all()
    assert (r["m_loss_scale"] == 1).all()
    assert np.isfinite(r["sample"]).all() and r["sample"].dtype == np.float32
    assert r["state_finite"]
    # the checkpoint holds float32 weights and slots, as under float32
    assert set(r["dtypes"]) == {"g:float32", "d:float32", "opt_g:float32", "opt_g:int64", "opt_d:float32",
                                "opt_d:int64", "trainer:int32", "trainer:bool", "trainer:float32", "trainer:int64"}


@pytest.mark.slow
def test_mixed_float16_loss_scaling_skips_overflows_then_recovers_and_grows(side):
    r = result(side, "float16")
    assert r["logits_dtype"] == "float32"
    assert r["scale_dtype"] == "float32" and r["counter_dtype"] == "int64"   # as the TF checkpoint
    assert all(np.isfinite(r[f"normal_{k}"]).all() for k in ("d_loss", "g_loss"))
    assert (r["normal_loss_scale"] == 2.0**15).all() and r["counter_after_normal"] == 4
    scales, counters, changed = r["scales"], r["counters"], r["g_changed"]
    assert scales[0] == 2.0**28                                  # the injected scale
    first_ok = int(np.argmax(changed))                           # the first step whose G update applied
    assert 1 <= first_ok < len(changed) - 3 and changed[first_ok:].all(), changed
    for i in range(first_ok):                                    # overflow: halve, reset, skip the update
        assert scales[i + 1] == scales[i] / 2 and counters[i + 1] == 0
        assert not r["opt_g_changed"][i]                         # not even Adam's iteration counter
    assert r["d_scales"][1] == 2.0**27                           # D's scaler overflowed too
    for i in range(first_ok, len(changed)):                     # finite: keep the scale, count
        assert scales[i + 1] == scales[i] and counters[i + 1] == counters[i] + 1
    np.testing.assert_array_equal(np.diff(r["iterations"]), changed.astype(np.int64))
    s = scales[-1]                                               # 2000 finite steps in a row double it
    np.testing.assert_array_equal(r["grow_scale"], [s, s, 2 * s])
    assert r["counter_end"] == 0 and r["scale_end"] == 2 * s


@pytest.mark.slow
def test_conv_rewrite_matches_native_convolutions_in_the_models(side):
    r = result(side, "conv_rewrite")
    for arch in ("rasgan64", "3dgan32"):       # G's output and D's logits
        err, scale = r[f"{arch}_err"], r[f"{arch}_scale"]
        assert (err <= 1e-5 * np.maximum(scale, 1.0)).all(), (arch, err, scale)


@pytest.mark.parametrize("nd,size,kernel,stride,pads", [
    (1, 8, 4, 2, (1, 1)), (1, 9, 3, 2, (0, 0)), (1, 7, 3, 2, (1, 2)), (1, 5, 1, 2, (0, 0)), (2, 6, 5, 3, (2, 1)),
    (3, 4, 2, 2, (0, 0))])
def test_conv_formulations_equal_lax(nd, size, kernel, stride, pads):
    """The CPU rewrites of strided and input-dilated (transposed) convolutions, against lax."""
    import jax
    from jax import lax

    from tf3dgan.training.backends.jax import conv_lhs_dilated, conv_strided

    rng = np.random.default_rng(size + kernel)
    x = rng.standard_normal((2,) + (size,) * nd + (3,)).astype(np.float32)
    w = rng.standard_normal((kernel,) * nd + (3, 4)).astype(np.float32)
    sp = "DHW"[3 - nd:]
    dims = ("N" + sp + "C", sp + "IO", "N" + sp + "C")
    strided = [pads] * nd, (stride,) * nd
    dilated = [[p] * nd for p in ((kernel - 1, kernel - 1), (2, 2), (1, 0), (0, 3), pads)]

    @jax.jit
    def both(x, w):
        native = [lax.conv_general_dilated(x, w, strided[1], strided[0], dimension_numbers=dims)]
        native += [lax.conv_general_dilated(x, w, (1,) * nd, p, lhs_dilation=strided[1], dimension_numbers=dims)
                   for p in dilated]
        ours = [conv_strided(x, w, *strided)] + [conv_lhs_dilated(x, w, p, strided[1]) for p in dilated]
        return native, ours

    native, ours = both(x, w)
    for want, got in zip(native, ours):
        assert want.shape == got.shape
        np.testing.assert_allclose(got, want, atol=1e-4)


@pytest.mark.slow
def test_state_interchanges_with_the_tensorflow_trainer(side):
    r = result(side, "cross_backend")
    assert r["layout_diff"].size == 0, r["layout_diff"]         # same keys, shapes and dtypes
    assert r["roundtrip_mismatch"].size == 0, r["roundtrip_mismatch"]   # TF state -> JAX -> arrays: exact
    z, z1, z2 = side.latents["z"], side.latents["z1"], side.latents["z2"]

    # the same state gives the same samples on both backends
    tf_a = tf_tiny(d_rule="always")
    tf_a.load_state_arrays(side.state)
    np.testing.assert_allclose(tf_a.generate(z), r["gen_a"], atol=1e-5)

    # the same two steps (same batches from the loaded permutations, same latents) on both
    # backends: the same losses, weights, optimizer slots and samples to float tolerance
    fix_latents(tf_a, z1, z2)
    m = {k: v.numpy() for k, v in tf_a.train_steps(2).items()}
    for key in ("d_loss", "g_loss", "d_accuracy", "d_trained", "ratio", "loss_scale"):
        np.testing.assert_allclose(m[key], r[f"m_{key}"], rtol=1e-5, atol=1e-6, err_msg=key)
    jax_state, _ = runs.load_checkpoint(side.out / "jax_run" / "checkpoints" / "latest.npz")
    noise = noise_driven_keys(tf_a)
    assert len(noise) == 8                        # G's and D's BatchNorm after a biased convolution
    for key, value in tf_a.state_arrays().items():
        if key in noise and key.startswith("opt_"):   # Adam's averages of rounding noise (~1e-6): noise-sized
            assert max(np.abs(jax_state[key]).max(), np.abs(value).max()) < 1e-3, key   # on both backends
        elif key in noise:                        # 2 Adam steps of at most the learning rate
            np.testing.assert_allclose(jax_state[key], value, atol=2 * 0.002, err_msg=key)
        elif key != "trainer/rng":
            np.testing.assert_allclose(jax_state[key], value, rtol=1e-4, atol=1e-5, err_msg=key)
    # inference-mode BatchNorm sees the noise-driven biases' difference (about 1e-4 here)
    np.testing.assert_allclose(tf_a.generate(z), r["gen_b"], atol=1e-4)

    # the JAX run's state loads into a TF trainer exactly and trains on
    tf_b = tf_tiny(d_rule="always")
    tf_b.load_state_arrays(jax_state)
    for key, value in tf_b.state_arrays().items():
        np.testing.assert_array_equal(value, jax_state[key], err_msg=key)
    np.testing.assert_allclose(tf_b.generate(z), r["gen_b"], atol=1e-5)
    assert tf_b.position == r["position"] == 4
    tf_b.start_epoch()
    m = tf_b.train_steps(2)
    assert np.isfinite(m["d_loss"].numpy()).all() and np.isfinite(m["g_loss"].numpy()).all()


@pytest.mark.slow
def test_resume_within_jax_is_exact(side):
    r = result(side, "resume")
    for key in ("d_loss", "g_loss", "val_loss", "d_trained", "ratio", "d_accuracy", "loss_scale"):
        np.testing.assert_array_equal(r[f"resumed_{key}"], r[f"straight_{key}"], err_msg=key)   # 2 + load + 2
    assert r["state_mismatch"].size == 0, r["state_mismatch"]
    assert r["position"] == 4


@pytest.mark.slow
def test_data_parallel_on_two_devices_equals_one_device(side):
    r = result(side, "data_parallel")
    assert len(r["devices"]) == 2 and r["replicas"] == 2 and r["one_device_replicas"] == 1
    # the compiled program splits each batch of 8 over the 2 devices and all-reduces (gradients,
    # BatchNorm moments, the relativistic averages); the state stays replicated
    assert r["batch_shapes"].tolist() == ["4"], r["batch_shapes"]
    assert r["all_reduces"] > 0 and r["state_replicated"]
    for key in ("d_loss", "g_loss", "d_accuracy"):
        np.testing.assert_allclose(r[f"dp_{key}"], r[f"one_{key}"], rtol=1e-4, atol=1e-6, err_msg=key)
    for key in ("d_trained", "ratio"):
        np.testing.assert_array_equal(r[f"dp_{key}"], r[f"one_{key}"], err_msg=key)
    one = {k[len("state_one/"):]: v for k, v in r.items() if k.startswith("state_one/")}
    dp = {k[len("state_dp/"):]: v for k, v in r.items() if k.startswith("state_dp/")}
    assert {k: (v.shape, v.dtype) for k, v in one.items()} == {k: (v.shape, v.dtype) for k, v in dp.items()}
    d_bias = [k for k in one if k.startswith("d/")][-1]   # D's last bias: zero gradient up to rounding (see test_distributed)
    for key, a in one.items():
        if key.startswith("trainer/"):
            np.testing.assert_array_equal(dp[key], a, err_msg=key)      # permutations, rule state, RNG key
        elif key.split("/")[0] in ("g", "d") and key != d_bias:        # (Adam's slots follow the weights)
            scale = float(np.max(np.abs(a))) if a.size else 0.0
            np.testing.assert_allclose(dp[key], a, rtol=1e-4, atol=1e-4 * scale, err_msg=key)
    # the data-parallel state after 4 steps, loaded on one device, continues as the data-parallel run did
    for key in ("d_loss", "g_loss"):
        np.testing.assert_allclose(r[f"resumed_{key}"], r[f"dp_{key}"][4:], rtol=1e-4, err_msg=key)


@pytest.mark.slow
def test_train_cli_data_parallel_under_jax_resumes_under_tensorflow(tmp_path):
    env = dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="", JAX_PLATFORMS="cpu")
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=1").strip()
    tiny = ["-d", "synthetic:boxes:res=8:n=32", "-b", "8", "--width", "0.125", "--no-progress", "--out", tmp_path]

    def train(backend, *args):
        cmd = [sys.executable, str(REPO / "tools" / "train.py"), "-n", "dp", *map(str, tiny), *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO,
                              env=dict(env, KERAS_BACKEND=backend))

    first = train("jax", "-e", "1", "--strategy", "mirrored", "--cpu-devices", "2")
    assert first.returncode == 0, first.stderr[-3000:]
    assert "2 replicas (DataParallel, synchronized BatchNorm)" in first.stdout, first.stdout
    config = json.loads((tmp_path / "dp" / "config.json").read_text())
    assert config["backend"] == "jax" and config["replicas"] == 2
    second = train("tensorflow", "-e", "2", "-l", "--strategy", "one")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resumed" in second.stdout and "from latest.npz (epoch 1)" in second.stdout, second.stdout
    history = np.load(tmp_path / "dp" / "plots" / "track_d_loss.npy")
    assert history.shape == (8,) and np.isfinite(history).all()       # 2 epochs of 4 steps, one history
    assert json.loads((tmp_path / "dp" / "config.json").read_text())["backend"] == "tensorflow"


def test_jax_strategies():
    from tf3dgan.errors import Tf3dganError
    from tf3dgan.training.backends.jax import make_distribution

    assert make_distribution("one") is None
    with pytest.raises(Tf3dganError, match="multiworker is TensorFlow's"):
        make_distribution("multiworker")
    with pytest.raises(Tf3dganError, match="must be one of auto, one, mirrored"):
        make_distribution("ring")
