"""Presets (``tools/train.py --preset``): each fills the settings of the original it names, flags given win,
and the resolved run trains with them."""
from __future__ import annotations

import dataclasses

import pytest
from _cli import tool

from tf3dgan import presets
from tf3dgan.errors import Tf3dganError
from tf3dgan.training.plan import TrainConfig, resolve


def test_every_preset_names_only_training_settings_with_valid_values():
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    for preset in presets.PRESETS.values():
        assert set(preset.settings) <= fields, preset.name
        values, given = presets.apply_preset(preset.name, TrainConfig().to_dict(), set())
        assert values["preset"] == preset.name and set(preset.settings) <= given
        plan = resolve(TrainConfig(**dict(values, data="synthetic:boxes:res=8:n=16")), given=given)
        assert plan.cfg.preset == preset.name


def test_the_seed_presets_set_the_originals_faithful_modes():
    chair = presets.get_preset("seed-chair").settings
    assert chair["lr_schedule"] == "0:0.002/0.00005,300:0.005/0.00005,1200:0.007/0.00003,1600:0.008/0.00001"
    assert (chair["lr_schedule_reset"], chair["data_scale"], chair["rule_loss"], chair["loss"]) == (True, 255.0, "eval",
                                                                                                  "rasgan")
    assert (chair["batchsize"], chair["epochs"], chair["adam_epsilon"], chair["precision"]) == (24, 2500, 1e-8, "float32")
    gan = presets.get_preset("3dgan").settings
    assert (gan["arch"], gan["loss"], gan["d_rule"], gan["accuracy_timing"], gan["init"]) == (
        "3dgan32", "minimax", "accuracy", "current", "pytorch")
    assert (gan["glr"], gan["dlr"], gan["batchsize"], gan["latent_std"]) == (0.0025, 0.00005, 50, 0.33)
    rs = presets.get_preset("rsgan").settings
    assert (rs["loss"], rs["rule_alpha"], rs["rule_factor"], rs["dlr"]) == ("rsgan", 0.35, 1.5, 0.0005)
    iw = presets.get_preset("iwgan").settings
    assert (iw["loss"], iw["d_norm"], iw["n_critic"], iw["adam_beta2"], iw["output_activation"]) == (
        "wgan-gp", "none", 5, 0.9, "tanh")


def test_the_chair_presets_are_the_measured_recipe_at_two_scales():
    cpu, gpu = presets.get_preset("cpu-chair32").settings, presets.get_preset("gpu-chair64").settings
    for p in (cpu, gpu):   # README, Stabilisers: the A/B on real chairs that chose each of these
        assert (p["loss"], p["d_rule"], p["glr"], p["dlr"], p["output_activation"], p["data_scale"]) == (
            "minimax", "always", 0.0002, 0.0002, "sigmoid", 1.0)
        assert p["g_ema"] == 0.999 and p["r1"] > 0 and p["batchsize"] == 24
    assert (cpu["resolution"], cpu["width"], cpu["r1"]) == (32, 0.5, 1.0)
    assert (gpu["resolution"], gpu["width"], gpu["r1"]) == (64, 1.0, 8.0)   # γ ∝ voxels per grid (8× at 64³)
    assert {p.name for p in presets.PRESETS.values()} >= {"seed-chair", "seed-airplane", "3dgan", "cpu-chair32",
                                                         "gpu-chair64"}


def test_flags_given_win_over_the_preset():
    values, given = presets.apply_preset("seed-chair", dict(TrainConfig().to_dict(), resolution=32, width=0.5),
                                         {"resolution", "width"})
    assert (values["resolution"], values["width"], values["data_scale"]) == (32, 0.5, 255.0)
    with pytest.raises(ValueError, match="unknown preset 'chair'; choose one of seed-chair"):
        presets.get_preset("chair")


@pytest.mark.slow
def test_the_train_tool_applies_a_preset_and_records_it(tmp_path):
    out = tmp_path / "runs"
    result = tool("train", "--preset", "3dgan", "-n", "p", "--out", str(out), "-d", "synthetic:boxes:res=32:n=8",
                      "-e", "1", "--width", "0.0625", "-b", "4", "--no-progress")
    assert result.returncode == 0, result.stderr
    import json

    config = json.loads((out / "p" / "config.json").read_text())
    s = config["settings"]
    assert (s["preset"], s["loss"], s["accuracy_timing"], s["glr"], s["dlr"], s["batchsize"]) == (
        "3dgan", "minimax", "current", 0.0025, 0.00005, 4)
    assert (config["model"]["init"], config["model"]["latent_std"], config["model"]["width"]) == ("pytorch", 0.33, 0.0625)
    assert "loss minimax, D rule accuracy" in result.stdout


def test_a_bad_preset_is_one_line(tmp_path):
    result = tool("train", "--preset", "nope", "--out", str(tmp_path))
    assert result.returncode == 2 and "invalid choice: 'nope'" in result.stderr
    with pytest.raises(Tf3dganError):
        resolve(TrainConfig(data="synthetic:boxes:res=8:n=16", lr_schedule_reset=True))


def test_arch_3dgan32_alone_says_how_to_get_the_seed():
    plan = resolve(TrainConfig(arch="3dgan32", data="synthetic:boxes:res=8:n=16"), given={"arch", "data"})
    assert any("--preset 3dgan trains what the 3D-GAN seed trained" in note for note in plan.notes)
    values, given = presets.apply_preset("3dgan", TrainConfig().to_dict(), set())
    assert not resolve(TrainConfig(**dict(values, data="synthetic:boxes:res=8:n=16")), given=given).notes
