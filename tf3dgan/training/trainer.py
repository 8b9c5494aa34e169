"""The trainer base: what the TensorFlow and the JAX trainers share (no TensorFlow or JAX imported here).

:class:`Trainer` owns the settings checks, the optimizers, the step's static settings
(:class:`~tf3dgan.training.algorithm.StepSettings`), the position within the epoch and the host API
(``start_epoch``, ``train_steps``, rates, ``generate``, ``sync_models``, ``state_arrays``); a backend
adapter (:mod:`tf3dgan.training.backends`) supplies only what is backend-specific: how the step of
:mod:`tf3dgan.training.algorithm` is compiled and where its state lives.

Both backends key their checkpoints by :mod:`tf3dgan.training.checkpoint_keys` (the models' and
optimizers' variables by their place in the model, then ``trainer/<rule state>`` and ``trainer/rng``), which
is what makes a checkpoint written on one backend load on the other.
"""
from __future__ import annotations

import keras
import numpy as np

from tf3dgan.choices import D_RULES, PRECISIONS
from tf3dgan.models import losses
from tf3dgan.training import checkpoint_keys
from tf3dgan.training.algorithm import METRICS, RULE_STATE, StepSettings  # noqa: F401  (METRICS, RULE_STATE re-exported)


def check_settings(loss: str, d_rule: str | None, precision: str, batch_size: int, n: int):
    """Validate a trainer's arguments; returns ``(objective, d_rule)`` (the objective's default rule
    when ``d_rule`` is None)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    objective = losses.get_objective(loss)
    d_rule = d_rule or objective.default_d_rule
    if d_rule not in D_RULES:
        raise ValueError(f"d-rule must be one of {', '.join(D_RULES)}, got {d_rule!r}")
    if not 1 <= batch_size <= n:
        raise ValueError(f"batch size {batch_size} must be between 1 and the dataset size {n}")
    return objective, d_rule


def adam(lr: float, float16: bool):
    """The seeds' Adam (β1 = 0.5), wrapped in a dynamic loss scaler for ``mixed_float16``."""
    opt = keras.optimizers.Adam(learning_rate=lr, beta_1=0.5)
    return keras.optimizers.LossScaleOptimizer(opt) if float16 else opt


class Trainer:
    """Trains a (generator, discriminator) pair on an in-memory voxel dataset (packed bits).

    A backend subclass implements ``_shuffle()`` (draw the epoch's two data orders), ``_run(n)``
    (``n`` compiled steps, returning per-step metric arrays), ``_get_rates``/``_set_rates``,
    ``generate``, ``sync_models``, ``state_arrays`` and ``load_state_arrays``."""

    def __init__(self, generator, discriminator, data_packed: np.ndarray, dim: int, *, batch_size: int,
                 loss: str = "rasgan", d_rule: str | None = None, precision: str = "float32",
                 ema_alpha: float = 0.3, accuracy_threshold: float = 0.8):
        n = int(data_packed.shape[0])
        self.objective, self.d_rule = check_settings(loss, d_rule, precision, batch_size, n)
        self.G, self.D = generator, discriminator
        self.dim, self.batch_size, self.precision = int(dim), int(batch_size), precision
        self.latent_dim = int(generator.spec.latent_dim)
        self.steps_per_epoch = n // self.batch_size
        self.ema_alpha, self.accuracy_threshold = float(ema_alpha), float(accuracy_threshold)
        self.loss_scaled = precision == "mixed_float16"
        self.settings = StepSettings(self.objective, self.d_rule, self.batch_size, self.dim, self.latent_dim,
                                     self.ema_alpha, self.accuracy_threshold)
        self.trace_count = 0   # traces of the train-steps function (Python side effect while tracing)
        self._pos = 0          # the step within the epoch, tracked on the host (no device read per call)

    def _make_optimizers(self, g_lr: float, d_lr: float) -> None:
        self.opt_g = adam(g_lr, self.loss_scaled)
        self.opt_d = adam(d_lr, self.loss_scaled)
        self.opt_g.build(self.G.trainable_variables)
        self.opt_d.build(self.D.trainable_variables)

    # ------------------------------------------------------------------ the host API
    @property
    def position(self) -> int:
        """Steps already taken in the current epoch."""
        return self._pos

    def start_epoch(self) -> None:
        """Draw this epoch's two data orders (on the device, from the trainer's random stream)."""
        self._shuffle()
        self._pos = 0

    def train_steps(self, n: int) -> dict:
        """Run ``n`` train steps in one compiled call; returns per-step metrics (length ``n``) as device
        arrays, without waiting for them (reading one waits for the steps).

        The steps must fit in the current epoch (call ``start_epoch`` first and after every
        ``steps_per_epoch`` steps): past its end there is no data left in this epoch's order."""
        n = int(n)
        if n < 1 or self._pos + n > self.steps_per_epoch:
            raise ValueError(f"{n} steps from step {self._pos} do not fit in the epoch's {self.steps_per_epoch} "
                             "steps (n must be at least 1); call start_epoch() first")
        metrics = self._run(n)
        self._pos += n
        return metrics

    def set_learning_rates(self, g_lr: float, d_lr: float) -> None:
        self._set_rates(float(g_lr), float(d_lr))

    @property
    def learning_rates(self) -> tuple[float, float]:
        return self._get_rates()

    def sync_models(self) -> None:
        """Make the Keras models' variables hold the trained weights (before ``G.save_weights`` or ``G(z)``)."""

    def manifest(self) -> dict:
        """What ``state_arrays`` holds besides the rule state and RNG: key -> the variable's path, shape, dtype
        (for a checkpoint's metadata)."""
        return checkpoint_keys.manifest(checkpoint_keys.checkpoint_variables(self.G, self.D, self.opt_g, self.opt_d))
