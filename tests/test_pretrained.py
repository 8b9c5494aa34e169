"""The generator shipped in the package (tf3dgan/pretrained/chair32.npz): it loads with no run folder under both
backends, generate.py --pretrained works, and its samples beat an untrained generator's by a wide margin on the
fixture's real chairs."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from _cli import FIXTURES, REPO, error_line, tool, tool_env

from tf3dgan import pretrained
from tf3dgan.data.datasets import pool, unpack
from tf3dgan.metrics.distances import iou_distances
from tf3dgan.metrics.sets import coverage, nna
from tf3dgan.training import runs


def fixture_chairs() -> np.ndarray:
    """The fixture's 16 ModelNet10 chairs (12 train, 4 test) pooled from 64³ to 32³, as 0/1 grids."""
    with np.load(FIXTURES / "modelnet10_chair_64_win_small.npz") as z:
        packed = np.concatenate([z["train"], z["test"]])
    return unpack(pool(packed, 64, 2), 32).astype(bool)


def scores(samples: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """1-NNA and coverage under the IoU distance (tf3dgan.metrics)."""
    d_sr = iou_distances(samples, reference)
    return nna(iou_distances(samples), iou_distances(reference), d_sr), coverage(d_sr)


def test_the_shipped_model_is_small_and_says_where_it_came_from():
    path = pretrained.path("chair32")
    assert path.stat().st_size <= 10 * 2**20
    info = pretrained.provenance("chair32")
    assert "tools/train.py" in info["command"] and "--preset cpu-chair32" in info["command"]
    assert info["training_seconds"] > 0 and info["model"]["resolution"] == 32
    test = info["metrics"]["test"]   # tools/evaluate.py against the 99 test chairs, the floor beside it
    assert test["n_samples"] == test["n_reference"] == 99 and "floor" in test
    assert test["samples"] in info["evaluated_with"].split()   # the metrics are those of the samples
    assert info["sampled_with"].split()[-1] in test["samples"]  # its two commands name
    with np.load(path) as z:
        assert all(z[k].dtype == np.float16 for k in z.files if k.startswith("g/"))


def test_its_samples_beat_an_untrained_generator_on_real_chairs():
    from tf3dgan.models.networks import build_from_config
    from tf3dgan.outputs import sampling

    g, source = runs.load_generator(weights=pretrained.path("chair32"))
    assert g.moving_average and source == pretrained.path("chair32")
    untrained, _ = build_from_config(g.spec.to_dict())
    reference = fixture_chairs()
    z = sampling.latents(len(reference), g.spec.latent_dim, 7)
    threshold = runs.model_threshold(g.spec.to_dict())
    trained_nna, trained_cov = scores(sampling.generate(g, z) > threshold, reference)
    raw_nna, raw_cov = scores(sampling.generate(untrained, z) > threshold, reference)
    assert trained_cov >= raw_cov + 0.25, (trained_cov, raw_cov)
    assert trained_nna <= raw_nna - 0.15, (trained_nna, raw_nna)


@pytest.mark.slow
def test_generate_pretrained_works_from_any_folder_under_both_backends(tmp_path):
    tf_dest, jax_dest = tmp_path / "tf", tmp_path / "jax"
    proc = tool("generate", "--pretrained", "chair32", "--count", "4", "--seed", "7", "--binary", "--dest", tf_dest,
                cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    env = dict(tool_env(), KERAS_BACKEND="jax")
    cmd = [sys.executable, str(REPO / "tools" / "generate.py"), "--pretrained", "chair32", "--count", "4", "--seed",
           "7", "--dest", str(jax_dest)]
    jax = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    assert jax.returncode == 0, jax.stderr[-3000:]
    grids = np.load(tf_dest / "seed7_n4.npy")
    assert grids.shape == (4, 32, 32, 32)
    np.testing.assert_allclose(np.load(jax_dest / "seed7_n4.npy"), grids, atol=2e-3)
    binary = np.load(tf_dest / "seed7_n4_binary.npy")
    assert binary.dtype == np.uint8 and binary.reshape(4, -1).any(axis=1).all()
    np.testing.assert_array_equal(binary, grids > 0.5)
    assert set(os.listdir(tmp_path)) == {"tf", "jax"}   # nothing else written in the working folder


def test_a_wrong_pretrained_request_is_one_line(tmp_path):
    proc = tool("generate", "--pretrained", "chair32", "-n", "run", "--out", tmp_path, timeout=120)
    assert "--pretrained names the generator" in error_line(proc)
    bad = tool("generate", "--pretrained", "sofa", timeout=120)
    assert bad.returncode == 2 and "invalid choice: 'sofa'" in bad.stderr
