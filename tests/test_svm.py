"""The 3D-GAN linear-SVM protocol (tf3dgan.metrics.svm): discriminator features and the SVM score.

The feature extractor is checked against a direct transcription (D's blocks run one by one, BatchNorm
in inference mode, every activation after a convolution max-pooled with NumPy reshapes, or with the
adaptive bins written out for sides the grid does not divide); the protocol end to end on a fake run
folder and a fake ten-class data folder of separable shapes; the user's mistakes as one-line errors.
"""
from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from _cli import REPO

from tf3dgan.errors import Tf3dganError
from tf3dgan.metrics import svm
from tf3dgan.models.networks import build_models
from tf3dgan.training import runs

DATA = REPO.parent / "shared" / "data" / "voxels"
needs_data = pytest.mark.skipif(not all(svm.class_file(DATA, c).is_file() for c in svm.CLASSES),
                                reason="the ModelNet10 voxel data (shared/data/voxels) is not here")
SPEC = dict(arch="rasgan64", width=0.125, resolution=16)


def _random_bn_statistics(discriminator, seed=1):
    """Give every BatchNorm layer non-trivial gamma/beta/moving statistics (so inference mode shows)."""
    rng = np.random.default_rng(seed)
    for layer in discriminator.blocks:
        if isinstance(layer, keras.layers.BatchNormalization):
            c = tuple(layer.gamma.shape)
            layer.gamma.assign(rng.uniform(0.5, 1.5, c).astype(np.float32))
            layer.beta.assign(rng.normal(0, 0.1, c).astype(np.float32))
            layer.moving_mean.assign(rng.normal(0, 0.05, c).astype(np.float32))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, c).astype(np.float32))


def _grids(n, r, seed=0):
    return (np.random.default_rng(seed).random((n, r, r, r)) < 0.3).astype(np.uint8)


def _by_hand(discriminator, grids, pool):
    """Run D's blocks one at a time (BatchNorm with training=False); after every activation that follows a
    convolution, ``pool(activation)`` -> (N, g, g, g, C); concatenate the flattened pools."""
    x = grids[..., None].astype(np.float32)
    out, after_conv = [], False
    for layer in discriminator.blocks:
        if isinstance(layer, (keras.layers.Flatten, keras.layers.Dense)):
            break
        x = layer(x, training=False) if isinstance(layer, keras.layers.BatchNormalization) else layer(x)
        if isinstance(layer, keras.layers.Conv3D):
            after_conv = True
        elif isinstance(layer, keras.layers.LeakyReLU) and after_conv:
            a = np.asarray(x)
            out.append(pool(a).reshape(len(a), -1))
            after_conv = False
    return np.concatenate(out, axis=1)


def _pool_reshape(a, g=2):
    n, s, c = a.shape[0], a.shape[1], a.shape[-1]
    k = s // g
    return a.reshape(n, g, k, g, k, g, k, c).max(axis=(2, 4, 6))


def test_features_match_a_transcription_of_blocks_and_numpy_max_pool():
    _, d = build_models(**SPEC)
    _random_bn_statistics(d)
    grids = _grids(7, 16)
    got = svm.d_features(d, grids, batch=3)          # batches of 3: the last one is short
    want = _by_hand(d, grids, _pool_reshape)
    info = svm.feature_layers(d)
    assert [(f["size"], f["channels"]) for f in info] == [(8, 8), (4, 16)]
    assert got.shape == (7, 8 * 8 + 8 * 16) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(svm.d_features(d, [grids[:2], grids[2:]], batch=3), got)   # a list streams as one
    # one layer, other grids; the channel axis and a 5-D input are accepted
    only2 = svm.d_features(d, grids[..., None], layers=[2], grid=1)
    np.testing.assert_allclose(only2, want[:, 64:].reshape(7, 8, 16).max(axis=1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(svm.d_features(d, grids, grid=4)[:, :4 ** 3 * 8],
                               _by_hand(d, grids, lambda a: _pool_reshape(a, 4))[:, :4 ** 3 * 8], rtol=1e-5, atol=1e-6)
    # BatchNorm really ran on its moving statistics: batch statistics would give other features
    # (last: training=True moves the moving statistics)
    x = grids[..., None].astype(np.float32)
    for layer in d.blocks[:5]:
        x = layer(x, training=True) if isinstance(layer, keras.layers.BatchNormalization) else layer(x)
    assert not np.allclose(_pool_reshape(np.asarray(x)).reshape(7, -1), got[:, 64:], atol=1e-4)


def test_adaptive_bins_for_sides_the_grid_does_not_divide():
    _, d = build_models("3dgan32", width=0.125, resolution=16)   # k3 s2 valid: 16 -> 7 -> 3 -> 1
    _random_bn_statistics(d)
    grids = _grids(4, 16, seed=3)

    def adaptive(a, g=2):
        s = a.shape[1]
        g = min(g, s)
        bins = [(int(np.floor(i * s / g)), int(np.ceil((i + 1) * s / g))) for i in range(g)]
        out = np.empty((len(a), g, g, g, a.shape[-1]), a.dtype)
        for i, (a0, a1) in enumerate(bins):
            for j, (b0, b1) in enumerate(bins):
                for k, (c0, c1) in enumerate(bins):
                    out[:, i, j, k] = a[:, a0:a1, b0:b1, c0:c1].max(axis=(1, 2, 3))
        return out

    info = svm.feature_layers(d)
    assert [f["size"] for f in info] == [7, 3, 1]   # the k1 logit convolution is not a feature layer
    got = svm.d_features(d, grids)
    assert got.shape == (4, 8 * 8 + 8 * 16 + 1 * 32)
    np.testing.assert_allclose(got, _by_hand(d, grids, adaptive), rtol=1e-5, atol=1e-6)


SHAPES = [(2, 2, 10), (10, 2, 2), (2, 10, 2), (6, 6, 6), (10, 10, 2), (2, 10, 10), (10, 2, 10), (4, 4, 4),
          (12, 12, 12), (2, 2, 2)]


def _fake_data(folder, r=16, n_train=20, n_test=10, seed=0, classes=svm.CLASSES):
    """Ten class files of boxes, one box size per class, centred to within 2 voxels (separable by shape)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for c, (a, b, e) in zip(classes, SHAPES):
        splits = {}
        for split, n in (("train", n_train), ("test", n_test)):
            g = np.zeros((n, r, r, r), np.uint8)
            for i in range(n):
                x, y, z = (int(np.clip((r - s) // 2 + rng.integers(-2, 3), 0, r - s)) for s in (a, b, e))
                g[i, x:x + a, y:y + b, z:z + e] = 1
            splits[split] = g
        np.savez(svm.class_file(folder, c), **splits)
    return folder


def _fake_run(folder, epoch=3, seed=0):
    keras.utils.set_random_seed(seed)
    g, d = build_models(**SPEC)
    _random_bn_statistics(d, seed)
    arrays = {f"g/{i:03d}": np.asarray(v) for i, v in enumerate(g.weights)}
    arrays.update({f"d/{i:03d}": np.asarray(v) for i, v in enumerate(d.weights)})
    model = dict(g.spec.to_dict())
    folder.mkdir(parents=True)
    runs.write_config(folder, {"model": model, "data": {"pool_min": 1}})
    runs.save_checkpoint(folder, arrays, {"epoch": epoch, "step_in_epoch": 0, "model": model})
    return folder, d


def test_protocol_end_to_end_on_a_fake_run_and_separable_classes(tmp_path):
    run, d = _fake_run(tmp_path / "run")
    data = _fake_data(tmp_path / "data")
    loaded, spec, source = svm.load_discriminator(run)
    assert source == runs.checkpoint_path(run) and spec["resolution"] == 16
    grids = _grids(5, 16)
    np.testing.assert_array_equal(svm.d_features(loaded, grids), svm.d_features(d, grids))

    lines = []
    r = svm.svm_protocol(run, data_dir=data, limit=20, report=lines.append, Cs=(0.01, 1.0), folds=3)
    json.dumps(r)                                     # the result is plain JSON
    assert r["n_train"] == 200 and r["n_test"] == 100 and r["limit"] == 20
    assert r["epoch"] == 3 and r["resolution"] == 16 and r["feature_dim"] == 192 and not r["untrained"]
    assert r["C"] in (0.01, 1.0) and set(r["cv_accuracy"]) == {0.01, 1.0} and r["folds"] == 3
    assert [x["number"] for x in r["layers"]] == [1, 2]
    assert set(r["per_class"]) == set(svm.CLASSES)
    assert np.sum(r["confusion"]) == 100
    assert abs(r["svm_accuracy"] - np.trace(r["confusion"]) / 100) < 1e-12
    assert r["svm_accuracy"] >= 0.8, r               # chance is 0.1
    assert r["seconds"] >= r["feature_seconds"] > 0 and lines and all(line.startswith("svm:") for line in lines)

    # the untrained baseline: reproducible for one seed, other weights for another
    u0 = svm.svm_protocol(run, data_dir=data, limit=20, report=None, untrained=True, Cs=(1.0,), folds=3)
    u0b = svm.svm_protocol(None, data_dir=data, limit=20, report=None, untrained=True, model=spec, Cs=(1.0,),
                           folds=3)
    assert u0["untrained"] and u0["epoch"] is None and u0["source"] == "untrained (seed 0)"
    assert u0["svm_accuracy"] == u0b["svm_accuracy"] and u0["confusion"] == u0b["confusion"]
    assert u0["svm_accuracy"] >= 0.8
    a, b, c = (svm.untrained_discriminator(spec, s) for s in (0, 0, 1))
    assert all(np.array_equal(x, y) for x, y in zip(a.get_weights(), b.get_weights()))
    assert not np.array_equal(a.get_weights()[0], c.get_weights()[0])


@needs_data
def test_protocol_on_a_slice_of_the_real_modelnet10(tmp_path, monkeypatch):
    """Four grids per class and split of the real data, pooled to 8³, an untrained 8³ D: above chance."""
    r = svm.svm_protocol(None, data_dir=DATA, limit=4, report=None, untrained=True,
                         model=dict(SPEC, resolution=8), Cs=(0.1,), folds=2)
    assert r["n_train"] == r["n_test"] == 40 and r["resolution"] == 8 and r["feature_dim"] == 8 * 8
    assert r["svm_accuracy"] > 0.2, r


def test_fit_linear_svm_is_gridsearch_over_scaler_and_linear_svc():
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 15)
    x = rng.normal(size=(60, 12)) * rng.uniform(0.1, 10, 12) + rng.normal(size=(4, 12))[y] * 1.5
    test = rng.normal(size=(25, 12)) * 3
    Cs = (1e-3, 1e-2, 1e-1, 1.0)
    fit = svm.fit_linear_svm(x, y, Cs, folds=4, seed=5)
    ref = GridSearchCV(make_pipeline(StandardScaler(), SVC(kernel="linear")), {"svc__C": list(Cs)},
                       cv=StratifiedKFold(4, shuffle=True, random_state=5)).fit(x, y)
    assert fit.C == ref.best_params_["svc__C"] and fit.folds == 4
    np.testing.assert_allclose(list(fit.cv_accuracy.values()), ref.cv_results_["mean_test_score"], atol=1e-12)
    np.testing.assert_array_equal(fit.predict(test), ref.predict(test))
    np.testing.assert_allclose(fit.decision_function(test), ref.decision_function(test), rtol=1e-6, atol=1e-6)
    assert "at least 2 training grids" in _error(lambda: svm.fit_linear_svm(x[:31], y[:31]))


def _error(call) -> str:
    with pytest.raises(Tf3dganError) as info:
        call()
    text = str(info.value)
    assert "\n" not in text and text
    return text


def test_user_mistakes_are_one_line_errors(tmp_path):
    data = _fake_data(tmp_path / "data", n_train=2, n_test=1)
    assert "no such run folder" in _error(lambda: svm.svm_protocol(tmp_path / "nope", data_dir=data, report=None))
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no checkpoint" in _error(lambda: svm.load_discriminator(empty))
    run, _ = _fake_run(tmp_path / "run")
    text = _error(lambda: svm.load_discriminator(run, epoch=7))
    assert "ckpt-000007.npz" in text and "saved epochs: 3" in text
    assert "no such data folder" in _error(lambda: svm.svm_protocol(run, data_dir=tmp_path / "none", report=None))
    svm.class_file(data, "sofa").unlink()
    text = _error(lambda: svm.svm_protocol(run, data_dir=data, report=None))
    assert "modelnet10_sofa_64_win.npz" in text and "missing 1 of the 10" in text
    _fake_data(data, n_train=2, n_test=1)
    assert "layers must be" in _error(lambda: svm.svm_protocol(run, data_dir=data, layers=[3], report=None))
    assert "limit must be" in _error(lambda: svm.svm_protocol(run, data_dir=data, limit=0, report=None))
    assert "needs a run folder" in _error(lambda: svm.svm_protocol(None, data_dir=data, report=None))
    assert "grid must be" in _error(lambda: svm.d_features(svm.untrained_discriminator(SPEC), _grids(1, 16), grid=0))
    assert "grids must be" in _error(lambda: svm.d_features(svm.untrained_discriminator(SPEC), _grids(1, 8)))
    bad = tmp_path / "bad"
    bad.mkdir()
    (runs.checkpoint_dir(bad)).mkdir()
    runs.checkpoint_path(bad).write_bytes(b"not a checkpoint")
    assert "corrupt" in _error(lambda: svm.load_discriminator(bad))
