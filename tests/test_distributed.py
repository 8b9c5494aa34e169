"""Multi-device training with tf.distribute: a mirrored run on two logical CPU devices equals the
one-device run, synchronized BatchNorm is what makes it so, checkpoints interchange, one trace.

The CPU can only be split into logical devices before TensorFlow initialises them, so the
trainers run once, in a fresh process (``tests/_dist_worker.py``, about a minute on a 2-core
CPU), and the tests below check what it wrote.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tf3dgan.errors import Tf3dganError

REPO_ROOT = Path(__file__).resolve().parents[1]
RTOL = 1e-4   # float32 sums in another order (gradients summed over replicas) — nothing more


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    out = tmp_path_factory.mktemp("distributed")
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="-1", KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("TF_CONFIG", None)
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "tests" / "_dist_worker.py"), str(out)],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        pytest.fail(f"tests/_dist_worker.py failed (exit {proc.returncode}):\n{proc.stderr[-6000:]}")
    results = json.loads((out / "results.json").read_text())
    with np.load(out / "arrays.npz") as f:
        arrays = {k: f[k] for k in f.files}
    return results, arrays


def _side(arrays, scenario, side, kind):
    prefix = f"{scenario}/{side}/{kind}/"
    return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}


def _assert_same_run(arrays, scenario, skip=()):
    one_m, mir_m = _side(arrays, scenario, "one", "metric"), _side(arrays, scenario, "mirrored", "metric")
    for k in ("d_loss", "g_loss", "val_loss"):
        np.testing.assert_allclose(mir_m[k], one_m[k], rtol=RTOL, err_msg=f"{scenario}: {k}")
    for k in ("d_trained", "ratio", "d_accuracy"):
        np.testing.assert_array_equal(mir_m[k], one_m[k], err_msg=f"{scenario}: {k}")
    one_s, mir_s = _side(arrays, scenario, "one", "state"), _side(arrays, scenario, "mirrored", "state")
    assert one_s.keys() == mir_s.keys()
    for key, a in one_s.items():
        b = mir_s[key]
        assert a.shape == b.shape and a.dtype == b.dtype, key
        if key.startswith("trainer/") and a.dtype.kind != "f":
            np.testing.assert_array_equal(b, a, err_msg=f"{scenario}: {key}")   # perm, pos, rule, RNG
        elif key.split("/")[0] in ("g", "d", "trainer") and key not in skip:
            scale = float(np.max(np.abs(a))) if a.size else 0.0
            np.testing.assert_allclose(b, a, rtol=RTOL, atol=RTOL * scale, err_msg=f"{scenario}: {key}")


@pytest.mark.slow
def test_mirrored_with_synchronized_bn_matches_one_device(worker):
    results, arrays = worker
    assert results["replicas"] == 2 and all("CPU" in d for d in results["devices"])
    # RaSGAN's loss is unchanged by adding a constant to every logit, so the gradient of D's
    # logit bias is zero up to rounding and Adam turns that rounding into steps of ±lr·ε:
    # the one parameter that cannot agree beyond noise (it does not change any loss).
    d_keys = [k for k in _side(arrays, "sync", "one", "state") if k.startswith("d/")]   # model.weights order
    _assert_same_run(arrays, "sync", skip={d_keys[-1]})
    for scenario in ("sync", "minimax", "wgan"):
        # every replica holds bit-identical weights, BatchNorm statistics and rule state
        spread = results[f"{scenario}_replica_spread"]
        assert len(spread) == 4 and not any(spread.values()), (scenario, spread)


@pytest.mark.slow
def test_minimax_loss_and_accuracy_rule_match_one_device(worker):
    _, arrays = worker
    _assert_same_run(arrays, "minimax")
    metric = _side(arrays, "minimax", "mirrored", "metric")
    trained = metric["d_trained"]
    assert trained.any() and not trained.all()   # the rule (threshold 0.6 here) trained D on some steps, not all
    # SomTambe's timing: this step's accuracy, before D's update, decides (the masked update across replicas)
    np.testing.assert_array_equal(trained, metric["d_accuracy"] < 0.6)


@pytest.mark.slow
def test_wgan_gp_penalty_matches_one_device(worker):
    _, arrays = worker
    d_keys = [k for k in _side(arrays, "wgan", "one", "state") if k.startswith("d/")]
    _assert_same_run(arrays, "wgan", skip={d_keys[-1]})   # the critic's bias: shift-invariant loss, as above


@pytest.mark.slow
def test_without_synchronized_bn_replicas_diverge(worker):
    # Plain BatchNorm normalises each replica's half batch with its own statistics: each
    # replica's moving statistics drift apart (a checkpoint keeps replica 0's), the losses leave
    # the one-device run's and the weights follow (Adam magnifies small gradient differences).
    # This is why fit builds synchronized BatchNorm for mirrored.
    results, arrays = worker
    spread = results["unsync_replica_spread"]
    assert spread["bn_moving"] > 1e-4
    assert spread["weights"] == spread["optimizer"] == spread["trainer_state"] == 0.0   # gradients all-reduced

    def worst(scenario, kind, keys):
        one, other = _side(arrays, "sync", "one", kind), _side(arrays, scenario, "mirrored", kind)
        return max(float(np.max(np.abs(other[k] - one[k])) / np.max(np.abs(one[k]))) for k in keys)

    losses = ("d_loss", "g_loss")
    assert worst("sync", "metric", losses) < 1e-6 and worst("unsync", "metric", losses) > 2e-5
    g_keys = [k for k in _side(arrays, "sync", "one", "state") if k.startswith("g/")]
    assert worst("sync", "state", g_keys) < 1e-4 and worst("unsync", "state", g_keys) > 0.1


@pytest.mark.slow
def test_checkpoints_interchange_between_mirrored_and_one_device(worker):
    results, arrays = worker
    # a one-device state into the mirrored trainer (the start of the runs above), then the
    # mirrored state after training into the one-device trainer: exact, and both train on alike
    for scenario, source, loaded in (("start", "one", "mirrored"), ("resumed", "source", "loaded")):
        source, loaded = _side(arrays, scenario, source, "state"), _side(arrays, scenario, loaded, "state")
        assert source.keys() == loaded.keys() and len(source) > 20
        for key in source:
            assert loaded[key].dtype == source[key].dtype, key
            np.testing.assert_array_equal(loaded[key], source[key], err_msg=f"{scenario}: {key}")
    one, mirrored = _side(arrays, "resumed", "one", "metric"), _side(arrays, "resumed", "mirrored", "metric")
    for k in ("d_loss", "g_loss"):
        np.testing.assert_allclose(mirrored[k], one[k], rtol=RTOL, err_msg=k)
    np.testing.assert_array_equal(mirrored["d_trained"], one["d_trained"])
    assert results["learning_rates"][0] == results["learning_rates"][1] == pytest.approx([0.005, 0.0005])
    np.testing.assert_allclose(arrays["generate/mirrored"], arrays["generate/one"], rtol=RTOL, atol=1e-6)
    assert arrays["generate/one"].shape == (4, 8, 8, 8)


@pytest.mark.slow
def test_each_trainer_traces_once(worker):
    results, _ = worker
    for key in ("sync_trace_count", "minimax_trace_count", "wgan_trace_count", "resumed_trace_count"):
        assert results[key] == [1, 1], key
    assert results["float16"]["trace_count"] == 1


@pytest.mark.slow
def test_loss_scaling_across_replicas(worker):
    results, _ = worker
    f16 = results["float16"]
    assert all(np.isfinite(f16["first"][k]).all() for k in ("d_loss", "g_loss"))
    assert f16["first"]["loss_scale"][-1] > 1
    # gradients × 2^28 overflow float16 on every replica: the update is skipped everywhere and
    # every replica's copy of the scale halves alike
    assert f16["g_unchanged_after_overflow"]
    assert f16["overflow"]["loss_scale"] == [2.0 ** 27]
    assert f16["scales"] == [[2.0 ** 27] * 2] * 2
    assert len(f16["replica_spread"]) == 4 and not any(f16["replica_spread"].values())


@pytest.mark.slow
def test_trainer_refuses_what_it_cannot_distribute(worker):
    errors = worker[0]["errors"]
    assert errors["batch_not_divisible"][0] == "ValueError" and "multiple of 2" in errors["batch_not_divisible"][2]
    assert "strategy.scope()" in errors["models_outside_scope"][2]
    assert "xla" in errors["xla"][2]
    kind, is_ours, message = errors["split_cpu_late"]
    assert is_ours and "already initialised" in message


def test_make_strategy_choices_and_errors(monkeypatch):
    # none of these initialises TensorFlow's devices (this pytest process may not split its CPU)
    from tf3dgan.training.backends.tensorflow import STRATEGIES, make_strategy

    assert STRATEGIES == ("auto", "one", "mirrored", "multiworker")
    assert make_strategy("one") is None
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(Tf3dganError, match="TF_CONFIG environment variable"):
        make_strategy("multiworker")
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(Tf3dganError, match="TF_CONFIG is not a cluster description"):
        make_strategy("multiworker")
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"chief": ["localhost:1"]}}))
    with pytest.raises(Tf3dganError, match="TF_CONFIG is not a cluster description"):
        make_strategy("multiworker")
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["localhost:1"]},
                                                "task": {"type": "worker", "index": 1}}))
    with pytest.raises(Tf3dganError, match="not in the cluster"):
        make_strategy("multiworker")
    with pytest.raises(Tf3dganError, match="--strategy must be one of auto, one, mirrored, multiworker"):
        make_strategy("tpu")


def test_synchronized_bn_keeps_the_weights_and_their_order():
    import keras

    from tf3dgan.models.networks import build_models

    for arch, res in (("rasgan64", 16), ("3dgan32", 8)):
        plain = build_models(arch, width=0.125, resolution=res)
        synced = build_models(arch, width=0.125, resolution=res, synchronized_bn=True)
        for p, s in zip(plain, synced):
            assert [w.shape for w in p.weights] == [w.shape for w in s.weights]
            assert [w.path.split("/")[-1] for w in p.weights] == [w.path.split("/")[-1] for w in s.weights]
            assert p.count_params() == s.count_params()
            bn = keras.layers.BatchNormalization
            synced_bns = [layer for layer in s.blocks if isinstance(layer, bn)]
            assert synced_bns and all(layer.synchronized for layer in synced_bns)
            assert not any(layer.synchronized for layer in p.blocks if isinstance(layer, bn))
            s.set_weights(p.get_weights())   # checkpoints interchange


@pytest.mark.slow
def test_train_cli_mirrored_run_resumes_on_one_device(tmp_path):
    sys.path.insert(0, str(REPO_ROOT / "tests"))
    from _cli import TINY, error_line, tool

    from tf3dgan.training import runs

    proc = tool("train", "-n", "m", *TINY, "-e", "2", "--out", tmp_path, "--strategy", "mirrored",
                "--cpu-devices", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 replicas (MirroredStrategy, synchronized BatchNorm)" in proc.stdout
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["settings"]["strategy"] == "mirrored" and config["replicas"] == 2
    resumed = tool("train", "-n", "m", *TINY, "-e", "3", "--out", tmp_path, "-l", "--strategy", "one")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    arrays, meta = runs.load_checkpoint(runs.checkpoint_path(tmp_path / "m"))
    assert meta["epoch"] == 3 and np.isfinite(arrays["history/g_loss"]).all() and len(arrays["history/g_loss"]) == 12
    odd = tool("train", "-n", "odd", *TINY[:2], "-b", "7", *TINY[4:], "-e", "1", "--out", tmp_path,
               "--strategy", "mirrored", "--cpu-devices", "2")
    assert "does not split evenly over the 2 replicas" in error_line(odd)
