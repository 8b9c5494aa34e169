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

from tf3dgan.choices import ACCURACY_TIMINGS, AUGMENTS, D_RULES, PRECISIONS, RULE_LOSSES
from tf3dgan.models import losses
from tf3dgan.training import checkpoint_keys
from tf3dgan.training.algorithm import METRICS, OPTIONAL_STATE, RULE_STATE, StepSettings, initial_rule_state  # noqa: F401  (METRICS, RULE_STATE re-exported)


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


def optional_entry(key: str) -> bool:
    """Whether a checkpoint may lack ``key``: a loss scaler's variables (a run resumed in another precision) and
    rule state added since the checkpoint was written (``algorithm.OPTIONAL_STATE``: it keeps its initial value)."""
    return key.split("/")[0].endswith("_scale") or key.removeprefix("trainer/") in OPTIONAL_STATE


def with_ema_start(arrays: dict) -> dict:
    """A checkpoint's arrays (path keys) with G's moving average filled in from its G when it has none (a run
    written without ``--g-ema`` that resumes with it: the average starts from the checkpoint's G)."""
    if any(k.startswith("g_ema/") for k in arrays):
        return arrays
    return dict(arrays, **{"g_ema/" + k[2:]: v for k, v in arrays.items() if k.startswith("g/")})


def adam(lr: float, float16: bool, beta_2: float = 0.999, epsilon: float = 1e-7):
    """The seeds' Adam (β1 = 0.5), wrapped in a dynamic loss scaler for ``mixed_float16``.  ``beta_2`` 0.9 is
    64-3D-IWGan.py's; ``epsilon`` 1e-8 is TensorFlow 1's and PyTorch's default (Keras' is 1e-7)."""
    opt = keras.optimizers.Adam(learning_rate=lr, beta_1=0.5, beta_2=beta_2, epsilon=epsilon)
    return keras.optimizers.LossScaleOptimizer(opt) if float16 else opt


class Trainer:
    """Trains a (generator, discriminator) pair on an in-memory voxel dataset (packed bits).

    A backend subclass implements ``_shuffle()`` (draw the epoch's two data orders), ``_run(n)``
    (``n`` compiled steps, returning per-step metric arrays), ``_get_rates``/``_set_rates``,
    ``generate``, ``sync_models``, ``state_arrays`` and ``load_state_arrays``."""

    def __init__(self, generator, discriminator, data_packed: np.ndarray, dim: int, *, batch_size: int,
                 loss: str = "rasgan", d_rule: str | None = None, precision: str = "float32",
                 ema_alpha: float | None = None, rule_factor: float | None = None, accuracy_threshold: float = 0.8,
                 accuracy_timing: str = "current", rule_loss: str = "eval", n_critic: int = 1,
                 adam_beta2: float = 0.999, adam_epsilon: float = 1e-7, r1_gamma: float = 0.0,
                 g_ema: float = 0.0, augment: tuple[str, ...] = ()):
        n = int(data_packed.shape[0])
        self.objective, self.d_rule = check_settings(loss, d_rule, precision, batch_size, n)
        if accuracy_timing not in ACCURACY_TIMINGS:
            raise ValueError(f"accuracy timing must be one of {', '.join(ACCURACY_TIMINGS)}, got {accuracy_timing!r}")
        if rule_loss not in RULE_LOSSES:
            raise ValueError(f"rule loss must be one of {', '.join(RULE_LOSSES)}, got {rule_loss!r}")
        if int(n_critic) != n_critic or n_critic < 1:
            raise ValueError(f"n_critic must be a positive integer, got {n_critic}")
        if not 0 <= g_ema < 1:
            raise ValueError(f"g_ema must be in [0, 1) (0: off), got {g_ema}")
        augment = tuple(augment)
        if set(augment) - set(AUGMENTS):
            raise ValueError(f"augment operations must be among {', '.join(AUGMENTS)}, got {augment}")
        self.G, self.D = generator, discriminator
        self.dim, self.batch_size, self.precision = int(dim), int(batch_size), precision
        self.latent_dim = int(generator.spec.latent_dim)
        self.steps_per_epoch = n // self.batch_size
        self.ema_alpha = float(self.objective.rule_alpha if ema_alpha is None else ema_alpha)
        self.rule_factor = float(self.objective.rule_factor if rule_factor is None else rule_factor)
        self.accuracy_threshold = float(accuracy_threshold)
        self.adam_beta2, self.adam_epsilon = float(adam_beta2), float(adam_epsilon)
        self.loss_scaled = precision == "mixed_float16"
        self.settings = StepSettings(self.objective, self.d_rule, self.batch_size, self.dim, self.latent_dim,
                                     self.ema_alpha, self.accuracy_threshold, self.rule_factor, accuracy_timing,
                                     rule_loss, int(n_critic), float(r1_gamma), float(g_ema),
                                     tuple(a for a in AUGMENTS if a in augment))
        self.G_ema = None      # G's moving average (``g_ema``): a second generator, made by the backend
        self.trace_count = 0   # traces of the train-steps function (Python side effect while tracing)
        self._pos = 0          # the step within the epoch, tracked on the host (no device read per call)

    def _make_ema_generator(self) -> None:
        """``G_ema``: a generator like G holding G's moving average (``g_ema`` on), starting as a copy of G (call
        inside the strategy's scope)."""
        if not self.settings.g_ema:
            return
        G = self.G
        self.G_ema = type(G)(**G.get_config(), dtype_policy=G.dtype_policy.name, conv_transpose=G.conv_transpose,
                             name="generator_ema")
        self.G_ema.build((None, self.latent_dim))
        for e, w in zip(self.G_ema.weights, G.weights):
            if not np.issubdtype(np.dtype(w.dtype), np.floating):
                raise ValueError(f"G's variable {w.path} is not floating-point; it cannot be averaged")
            e.assign(np.array(w.value))

    @property
    def sampler(self):
        """The generator the tools sample: G's moving average with ``g_ema``, else G (after ``sync_models``)."""
        return self.G if self.G_ema is None else self.G_ema

    def _make_optimizers(self, g_lr: float, d_lr: float) -> None:
        self.opt_g = adam(g_lr, self.loss_scaled, self.adam_beta2, self.adam_epsilon)
        self.opt_d = adam(d_lr, self.loss_scaled, self.adam_beta2, self.adam_epsilon)
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

    def restart_state(self) -> None:
        """What restarting the seed's script from its saved networks resets (``--lr-schedule-reset``): both
        optimizers' moments and iteration counts are zeroed (their learning rates and any loss scale kept),
        the D rule starts afresh (the epoch's data order and position kept); the weights are untouched."""
        arrays = self.state_arrays()
        fresh = initial_rule_state(1)
        for key, value in arrays.items():
            group, _, name = key.partition("/")
            if group in ("opt_g", "opt_d") and name != "learning_rate":
                arrays[key] = np.zeros_like(value)
            elif group == "trainer" and name in RULE_STATE and name not in ("perm", "pos", "ema_count"):
                arrays[key] = np.asarray(fresh[name], value.dtype)
        self.load_state_arrays(arrays, source="the schedule's restart")

    def sync_models(self) -> None:
        """Make the Keras models' variables hold the trained weights (before ``G.save_weights`` or ``G(z)``)."""

    def manifest(self) -> dict:
        """What ``state_arrays`` holds besides the rule state and RNG: key -> the variable's path, shape, dtype
        (for a checkpoint's metadata)."""
        return checkpoint_keys.manifest(checkpoint_keys.checkpoint_variables(self.G, self.D, self.opt_g, self.opt_d,
                                                                             self.G_ema))
