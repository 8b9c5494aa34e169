"""GAN objectives as pure functions of the discriminator's logits.

Each loss takes ``(real_logits, fake_logits)`` — D's raw outputs C(x) on a real and on a
generated batch — and returns ``(d_loss, g_loss)``, both scalars to *minimise*.  They use
``keras.ops`` only (every backend) and the identities

    -log σ(x) = softplus(-x)        -log(1 - σ(x)) = softplus(x)

so no ``log(sigmoid(x) + eps)`` ever appears and large logits cannot overflow.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from keras import ops


def _f32(x):
    return ops.cast(x, "float32")


def _mean_softplus(x):
    return ops.mean(ops.softplus(x))


def rasgan(real_logits, fake_logits):
    """Relativistic average standard GAN (the 64-3D-RaSGAN seed).

    D̃(x_r) = σ(C(x_r) − E C(x_f)),  D̃(x_f) = σ(C(x_f) − E C(x_r));
    L_D = −E log D̃(x_r) − E log(1 − D̃(x_f));  L_G = −E log D̃(x_f) − E log(1 − D̃(x_r)).
    The two terms are summed (not averaged), as in the seed.
    """
    real, fake = _f32(real_logits), _f32(fake_logits)
    r = real - ops.mean(fake)
    f = fake - ops.mean(real)
    d_loss = _mean_softplus(-r) + _mean_softplus(f)
    g_loss = _mean_softplus(-f) + _mean_softplus(r)
    return d_loss, g_loss


def rsgan(real_logits, fake_logits):
    """Relativistic standard GAN: pairs real and fake samples of the batch.

    L_D = −E log σ(C(x_r) − C(x_f));  L_G = −E log σ(C(x_f) − C(x_r)).
    """
    real, fake = _f32(real_logits), _f32(fake_logits)
    return _mean_softplus(fake - real), _mean_softplus(real - fake)


def minimax(real_logits, fake_logits):
    """The 3D-GAN objective as both 3D-GAN implementations train it (SomTambe's ``main.py``, jpjuvo's
    ``64-3D-Gan.py``): D minimises the binary cross-entropy of the original GAN game, G the
    *non-saturating* loss −log D(G(z)) (Goodfellow et al. 2014, §3), whose gradient does not vanish when D
    rejects the fakes.

    L_D = −E log σ(C(x_r)) − E log(1 − σ(C(x_f)));  L_G = −E log σ(C(x_f)).
    """
    real, fake = _f32(real_logits), _f32(fake_logits)
    d_loss = _mean_softplus(-real) + _mean_softplus(fake)
    return d_loss, _mean_softplus(-fake)


def minimax_saturating(real_logits, fake_logits):
    """The textbook minimax game: the same D loss, and G minimises log(1 − D(G(z))) (the saturating form,
    whose gradient vanishes whenever D rejects the fakes; no seed trains this way).

    L_D = −E log σ(C(x_r)) − E log(1 − σ(C(x_f)));  L_G = E log(1 − σ(C(x_f))) = −E softplus(C(x_f)).
    """
    real, fake = _f32(real_logits), _f32(fake_logits)
    d_loss = _mean_softplus(-real) + _mean_softplus(fake)
    return d_loss, -_mean_softplus(fake)


def wgan_gp(real_logits, fake_logits):
    """Wasserstein critic losses: L_D = E C(x_f) − E C(x_r), L_G = −E C(x_f).

    The gradient penalty λ·E(‖∇C(x̂)‖ − 1)² needs gradients, so the step adds it (the objective's
    ``gp_weight``; see ``gradient_penalty_from_grads``).
    """
    real, fake = _f32(real_logits), _f32(fake_logits)
    return ops.mean(fake) - ops.mean(real), -ops.mean(fake)


GP_WEIGHT = 10.0
GP_EPSILON = 1e-12


def r1_penalty_from_grads(grads):
    """R1 (Mescheder et al. 2018) from D's input gradients ``grads`` (N, ...) at the real grids: E‖∇D(x)‖²
    (the step multiplies it by γ/2)."""
    g = _f32(grads)
    return ops.mean(ops.sum(ops.square(ops.reshape(g, (ops.shape(g)[0], -1))), axis=1))


def gradient_penalty_from_grads(grads):
    """WGAN-GP penalty E(‖g‖ − 1)² from D's input gradients ``grads`` (N, ...) at the
    interpolates; the norm has an epsilon inside the square root so it is differentiable at 0."""
    g = _f32(grads)
    norms = ops.sqrt(ops.sum(ops.square(ops.reshape(g, (ops.shape(g)[0], -1))), axis=1) + GP_EPSILON)
    return ops.mean(ops.square(norms - 1.0))


@dataclass(frozen=True)
class Objective:
    name: str
    fn: Callable
    relativistic: bool     # D's decisions compare real against fake scores
    default_d_rule: str    # when to train D: "ratio" (the RaSGAN seed), "accuracy" (3D-GAN), "always"
    gp_weight: float = 0.0  # λ of the gradient penalty λ·E(‖∇C(x̂)‖ − 1)² added to D's loss (0: none)
    rule_alpha: float = 0.3   # the ratio rule: EMA weight α of the smoothed losses (64-3D-RaSGan.py)
    rule_factor: float = 2.0  # the ratio rule: train D when factor · D_smooth > G_smooth


OBJECTIVES = {
    "rasgan": Objective("rasgan", rasgan, True, "ratio"),
    "rsgan": Objective("rsgan", rsgan, True, "ratio", rule_alpha=0.35, rule_factor=1.5),   # 64-3D-RSGan.py
    "minimax": Objective("minimax", minimax, False, "accuracy"),
    "minimax-saturating": Objective("minimax-saturating", minimax_saturating, False, "accuracy"),
    "wgan-gp": Objective("wgan-gp", wgan_gp, True, "always", gp_weight=GP_WEIGHT),
}


#: loss names of config format 1 (tf3dgan 0.1) -> today's (see tf3dgan.training.plan.upgrade_config)
RENAMED_V1 = {"minimax": "minimax-saturating", "sgan": "minimax"}


def get_objective(name: str) -> Objective:
    try:
        return OBJECTIVES[name]
    except KeyError:
        hint = "; 'sgan' is now called 'minimax' (non-saturating, as the 3D-GAN seeds ran it)" if name == "sgan" else ""
        raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(OBJECTIVES)}{hint}") from None


def d_accuracy(objective: Objective, real_logits, fake_logits):
    """Share of the batch D classifies correctly (the 3D-GAN paper's "train D only when its accuracy is
    below 0.8" rule), the mean of the real and the fake batch's shares: a real grid counts at D ≥ 0.5 (logit
    ≥ 0), a fake at D < 0.5, as SomTambe's ``main.py`` counts them.  Relativistic objectives judge C(x)
    against the other batch's mean score; the others judge the sign of the logit."""
    real, fake = _f32(real_logits), _f32(fake_logits)
    if objective.relativistic:
        real, fake = real - ops.mean(fake), fake - ops.mean(real)
    hits = ops.mean(ops.cast(real >= 0, "float32")) + ops.mean(ops.cast(fake < 0, "float32"))   # SomTambe's ties
    return hits / 2.0
