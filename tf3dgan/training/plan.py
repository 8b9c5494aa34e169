"""Everything a training run settles before TensorFlow loads: its settings, its folder, its data.

:func:`resolve` is the pure part: from a :class:`TrainConfig`, the names of the flags the user actually
gave, the run's saved ``config.json`` and what its folder holds (:class:`RunFolder`) it makes the
:class:`RunPlan` — it checks the settings, chooses the checkpoint to resume (:func:`choose_checkpoint`),
takes **every** setting of a resumed run from its ``config.json`` (a flag given on the command line wins and
is announced, one line per changed setting; the model flags and the seed cannot change), refuses a resume
that has nothing left to train and, given the data, settles the model spec and clamps the batch size.

:func:`prepare` is what ``fit`` calls: it reads the folder and ``config.json``, calls :func:`resolve`,
locks the run folder against a second trainer, removes the temporary files an interrupted save left behind,
and loads the data. None of this imports Keras, so a wrong path or a missing run is reported within a
second. The plan then goes to :func:`tf3dgan.training.build.build` (backend, devices, models, trainer).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tf3dgan.atomic import stale_temps
from tf3dgan.choices import ACCURACY_TIMINGS, RULE_LOSSES, parse_augment
from tf3dgan.errors import CheckpointError, Tf3dganError, write_error
from tf3dgan.spec import make_spec
from tf3dgan.training import runs


@dataclass
class TrainConfig:
    """Every setting of a training run (saved as ``config.json``'s ``settings``)."""

    name: str = "Test"
    data: str = "ModelNet10/chair/train"
    validation_data: str = ""
    epochs: int = 2500
    batchsize: int = 24
    sample: int = 10
    save: int = 10
    graph: int = 10
    graph3d: int = 10
    graph_style: str = "scatter"
    load: bool = False
    load_epoch: int | None = None
    glr: float = 0.002
    dlr: float = 0.00005
    arch: str | None = None              # None: rasgan64 for a new run, the saved one for a resumed run
    loss: str = "rasgan"
    d_rule: str | None = None
    accuracy_timing: str = "current"     # the accuracy rule decides on this step's scores (SomTambe) or the last
    rule_loss: str = "eval"              # the ratio rule's D loss on a skipped step: "eval" (the seed's) or "train" BN
    rule_alpha: float | None = None      # None: the objective's (0.3; rsgan 0.35)
    rule_factor: float | None = None     # None: the objective's (2; rsgan 1.5)
    n_critic: int = 1                    # G trained every n-th step
    r1: float = 0.0                      # R1 penalty weight γ on real data for D (0: off)
    g_ema: float = 0.0                   # β of G's moving average, which the tools sample (0: off)
    augment: str = ""                    # DiffAugment operations, comma-separated (choices.AUGMENTS; "": off)
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-7           # Keras' default (TF1 and PyTorch: 1e-8)
    precision: str | None = None
    lr_schedule: str | None = None
    lr_schedule_reset: bool = False      # reset Adam and the D rule where the schedule changes the rates
    seed: int = 0
    width: float | None = None           # None: 1.0 for a new run, the saved one for a resumed run
    resolution: int | None = None
    pool_min: int = 1
    output_activation: str | None = None
    init: str | None = None              # None: the architecture's seed's (rasgan64 normal, 3dgan32 pytorch)
    data_scale: float = 1.0
    d_norm: str = "batch"
    latent_std: float = 1.0
    mbstd: int = 0                       # D's minibatch-std group size (0: off)
    preset: str | None = None            # the preset the settings came from (tf3dgan.presets), for the record
    xla: bool = False
    strategy: str = "auto"
    sync_bn: bool = True
    cpu_devices: int = 0
    conv_transpose: str = "native"
    steps_per_call: int = 1
    eval_every: int = 0                  # epochs between quality evaluations (0: off)
    eval_count: int = 100                # samples per evaluation (and held-back grids without -v)
    out: str = "savepoint"
    keep: int = 10
    deterministic: bool = False
    progress: bool = True

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


#: Settings of one invocation rather than of the run: never taken from config.json, never announced.
PER_INVOCATION = ("name", "out", "load", "load_epoch", "progress")
#: The model flags: a resumed run keeps the model it was made with.
MODEL_FLAGS = {"arch": "--arch", "width": "--width", "resolution": "--resolution",
               "output_activation": "--output-activation", "init": "--init", "data_scale": "--data-scale",
               "d_norm": "--d-norm", "latent_std": "--latent-std", "mbstd": "--mbstd"}
#: config.json's format: 2 since the objectives were renamed (tf3dgan.models.losses.RENAMED_V1)
CONFIG_FORMAT = 2
#: Settings a resumed run cannot change: the model, and the seed of its random stream.
FIXED_ON_RESUME = {**MODEL_FLAGS, "seed": "--seed"}
#: The command-line flag of each setting, for messages.
FLAGS = {"data": "-d", "validation_data": "-v", "epochs": "-e", "batchsize": "-b", "sample": "-sample",
         "save": "-save", "graph": "-graph", "graph3d": "-graph3d", "glr": "-glr", "dlr": "-dlr",
         "load_epoch": "-le"}


def flag_of(key: str) -> str:
    return FIXED_ON_RESUME.get(key) or FLAGS.get(key) or "--" + key.replace("_", "-")


def given_fields(cfg: TrainConfig) -> set[str]:
    """For the Python API: the settings that differ from :class:`TrainConfig`'s defaults count as given."""
    default = TrainConfig()
    return {f.name for f in dataclasses.fields(cfg) if getattr(cfg, f.name) != getattr(default, f.name)}


# ---------------------------------------------------------------------- learning-rate schedule
def parse_lr_schedule(spec: str | None, glr: float, dlr: float) -> list[tuple[int, float, float]]:
    """``"0:0.002/0.00005,300:0.005/0.00005"`` (epoch:G/D, ...) or a JSON file holding
    ``{"0": [0.002, 0.00005], "300": {"g": 0.005, "d": 0.00005}}``.  Epochs before the first
    entry use ``-glr``/``-dlr``.  Returns sorted ``(start_epoch, g_lr, d_lr)`` entries."""
    entries = [(0, float(glr), float(dlr))]
    if not spec:
        return entries
    try:
        if os.path.isfile(spec):
            with open(spec, encoding="utf-8") as f:
                raw = json.load(f)
            items = raw.items() if isinstance(raw, dict) else [(r["epoch"], r) for r in raw]
            for epoch, value in items:
                g, d = (value["g"], value["d"]) if isinstance(value, dict) else value
                entries.append((int(epoch), float(g), float(d)))
        else:
            for part in filter(None, (p.strip() for p in spec.split(","))):
                epoch, rates = part.split(":")
                g, d = rates.split("/")
                entries.append((int(epoch), float(g), float(d)))
    except (ValueError, KeyError, TypeError, json.JSONDecodeError) as e:
        raise Tf3dganError(f"--lr-schedule {spec!r}: expected 'EPOCH:GLR/DLR,...' or a JSON file of "
                           f"{{\"EPOCH\": [GLR, DLR]}} ({type(e).__name__}: {e})") from None
    if any(e < 0 or g <= 0 or d <= 0 for e, g, d in entries):
        raise Tf3dganError(f"--lr-schedule {spec!r}: epochs must be >= 0 and rates > 0")
    by_epoch = {e: (g, d) for e, g, d in entries}   # a later entry for epoch 0 replaces -glr/-dlr
    return sorted((e, g, d) for e, (g, d) in by_epoch.items())


def schedule_restarts(schedule) -> set[int]:
    """The epochs where a schedule starts a new row (where the seed's table restarted its script)."""
    return {start for start, _, _ in schedule if start > 0}


def lr_at(schedule, epoch: int) -> tuple[float, float]:
    g, d = schedule[0][1:]
    for start, g_lr, d_lr in schedule:
        if start <= epoch:
            g, d = g_lr, d_lr
    return g, d


# ---------------------------------------------------------------------- the plan
@dataclass
class RunPlan:
    """A run ready to build: settled settings, its folder, what to resume from, its data.

    Made by :func:`resolve` (pure) and :func:`prepare` (which also reads the disk, locks the folder and
    loads the data). Without data (``data`` None) the data-dependent parts are not settled yet: the
    model spec of a new run (``model``) and the batch (``batch``); :meth:`with_data` settles them.
    The replicas are not part of the plan: they depend on the devices, so :func:`tf3dgan.training.build.build`
    settles them (and refuses a batch that does not split evenly over them)."""

    cfg: TrainConfig
    dir: Path
    checkpoint: Path | None             # the checkpoint to resume from (None: a new run)
    saved: dict | None                  # the resumed run's config.json
    model: dict | None                  # the run's model spec: a resumed run's own; a new run's once it has data
    data: object                        # data.VoxelDataset
    val: object | None
    schedule: list
    changes: list[tuple] = field(default_factory=list)   # (setting, old, new) of a resumed run
    lock: object | None = None
    held_back: object | None = None     # training grids held back as --eval-every's reference (no -v)
    given: set = field(default_factory=set)   # the settings given explicitly
    batch: int | None = None            # the batch size trained with (-b, at most the training grids)
    notes: tuple = ()                   # warnings to show when the run starts (the batch clamp)

    @property
    def threshold(self) -> float:
        """The run's one occupancy threshold (config.json's ``threshold``)."""
        return runs.model_threshold(self.model)

    def with_data(self, data, val=None, held_back=None) -> RunPlan:
        """This plan with its data: a new run's model spec made for the data's resolution, the model
        flags of ``cfg`` set to the model's, and the batch clamped to the training grids."""
        cfg = dataclasses.replace(self.cfg)
        model = self.model
        if model is None:
            model = make_spec(cfg.arch or "rasgan64", 1.0 if cfg.width is None else cfg.width, data.dim,
                              cfg.output_activation, init=cfg.init, data_scale=cfg.data_scale,
                              d_norm=cfg.d_norm, latent_std=cfg.latent_std, mbstd=cfg.mbstd).to_dict()
        for key in MODEL_FLAGS:   # config.json's settings name the model trained
            setattr(cfg, key, model[key])
        batch, note = clamp_batch(cfg.batchsize, data)
        return dataclasses.replace(self, cfg=cfg, model=model, data=data, val=val, held_back=held_back, batch=batch,
                                   notes=self.notes + ((note,) if note else ()))


def clamp_batch(batch: int, data) -> tuple[int, str | None]:
    """The batch size to train with, and the warning when ``-b`` is more than the training grids."""
    if batch > len(data):
        return len(data), (f"warning: batch size {batch} is larger than the {len(data)} training grids in "
                           f"{data.source}; using batch size {len(data)}")
    return batch, None


@dataclass(frozen=True)
class RunFolder:
    """What a run folder holds, as far as :func:`resolve` needs to know (read by :meth:`read`)."""

    path: Path
    exists: bool = False                # the folder is there
    epochs: tuple = ()                  # the epochs of its numbered checkpoints, oldest first
    latest: bool = False                # it has checkpoints/latest.npz
    beside: tuple = ()                  # the runs in its parent folder (named when it does not exist)

    @classmethod
    def read(cls, path: Path) -> RunFolder:
        path = Path(path)
        exists = path.is_dir()
        return cls(path, exists, tuple(runs.saved_epochs(path)), runs.checkpoint_path(path).exists(),
                   () if exists else tuple(_runs_in(path.parent)))


def resume_command(name: str, out) -> str:
    """The whole command that resumes the run ``out/name``, ready to paste."""
    prog = sys.argv[0] if sys.argv and sys.argv[0] else ""
    base = Path(prog).name
    if base == "train.py":                  # absolute paths: the command works from any folder
        cmd = ["python", os.path.abspath(prog)]
    elif base.startswith("tf3dgan-train"):
        cmd = [base]
    else:                                   # called from Python (fit()): the tool's usual form
        cmd = ["python", "tools/train.py"]
    return shlex.join([*cmd, "-n", name, "--out", os.path.abspath(os.fspath(out)), "-l"])


def absolute_spec(spec: str) -> str:
    """A data spec with its path made absolute (so a resumed run finds it from any folder); synthetic
    specs and paths that do not exist are kept as given."""
    if not spec or spec.startswith("synthetic:"):
        return spec
    head, sep, key = spec.rpartition(":")
    if sep and head.lower().endswith(".npz") and key and not Path(spec).exists():
        path, suffix = Path(head), f":{key}"
    else:
        path, suffix = Path(spec), ""
    return f"{path.resolve()}{suffix}" if path.exists() else spec


def _check_settings(cfg: TrainConfig) -> None:
    for name in ("epochs", "batchsize", "sample", "save", "graph", "graph3d", "steps_per_call", "pool_min", "eval_count"):
        if getattr(cfg, name) < 1:
            raise Tf3dganError(f"{flag_of(name)} must be at least 1, got {getattr(cfg, name)}")
    if cfg.cpu_devices < 0:
        raise Tf3dganError(f"--cpu-devices must be >= 0 (0: no split), got {cfg.cpu_devices}")
    if cfg.keep < 0:
        raise Tf3dganError(f"--keep must be >= 0 (0: keep all), got {cfg.keep}")
    if cfg.eval_every < 0:
        raise Tf3dganError(f"--eval-every must be >= 0 (0: off), got {cfg.eval_every}")
    if cfg.load_epoch is not None and cfg.load_epoch < 0:
        raise Tf3dganError(f"-le must be >= 0, got {cfg.load_epoch}")
    for name in ("glr", "dlr"):
        value = getattr(cfg, name)
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise Tf3dganError(f"{flag_of(name)} must be a positive learning rate, got {value}")
    if cfg.n_critic < 1:
        raise Tf3dganError(f"--n-critic must be at least 1, got {cfg.n_critic}")
    for name, low, high in (("adam_beta2", 0.0, 1.0), ("rule_alpha", 0.0, 1.0)):
        value = getattr(cfg, name)
        if value is not None and not (math.isfinite(value) and low < value < high + (name == "rule_alpha")):
            raise Tf3dganError(f"{flag_of(name)} must be in (0, 1{']' if name == 'rule_alpha' else ')'}, got {value}")
    if not (math.isfinite(cfg.r1) and cfg.r1 >= 0):
        raise Tf3dganError(f"--r1 must be a number >= 0 (0: off), got {cfg.r1}")
    if not (math.isfinite(cfg.g_ema) and 0 <= cfg.g_ema < 1):
        raise Tf3dganError(f"--g-ema must be in [0, 1) (0: off; e.g. 0.999), got {cfg.g_ema}")
    try:
        parse_augment(cfg.augment)
    except ValueError as e:
        raise Tf3dganError(str(e)) from None
    for name in ("adam_epsilon", "rule_factor"):
        value = getattr(cfg, name)
        if value is not None and not (math.isfinite(value) and value > 0):
            raise Tf3dganError(f"{flag_of(name)} must be a positive number, got {value}")
    for name, allowed in (("accuracy_timing", ACCURACY_TIMINGS), ("rule_loss", RULE_LOSSES)):
        if getattr(cfg, name) not in allowed:
            raise Tf3dganError(f"{flag_of(name)} must be one of {', '.join(allowed)}, got {getattr(cfg, name)!r}")
    if cfg.lr_schedule_reset and not cfg.lr_schedule:
        raise Tf3dganError("--lr-schedule-reset resets Adam and the D rule where --lr-schedule changes the rates; "
                           "give --lr-schedule too, or drop --lr-schedule-reset")
    if cfg.eval_every and cfg.eval_count < 2:
        raise Tf3dganError(f"--eval-count must be at least 2 (1-NNA and COV compare sets), got {cfg.eval_count}")


def upgrade_config(saved: dict) -> dict:
    """A ``config.json`` of an older format in today's terms, so a resumed run trains exactly as it did.

    Format 1 (tf3dgan 0.1): ``minimax`` was the saturating G loss (now ``minimax-saturating``) and ``sgan`` the
    non-saturating one (now ``minimax``); the accuracy rule decided on the previous step (≤ 0.8); the ratio
    rule smoothed the training-mode D loss on skipped steps, with α 0.3 and factor 2 for every objective; the
    models were initialised ``normal``."""
    if int(saved.get("format", 1)) >= CONFIG_FORMAT:
        if isinstance(saved.get("model"), dict) and "mbstd" not in saved["model"]:   # before --mbstd: none
            return dict(saved, model={**saved["model"], "mbstd": 0})
        return saved
    from tf3dgan.models.losses import RENAMED_V1

    out = dict(saved, format=CONFIG_FORMAT)
    settings = dict(saved.get("settings") or {})
    if "loss" in settings:
        settings["loss"] = RENAMED_V1.get(settings["loss"], settings["loss"])
    if "loss" in out:
        out["loss"] = RENAMED_V1.get(out["loss"], out["loss"])
    old = {"accuracy_timing": "previous", "rule_loss": "train", "rule_alpha": 0.3, "rule_factor": 2.0}
    out["settings"] = {**old, **settings}
    if isinstance(saved.get("model"), dict):
        out["model"] = {"init": "normal", "data_scale": 1.0, "d_norm": "batch", "latent_std": 1.0, "mbstd": 0,
                        **saved["model"]}
    return out


def _reconcile(cfg: TrainConfig, given: set[str], saved: dict, run_dir: Path) -> tuple[TrainConfig, list[tuple]]:
    """The resumed run's settings: config.json's, except flags given on the command line (which win,
    each change said in one line); a given model flag or seed that differs is refused."""
    settings = dict(saved.get("settings") or {})
    model = saved.get("model") or {}
    resolved = {"precision": saved.get("precision"), "d_rule": saved.get("d_rule")}  # what the run really used
    values, changes = cfg.to_dict(), []
    for key in values:
        if key in PER_INVOCATION:
            continue
        old = model.get(key, settings.get(key)) if key in MODEL_FLAGS else settings.get(key)
        if old is None and resolved.get(key) is not None:
            old = resolved[key]
        if key not in given:
            if key in settings or key in MODEL_FLAGS or key in resolved:
                values[key] = old
            continue
        new = values[key]
        if key in ("data", "validation_data"):
            new = values[key] = absolute_spec(new)
        elif key == "lr_schedule" and new and os.path.isfile(new):
            new = values[key] = str(Path(new).resolve())
        if new == old:
            continue
        if key in FIXED_ON_RESUME:
            what = "keeps its model" if key in MODEL_FLAGS else "continues its own random stream"
            raise Tf3dganError(f"{flag_of(key)} {new} does not match the run being resumed ({run_dir}: {key} {old}); "
                               f"a resumed run {what}: drop {flag_of(key)} or start a new run with another -n")
        changes.append((key, old, new))
    held = lambda s: bool(s.get("eval_every")) and not s.get("validation_data")  # noqa: E731
    before, after = held(settings), held(values)
    if before != after or (before and settings.get("eval_count") != values.get("eval_count")):
        what = ("holds back --eval-count training grids as its --eval-every reference" if before else
                "trains on all its training grids")
        raise Tf3dganError(f"{run_dir} {what}; this change of --eval-every/--eval-count/-v would change the "
                           "training set of a resumed run: keep them as they were, or give -v on a new run")
    return TrainConfig(**values), changes


def describe_change(key: str, old, new) -> str:
    """``epochs 3 → 10 (-e)``: one changed setting of a resumed run."""
    show = lambda v: repr(v) if isinstance(v, str) or v is None else str(v)  # noqa: E731
    return f"{key} {show(old)} → {show(new)} ({flag_of(key)})"


def choose_checkpoint(cfg: TrainConfig, folder: RunFolder) -> Path | None:
    """The checkpoint a run resumes from (None: a new run): ``-le EPOCH``'s, else ``latest.npz``; a new run
    in a folder that holds checkpoints, a resume of a missing run or of a missing checkpoint is refused."""
    run_dir = folder.path
    if not (cfg.load or cfg.load_epoch is not None):
        if folder.epochs or folder.latest:
            raise Tf3dganError(f"{run_dir} already holds a run with checkpoints; resume it with "
                               f"{resume_command(cfg.name, cfg.out)} (add -le EPOCH for an earlier one), "
                               "or choose another -n name")
        return None
    if not folder.exists:
        names = folder.beside
        listed = ", ".join(names[:10]) + (" ..." if len(names) > 10 else "") if names else "none"
        raise CheckpointError(f"{run_dir}: no such run to resume (-l); check -n and --out (runs there: {listed})")
    path = runs.checkpoint_path(run_dir, cfg.load_epoch)
    if cfg.load_epoch is None and not folder.latest or cfg.load_epoch is not None and cfg.load_epoch not in folder.epochs:
        if not folder.epochs:
            raise CheckpointError(f"{run_dir} has no checkpoint yet (it stopped before its first -save); "
                                  "drop -l to start it afresh")
        raise CheckpointError(f"{path}: no such checkpoint (saved epochs: {', '.join(map(str, folder.epochs))}; "
                              f"-l alone resumes the newest)")
    return path


def _runs_in(folder: Path) -> list[str]:
    try:
        return sorted(p.name for p in folder.iterdir() if (p / runs.CONFIG_NAME).is_file())
    except OSError:
        return []


def check_trained(plan: RunPlan, trained: int) -> None:
    """Refuse a resume with nothing left to train: its checkpoint holds ``trained`` epochs, ``-e`` asks for no more."""
    cfg = plan.cfg
    if trained >= cfg.epochs:
        ask = (f"-e {cfg.epochs} asks for no more" if cfg.epochs < trained
               else f"it is complete ({trained} of {cfg.epochs} epochs)")
        raise Tf3dganError(f"{plan.dir} has trained {trained} epochs already and {ask}; "
                           f"give -e N with N > {trained} to train on")


def resolve(config: TrainConfig, saved: dict | None = None, *, given: set[str] | None = None,
            folder: RunFolder | None = None, trained: int | None = None, data=None, val=None,
            held_back=None) -> RunPlan:
    """The :class:`RunPlan` of ``config``: a function of what it is given alone (it reads no run folder or
    data, writes nothing, takes no lock, prints nothing, imports no Keras; it only looks up the paths of
    ``-d``/``-v``/``--lr-schedule`` to make them absolute).

    ``saved``: the run's ``config.json`` when resuming (``-l``/``-le``); every setting not in ``given``
    (default: the fields that differ from :class:`TrainConfig`'s defaults) comes from it, and a given model
    flag or seed that differs is refused. ``folder``: what the run folder holds (default: nothing), which
    decides the checkpoint (:func:`choose_checkpoint`). ``trained``: the epochs that checkpoint holds (a
    resume with nothing left to train is refused). ``data`` (and ``val``, ``held_back``): the loaded data,
    which settles the model spec of a new run and the batch size (:meth:`RunPlan.with_data`)."""
    cfg = dataclasses.replace(config)
    given = given_fields(cfg) if given is None else set(given)
    if cfg.load_epoch is not None:
        cfg.load = True
    _check_settings(cfg)
    run_dir = runs.run_path(cfg.out, cfg.name)
    folder = RunFolder(run_dir) if folder is None else folder
    checkpoint = choose_checkpoint(cfg, dataclasses.replace(folder, path=run_dir))
    model, changes = None, []
    if cfg.load:
        if saved is None:
            raise Tf3dganError(f"{run_dir / runs.CONFIG_NAME}: resuming needs the run's config.json")
        saved = upgrade_config(saved)
        cfg, changes = _reconcile(cfg, given, saved, run_dir)
        model = saved.get("model")
        if not model:
            raise CheckpointError(f"{run_dir / runs.CONFIG_NAME}: has no model description")
        _check_settings(cfg)
    else:
        saved = None
        try:   # the model flags, checked before any data is read (a resumed run has its own)
            make_spec(cfg.arch or "rasgan64", 1.0 if cfg.width is None else cfg.width, cfg.resolution,
                      cfg.output_activation, init=cfg.init, data_scale=cfg.data_scale, d_norm=cfg.d_norm,
                      latent_std=cfg.latent_std, mbstd=cfg.mbstd)
        except ValueError as e:
            raise Tf3dganError(f"model settings: {e}") from None
        cfg.data, cfg.validation_data = absolute_spec(cfg.data), absolute_spec(cfg.validation_data)
        if cfg.lr_schedule and os.path.isfile(cfg.lr_schedule):   # a schedule file, found from any folder
            cfg.lr_schedule = str(Path(cfg.lr_schedule).resolve())
    notes = ()
    if saved is None and cfg.arch == "3dgan32" and not cfg.preset and not {"loss", "d_rule", "glr", "dlr"} & given:
        notes = ("note: --arch 3dgan32 gives the 3D-GAN networks, trained here with the loss, D rule and rates of the "
                 f"flags ({cfg.loss}, {cfg.glr:g} / {cfg.dlr:g}); --preset 3dgan trains what the 3D-GAN seed trained",)
    plan = RunPlan(cfg, run_dir, checkpoint, saved, model, None, None, [], changes, given=given, notes=notes)
    if trained is not None and checkpoint is not None:
        check_trained(plan, trained)
    plan.schedule = parse_lr_schedule(cfg.lr_schedule, cfg.glr, cfg.dlr)
    return plan if data is None else plan.with_data(data, val, held_back)


def _is_chief(cfg: TrainConfig) -> bool:
    """False for the workers other than 0 of a multi-worker run (they write no run folder)."""
    if cfg.strategy != "multiworker":
        return True
    try:
        task = json.loads(os.environ.get("TF_CONFIG", "{}")).get("task", {})
        return int(task.get("index", 0)) == 0
    except (ValueError, TypeError, AttributeError):
        return True


def _take_folder(run_dir: Path, report=print):
    """Create/lock the run folder and remove stale temporary files of an interrupted save."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise write_error(run_dir, e) from None
    lock = runs.lock_run(run_dir)
    stale = [p for folder in runs.TRAINER_FOLDERS for p in stale_temps(run_dir / folder, recursive=False)]
    removed = 0
    for p in stale:
        try:
            size = p.stat().st_size
            p.unlink()
            removed += size
        except OSError:
            pass
    if stale:
        report(f"removed {len(stale)} temporary file{'s' if len(stale) != 1 else ''} "
               f"({removed / 1e6:.1f} MB) left in {run_dir} by an interrupted save")
    return lock


def prepare(cfg: TrainConfig, given: set[str] | None = None, report=print) -> RunPlan:
    """Settle a run before any model is built (see the module docstring): :func:`resolve` on what the run
    folder holds, then lock the folder and load the data. ``given``: the settings the user gave explicitly
    (default: those that differ from :class:`TrainConfig`'s defaults)."""
    load = cfg.load or cfg.load_epoch is not None
    _check_settings(cfg)
    folder = RunFolder.read(runs.run_path(cfg.out, cfg.name))
    saved = None
    if load:
        choose_checkpoint(cfg, folder)   # a missing run or checkpoint is refused before config.json is read
        saved = runs.read_config(folder.path)
    plan = resolve(cfg, saved, given=given, folder=folder)
    if plan.checkpoint is not None:
        check_trained(plan, int(runs.checkpoint_meta(plan.checkpoint).get("epoch", 0)))
    chief = _is_chief(plan.cfg)
    lock = _take_folder(plan.dir, report) if chief and plan.cfg.load else None
    try:
        data, val, held_back = _load_data(plan.cfg, plan.model, report)
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    if chief and not plan.cfg.load:
        lock = _take_folder(plan.dir, report)
    plan = plan.with_data(data, val, held_back)
    plan.lock = lock
    return plan


def _load_data(cfg: TrainConfig, model: dict | None, report):
    """The training data (pooled to the model's resolution), the validation data, the held-back grids."""
    from tf3dgan.data import datasets as data_lib

    want_res = model["resolution"] if model else cfg.resolution
    data = data_lib.load_dataset(cfg.data, resolution=want_res, seed=cfg.seed, pool_min=cfg.pool_min)
    if cfg.pool_min != 1 and data.pooled_from is None:
        raise Tf3dganError(f"--pool-min {cfg.pool_min} applies only when --resolution pools the grids down, and "
                           f"{cfg.data} is already {data.dim}³; drop --pool-min or give a smaller --resolution")
    if data.pooled_from is not None:
        report(data.pooling_note())
    val = (data_lib.load_dataset(cfg.validation_data, resolution=data.dim, seed=cfg.seed + 1, pool_min=cfg.pool_min)
           if cfg.validation_data else None)
    if val is not None and val.pooled_from is not None:
        report("validation: " + val.pooling_note())
    held_back = None
    if cfg.eval_every and val is not None and len(val) < 2:
        raise Tf3dganError(f"--eval-every compares sets: -v {cfg.validation_data} holds {len(val)} grid; give at "
                           "least 2")
    if cfg.eval_every and val is None:
        from tf3dgan.training.quality import hold_back

        count = min(cfg.eval_count, len(data) // 4)
        if count < 2:
            raise Tf3dganError(f"--eval-every needs -v, or at least 8 training grids to hold some back "
                               f"({data.source} has {len(data)})")
        data, held_back = hold_back(data, count, cfg.seed)
        report(f"--eval-every without -v: {count} of the {len(data) + count} training grids are held back as its "
               "reference (not trained on); give -v to train on all of them")
    return data, val, held_back
