"""The run plan without TensorFlow: ``resolve`` settles flags against the saved run, the checkpoint and the
batch from what it is given (a real run's config.json and folder, real data), and ``prepare`` does it all
before TensorFlow, JAX or Keras is imported."""
from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
from _cli import REPO, tool_env

from tf3dgan.data.datasets import load_dataset
from tf3dgan.errors import CheckpointError, Tf3dganError
from tf3dgan.training import runs
from tf3dgan.training.plan import RunFolder, TrainConfig, choose_checkpoint, clamp_batch, resolve

RESUME = {"name", "out", "load", "epochs"}   # what `-n g --out DIR -l -e N` gives


def _resume(tiny_run, given=(), **kw):
    """resolve() of ``-n g --out <tiny_run> -l`` plus ``kw``, on the run's own config.json and folder."""
    run = tiny_run / "g"
    cfg = TrainConfig(name="g", out=str(tiny_run), load=True, **kw)
    return resolve(cfg, runs.read_config(run), given=RESUME | set(kw) | set(given), folder=RunFolder.read(run))


def test_a_resumed_run_takes_its_settings_from_config_json_and_announces_given_flags(tiny_run):
    saved = runs.read_config(tiny_run / "g")
    plan = _resume(tiny_run, epochs=6, dlr=0.0001)
    assert plan.saved == saved and plan.model == saved["model"]
    assert plan.checkpoint == runs.checkpoint_path(tiny_run / "g")   # -l: latest.npz
    assert plan.changes == [("epochs", 4, 6), ("dlr", saved["settings"]["dlr"], 0.0001)]
    assert plan.cfg.batchsize == 8 and plan.cfg.width == 0.125   # the run's own, not TrainConfig's defaults
    assert plan.cfg.data == saved["settings"]["data"] and plan.cfg.precision == saved["precision"]
    assert plan.data is None and plan.batch is None and plan.lock is None   # no data given yet

    same = _resume(tiny_run, epochs=4, given={"batchsize"}, batchsize=8)   # a flag given as it was: no change
    assert same.changes == []
    for kw, words in ((dict(seed=7), "--seed 7 does not match .*continues its own random stream"),
                      (dict(width=0.5), "--width 0.5 does not match .*keeps its model"),
                      (dict(arch="3dgan32"), "--arch 3dgan32 does not match .*keeps its model")):
        with pytest.raises(Tf3dganError, match=words):
            _resume(tiny_run, epochs=6, **kw)


def test_a_resume_with_nothing_left_to_train_is_refused(tiny_run):
    for epochs, words in ((3, "has trained 4 epochs already and -e 3 asks for no more; give -e N with N > 4"),
                          (4, r"is complete \(4 of 4 epochs\); give -e N with N > 4")):
        run = tiny_run / "g"
        cfg = TrainConfig(name="g", out=str(tiny_run), load=True, epochs=epochs)
        with pytest.raises(Tf3dganError, match=words):
            resolve(cfg, runs.read_config(run), given=RESUME, folder=RunFolder.read(run), trained=4)
    earlier = _resume(tiny_run, epochs=4, load_epoch=2)   # -le 2 of a 4-epoch run: 2 epochs left
    assert earlier.checkpoint == runs.checkpoint_path(tiny_run / "g", 2)


def test_the_checkpoint_choice(tmp_path):
    run = tmp_path / "r"
    new, resume = TrainConfig(name="r", out=str(tmp_path)), TrainConfig(name="r", out=str(tmp_path), load=True)
    assert choose_checkpoint(new, RunFolder(run)) is None
    assert choose_checkpoint(new, RunFolder(run, exists=True)) is None   # a folder without checkpoints is reused
    for folder in (RunFolder(run, True, (2, 4), True), RunFolder(run, True, (), True)):
        with pytest.raises(Tf3dganError, match=r"already holds a run with checkpoints; resume it with .* -n r "
                                               r".* -l \(add -le EPOCH for an earlier one\)"):
            choose_checkpoint(new, folder)
    with pytest.raises(CheckpointError, match=r"no such run to resume \(-l\); check -n and --out "
                                              r"\(runs there: a, b\)"):
        choose_checkpoint(resume, RunFolder(run, beside=("a", "b")))
    with pytest.raises(CheckpointError, match=r"\(runs there: none\)"):
        choose_checkpoint(resume, RunFolder(run))
    with pytest.raises(CheckpointError, match="has no checkpoint yet .* drop -l to start it afresh"):
        choose_checkpoint(resume, RunFolder(run, exists=True))
    folder = RunFolder(run, True, (2, 4), True)
    assert choose_checkpoint(resume, folder) == runs.checkpoint_path(run)
    assert choose_checkpoint(dataclasses.replace(resume, load=False, load_epoch=2), folder) == \
        runs.checkpoint_path(run, 2)   # -le alone implies -l
    with pytest.raises(CheckpointError, match=r"ckpt-000003.npz: no such checkpoint \(saved epochs: 2, 4; -l alone "
                                              r"resumes the newest\)"):
        choose_checkpoint(dataclasses.replace(resume, load_epoch=3), folder)
    # resolve() chooses the same way; a resume without the run's config.json is refused
    assert resolve(new, folder=RunFolder(run)).checkpoint is None
    with pytest.raises(Tf3dganError, match="resuming needs the run's config.json"):
        resolve(resume, None, folder=folder)


def test_the_batch_is_clamped_to_the_training_grids_with_a_warning(tmp_path, tiny_run):
    data = load_dataset("synthetic:boxes:res=8:n=6")
    plan = resolve(TrainConfig(name="n", out=str(tmp_path), data="synthetic:boxes:res=8:n=6", batchsize=24),
                   data=data)
    assert plan.batch == 6 and plan.cfg.batchsize == 24   # the setting stays as given; the run trains with 6
    assert plan.notes == (f"warning: batch size 24 is larger than the 6 training grids in {data.source}; "
                          "using batch size 6",)
    assert clamp_batch(6, data) == (6, None) and clamp_batch(5, data) == (5, None)
    # a new run's model is made for the data; config.json's model flags name it
    assert plan.model["resolution"] == 8 and plan.model["arch"] == "rasgan64" and plan.cfg.arch == "rasgan64"
    assert plan.cfg.resolution == 8 and plan.cfg.width == 1.0 and plan.threshold == 0.3

    resumed = _resume(tiny_run, epochs=6).with_data(data)   # a resumed run's batch (8) is clamped too
    assert resumed.batch == 6 and resumed.notes[0].startswith("warning: batch size 8 is larger than the 6")
    assert resumed.model == runs.read_config(tiny_run / "g")["model"]


def test_prepare_and_resolve_load_no_tensorflow_jax_or_keras(tmp_path, tiny_run):
    code = f"""
import sys
from tf3dgan.training.plan import TrainConfig, prepare
plan = prepare(TrainConfig(name="n", out={str(tmp_path)!r}, data="synthetic:boxes:res=8:n=12", batchsize=16))
plan.lock.release()
assert plan.batch == 12 and len(plan.data) == 12, plan
plan = prepare(TrainConfig(name="g", out={str(tmp_path)!r}, load=True, epochs=6),
               given={{"name", "out", "load", "epochs"}})
plan.lock.release()
assert plan.batch == 8 and plan.changes == [("epochs", 4, 6)], plan.changes
print(sorted(m for m in ("tensorflow", "jax", "keras") if m in sys.modules))
"""
    import shutil

    shutil.copytree(tiny_run / "g", tmp_path / "g")   # prepare locks and cleans the folder: a copy
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO,
                          env=tool_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]", proc.stdout
    assert Path(tmp_path / "n").is_dir() and not (tmp_path / "n" / "config.json").exists()


def test_a_format_1_config_resumes_with_the_settings_it_trained_with():
    # tf3dgan 0.1 (config format 1): "minimax" was the saturating G loss, "sgan" the non-saturating one; the
    # accuracy rule decided on the previous step; every objective's ratio rule used α 0.3 and factor 2
    from tf3dgan.training.plan import CONFIG_FORMAT, upgrade_config

    old = {"settings": {"loss": "minimax", "d_rule": "accuracy"}, "loss": "minimax",
           "model": {"arch": "3dgan32", "width": 1.0, "resolution": 32, "output_activation": "sigmoid",
                     "latent_dim": 200}}
    new = upgrade_config(old)
    assert new["format"] == CONFIG_FORMAT and new["loss"] == "minimax-saturating"
    assert new["settings"] == {"loss": "minimax-saturating", "d_rule": "accuracy", "accuracy_timing": "previous",
                               "rule_loss": "train", "rule_alpha": 0.3, "rule_factor": 2.0}
    assert new["model"]["init"] == "normal"     # what 0.1 initialised with (3dgan32's default is now pytorch)
    assert (new["model"]["data_scale"], new["model"]["d_norm"], new["model"]["latent_std"]) == (1.0, "batch", 1.0)
    assert upgrade_config({"settings": {"loss": "sgan"}})["settings"]["loss"] == "minimax"
    assert upgrade_config({"settings": {"loss": "rsgan", "rule_factor": 1.5}})["settings"]["rule_factor"] == 1.5
    assert upgrade_config(new) is new           # today's format passes through
    assert old["settings"]["loss"] == "minimax"  # the input is not modified


def test_new_settings_are_checked_before_anything_loads(tmp_path):
    base = dict(name="r", out=str(tmp_path), data="synthetic:boxes:res=8:n=16")
    for kw, words in ((dict(n_critic=0), "--n-critic must be at least 1"),
                      (dict(adam_beta2=1.0), r"--adam-beta2 must be in \(0, 1\)"),
                      (dict(rule_alpha=0.0), r"--rule-alpha must be in \(0, 1\]"),
                      (dict(rule_factor=-1.0), "--rule-factor must be a positive number"),
                      (dict(adam_epsilon=0.0), "--adam-epsilon must be a positive number"),
                      (dict(accuracy_timing="later"), "--accuracy-timing must be one of current, previous"),
                      (dict(rule_loss="val"), "--rule-loss must be one of train, eval"),
                      (dict(lr_schedule_reset=True), "--lr-schedule-reset .* give --lr-schedule too"),
                      (dict(data_scale=255.0, arch="3dgan32"), "data scale 255 needs a linear output"),
                      (dict(init="he"), "init must be one of normal, pytorch")):
        with pytest.raises(Tf3dganError, match=words):
            resolve(TrainConfig(**base, **kw))
