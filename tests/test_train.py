"""tools/train.py end to end, as a subprocess: the run folder, TensorBoard, signals, bad input."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from _cli import FIXTURES, REPO, TINY, error_line, start_tool, stop_when, tool, tool_env

from tf3dgan.errors import CheckpointError
from tf3dgan.training import runs


def test_train_cli_writes_the_whole_run_folder(tmp_path):
    proc = tool("train", "-n", "e2e", *TINY, "-e", "2", "-sample", "1", "-save", "1", "-graph", "1",
                "-graph3d", "1", "-v", "synthetic:boxes:res=8:n=16:seed=9", "--out", tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "e2e"
    for rel in ["config.json", "1.npy", "2.npy", "plots/1.png", "plots/2.png", "plots/track_d_loss.npy",
                "plots/track_g_loss.npy", "plots/track_d_validation_loss.npy", "plots/epochs.npy",
                "3D_graphs/1.png", "3D_graphs/2.png", "checkpoints/ckpt-000001.npz", "checkpoints/ckpt-000002.npz",
                "checkpoints/latest.npz", "generator.weights.h5"]:
        assert (run / rel).is_file(), rel
    sample = np.load(run / "2.npy")
    assert sample.shape == (8, 8, 8) and sample.dtype == np.float32
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["arch"] == "rasgan64" and config["data"]["dim"] == 8
    assert config["settings"]["epochs"] == 2 and config["batch_size"] == 8
    assert config["threshold"] == 0.3   # linear output: the seed's threshold, used by every tool for this run
    assert np.isfinite(np.load(run / "plots/track_d_validation_loss.npy")).all()
    assert "epoch 2/2" in proc.stdout and "done: 2 epochs" in proc.stdout
    # TensorBoard: scalars, the sample image and the point cloud are in the event file
    events = list((run / "logs").glob("events.out.tfevents.*"))
    assert events
    import tensorflow as tf
    tags = set()
    for event_file in events:
        for event in tf.compat.v1.train.summary_iterator(str(event_file)):
            tags.update(v.tag for v in event.summary.value)
    for tag in ["loss/d", "loss/g", "loss/d_validation", "lr/g", "lr/d", "train/gd_train_ratio",
                "train/loss_scale", "perf/samples_per_s", "sample/graph"]:
        assert tag in tags, (tag, sorted(tags))
    assert any(t.startswith("sample/voxels") for t in tags), sorted(tags)
    # the exported generator loads alone
    generator = runs.load_generator(run)[0]
    assert generator(np.zeros((1, 200), np.float32)).shape == (1, 8, 8, 8, 1)


@pytest.mark.slow
def test_train_cli_on_real_voxels_and_batch_larger_than_the_dataset(tmp_path):
    data = FIXTURES / "modelnet10_chair_64_win_small.npz"
    proc = tool("train", "-n", "real", "-d", f"{data}:train", "-b", "24", "--width", "0.0625", "-e", "1",
                "--no-progress", "--out", tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "batch size 24 is larger than the 12 training grids" in proc.stdout
    config = json.loads((tmp_path / "real" / "config.json").read_text())
    assert config["batch_size"] == 12 and config["data"]["dim"] == 64


@pytest.mark.slow
def test_sigterm_saves_and_the_run_resumes(tmp_path):
    proc = start_tool("train", "-n", "sig", *TINY, "-e", "100000", "-save", "1000", "--out", tmp_path)
    run = tmp_path / "sig"
    out = stop_when(proc, run / "3D_graphs" / "10.png", signal.SIGTERM)
    assert "SIGTERM: stopped after epoch" in out
    arrays, meta = runs.load_checkpoint(runs.checkpoint_path(run))
    assert meta["epoch"] >= 10
    assert len(arrays["history/d_loss"]) == meta["epoch"] * 4 + meta["step_in_epoch"] % 4
    again = tool("train", "-n", "sig", *TINY, "-e", str(meta["epoch"] + 1), "-l", "--out", tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"done: {meta['epoch'] + 1} epochs" in again.stdout


@pytest.mark.slow
def test_sigkill_during_a_checkpoint_write_leaves_the_previous_one_loadable(tmp_path):
    assert tool("train", "-n", "kill", *TINY, "-e", "2", "-save", "1", "--out", tmp_path).returncode == 0
    run = tmp_path / "kill"
    before, meta = runs.load_checkpoint(runs.checkpoint_path(run))
    # a process that dies (SIGKILL) half way through writing the next checkpoint
    script = textwrap.dedent(f"""
        import os, signal
        import numpy as np
        from tf3dgan.training import runs
        arrays, meta = runs.load_checkpoint(runs.checkpoint_path({str(run)!r}))
        def dying_savez(f, **kw):
            f.write(b"PK\\x03\\x04 half a checkpoint")
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        runs.np.savez = dying_savez
        runs.save_checkpoint({str(run)!r}, arrays, dict(meta, epoch=3), numbered=True)
    """)
    killed = subprocess.run([sys.executable, "-c", script], env=tool_env(), cwd=REPO, capture_output=True)
    assert killed.returncode == -signal.SIGKILL
    after, meta_after = runs.load_checkpoint(runs.checkpoint_path(run))
    assert meta_after["epoch"] == meta["epoch"] == 2
    assert not runs.checkpoint_path(run, 3).exists()
    for key in before:
        np.testing.assert_array_equal(after[key], before[key])
    resumed = tool("train", "-n", "kill", *TINY, "-e", "3", "-l", "--out", tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert runs.saved_epochs(run) == [1, 2, 3]


def test_bad_input_gives_one_clear_line(tmp_path, tiny_run):
    missing = error_line(tool("train", "-n", "x", "-d", tmp_path / "no_such_folder", "--out", tmp_path))
    assert "no_such_folder" in missing and "does not exist" in missing

    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((3, 5, 7), np.float32))
    shape = error_line(tool("train", "-n", "x", "-d", bad, "--out", tmp_path))
    assert "bad.npy" in shape and "(3, 5, 7)" in shape

    shutil.copytree(tiny_run / "g", tmp_path / "c")    # a trained run (4 epochs), its latest.npz damaged
    latest = runs.checkpoint_path(tmp_path / "c")
    data = latest.read_bytes()
    os.unlink(latest)                      # break the hard link, then write a damaged copy
    latest.write_bytes(data[: len(data) // 2])
    corrupt = error_line(tool("train", "-n", "c", *TINY, "-e", "5", "-l", "--out", tmp_path))
    assert "latest.npz" in corrupt and "corrupt" in corrupt
    latest.write_bytes(os.urandom(len(data)))   # not even a zip: named as such, not numpy's pickle advice
    with pytest.raises(CheckpointError) as excinfo:   # (the same error the CLI printed above, without its start-up)
        runs.load_checkpoint(latest)
    assert "latest.npz" in str(excinfo.value) and "not a NumPy" in str(excinfo.value)
    assert "allow_pickle" not in str(excinfo.value)

    mismatch = error_line(tool("train", "-n", "m", "-d", FIXTURES / "somtambe_chair_32_small.npz",
                               "--resolution", "64", "--out", tmp_path))
    assert "somtambe_chair_32_small.npz" in mismatch and "32" in mismatch


@pytest.mark.slow
def test_train_at_a_smaller_resolution_pools_the_real_64_grids(tmp_path):
    data = FIXTURES / "modelnet10_chair_64_win_small.npz"
    proc = tool("train", "-n", "p", "-d", f"{data}:train", "--resolution", "16", "--pool-min", "2", "-b", "4",
                "--width", "0.125", "-e", "1", "--no-progress", "--out", tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "64³ grids pooled with --pool-min 2 to 16³" in proc.stdout
    config = json.loads((tmp_path / "p" / "config.json").read_text())
    assert config["data"]["dim"] == 16 and config["data"]["pooled_from"] == 64 and config["data"]["pool_min"] == 2
    assert config["model"]["resolution"] == 16 and np.load(tmp_path / "p" / "1.npy").shape == (16, 16, 16)
    refused = error_line(tool("train", "-n", "q", "-d", f"{data}:train", "--pool-min", "2", "--out", tmp_path))
    assert "--pool-min 2 applies only when --resolution pools the grids down" in refused
