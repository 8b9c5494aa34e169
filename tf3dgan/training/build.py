"""``build(plan) -> Run``: a :class:`~tf3dgan.training.plan.RunPlan` made into a run ready to train.

The one place a run meets its Keras backend (through :func:`tf3dgan.training.backends.get_backend`, with no
per-backend branch here): the TensorFlow-only switches a resumed run carries, the multi-device strategy
(``--strategy``, ``--cpu-devices``) and its replicas, device tuning, ``--deterministic``, the seed, the
precision, the models built for the strategy, the trainer, and the restore of a resumed run's checkpoint.
The replicas are settled here, not in the plan, because they depend on the devices the backend sees.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tf3dgan.choices import parse_augment
from tf3dgan.errors import Tf3dganError
from tf3dgan.spec import describe
from tf3dgan.training import runs
from tf3dgan.training.backends import Backend, get_backend
from tf3dgan.training.plan import RunPlan, TrainConfig, lr_at

#: The per-step curves a run keeps (in its checkpoints as ``history/<key>``, and in plots/track_*.npy).
HISTORY_KEYS = ("d_loss", "g_loss", "val_loss", "d_trained", "ratio", "d_accuracy", "loss_scale", "epoch")


@dataclass
class Run:
    """A built run: its plan, backend, devices, models and trainer, and the training state the loop advances
    (``epoch``: complete epochs; ``history``: every step's metrics so far)."""

    plan: RunPlan
    cfg: TrainConfig                     # the plan's settings, as the backend applies them
    backend: Backend
    strategy: object | None              # the multi-device strategy (None: one device)
    worker: int                          # this process's worker number (0: the chief, which writes the run folder)
    replicas: int
    batch: int
    precision: str
    G: object
    D: object
    trainer: object
    epoch: int = 0
    history: dict = field(default_factory=lambda: {k: np.zeros(0, np.float32) for k in HISTORY_KEYS})

    @property
    def spec(self) -> dict:
        return self.plan.model

    @property
    def threshold(self) -> float:
        return self.plan.threshold

    @property
    def label(self) -> str:
        """``rasgan64 32³ ×0.25``: the model, for titles and the start line."""
        return describe(self.plan.model)

    @property
    def data(self):
        return self.plan.data

    @property
    def val(self):
        return self.plan.val

    @property
    def steps(self) -> int:
        """Global train steps so far (TensorBoard's one step axis)."""
        return len(self.history["d_loss"])


def build(plan: RunPlan, report=print) -> Run:
    """Backend, strategy, models and trainer for ``plan`` (which must have its data); a resumed run's
    checkpoint restored. Imports Keras (and the backend's adapter)."""
    import keras

    backend = get_backend()
    cfg = dataclasses.replace(plan.cfg)
    backend.leave_off_foreign(cfg, plan.saved, plan.given, report)
    strategy = backend.make_strategy(cfg)
    backend.check_strategy(cfg, strategy)
    worker = backend.worker(strategy)
    backend.tune_for_device()
    backend.determinism(cfg)
    keras.utils.set_random_seed(cfg.seed)
    for note in plan.notes:
        report(note)
    batch, replicas = plan.batch, backend.replicas(strategy)
    if batch % replicas:
        raise Tf3dganError(f"batch size {batch} does not split evenly over the {replicas} replicas of "
                           f"--strategy {cfg.strategy}; use a multiple of {replicas}")
    group = int(plan.model.get("mbstd", 0))
    if group and (batch // replicas) % group:
        raise Tf3dganError(f"--mbstd {group} needs a batch per replica that is a multiple of {group}; the batch is "
                           f"{batch // replicas}" + (f" per replica ({batch} over {replicas})" if replicas > 1 else "")
                           + f"; use -b {max(group, batch // group * group * replicas)} or another --mbstd")
    precision = cfg.precision or backend.default_precision()
    g_lr, d_lr = lr_at(plan.schedule, 0)
    G, D = backend.build_models(strategy, cfg, **plan.model, dtype_policy=precision,
                                conv_transpose=cfg.conv_transpose)
    trainer = backend.Trainer(G, D, plan.data.packed, plan.data.dim, batch_size=batch, loss=cfg.loss,
                              d_rule=cfg.d_rule, g_lr=g_lr, d_lr=d_lr, precision=precision, seed=cfg.seed,
                              ema_alpha=cfg.rule_alpha, rule_factor=cfg.rule_factor,
                              accuracy_timing=cfg.accuracy_timing, rule_loss=cfg.rule_loss, n_critic=cfg.n_critic,
                              adam_beta2=cfg.adam_beta2, adam_epsilon=cfg.adam_epsilon, r1_gamma=cfg.r1,
                              g_ema=cfg.g_ema, augment=parse_augment(cfg.augment),
                              xla=cfg.xla, validation_packed=None if plan.val is None else plan.val.packed,
                              **backend.trainer_options(strategy))
    run = Run(plan, cfg, backend, strategy, worker, replicas, batch, precision, G, D, trainer)
    if plan.checkpoint is not None:
        restore(run, plan.checkpoint, report)
    return run


def restore(run: Run, path: Path, report=print) -> None:
    """Load the checkpoint at ``path`` into ``run``: the trainer's whole state, the history, the epoch."""
    arrays, meta = runs.load_checkpoint(path)
    hist = {k[len("history/"):]: arrays.pop(k) for k in list(arrays) if k.startswith("history/")}
    run.trainer.load_state_arrays(arrays, source=str(path))
    run.history.update({k: np.asarray(v, np.float32) for k, v in hist.items() if k in run.history})
    run.epoch = int(meta["epoch"])
    pos = run.trainer.position
    where = f"epoch {run.epoch}" + (f", step {pos}" if 0 < pos < run.trainer.steps_per_epoch else "")
    report(f"resumed {run.plan.dir} from {path.name} ({where})")
