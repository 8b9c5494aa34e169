"""tf3dgan.training.checkpoint_keys: checkpoints keyed by each variable's place in the model, and the positional
checkpoints written before (``tests/fixtures/runs/v0-positional``, made by tf3dgan at commit 039c6e8) still load
and resume."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from _cli import tool

from tf3dgan.data import pack
from tf3dgan.data.synthetic import make_shapes
from tf3dgan.errors import CheckpointError
from tf3dgan.training import checkpoint_keys, runs

FIXTURE = Path(__file__).parent / "fixtures" / "runs" / "v0-positional"
OLD_EPOCH3 = json.loads((FIXTURE.parent / "v0-positional_epoch3_by_039c6e8.json").read_text())
KEY = re.compile(r"^(g|d)/blocks\.\d+\.[a-z0-9_]+/[a-z_]+$|^opt_(g|d)(_scale)?/(blocks\.\d+\.[a-z0-9_]+/[a-z_]+/)?[a-z_]+$"
                 r"|^trainer/[a-z_]+$")


def trainer_like_fixture(precision="float32"):
    from tf3dgan.models import build_from_config
    from tf3dgan.training.backends.tensorflow import GANTrainer

    model = json.loads((FIXTURE / "config.json").read_text())["model"]
    g, d = build_from_config(model)
    return GANTrainer(g, d, pack(make_shapes("boxes", 32, 8, seed=1)), 8, batch_size=8, precision=precision)


def test_every_key_names_its_variable_and_is_the_same_in_every_build():
    a, b = trainer_like_fixture("mixed_float16"), trainer_like_fixture("mixed_float16")   # Keras names differ: dense_1 ...
    assert [w.path for w in a.G.weights] != [w.path for w in b.G.weights]
    keys = list(a.state_arrays())
    assert keys == list(b.state_arrays()) and len(set(keys)) == len(keys)
    assert all(KEY.match(k) for k in keys), [k for k in keys if not KEY.match(k)]
    assert {"g/blocks.0.dense/kernel", "g/blocks.2.batch_normalization/gamma", "g/blocks.2.batch_normalization/beta",
            "opt_g/iteration", "opt_g/blocks.0.dense/kernel/momentum", "opt_g_scale/dynamic_scale"} <= set(keys)
    manifest = a.manifest()
    by_key = {k: v for k, v, _ in checkpoint_keys.checkpoint_variables(a.G, a.D, a.opt_g, a.opt_d)}
    for key, entry in manifest.items():   # the manifest: each key's variable, shape and dtype
        assert entry["path"] == by_key[key].path and entry["shape"] == list(by_key[key].shape)
    assert set(manifest) == {k for k in keys if not k.startswith("trainer/")}


def test_arrays_go_to_the_variables_their_keys_name_whatever_their_order():
    a, b = trainer_like_fixture(), trainer_like_fixture()
    a.start_epoch()
    a.train_steps(2)
    state = a.state_arrays()
    gamma, beta = "g/blocks.2.batch_normalization/gamma", "g/blocks.2.batch_normalization/beta"
    assert state[gamma].shape == state[beta].shape and not np.array_equal(state[gamma], state[beta])
    b.load_state_arrays(dict(reversed(list(state.items()))))   # same-shaped vectors in other places
    for key, value in b.state_arrays().items():
        np.testing.assert_array_equal(value, state[key], err_msg=key)
    bad = dict(state, **{beta: np.zeros(3, np.float32)})
    with pytest.raises(CheckpointError, match=r"x\.npz: entry 'g/blocks\.2\.batch_normalization/beta' has shape \(3,\), "
                                              r"the model's generator/batch_normalization\w*/beta has \(\d+,\)"):
        b.load_state_arrays(bad, source="x.npz")
    del bad[beta]
    with pytest.raises(CheckpointError, match=r"has no entry 'g/blocks\.2\.batch_normalization/beta' for the model's "
                                              r"generator/batch_normalization\w*/beta"):
        b.load_state_arrays(bad, source="x.npz")


def test_a_positional_checkpoint_is_read_by_position_into_the_named_variables():
    arrays, meta = runs.load_checkpoint(FIXTURE / "checkpoints" / "latest.npz")
    assert checkpoint_keys.is_positional(arrays) and "g/000" in arrays and meta["epoch"] == 2
    t = trainer_like_fixture()
    t.load_state_arrays(arrays, source="old.npz")
    state = t.state_arrays()
    for key, v, old in checkpoint_keys.checkpoint_variables(t.G, t.D, t.opt_g, t.opt_d):
        np.testing.assert_array_equal(state[key], arrays[old], err_msg=f"{key} <- {old}")
    for key in ("trainer/perm", "trainer/pos", "trainer/d_smooth", "trainer/rng"):
        np.testing.assert_array_equal(state[key], arrays[key], err_msg=key)
    generator, _ = runs.load_generator(weights=FIXTURE / "checkpoints" / "latest.npz")   # the tools read it too
    for (key, w, old) in checkpoint_keys.model_keys(generator, "g"):
        np.testing.assert_array_equal(np.asarray(w), arrays[old], err_msg=key)


@pytest.mark.slow
def test_a_run_saved_with_positional_keys_resumes_as_the_old_code_continued_it(tmp_path):
    shutil.copytree(FIXTURE, tmp_path / "v0-positional")
    proc = tool("train", "-n", "v0-positional", "--out", tmp_path, "-l", "-e", "3", "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resumed" in proc.stdout and "epoch 3/3" in proc.stdout
    arrays, meta = runs.load_checkpoint(tmp_path / "v0-positional" / "checkpoints" / "latest.npz")
    assert meta["epoch"] == 3 and not checkpoint_keys.is_positional(arrays) and "g/blocks.0.dense/kernel" in arrays
    assert meta["manifest"]["g/blocks.0.dense/kernel"]["shape"] == list(arrays["g/blocks.0.dense/kernel"].shape)
    assert set(meta["manifest"]) == {k for k in arrays if not k.startswith(("trainer/", "history/"))}
    old, _ = runs.load_checkpoint(FIXTURE / "checkpoints" / "latest.npz")
    np.testing.assert_array_equal(arrays["history/d_loss"][:8], old["history/d_loss"])   # the saved epochs, kept
    # epoch 3 is the step the old code (039c6e8) took from the same checkpoint: same batches, latents, losses
    for key in ("d_loss", "g_loss", "d_trained"):
        np.testing.assert_allclose(arrays[f"history/{key}"][8:], OLD_EPOCH3[key], rtol=1e-5, err_msg=key)
