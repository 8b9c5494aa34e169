"""Named training recipes (``tools/train.py --preset NAME``), in one dependency-free module.

A preset fills every setting it names; a flag given on the command line wins over it. The ``seed-*``,
``3dgan``, ``rsgan`` and ``iwgan`` presets train what the originals' code trained (README, "Fidelity" says
where each setting comes from, with file and line); ``cpu-chair32`` and ``gpu-chair64`` are tf3dgan's own recipe
for real chairs (README, "Stabilisers": the A/Bs behind it); the settings they do not name keep tf3dgan's defaults
(checkpoints, samples, graphs: the original's every-10-epochs schedule).
"""
from __future__ import annotations

from dataclasses import dataclass, field

#: the published chair table of jpjuvo/64-3D-RaSGAN's README (epochs: G rate / D rate)
SEED_CHAIR_TABLE = "0:0.002/0.00005,300:0.005/0.00005,1200:0.007/0.00003,1600:0.008/0.00001"
#: its airplane table
SEED_AIRPLANE_TABLE = "0:0.0025/0.00002,400:0.0075/0.00001"

#: what every TF1 / PyTorch seed's optimizer and precision were (Keras' Adam ε is 1e-7; the seeds ran float32)
_SEED_RUNTIME = {"adam_epsilon": 1e-8, "precision": "float32"}
#: 64-3D-RaSGan.py's model and rule: 64³, linear G, N(0, 0.02) init, 0/255 voxels, d_loss2 on skipped steps
_RASGAN = {"arch": "rasgan64", "width": 1.0, "resolution": 64, "output_activation": "linear", "init": "normal",
           "data_scale": 255.0, "loss": "rasgan", "d_rule": "ratio", "rule_loss": "eval", "batchsize": 24,
           **_SEED_RUNTIME}


#: tf3dgan's recipe for real chairs, chosen by the A/Bs in README ("Stabilisers"): the non-saturating GAN loss with D
#: trained on every step at G's rate, R1 on the real chairs, a sigmoid G and its moving average (which is sampled)
_CHAIRS = {"arch": "rasgan64", "output_activation": "sigmoid", "init": "normal", "data_scale": 1.0, "d_norm": "batch",
           "loss": "minimax", "d_rule": "always", "glr": 0.0002, "dlr": 0.0002, "r1": 1.0, "g_ema": 0.999,
           "batchsize": 24, "data": "ModelNet10/chair/train"}


@dataclass(frozen=True)
class Preset:
    name: str
    summary: str                        # one line for --help
    source: str                         # the original it reproduces (file), or what it is
    settings: dict = field(default_factory=dict)   # TrainConfig field -> value


PRESETS = {p.name: p for p in (
    Preset("seed-chair", "64-3D-RaSGan.py's chair run: the published per-epoch rate table replayed with a restart "
           "(fresh Adam and D rule) at each row, 0/255 voxels, 2500 epochs",
           "jpjuvo/64-3D-RaSGAN 64-3D-RaSGan.py + README chair table",
           {**_RASGAN, "data": "ModelNet10/chair/train", "epochs": 2500, "glr": 0.002, "dlr": 0.00005,
            "lr_schedule": SEED_CHAIR_TABLE, "lr_schedule_reset": True}),
    Preset("seed-airplane", "64-3D-RaSGan.py's airplane run (ModelNet40 airplanes): its rate table, replayed "
           "with restarts, 0/255 voxels, 2000 epochs",
           "jpjuvo/64-3D-RaSGAN 64-3D-RaSGan.py + README airplane table",
           {**_RASGAN, "data": "ModelNet40/airplane/train", "epochs": 2000, "glr": 0.0025, "dlr": 0.00002,
            "lr_schedule": SEED_AIRPLANE_TABLE, "lr_schedule_reset": True}),
    Preset("3dgan", "SomTambe's 3D-GAN (Wu et al. 2016 at 32³) as its notebook trained monitors: non-saturating "
           "minimax, accuracy rule < 0.8 on the current batch, PyTorch init, z ~ N(0, 0.33), batch 50",
           "SomTambe/modelzoo 3D-GAN_PyTorch/Final3DGAN.ipynb (main.py, models.py)",
           {"arch": "3dgan32", "width": 1.0, "resolution": 32, "output_activation": "sigmoid", "init": "pytorch",
            "latent_std": 0.33, "data_scale": 1.0, "loss": "minimax", "d_rule": "accuracy",
            "accuracy_timing": "current", "data": "ModelNet10/monitor/train", "batchsize": 50, "epochs": 500,
            "glr": 0.0025, "dlr": 0.00005, **_SEED_RUNTIME}),
    Preset("rsgan", "64-3D-RSGan.py: relativistic standard GAN, its rule (α 0.35, factor 1.5), D rate 0.0005, "
           "0/255 voxels, 5000 epochs",
           "jpjuvo/64-3D-RaSGAN 64-3D-RSGan.py",
           {**_RASGAN, "loss": "rsgan", "rule_alpha": 0.35, "rule_factor": 1.5, "data": "ModelNet10/chair/train",
            "epochs": 5000, "glr": 0.002, "dlr": 0.0005}),
    Preset("iwgan", "64-3D-IWGan.py: WGAN-GP with a critic without BatchNorm, tanh G, G every 5th step, "
           "Adam 1e-4 (0.5, 0.9), 1500 epochs (voxels 0/1: see README, Fidelity)",
           "jpjuvo/64-3D-RaSGAN 64-3D-IWGan.py",
           {"arch": "rasgan64", "width": 1.0, "resolution": 64, "output_activation": "tanh", "init": "normal",
            "data_scale": 1.0, "d_norm": "none", "loss": "wgan-gp", "d_rule": "always", "n_critic": 5,
            "adam_beta2": 0.9, "glr": 0.0001, "dlr": 0.0001, "batchsize": 24, "epochs": 1500,
            "data": "ModelNet10/chair/train", **_SEED_RUNTIME}),
    Preset("cpu-chair32", "tf3dgan's recipe for real chairs on a 2-core CPU: 32³ pooled from the 64³ voxels, width 0.5, "
           "non-saturating loss, D every step, rates 2e-4, R1 γ 1, G's moving average β 0.999, 200 epochs",
           "tf3dgan (README, Stabilisers: the A/B on ModelNet10 chairs)",
           {**_CHAIRS, "resolution": 32, "width": 0.5, "epochs": 200, "precision": "float32"}),
    Preset("gpu-chair64", "cpu-chair32's recipe at the seed's 64³ and full width for one GPU, R1 γ scaled with the "
           "voxel count (8), 1000 epochs",
           "tf3dgan (cpu-chair32 at 64³; argued, not yet measured on a GPU)",
           {**_CHAIRS, "resolution": 64, "width": 1.0, "r1": 8.0, "epochs": 1000}),
)}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None


def apply_preset(name: str, values: dict, given: set[str]) -> tuple[dict, set[str]]:
    """``values`` (TrainConfig fields) with the preset's settings where no flag was given, and the settings
    that now count as given (the preset's and the flags'); ``values["preset"]`` records the name."""
    preset = get_preset(name)
    out = dict(values)
    for key, value in preset.settings.items():
        if key not in values:
            raise KeyError(f"preset {name}: {key!r} is not a training setting")
        if key not in given:
            out[key] = value
    out["preset"] = name
    return out, set(given) | set(preset.settings) | {"preset"}


def describe_presets() -> str:
    """The presets for ``--help``: one line each."""
    return "; ".join(f"{p.name}: {p.summary}" for p in PRESETS.values())
