"""Resuming a run as a user would: the printed hint alone, settings from config.json, announced changes,
refusals that say what to do, the run folder's own housekeeping (lock, stale temporary files, latest.npz)."""
from __future__ import annotations

import errno
import json
import os
import shlex
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from _cli import REPO, TINY, error_line, start_tool, stop_when, tool, tool_env

from tf3dgan.data.synthetic import make_shapes
from tf3dgan.errors import Tf3dganError, WriteError
from tf3dgan.training import runs
from tf3dgan.training.plan import TrainConfig, prepare


def _boxes_npz(folder, n=24, seed=4):
    """A non-default dataset, as a file the run refers to by a relative path."""
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "boxes.npz", voxels=make_shapes("boxes", n, 8, seed=seed))
    return "boxes.npz"


# settings that all differ from the defaults: batch, rates, data, intervals, seed
RUN_FLAGS = ["-b", "4", "-glr", "0.001", "-dlr", "0.0003", "--width", "0.125", "--seed", "3", "-save", "5",
             "-sample", "5", "-graph", "100", "-graph3d", "100", "--deterministic", "--no-progress"]


def _checkpoint_arrays(run, epoch=None):
    arrays, meta = runs.load_checkpoint(runs.checkpoint_path(run, epoch))
    return arrays, meta


@pytest.mark.slow
def test_an_interrupted_run_resumes_exactly_from_the_printed_command_alone(tmp_path):
    data = _boxes_npz(tmp_path / "work")
    out = tmp_path / "runs"
    straight = tool("train", "-n", "a", "-d", data, *RUN_FLAGS, "-e", "30", "--out", out, cwd=tmp_path / "work")
    assert straight.returncode == 0, straight.stderr[-3000:]

    proc = start_tool("train", "-n", "b", "-d", data, *RUN_FLAGS, "-e", "30", "--out", out, cwd=tmp_path / "work")
    stdout = stop_when(proc, out / "b" / "5.npy", signal.SIGINT)
    hint = [line for line in stdout.splitlines() if "resume with: " in line]
    assert len(hint) == 1, stdout[-3000:]
    command = hint[0].split("resume with: ", 1)[1]
    assert command == shlex.join(["python", str(REPO / "tools" / "train.py"), "-n", "b", "--out", str(out), "-l"])
    _, stopped = _checkpoint_arrays(out / "b")
    assert 5 <= stopped["epoch"] < 30, "the run must stop part way"
    config_before = (out / "b" / "config.json").read_bytes()

    argv = shlex.split(command)
    assert argv[0] == "python"
    other_cwd = tmp_path / "elsewhere"   # pasted in another folder: the relative data path still resolves
    other_cwd.mkdir()
    resumed = subprocess.run([sys.executable, *argv[1:]], capture_output=True, text=True, timeout=300,
                             cwd=other_cwd, env=tool_env())
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming with" not in resumed.stdout          # nothing was changed
    assert f"resumed {out / 'b'}" in resumed.stdout and "done: 30 epochs" in resumed.stdout
    assert (out / "b" / "config.json").read_bytes() == config_before

    a, meta_a = _checkpoint_arrays(out / "a")
    b, meta_b = _checkpoint_arrays(out / "b")
    assert meta_a["epoch"] == meta_b["epoch"] == 30 and a.keys() == b.keys()
    for key in a:   # bit for bit: weights, optimizer slots, rule state, RNG, data order, loss history
        np.testing.assert_array_equal(b[key], a[key], err_msg=key)
    settings = json.loads(config_before)["settings"]
    assert settings["batchsize"] == 4 and settings["glr"] == 0.001 and settings["dlr"] == 0.0003
    assert settings["data"] == str(tmp_path / "work" / "boxes.npz")   # stored absolute


def _tiny(tmp_path, **kw):
    base = dict(name="r", out=str(tmp_path), data="synthetic:boxes:res=8:n=32", batchsize=8, width=0.125,
                epochs=2, dlr=0.0003, sample=1, save=1, graph=2, graph3d=2, progress=False)
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.slow
def test_a_flag_given_with_l_wins_and_is_announced(tmp_path, capsys):
    from tf3dgan.training.loop import fit

    run = fit(_tiny(tmp_path))
    before = runs.read_config(run)
    # only -n/--out/-l and the changed flags are given, as on the command line
    fit(TrainConfig(name="r", out=str(tmp_path), load=True, epochs=3, dlr=0.0001, progress=False),
        given={"name", "out", "load", "epochs", "dlr", "progress"})
    out = capsys.readouterr().out
    assert "resuming with epochs 2 → 3 (-e)" in out and "resuming with dlr 0.0003 → 0.0001 (-dlr)" in out
    after = runs.read_config(run)
    assert after["settings"]["epochs"] == 3 and after["settings"]["dlr"] == 0.0001
    changed = {k for k in before["settings"] if before["settings"][k] != after["settings"][k]}
    assert changed == {"epochs", "dlr"}   # every other setting is the run's own (batch 8, not the default 24)
    assert after["batch_size"] == 8 and after["data"] == before["data"]

    for flag, value, words in (("seed", 7, "--seed 7 does not match .*continues its own random stream"),
                               ("width", 0.5, "--width 0.5 does not match .*keeps its model")):
        with pytest.raises(Tf3dganError, match=words):
            prepare(TrainConfig(name="r", out=str(tmp_path), load=True, epochs=9, **{flag: value}),
                    given={"name", "out", "load", "epochs", flag})


def test_resumes_that_cannot_train_say_what_to_do(tmp_path):
    from tf3dgan.training.loop import fit

    run = fit(_tiny(tmp_path, epochs=3))
    config = (run / "config.json").read_bytes()
    for epochs, words in ((2, "has trained 3 epochs already and -e 2 asks for no more; give -e N with N > 3"),
                          (3, r"is complete \(3 of 3 epochs\); give -e N with N > 3")):
        with pytest.raises(Tf3dganError, match=words):
            prepare(TrainConfig(name="r", out=str(tmp_path), load=True, epochs=epochs),
                    given={"name", "out", "load", "epochs"})
    assert (run / "config.json").read_bytes() == config   # untouched

    (tmp_path / "early").mkdir()   # a run killed before its first -save
    (tmp_path / "early" / "config.json").write_text("{}")
    with pytest.raises(Tf3dganError, match="has no checkpoint yet .* drop -l to start it afresh"):
        prepare(TrainConfig(name="early", out=str(tmp_path), load=True), given={"name", "out", "load"})


def test_the_cli_answers_bad_paths_and_missing_runs_in_seconds(tmp_path):
    for args, words in ((["-n", "x", "-d", tmp_path / "nope", "--out", tmp_path], "does not exist"),
                        (["-n", "missing", "-l", "--out", tmp_path], "no such run to resume")):
        start = time.perf_counter()
        line = error_line(tool("train", *args))
        assert words in line
        assert time.perf_counter() - start < 5   # checked before TensorFlow loads


def test_the_run_folder_is_locked_and_cleans_its_stale_temporary_files(tmp_path, tiny_run, capsys):
    import shutil

    shutil.copytree(tiny_run / "g", tmp_path / "g")
    run = tmp_path / "g"
    stale = [run / "checkpoints" / ".ckpt-000006-g6hef9xd.npz", run / "checkpoints" / ".latest-abcd1234.npz",
             run / ".generator-x1y2z3w4.weights.h5", run / "plots" / ".60-q9w8e7r6.png"]
    for p in stale:
        p.write_bytes(b"x" * 1000)
    keep = run / "generated" / ".seed0_n16-a1b2c3d4.npy"   # another tool's folder: not the trainer's to clean
    keep.parent.mkdir(exist_ok=True)
    keep.write_bytes(b"x")
    lock = runs.lock_run(run)
    try:
        with pytest.raises(Tf3dganError, match="is being trained by another process"):
            prepare(TrainConfig(name="g", out=str(tmp_path), load=True, epochs=6), given={"name", "out", "load", "epochs"})
    finally:
        lock.release()
    plan = prepare(TrainConfig(name="g", out=str(tmp_path), load=True, epochs=6), given={"name", "out", "load", "epochs"})
    plan.lock.release()
    assert "removed 4 temporary files (0.0 MB) left in" in capsys.readouterr().out
    assert not any(p.exists() for p in stale) and keep.exists()


def test_latest_is_its_own_file_so_an_earlier_checkpoint_survives_its_damage(tmp_path, tiny_run):
    import shutil

    shutil.copytree(tiny_run / "g", tmp_path / "g")
    run = tmp_path / "g"
    latest, newest = runs.checkpoint_path(run), runs.checkpoint_path(run, 4)
    assert latest.read_bytes() == newest.read_bytes()
    assert os.stat(latest).st_ino != os.stat(newest).st_ino and os.stat(newest).st_nlink == 1
    with open(latest, "r+b") as f:   # damaged in place
        f.seek(100)
        f.write(b"\0" * 5000)
    with pytest.raises(Tf3dganError, match=r"latest.npz: corrupt .*-le 4"):
        runs.load_checkpoint(latest)
    runs.load_checkpoint(newest)   # still whole


def test_an_unwritable_or_full_run_folder_is_one_line(tmp_path, monkeypatch):
    from tf3dgan.training.loop import fit

    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(WriteError, match="cannot write .*a_file"):
        fit(_tiny(tmp_path, out=str(blocker)))
    line = error_line(tool("train", "-n", "x", *TINY, "-e", "1", "--out", blocker))
    assert "cannot write" in line and "a_file" in line

    def full_disk(f, **arrays):
        f.write(b"PK partial")
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(runs.np, "savez", full_disk)
    with pytest.raises(WriteError, match=r"cannot write .*ckpt-000001.npz: No space left on device \(.* free"):
        fit(_tiny(tmp_path, name="full"))
    leftovers = [p.name for p in (tmp_path / "full" / "checkpoints").iterdir()]
    assert leftovers == [], leftovers   # no temporary file left behind


@pytest.mark.slow
def test_outputs_name_the_model_and_share_one_step_axis(tmp_path):
    from tf3dgan.spec import describe, make_spec
    from tf3dgan.training.loop import fit

    assert describe(make_spec("rasgan64", 0.25, 32)) == "rasgan64 32³ ×0.25"
    assert describe(make_spec("3dgan32")) == "3dgan32 32³"
    run = fit(_tiny(tmp_path, epochs=2, graph3d=1))
    assert not (run / "plots" / "track_d_validation_loss.npy").exists()   # no -v: no validation curve
    import tensorflow as tf
    steps = {}
    for event_file in (run / "logs").glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(event_file)):
            for v in event.summary.value:
                steps.setdefault(v.tag, set()).add(event.step)
    assert steps["sample/graph"] == {4, 8}                    # 4 steps an epoch: the global step, as the scalars
    assert max(steps["loss/d"]) == 8 and steps["train/epoch"] == {4, 8}


def test_the_hint_of_a_console_script_and_of_the_api():
    from tf3dgan.training.plan import resume_command

    saved = sys.argv[:]
    try:
        sys.argv[:] = ["/venv/bin/tf3dgan-train", "-n", "x"]
        assert resume_command("x", "savepoint") == f"tf3dgan-train -n x --out {os.path.abspath('savepoint')} -l"
        sys.argv[:] = ["tools/train.py", "-n", "x"]   # relative paths become absolute: it works from any folder
        assert resume_command("x", "runs") == (f"python {os.path.abspath('tools/train.py')} -n x --out "
                                               f"{os.path.abspath('runs')} -l")
        sys.argv[:] = ["-c"]
        assert resume_command("my run", "/o") == "python tools/train.py -n 'my run' --out /o -l"
    finally:
        sys.argv[:] = saved


def test_resume_refusals_found_by_review(tmp_path):
    from tf3dgan.training.loop import fit

    run = fit(_tiny(tmp_path, epochs=1, eval_every=1, eval_count=4, validation_data=""))   # holds 4 grids back
    assert runs.read_config(run)["data"]["count"] == 28
    for change, words in ((dict(validation_data="synthetic:boxes:res=8:n=8:seed=9"), "holds back --eval-count"),
                          (dict(eval_count=6), "holds back --eval-count"),
                          (dict(eval_every=0), "holds back --eval-count")):
        with pytest.raises(Tf3dganError, match=words):
            prepare(TrainConfig(name="r", out=str(tmp_path), load=True, epochs=2, **change),
                    given={"name", "out", "load", "epochs", *change})
    for kw, words in ((dict(glr=0.0), "-glr must be a positive learning rate"),
                      (dict(dlr=float("nan")), "-dlr must be a positive learning rate"),
                      (dict(eval_every=1, eval_count=1), "--eval-count must be at least 2")):
        with pytest.raises(Tf3dganError, match=words):
            prepare(_tiny(tmp_path, name="new", **kw))
    # a failed resume leaves the run unlocked (the lock is released, not left to the garbage collector)
    with pytest.raises(Tf3dganError, match="does not exist"):
        prepare(TrainConfig(name="r", out=str(tmp_path), load=True, epochs=2, data=str(tmp_path / "gone")),
                given={"name", "out", "load", "epochs", "data"})
    prepare(TrainConfig(name="r", out=str(tmp_path), load=True, epochs=2), given={"name", "out", "load", "epochs"}
            ).lock.release()


def test_a_schedule_file_is_stored_absolute(tmp_path, monkeypatch):
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "sched.json").write_text(json.dumps({"0": [0.002, 0.0002], "1": [0.001, 0.0001]}))
    monkeypatch.chdir(tmp_path / "work")
    plan = prepare(_tiny(tmp_path, lr_schedule="sched.json"))
    plan.lock.release()
    assert plan.cfg.lr_schedule == str(tmp_path / "work" / "sched.json")


@pytest.mark.slow
def test_a_deterministic_tensorflow_run_resumes_under_jax(tmp_path):
    pytest.importorskip("jax")
    first = tool("train", "-n", "d", *TINY, "-e", "1", "--deterministic", "--out", tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    env = dict(tool_env(), KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    cmd = [sys.executable, str(REPO / "tools" / "train.py"), "-n", "d", "-e", "2", "-l", "--out", str(tmp_path)]
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO, env=env)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "started with --deterministic, a TensorFlow setting; not used under JAX" in second.stdout
    assert json.loads((tmp_path / "d" / "config.json").read_text())["settings"]["deterministic"] is True
