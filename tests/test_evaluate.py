"""tools/evaluate.py end to end, and quality during training (--eval-every) on both backends."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from _cli import FIXTURES, REPO, TINY, error_line, tool

from tf3dgan.training import runs

SMALL = FIXTURES / "modelnet10_chair_64_win_small.npz"
KEYS = ("mmd_iou", "cov_iou", "nna_iou", "mmd_cd", "cov_cd", "nna_cd", "jsd", "n_samples", "n_reference",
        "resolution", "floor")


def test_evaluate_cli_on_real_chairs_prints_every_key_and_the_floor(tmp_path):
    proc = tool("evaluate", "--samples", f"{SMALL}:train", "--reference", f"{SMALL}:test", "--floor", f"{SMALL}:train",
                "--resolution", "16", "--metrics", "iou", "cd", "jsd", "--json", "-o", tmp_path / "r.json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    for key in KEYS:
        assert key in result, (key, sorted(result))
    assert result["n_samples"] == result["n_reference"] == 4 and result["resolution"] == 16
    for key in ("cov_iou", "nna_iou", "cov_cd", "nna_cd"):
        assert 0.0 <= result[key] <= 1.0 and 0.0 <= result["floor"][key] <= 1.0
        assert f"{key}_std" in result
    assert json.loads((tmp_path / "r.json").read_text())["nna_iou"] == result["nna_iou"]
    table = tool("evaluate", "--samples", f"{SMALL}:train", "--reference", f"{SMALL}:test", "--resolution", "16",
                 "--metrics", "iou", "jsd")
    assert table.returncode == 0, table.stderr[-3000:]
    default = tool("evaluate", "--samples", f"{SMALL}:train", "--reference", f"{SMALL}:test", "--resolution", "8")
    assert default.returncode == 0 and "fid and kid skipped" in default.stderr, default.stderr[-3000:]
    assert "nna_iou" in table.stdout or "1-NNA" in table.stdout


@pytest.mark.slow
def test_evaluate_a_run_writes_its_metrics_file(tmp_path, tiny_run):
    shutil.copytree(tiny_run / "g", tmp_path / "g")
    no_ref = error_line(tool("evaluate", "-n", "g", "--out", tmp_path))
    assert "give --reference" in no_ref and "trained without -v" in no_ref
    proc = tool("evaluate", "-n", "g", "--out", tmp_path, "--reference", "synthetic:boxes:res=8:n=16:seed=9",
                "--metrics", "iou", "jsd", "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert result["n_samples"] == 16 and result["epoch"] == 4
    assert "floor" in result and result["floor_set"] == "synthetic:boxes:res=8:n=32"   # the run's training data
    written = json.loads((tmp_path / "g" / "metrics" / "4.json").read_text())
    assert written["nna_iou"] == result["nna_iou"]
    again = json.loads(tool("evaluate", "-n", "g", "--out", tmp_path, "--reference",
                            "synthetic:boxes:res=8:n=16:seed=9", "--metrics", "iou", "--json").stdout)
    assert again["nna_iou"] == result["nna_iou"]   # the same seeds: the same samples


def test_evaluate_bad_input_is_one_line(tmp_path):
    assert "no such run folder" in error_line(tool("evaluate", "-n", "nope", "--out", tmp_path))
    small = tmp_path / "s.npy"
    np.save(small, np.ones((3, 8, 8, 8), np.float32))
    line = error_line(tool("evaluate", "--samples", small, "--reference", f"{SMALL}:test", "--resolution", "16"))
    assert "8³ and cannot be pooled up to --resolution 16" in line
    one = tmp_path / "one.npy"
    np.save(one, np.ones((16, 16, 16), np.float32))
    assert "1 sample; the set metrics compare sets" in error_line(tool("evaluate", "--samples", one, "--reference",
                                                                      f"{SMALL}:test", "--resolution", "16"))
    assert "unknown metric 'bogus'" in error_line(tool("evaluate", "--samples", f"{SMALL}:train", "--reference",
                                                       f"{SMALL}:test", "--metrics", "iou", "bogus"))
    assert "fid/kid use the 32³ classifier" in error_line(tool("evaluate", "--samples", f"{SMALL}:train", "--reference",
                                                               f"{SMALL}:test", "--resolution", "16", "--metrics", "fid"))
    empty = tmp_path / "e.npy"
    np.save(empty, np.zeros((3, 16, 16, 16), np.float32))
    assert "every sample is empty" in error_line(tool("evaluate", "--samples", empty, "--reference", f"{SMALL}:test",
                                                      "--resolution", "16"))


def _eval_run(tmp_path, name, *extra, env=None):
    cmd = [sys.executable, str(REPO / "tools" / "train.py"), "-n", name, *map(str, TINY), "-sample", "100",
           "-graph", "100", "-graph3d", "100", "-save", "2", "--eval-every", "1", "--eval-count", "16",
           "-v", "synthetic:boxes:res=8:n=16:seed=9", "--out", str(tmp_path), *map(str, extra)]
    base = dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="",
                PYTHONPATH=str(REPO))
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO, env=dict(base, **(env or {})))


@pytest.mark.slow
def test_eval_every_writes_metrics_and_keeps_exact_resume(tmp_path):
    straight = _eval_run(tmp_path, "a", "-e", "4", "--deterministic")
    assert straight.returncode == 0, straight.stderr[-3000:]
    records = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3, 4] and all(r["n_samples"] == 16 for r in records)
    assert all(0 <= r["nna_iou"] <= 1 and 0 <= r["cov_iou"] <= 1 for r in records)
    assert "1-NNA" in straight.stdout
    best = min(records, key=lambda r: r["nna_iou"])
    assert runs.checkpoint_meta(runs.checkpoint_dir(tmp_path / "a") / runs.BEST)["epoch"] == best["epoch"]
    import tensorflow as tf
    tags = set()
    for f in (tmp_path / "a" / "logs").glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(f)):
            tags.update(v.tag for v in event.summary.value)
    assert {"quality/nna_iou", "quality/cov_iou", "quality/mmd_iou", "quality/jsd"} <= tags, sorted(tags)

    plain = tool("train", "-n", "c", *TINY, "-sample", "100", "-graph", "100", "-graph3d", "100", "-save", "2",
                 "-v", "synthetic:boxes:res=8:n=16:seed=9", "-e", "4", "--deterministic", "--out", tmp_path)
    assert plain.returncode == 0, plain.stderr[-3000:]
    a, _ = runs.load_checkpoint(runs.checkpoint_path(tmp_path / "a"))
    c, _ = runs.load_checkpoint(runs.checkpoint_path(tmp_path / "c"))
    for key in a:   # the same run without --eval-every: evaluations draw no training randomness
        np.testing.assert_array_equal(c[key], a[key], err_msg=key)

    assert _eval_run(tmp_path, "b", "-e", "2", "--deterministic").returncode == 0
    resumed = tool("train", "-n", "b", "-e", "4", "-l", "--out", tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    b, _ = runs.load_checkpoint(runs.checkpoint_path(tmp_path / "b"))
    for key in a:   # and a run resumed with evaluations on is bit-identical
        np.testing.assert_array_equal(b[key], a[key], err_msg=key)
    rb = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["nna_iou"] for r in rb] == [r["nna_iou"] for r in records]


@pytest.mark.slow
def test_eval_every_under_jax(tmp_path):
    pytest.importorskip("jax")
    proc = _eval_run(tmp_path, "j", "-e", "2", env={"KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(line) for line in (tmp_path / "j" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2] and json.loads((tmp_path / "j" / "config.json").read_text())[
        "backend"] == "jax"


def test_eval_every_without_v_holds_training_grids_back(tmp_path):
    from tf3dgan.training.plan import TrainConfig, prepare

    plan = prepare(TrainConfig(name="h", out=str(tmp_path), data="synthetic:boxes:res=8:n=40", eval_every=1,
                               eval_count=8))
    plan.lock.release()
    assert len(plan.data) == 32 and len(plan.held_back) == 8
    assert not set(plan.data.names) & set(plan.held_back.names)


@pytest.mark.slow
def test_evaluate_svm_scores_the_runs_discriminator_beside_an_untrained_one(tmp_path, tiny_run):
    data = REPO.parent / "shared" / "data" / "voxels"
    if not (data / "modelnet10_chair_64_win.npz").exists():
        pytest.skip("ModelNet10 voxels not beside the project")
    shutil.copytree(tiny_run / "g", tmp_path / "g")
    assert "--svm scores a run's discriminator" in error_line(tool("evaluate", "--samples", f"{SMALL}:train",
                                                                   "--reference", f"{SMALL}:test", "--svm"))
    proc = tool("evaluate", "-n", "g", "--out", tmp_path, "--reference", "synthetic:boxes:res=8:n=16:seed=9",
                "--metrics", "iou", "--svm", "--svm-limit", "12", "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    svm = json.loads(proc.stdout)["svm"]
    assert svm["n_test"] <= 120 and svm["limit"] == 12 and svm["resolution"] == 8
    assert 0.1 < svm["svm_accuracy"] <= 1 and 0 <= svm["untrained"]["svm_accuracy"] <= 1   # above chance (10 classes)
    assert len(svm["per_class"]) == 10 and svm["paper_accuracy"] == 0.91


def test_run_evaluation_called_directly_on_real_chairs(tmp_path):
    """tf3dgan.metrics.evaluation.run_evaluation (what tools/evaluate.py calls): the fixture's 12 train chairs
    against its 4 test chairs; the result it returns is the one it wrote, and the table names its numbers."""
    from tf3dgan.errors import Tf3dganError
    from tf3dgan.metrics.evaluation import run_evaluation

    heard = []
    done = run_evaluation(samples=f"{SMALL}:train", reference=f"{SMALL}:test", floor=f"{SMALL}:train",
                          resolution=16, metrics=["iou", "jsd"], output=str(tmp_path / "r.json"), report=heard.append)
    r = done.result
    assert done.path == tmp_path / "r.json" and json.loads(done.path.read_text()) == json.loads(
        json.dumps(r, sort_keys=True, default=float))
    assert r["n_samples"] == r["n_reference"] == 4 and r["resolution"] == 16 and "svm" not in r
    assert 0 <= r["nna_iou"] <= 1 and 0 <= r["cov_iou"] <= 1 and r["jsd"] >= 0 and "mmd_cd" not in r
    assert 0 <= r["floor"]["nna_iou"] <= 1
    assert done.text() and "\n3D-GAN SVM" not in done.text()
    nowhere = run_evaluation(samples=f"{SMALL}:train", reference=f"{SMALL}:test", resolution=8, report=heard.append)
    assert nowhere.path is None and nowhere.result["resolution"] == 8 and "nna_cd" in nowhere.result
    assert any("fid and kid skipped" in line for line in heard), heard   # notes go to report, not to stdout
    with pytest.raises(Tf3dganError, match="--svm scores a run's discriminator"):
        run_evaluation(samples=f"{SMALL}:train", reference=f"{SMALL}:test", with_svm=True)
