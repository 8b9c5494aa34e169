"""The GAN train step, written once in ``keras.ops``; the backends run it.

One step (as the 64-3D-RaSGAN seed does it):

1. **D phase** on a real batch: G(z) and D's logits on the real and the generated batch (BatchNorm in
   training mode), D's loss (with the objective's gradient penalty, if it has one); D is updated only
   when the rule said so on the previous step (``train_d``).  On a step that skips D the rule gets D's
   loss with BatchNorm in training mode, or (``rule_loss="eval"``, 64-3D-RaSGan.py's ``d_loss2``) with the
   real batch through D in inference mode.  With SomTambe's accuracy rule (``accuracy_timing="current"``)
   D's gradient is always computed and applied when this batch's accuracy, before the update, is below the
   threshold.  D's accuracy, and its loss on a random validation batch (inference-mode BatchNorm, against
   this step's fakes).
2. **G phase** on a **fresh** real batch: G's loss through D, and G's update (every ``n_critic``-th step,
   from the first; a step without it reports the last G loss).
3. **The rule** decides whether D trains on the next step: ``ratio`` (the RaSGAN seed: exponential
   moving averages, α = 0.3, of both losses; train D when 2·D_smooth > G_smooth; the objective can change
   α and the factor: RSGAN's 0.35 and 1.5), ``accuracy`` with ``accuracy_timing="previous"`` (when D's
   accuracy was ≤ 0.8) or ``always``; it also counts the seed's "G/D train ratio".

Batches are drawn inside the step from the packed-bit dataset by the epoch's two orders (one for the D
phase, one for the G phase); an epoch is one pass.  The random numbers are drawn outside the phases, in one
order: the D phase's latents, the penalty's mixing weights, the validation rows, the D phase's augmentation
draws; after the D phase, the G phase's latents and augmentation draws.

Two stabilisers the seeds lack: ``augment`` (:mod:`tf3dgan.training.augment`, DiffAugment for voxels:
every grid D sees in training, real or generated, in either phase, is transformed by its own random draw;
gradients flow through it to G) and ``g_ema`` (G's exponential moving average, :func:`average_generator`,
updated after G's update; what the tools sample).

What a backend does differently is behind a *context* (``ctx``), whose methods the step calls:

``ctx.data`` / ``ctx.val``
    the packed training / validation grids (uint8 (N, D³/8); ``val`` may be None).
``ctx.latents(phase)``, ``ctx.mix_weights()``, ``ctx.validation_rows(n)``, ``ctx.uniforms(name, shape)``
    the step's random numbers (``phase`` is ``"d"`` or ``"g"``; ``uniforms``: [0, 1), ``name``
    ``"augment_d"``/``"augment_g"``, drawn only with ``--augment``): each backend's own stream.
``ctx.weights(name)``, ``ctx.assign(name, values)``
    the current values of a model's variables (``"g"``, or ``"g_ema"``: G's moving average), trainable then
    non-trainable, and assigning new values to them.
``ctx.G(z, training)``, ``ctx.D(x, training)``
    the models (a backend threads BatchNorm statistics through its calls, in call order).
``ctx.input_gradient(fn, x)``
    ∂ Σ fn(x) / ∂x (for penalties on D's input).
``ctx.minimize(name, loss_fn, when=None)``
    ``loss_fn() -> (loss, aux)``; apply one optimizer step to model ``name`` (``"g"``/``"d"``) on
    ∂loss/∂weights (loss-scaled under float16; divided by the replicas when they sum their gradients)
    and return ``aux``; with ``when`` (``aux -> bool tensor``) the step is applied only when it is true
    (the weights and the optimizer state, iteration count included, are kept otherwise).
``ctx.cond(pred, true_fn, false_fn)``
    ``true_fn()`` if ``pred`` else ``false_fn()``, inside the compiled step.
``ctx.per_replica(fn, *args)``, ``ctx.local(x)``, ``ctx.gather(*xs)``, ``ctx.replica_mean(x)``, ``ctx.replicas``
    the replica hooks of a mirrored step: run ``fn`` on every replica with the global batch's ``args``;
    this replica's slice of a global-batch tensor; the global batch of per-replica tensors; the mean over
    replicas.  On one device (and under JAX's sharded step) they are the identity.
``ctx.loss_scale()``
    G's optimizer's current loss scale (1 without loss scaling).

The rule state (``RULE_STATE``) goes in and out of :func:`train_step` as plain tensors; a backend keeps it
in variables (TensorFlow) or in its state pytree (JAX).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from keras import ops

from tf3dgan.models import losses
from tf3dgan.models.losses import Objective
from tf3dgan.training import augment

#: what the step's metrics are, per step (the loop's history, TensorBoard)
METRICS = ("d_loss", "g_loss", "val_loss", "d_trained", "ratio", "d_accuracy", "loss_scale")

#: the rule state: name -> dtype (checkpoint keys ``trainer/<name>``)
RULE_STATE = {
    "perm": np.int32,       # (2, N): the epoch's data orders (D phase, G phase)
    "pos": np.int32,        # step within the epoch
    "train_d": np.bool_,    # the rule's decision for the next step
    "d_smooth": np.float32,
    "g_smooth": np.float32,
    "since_d": np.int32,    # steps since D was last trained
    "ratio": np.int32,      # the seed's "G/D train ratio"
    "g_wait": np.int32,     # steps until G's next update (``n_critic`` > 1: G trains when it is 0)
    "g_last": np.float32,   # G's loss at its last update (what a step without one reports)
    "ema_count": np.int32,  # G updates averaged into G's EMA so far (``g_ema``; not reset by a schedule restart)
}
#: rule-state entries a checkpoint may lack (written before they existed): they load as their initial value
OPTIONAL_STATE = ("g_wait", "g_last", "ema_count")


@dataclass(frozen=True)
class StepSettings:
    """What the compiled step is specialised on (Python values: fixed for a trainer's life)."""
    objective: Objective
    d_rule: str
    batch_size: int
    dim: int
    latent_dim: int
    ema_alpha: float = 0.3
    accuracy_threshold: float = 0.8
    rule_factor: float = 2.0            # ratio rule: train D when factor · D_smooth > G_smooth
    accuracy_timing: str = "current"    # accuracy rule: "current" step's scores (< threshold) or "previous" (≤)
    rule_loss: str = "eval"             # ratio rule, on a step that skips D: "eval" (the seed's) or "train" BN loss
    n_critic: int = 1                   # G trained every n-th step (64-3D-IWGan.py: 5)
    r1_gamma: float = 0.0               # R1: γ/2 · E‖∇D(x_real)‖² added to D's loss (0: off)
    g_ema: float = 0.0                  # β of G's exponential moving average (0: off)
    augment: tuple = ()                 # DiffAugment operations on every grid D sees in training (augment.AUGMENTS)

    @property
    def decides_now(self) -> bool:
        """The D rule decides on this step's scores, before D's update (SomTambe's accuracy rule)."""
        return self.d_rule == "accuracy" and self.accuracy_timing == "current"

def initial_rule_state(n: int) -> dict[str, np.ndarray]:
    """The rule state before the first step of a run over ``n`` grids."""
    values = {"perm": np.tile(np.arange(n), (2, 1)), "pos": 0, "train_d": True, "d_smooth": 0.0, "g_smooth": 0.0,
              "since_d": 0, "ratio": 1, "g_wait": 0, "g_last": 0.0, "ema_count": 0}
    return {key: np.asarray(values[key], dtype=dtype) for key, dtype in RULE_STATE.items()}


# ---------------------------------------------------------------------- batches
def unpack(packed, dim: int):
    """Packed bits (N, dim³/8) uint8, most significant bit first (``np.packbits``) -> float32 (N, d, d, d, 1)."""
    shifts = ops.convert_to_tensor(np.arange(7, -1, -1, dtype=np.uint8))
    bits = ops.bitwise_and(ops.right_shift(ops.expand_dims(packed, -1), shifts), 1)
    return ops.cast(ops.reshape(bits, (-1, dim, dim, dim, 1)), "float32")


def batch_rows(perm, pos, which: int, batch_size: int):
    """The dataset rows of step ``pos`` of the epoch in order ``which`` (0: D phase, 1: G phase)."""
    return ops.slice(perm[which], (pos * batch_size,), (batch_size,))


# ---------------------------------------------------------------------- the phases
def seen(cfg: StepSettings, x, u, which: int):
    """A batch as D sees it in training: ``--augment``'s operations with the ``which`` half (0: the real
    grids', 1: the generated grids') of the per-grid random numbers ``u`` (B, 2·augment.DRAWS); unchanged
    without ``--augment``."""
    if not cfg.augment:
        return x
    return augment.augment(x, u[:, which * augment.DRAWS:(which + 1) * augment.DRAWS], cfg.augment)


def d_phase(ctx, cfg: StepSettings, mode: str, packed, z, eps, val_packed, aug=None):
    """One replica's D phase (``packed``/``z``/``eps``/``val_packed``/``aug``: the global batch's):
    ``(d_loss, d_accuracy, val_loss, trained)``.

    ``mode``: ``"train"`` (D updated), ``"skip"`` (not updated; with ``rule_loss="eval"`` the real batch goes
    through D with BatchNorm in inference mode, the fakes in training mode, as 64-3D-RaSGan.py's ``d_loss2``)
    or ``"decide"`` (D updated when its accuracy on this batch, before the update, is below the threshold:
    SomTambe's accuracy rule)."""
    objective = cfg.objective
    real, z, aug = unpack(ctx.local(packed), cfg.dim), ctx.local(z), ctx.local(aug)
    real = seen(cfg, real, aug, 0)

    def loss(real_training: bool = True):
        fake = seen(cfg, ctx.G(z, True), aug, 1)
        real_logits, fake_logits = ctx.gather(ctx.D(real, real_training), ctx.D(fake, True))
        d_loss = objective.fn(real_logits, fake_logits)[0]
        if objective.gp_weight and real_training:
            mix = ctx.local(eps)
            mixed = mix * real + (1.0 - mix) * ops.cast(fake, "float32")
            grads = ctx.input_gradient(lambda x: ctx.D(x, True), mixed)
            penalty = ctx.replica_mean(losses.gradient_penalty_from_grads(grads))
            d_loss = d_loss + objective.gp_weight * penalty
        if cfg.r1_gamma and real_training:
            grads = ctx.input_gradient(lambda x: ctx.D(x, True), real)
            d_loss = d_loss + 0.5 * cfg.r1_gamma * ctx.replica_mean(losses.r1_penalty_from_grads(grads))
        return d_loss, (d_loss, real_logits, fake_logits)

    def accuracy_of(aux):
        return ops.cast(losses.d_accuracy(objective, aux[1], aux[2]), "float32")

    if mode == "train":
        aux, trained = ctx.minimize("d", loss), ops.convert_to_tensor(True)
    elif mode == "decide":
        aux = ctx.minimize("d", loss, when=lambda aux: accuracy_of(aux) < cfg.accuracy_threshold)
        trained = accuracy_of(aux) < cfg.accuracy_threshold
    else:
        aux, trained = loss(cfg.rule_loss == "train")[1], ops.convert_to_tensor(False)
    d_loss, real_logits, fake_logits = aux
    accuracy = accuracy_of(aux)
    if val_packed is None:
        val_loss = ops.convert_to_tensor(np.float32(np.nan))
    else:
        (val_logits,) = ctx.gather(ctx.D(unpack(ctx.local(val_packed), cfg.dim), False))
        val_loss = objective.fn(val_logits, fake_logits)[0]
    return d_loss, accuracy, val_loss, trained


def g_phase(ctx, cfg: StepSettings, packed, z, aug=None):
    """One replica's G phase on a fresh real batch: G's loss, G updated."""
    real, z, aug = unpack(ctx.local(packed), cfg.dim), ctx.local(z), ctx.local(aug)
    real = seen(cfg, real, aug, 0)

    def loss():
        fake = seen(cfg, ctx.G(z, True), aug, 1)
        real_logits, fake_logits = ctx.gather(ctx.D(real, True), ctx.D(fake, True))
        g_loss = cfg.objective.fn(real_logits, fake_logits)[1]
        return g_loss, g_loss

    return ctx.minimize("g", loss)


def update_rule(cfg: StepSettings, state: dict, trained, d_loss, g_loss, accuracy, g_trained=True) -> dict:
    """The rule state after a step: whether D trains next, the smoothed losses, the G/D ratio, the position.
    ``trained``: whether D was trained on this step; ``g_trained``: whether G was (``n_critic``)."""
    a = cfg.ema_alpha
    d_smooth = a * d_loss + (1.0 - a) * state["d_smooth"]
    g_smooth = a * g_loss + (1.0 - a) * state["g_smooth"]
    if cfg.n_critic > 1:   # a step without G's update has no new G loss: the smoothed one stays
        g_smooth = ops.where(g_trained, g_smooth, state["g_smooth"])
    if cfg.d_rule == "ratio":
        train_next = cfg.rule_factor * d_smooth > g_smooth
    elif cfg.d_rule == "accuracy" and not cfg.decides_now:
        train_next = accuracy <= cfg.accuracy_threshold
    else:   # always, or decided on each step itself
        train_next = ops.convert_to_tensor(True)
    one = ops.convert_to_tensor(np.int32(1))
    wait = ops.convert_to_tensor(np.int32(cfg.n_critic - 1))
    return dict(state, pos=state["pos"] + one, train_d=train_next, d_smooth=d_smooth, g_smooth=g_smooth,
                ratio=ops.where(trained, state["since_d"], state["ratio"]),
                since_d=ops.where(trained, one, state["since_d"] + one),
                g_wait=ops.where(g_trained, wait, state["g_wait"] - one), g_last=g_loss)


def average_generator(cfg: StepSettings, ema: list, weights: list, count, g_trained) -> tuple[list, object]:
    """G's exponential moving average after a step (``g_ema`` = β): every variable of G, its weights and its
    BatchNorm statistics alike (as BigGAN averages them), becomes ``d·ema + (1 − d)·w`` with
    ``d = min(β, (1 + n) / (10 + n))``, ``n`` the G updates averaged so far (the warm-up of
    ``tf.train.ExponentialMovingAverage``'s ``num_updates``, so the average forgets its random start); on a
    step without G's update (``n_critic``) it stays.  Returns ``(new averages, new n)``."""
    n = ops.cast(count, "float32")
    decay = ops.minimum(ops.convert_to_tensor(np.float32(cfg.g_ema)), (1.0 + n) / (10.0 + n))
    new = [ops.where(g_trained, decay * e + (1.0 - decay) * ops.cast(w, e.dtype), e) for e, w in zip(ema, weights)]
    return new, count + ops.cast(g_trained, "int32")


def train_step(ctx, cfg: StepSettings, state: dict) -> tuple[dict, dict]:
    """One step from rule state ``state``: ``(new rule state, metrics)`` (metrics: float32 scalars, ``METRICS``)."""
    b = cfg.batch_size
    packed = ops.take(ctx.data, batch_rows(state["perm"], state["pos"], 0, b), axis=0)
    z = ctx.latents("d")
    eps = ctx.mix_weights() if cfg.objective.gp_weight else None
    val_packed = None if ctx.val is None else ops.take(ctx.val, ctx.validation_rows(ops.shape(ctx.val)[0]), axis=0)
    aug = ctx.uniforms("augment_d", (b, 2 * augment.DRAWS)) if cfg.augment else None

    def d(mode: str):
        return lambda: ctx.per_replica(lambda *args: d_phase(ctx, cfg, mode, *args), packed, z, eps, val_packed, aug)

    if cfg.decides_now:
        d_loss, accuracy, val_loss, trained = d("decide")()
    else:
        d_loss, accuracy, val_loss, trained = ctx.cond(state["train_d"], d("train"), d("skip"))
    packed2 = ops.take(ctx.data, batch_rows(state["perm"], state["pos"], 1, b), axis=0)
    z2 = ctx.latents("g")
    aug2 = ctx.uniforms("augment_g", (b, 2 * augment.DRAWS)) if cfg.augment else None

    def g():
        return ctx.per_replica(lambda *args: g_phase(ctx, cfg, *args), packed2, z2, aug2)

    if cfg.n_critic > 1:   # 64-3D-IWGan.py: G steps on iterations 0, n, 2n, ... after that iteration's D step
        g_trained = state["g_wait"] == 0
        g_loss = ctx.cond(g_trained, g, lambda: ops.cast(state["g_last"], "float32"))   # no update: the last loss
    else:
        g_trained, g_loss = ops.convert_to_tensor(True), g()
    new_state = update_rule(cfg, state, trained, d_loss, g_loss, accuracy, g_trained)
    if cfg.g_ema:
        ema, new_state["ema_count"] = average_generator(cfg, ctx.weights("g_ema"), ctx.weights("g"),
                                                        state["ema_count"], g_trained)
        ctx.assign("g_ema", ema)
    metrics = {"d_loss": d_loss, "g_loss": g_loss, "val_loss": val_loss, "d_trained": trained,
               "ratio": new_state["ratio"], "d_accuracy": accuracy, "loss_scale": ctx.loss_scale()}
    return new_state, {k: ops.cast(metrics[k], "float32") for k in METRICS}
